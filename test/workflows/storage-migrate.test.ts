// StorageMigrate on the simulator: a running VM's disks move from the shared datastore to its
// host's local one while the guest writes to them (the mirror catches up geometrically); the
// pivot is the only pause; inventory moves in one commit. A write rate above the mirror's
// bandwidth never gets in sync: cancel leaves everything where it was; a failed pivot rolls back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowHandle } from '@temporalio/client';
import { Allocation, Operation, Vm } from '../../db/entities.js';
import { controlQueue, migrationProgressQuery, workflowIds, type MigrationProgress, type MigrationResult, type StorageMigrateInput } from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { outcome, smallCluster, startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

const MiB = 1024 ** 2;

function cluster(): ClusterSpec {
  const base = smallCluster({ hosts: 2, memoryMiB: 64 * 1024 });
  return { ...base, datastores: [...base.datastores, ...base.hosts.map((h) => ({ id: `local-${h.id}`, shared: false, capacityGiB: 500, throughputMiBps: 400, hostIds: [h.id] }))] };
}

describe('StorageMigrate (simulator)', () => {
  let f: TestFerry;
  let n = 0;
  before(async () => (f = await startTestFerry({ cluster: cluster(), timeScale: 20 })));
  after(async () => f?.close());

  async function provision(diskWriteMiBps: number) {
    const name = `sm-${++n}`;
    const vmId = `vm-${name}`;
    const r = await f.provisionRunning({ name, vmId, hostId: 'h1', memoryMiB: 512, diskGiB: 4, source: { kind: 'template', templateId: 'tpl-small', linked: false }, workload: { dirtyRateBytesPerSec: 10 * MiB, writableWorkingSetBytes: 64 * MiB, diskWriteRateBytesPerSec: diskWriteMiBps * MiB } });
    assert.equal(r.datastoreId, 'shared');
    return { vmId, r };
  }

  const start = (input: StorageMigrateInput): Promise<WorkflowHandle> =>
    f.client.workflow.start('storageMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${f.prefix}`, args: [input] });

  const diskPathsOf = (ds: string) => f.sim.snapshot().disks.filter((d) => d.datastoreId === ds).map((d) => d.path);

  test('completes while the guest writes: disks on local-h1, old files gone, a brief pivot, one commit', async () => {
    const { vmId, r } = await provision(100);
    const h = await start({ vmId, targetDatastoreId: 'local-h1' });
    const seen = await waitFor('mirror progress', async () => {
      const p: MigrationProgress = await h.query(migrationProgressQuery);
      return (p.disks && p.disks.copiedBytes > 0) || p.state !== 'running' ? p : false;
    });
    assert.equal(seen.kind, 'storage');
    const out = await outcome<MigrationResult>(h);
    assert.ok(out.ok, !out.ok ? out.message : '');
    assert.ok((out.value.downtimeMs ?? 1e9) < 200, `pivot pause ${out.value.downtimeMs} ms`);
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, 'h1');
    assert.equal(vm.state, 'running');
    assert.equal(vm.datastoreId, 'local-h1');
    assert.ok(vm.diskPaths.every((p) => p.startsWith('sim://local-h1/')), vm.diskPaths.join(', '));
    assert.ok(vm.seedPath?.startsWith('sim://local-h1/'), String(vm.seedPath));
    const shared = diskPathsOf('shared');
    for (const p of r.diskPaths) assert.ok(!shared.includes(p), `old ${p} deleted`);
    assert.deepEqual(f.sim.runningHostsOf(vmId), ['h1']);
    assert.deepEqual((await f.sim.forHost('h1').vmStatus(vmId))!.spec.disks, vm.diskPaths, 'the hypervisor runs it on the new disks');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}:${a.datastoreId}`), ['h1:vm:local-h1']);
    const p: MigrationProgress = await h.query(migrationProgressQuery);
    assert.equal(p.disks?.inSync, true);
    assert.ok((p.disks?.totalBytes ?? 0) > 0);
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
    assert.equal(op.subkind, 'storage');
  });

  test('writes faster than the mirror never converge; cancel leaves the VM on shared, no copy on local-h1', async () => {
    const { vmId, r } = await provision(50);
    const h = await start({ vmId, targetDatastoreId: 'local-h1', maxBandwidthBytesPerSec: 20 * MiB });
    await waitFor('mirror running, not in sync', async () => {
      const p: MigrationProgress = await h.query(migrationProgressQuery);
      assert.equal(p.state, 'running', p.error);
      return p.disks !== undefined && !p.disks.inSync && p.disks.copiedBytes > 0 && p;
    });
    await h.signal('cancel', { reason: 'never converges' });
    const out = await outcome(h);
    assert.ok(!out.ok);
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.datastoreId, 'shared');
    assert.deepEqual(vm.diskPaths, r.diskPaths);
    assert.equal(vm.state, 'running');
    assert.ok(!diskPathsOf('local-h1').some((p) => p.includes(vmId)), 'no partial copy on local-h1');
    assert.deepEqual((await f.sim.forHost('h1').diskMirrorStatus!(vmId)).status, 'none');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}:${a.datastoreId}`), ['h1:vm:shared']);
    assert.equal((await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId })).state, 'cancelled');
  });

  test('a failed pivot rolls back: on shared, the mirror gone; an unreachable datastore is refused naming the field', async () => {
    const { vmId, r } = await provision(0);
    f.sim.injectFault({ kind: 'fail-step', step: 'completeDiskMirror', vmId, count: 10 });
    const out = await outcome(await start({ vmId, targetDatastoreId: 'local-h1' }));
    assert.ok(!out.ok);
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.deepEqual([vm.datastoreId, vm.state], ['shared', 'running']);
    assert.deepEqual(vm.diskPaths, r.diskPaths);
    assert.ok(!diskPathsOf('local-h1').some((p) => p.includes(vmId)));
    const refused = await outcome(await start({ vmId, targetDatastoreId: 'local-h2' }));
    assert.ok(!refused.ok && /targetDatastoreId.*not reachable from host h1/.test(refused.message), !refused.ok ? refused.message : '');
  });
});
