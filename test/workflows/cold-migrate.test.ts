// ColdMigrate on the real dev server with the simulator: a running VM moves to another host's
// local datastore and runs there with every file's checksum equal (as the simulator reports
// them) and nothing left on the source; a fault during the copy leaves it running on the source
// with no file of it on the target; cancel during the copy rolls back; refusals name the field.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, Operation, Vm } from '../../db/entities.js';
import type { SimDriver } from '../../drivers/sim/driver.js';
import { cancelMigrationSignal, coldProgressQuery, controlQueue, workflowIds, type ColdMigrateInput, type MigrationResult } from '../../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

function coldCluster() {
  const c = smallCluster({ hosts: 3 });
  for (const h of c.hosts) c.datastores.push({ id: `local-${h.id}`, shared: false, capacityGiB: 500, throughputMiBps: 1000, hostIds: [h.id] });
  return c;
}

const sim = (f: TestFerry, hostId: string) => f.sim.forHost(hostId) as unknown as SimDriver;

function coldMigrate(f: TestFerry, input: ColdMigrateInput) {
  return f.client.workflow.start('coldMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${f.prefix}`, args: [input] });
}

async function assertOnlyOn(f: TestFerry, vmId: string, hostId: string, state = 'running') {
  const vms = f.sim.snapshot().vms.filter((v) => v.vmId === vmId);
  assert.deepEqual(vms.map((v) => `${v.hostId}:${v.state}`), [`${hostId}:${state}`], 'defined on exactly one host');
  const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
  assert.equal(vm.hostId, hostId);
  assert.equal(vm.state, state);
  const allocs = await f.db.em().find(Allocation, { vmId });
  assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), [`${hostId}:vm`], 'one allocation, on its host');
  return vm;
}

describe('ColdMigrate (simulator)', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry({ cluster: coldCluster(), timeScale: 50 })));
  after(async () => f?.close());

  test('a running VM ends running on the target datastore, every checksum equal, the source holds nothing', async () => {
    const vmId = 'vm-cold-ok';
    await f.provisionRunning({ name: 'cold-ok', vmId, hostId: 'h1' });
    const before = await f.db.em().findOneOrFail(Vm, { id: vmId });
    const sourcePaths = [...before.diskPaths, before.seedPath!];
    const h = await coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h2' });
    const r = await outcome<MigrationResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    const vm = await assertOnlyOn(f, vmId, 'h2');
    assert.equal(vm.datastoreId, 'local-h2');
    assert.ok(vm.diskPaths.every((p) => p.startsWith('sim://local-h2/')), `disks moved: ${vm.diskPaths.join(', ')}`);
    const p = await h.query(coldProgressQuery);
    assert.equal(p.state, 'completed');
    assert.equal(p.kind, 'cold');
    assert.ok(p.files && p.files.length === 2, 'disk and seed copied');
    for (const file of p.files!) {
      assert.equal(file.targetSha256, file.sourceSha256, `${file.source} -> ${file.target}`);
      assert.equal(sim(f, 'h2').fileSha256(file.target), file.sourceSha256, `the simulator holds ${file.target} with the source's checksum`);
    }
    for (const path of sourcePaths) assert.equal(await f.sim.forHost('h1').diskInfo(path), null, `${path} deleted from the source`);
    assert.ok(p.backingDecision?.includes('kept'), p.backingDecision);
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
    assert.equal(op.subkind, 'cold');
    assert.equal(op.state, 'completed');
  });

  test('flatten: the copy has no backing file and its content digest matches', async () => {
    const vmId = 'vm-cold-flat';
    await f.provisionRunning({ name: 'cold-flat', vmId, hostId: 'h1' });
    const h = await coldMigrate(f, { vmId, targetHostId: 'h3', targetDatastoreId: 'local-h3', flatten: true });
    const r = await outcome<MigrationResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    const vm = await assertOnlyOn(f, vmId, 'h3');
    const disk = await f.sim.forHost('h3').diskInfo(vm.diskPaths[0]!);
    assert.ok(disk && !disk.backingPath, 'flattened');
    assert.equal(disk.actualSizeBytes, disk.virtualSizeBytes);
    const p = await h.query(coldProgressQuery);
    assert.ok(p.progress.totalBytes >= 2 * 1024 ** 3, `the whole disk was copied (${p.progress.totalBytes})`);
  });

  test('a fault during the copy: still running on the source, no file of it on the target', async () => {
    const vmId = 'vm-cold-fault';
    await f.provisionRunning({ name: 'cold-fault', vmId, hostId: 'h1' });
    const before = await f.db.em().findOneOrFail(Vm, { id: vmId });
    // the disk copies first (flattened: 2 GiB), then the seed's copy fails
    f.sim.injectFault({ kind: 'fail-step', step: 'copyDisk', hostId: 'h2', vmId: `${vmId}-seed` });
    const h = await coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h2', flatten: true });
    const r = await outcome<MigrationResult>(h);
    assert.ok(!r.ok, 'rolled back');
    assert.match(r.message, /injected fault/);
    await assertOnlyOn(f, vmId, 'h1');
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.deepEqual(vm.diskPaths, before.diskPaths);
    for (const path of [...before.diskPaths, before.seedPath!]) {
      const name = path.slice(path.lastIndexOf('/') + 1);
      assert.equal(await f.sim.forHost('h2').diskInfo(`sim://local-h2/${name}`), null, `no ${name} on the target`);
      assert.ok(await f.sim.forHost('h1').diskInfo(path), `${path} kept on the source`);
    }
    const p = await h.query(coldProgressQuery);
    assert.equal(p.state, 'rolled-back');
    const names = p.compensations.map((c) => `${c.name}:${c.ok}`);
    assert.ok(names.includes('discard-target-copy:true') && names.includes('restart-source:true'), names.join(', '));
  });

  test('cancel during the copy rolls back to the source', async () => {
    const vmId = 'vm-cold-cancel';
    await f.provisionRunning({ name: 'cold-cancel', vmId, hostId: 'h1' });
    // 2 GiB at 4 MiB/s: 512 s virtual, 10 s of wall time at scale 50 (progress shows after each 3 s window)
    const h = await coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h2', flatten: true, maxBandwidthBytesPerSec: 4 * 1024 ** 2 });
    await waitFor('the copy to be under way', async () => {
      const p = await h.query(coldProgressQuery);
      return p.stage === 'copy' && p.progress.transferredBytes > 0;
    });
    await h.signal(cancelMigrationSignal, { reason: 'test cancel' });
    const r = await outcome<MigrationResult>(h);
    assert.ok(!r.ok);
    await assertOnlyOn(f, vmId, 'h1');
    assert.equal((await h.query(coldProgressQuery)).state, 'cancelled');
    assert.equal(f.sim.snapshot().vms.filter((v) => v.vmId === vmId).length, 1);
  });

  test('refusals name the field: a datastore the target does not reach', async () => {
    const vmId = 'vm-cold-bad';
    await f.provisionRunning({ name: 'cold-bad', vmId, hostId: 'h1' });
    const h = await coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h3' });
    const r = await outcome<MigrationResult>(h);
    assert.ok(!r.ok);
    assert.match(r.message, /local-h3 is not attached to host h2/);
    await assertOnlyOn(f, vmId, 'h1');
  });
});
