// The invariant checker on a REAL driver's view (test/helpers/invariants.ts HypervisorView, as
// libvirt-ferry.ts builds it from `virsh list --all` and the pools' volumes on every host, and
// qemu-ferry.ts from QEMU processes and datastore files): a view that matches inventory has no
// violation, and each way it can disagree is reported by kind. Also the `virsh list --all` reader.
// Guards the libvirt and qemu tests' invariant checks against a checker that cannot fail.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Template, Vm } from '../../db/entities.js';
import { createDb, migrateUp } from '../../db/orm.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { smallCluster } from '../helpers/ferry.js';
import { checkInvariants, type HypervisorView } from '../helpers/invariants.js';
import { parseVirshList } from '../helpers/libvirt-ferry.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-invview-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('virsh list --all is read as name and state; anything else is an error naming the line', () => {
  assert.deepEqual(parseVirshList(' 3    vm-a   running\n -    vm-b   shut off\n'), [
    { name: 'vm-a', state: 'running' },
    { name: 'vm-b', state: 'shut off' },
  ]);
  assert.deepEqual(parseVirshList(''), []);
  assert.throws(() => parseVirshList('Id Name State'), /unexpected line "Id Name State"/);
});

test('a real view: consistent, then every disagreement by kind', async () => {
  const db = await createDb({ databaseUrl: join(dir, 'ferry.sqlite'), dataDir: dir });
  try {
    await migrateUp(db);
    const base = smallCluster({ hosts: 3 });
    const vm = (id: string, hostId: string, ip: string) => ({ id, name: id, hostId, datastoreId: 'shared', templateId: 'tpl-small', networkId: 'net1', ip, cpus: 1, memoryMiB: 512, diskGiB: 2, cpuFeatures: [], dirtyRateMiBps: 10, writableWorkingSetMiB: 64 });
    const spec: ClusterSpec = { ...base, vms: [vm('vm-a', 'h1', '10.0.0.10'), vm('vm-b', 'h2', '10.0.0.11')] };
    await seedCluster(db, undefined, spec);
    const em = db.em();
    const a = await em.findOneOrFail(Vm, { id: 'vm-a' });
    const tpl = await em.findOneOrFail(Template, { id: 'tpl-small' });
    const disks = (await em.find(Vm, {})).flatMap((v) => v.diskPaths.map((p) => ({ path: p, datastoreId: 'shared', kind: 'disk' as const })));
    const good: HypervisorView = {
      vms: [
        { vmId: 'vm-a', hostId: 'h1', state: 'running' },
        { vmId: 'vm-b', hostId: 'h2', state: 'running' },
      ],
      // the template's image on a datastore is no orphan
      disks: [...disks, { path: tpl.imagePath, datastoreId: 'shared', kind: 'disk' }],
    };
    const kinds = async (view: HypervisorView) => [...new Set((await checkInvariants({ db, view: async () => view })).map((v) => v.kind))].sort();
    assert.deepEqual(await kinds(good), [], 'the view matches inventory');
    assert.deepEqual(await kinds({ ...good, vms: [...good.vms, { vmId: 'vm-a', hostId: 'h2', state: 'running' }] }), ['runs-twice', 'stray-copy']);
    assert.deepEqual(await kinds({ ...good, vms: [good.vms[1]!, { vmId: 'vm-a', hostId: 'h1', state: 'postmigrate' }] }), ['not-running', 'paused-at-rest']);
    assert.deepEqual(await kinds({ ...good, vms: [...good.vms, { vmId: 'vm-zz', hostId: 'h3', state: 'stopped' }] }), ['unrecorded-guest']);
    assert.deepEqual(await kinds({ ...good, vms: [{ vmId: 'vm-a', hostId: 'h3', state: 'running' }, good.vms[1]!] }), ['stray-copy', 'wrong-host']);
    assert.deepEqual(await kinds({ ...good, disks: [...good.disks, { path: '/pool/vm-gone-root.qcow2', datastoreId: 'shared', kind: 'disk' }] }), ['orphan-disk']);
    assert.ok(a.diskPaths.length > 0, 'the seeded VMs have disks the view must list');
  } finally {
    await db.close();
  }
});
