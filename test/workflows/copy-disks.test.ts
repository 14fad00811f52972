// LiveMigrate without shared storage on the simulator: every host has only a LOCAL datastore, so
// the plan says copyDisks; the disks travel with the migration and inventory follows them (disk
// paths, datastore, allocation) in the commit; a rollback leaves the VM on its own disks and the
// target holds no copy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, Operation, Vm } from '../../db/entities.js';
import { migrationProgressQuery, type MigrationProgress, type MigrationResult } from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { outcome, smallCluster, startTestFerry, type TestFerry } from '../helpers/ferry.js';

const MiB = 1024 ** 2;

function localOnlyCluster(): ClusterSpec {
  const base = smallCluster({ hosts: 3, memoryMiB: 64 * 1024 });
  const ids = base.hosts.map((h) => h.id);
  return {
    ...base,
    datastores: ids.map((id) => ({ id: `local-${id}`, shared: false, capacityGiB: 500, throughputMiBps: 2000, hostIds: [id] })),
    templates: base.templates.map((t) => ({ ...t, datastoreIds: ids.map((id) => `local-${id}`) })),
  };
}

describe('LiveMigrate with copyDisks (simulator, local datastores only)', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry({ cluster: localOnlyCluster(), timeScale: 100 })));
  after(async () => f?.close());

  async function provision(name: string) {
    const vmId = `vm-${name}`;
    const r = await f.provisionRunning({ name, vmId, hostId: 'h1', memoryMiB: 512, diskGiB: 2, workload: { dirtyRateBytesPerSec: 20 * MiB, writableWorkingSetBytes: 64 * MiB } });
    assert.equal(r.datastoreId, 'local-h1');
    return { vmId, r };
  }

  test('completes: the disks arrive on the target datastore, inventory moves disk paths and space in the commit, A holds nothing', async () => {
    const { vmId, r } = await provision('cd-ok');
    const h = await f.migrate({ vmId, targetHostId: 'h2' });
    const out = await outcome<MigrationResult>(h);
    assert.ok(out.ok, !out.ok ? out.message : '');
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, 'h2');
    assert.equal(vm.datastoreId, 'local-h2');
    assert.ok(vm.diskPaths.every((p) => p.startsWith('sim://local-h2/')), `disks on local-h2: ${vm.diskPaths.join(', ')}`);
    const snap = f.sim.snapshot();
    const vmDisks = snap.disks.filter((d) => d.path.includes(vmId));
    assert.ok(vmDisks.every((d) => d.datastoreId === 'local-h2'), `no disk of ${vmId} left on h1: ${JSON.stringify(vmDisks.map((d) => d.path))}`);
    for (const p of r.diskPaths) assert.ok(!snap.disks.some((d) => d.path === p), `source disk ${p} deleted`);
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}:${a.datastoreId}`), ['h2:vm:local-h2']);
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
    assert.equal((op.details.plan as { copyDisks: boolean }).copyDisks, true);
    const p: MigrationProgress = await h.query(migrationProgressQuery);
    assert.equal(p.state, 'completed');
  });

  test('a failure in pre-copy rolls back: the VM runs on h1 on its own disks, h3 holds no copy', async () => {
    const { vmId, r } = await provision('cd-fail');
    f.sim.injectFault({ kind: 'fail-stage', stage: 2, vmId });
    const h = await f.migrate({ vmId, targetHostId: 'h3' });
    const out = await outcome<MigrationResult>(h);
    assert.ok(!out.ok);
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, 'h1');
    assert.equal(vm.state, 'running');
    assert.deepEqual(vm.diskPaths, r.diskPaths);
    assert.deepEqual(f.sim.runningHostsOf(vmId), ['h1']);
    const snap = f.sim.snapshot();
    assert.deepEqual(snap.disks.filter((d) => d.datastoreId === 'local-h3').map((d) => d.path), [], 'nothing on h3');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), ['h1:vm']);
  });
});
