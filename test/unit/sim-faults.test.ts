// Every simulator fault kind takes effect and is recorded as fired.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverError } from '../../domain/hypervisor.js';
import { GiB, MiB, TEMPLATE_PATH, openTestCluster, startTestVm, type TestCluster } from '../../drivers/sim/fixtures.js';

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof DriverError, `expected DriverError, got ${String(e)}`);
  assert.equal(e.code, c, e.message);
  return true;
};
const fault = (c: TestCluster, id: string) => c.sim.listFaults().find((f) => f.id === id)!;
const WORKLOAD = { dirtyRateBytesPerSec: 200 * MiB, writableWorkingSetBytes: 4 * GiB };

async function prepared(c: TestCluster, vmId = 'vm-1') {
  const { spec } = await startTestVm(c.a, vmId, { workload: WORKLOAD });
  const { uri } = await c.b.prepareIncoming(spec);
  return { spec, uri };
}

describe('sim faults', () => {
  test('fail-step: the named method fails count times, filtered by host and vm', async () => {
    const c = openTestCluster();
    c.sim.injectFault({ id: 'f1', kind: 'fail-step', step: 'createDisk', hostId: 'host-a', vmId: 'vm-1', count: 2 });
    const spec = { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: GiB, source: { kind: 'template' as const, imagePath: TEMPLATE_PATH, linked: true } };
    await c.b.createDisk({ ...spec, name: 'vm-9-root' }); // other host: unaffected
    await c.a.createDisk({ ...spec, name: 'vm-2-root' }); // other vm: unaffected
    await assert.rejects(c.a.createDisk(spec), code('FAULT_INJECTED'));
    await assert.rejects(c.a.createDisk(spec), code('FAULT_INJECTED'));
    await c.a.createDisk(spec);
    assert.equal(fault(c, 'f1').firedCount, 2);
    assert.equal(fault(c, 'f1').remaining, 0);
    assert.equal(c.sim.snapshot().disks.filter((d) => d.path.includes('vm-1-root')).length, 1, 'a failed attempt leaves nothing');
    c.sim.injectFault({ id: 'f2', kind: 'fail-step', step: 'startVm', count: -1 });
    await c.a.defineVm({ vmId: 'vm-1', name: 'vm-1', cpus: 1, memoryBytes: GiB, disks: ['sim://shared/vm-1-root.qcow2'], cpuFeatures: [] });
    for (let i = 0; i < 3; i++) await assert.rejects(c.a.startVm('vm-1'), code('FAULT_INJECTED'));
    assert.equal(c.sim.clearFaults({ kind: 'fail-step' }), 2);
    assert.equal((await c.a.startVm('vm-1')).state, 'running');
    // control-worker steps consult the simulator through checkStepFault
    c.sim.injectFault({ kind: 'fail-step', step: 'reserveCapacity', vmId: 'vm-7' });
    assert.throws(() => c.sim.checkStepFault('reserveCapacity', '', 'vm-7'), code('FAULT_INJECTED'));
    c.sim.checkStepFault('reserveCapacity', '', 'vm-7');
    assert.throws(() => c.sim.injectFault({ kind: 'fail-step', step: 'rm -rf' }), /fault\.step/);
    c.sim.close();
  });

  test('fail-stage 1: prepareIncoming fails once', async () => {
    const c = openTestCluster();
    const { spec } = await startTestVm(c.a, 'vm-1');
    c.sim.injectFault({ id: 's1', kind: 'fail-stage', stage: 1 });
    await assert.rejects(c.b.prepareIncoming(spec), code('FAULT_INJECTED'));
    assert.equal(await c.b.vmStatus('vm-1'), null);
    await c.b.prepareIncoming(spec);
    assert.equal(fault(c, 's1').firedCount, 1);
    assert.throws(() => c.sim.injectFault({ kind: 'fail-stage', stage: 4 }), /stage 4/);
    c.sim.close();
  });

  test('fail-stage 2: the migration fails right after round 1; the source keeps running', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    c.sim.injectFault({ id: 's2', kind: 'fail-stage', stage: 2, vmId: 'vm-1' });
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.set(3999);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'active');
    assert.equal(fault(c, 's2').firedAtV, undefined);
    c.clock.set(4000);
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'failed');
    assert.match(s.error!, /stage 2/);
    assert.equal(s.round, 1);
    assert.equal(fault(c, 's2').firedAtV, 4000);
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-a']);
    assert.equal(await c.b.vmStatus('vm-1'), null);
    c.sim.close();
  });

  test('fail-stage 3: continueSwitchover ends in failed and the source resumes', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri });
    c.clock.set(30_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'pre-switchover');
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'paused');
    c.sim.injectFault({ id: 's3', kind: 'fail-stage', stage: 3 });
    await c.a.continueSwitchover('vm-1');
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'failed');
    assert.match(s.error!, /stage 3/);
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'running');
    assert.equal(fault(c, 's3').firedAtV, 30_000);
    await assert.rejects(c.a.continueSwitchover('vm-1'), /failed/);
    c.sim.close();
  });

  test('fail-stage 5: activateIncoming fails count times, then works', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    c.sim.injectFault({ id: 's5', kind: 'fail-stage', stage: 5, count: 2 });
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.set(30_000);
    await assert.rejects(c.b.activateIncoming('vm-1'), code('FAULT_INJECTED'));
    await assert.rejects(c.b.activateIncoming('vm-1'), code('FAULT_INJECTED'));
    assert.equal((await c.b.activateIncoming('vm-1')).state, 'running');
    assert.equal(fault(c, 's5').firedCount, 2);
    c.sim.close();
  });

  test('destination-crash at stage 5: the copy is lost, recoverIncoming boots it from its disks (a new generation)', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    c.sim.injectFault({ id: 'dc5', kind: 'destination-crash', hostId: 'host-b', stage: 5 });
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.set(30_000);
    await assert.rejects(c.b.recoverIncoming('vm-1'), /not lost, activateIncoming resumes it/, 'a paused copy is not recovered by a boot');
    await assert.rejects(c.b.activateIncoming('vm-1'), /destination crashed/);
    assert.equal((await c.b.vmStatus('vm-1'))?.state, 'crashed');
    await assert.rejects(c.b.activateIncoming('vm-1'), /crashed; cannot activate/);
    const before = c.sim.snapshot().vms.find((v) => v.hostId === 'host-b')!.generation;
    assert.equal((await c.b.recoverIncoming('vm-1')).state, 'running');
    assert.equal((await c.b.recoverIncoming('vm-1')).state, 'running', 'idempotent');
    assert.ok(c.sim.snapshot().vms.find((v) => v.hostId === 'host-b')!.generation > before, 'booted: the guest restarted');
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'postmigrate', 'the source copy is the workflow\'s to destroy');
    c.sim.close();
  });

  test('destination-crash during a migration: failed at once, destination gone, source running', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri });
    c.clock.set(30_000); // source paused at pre-switchover
    c.sim.injectFault({ id: 'dc', kind: 'destination-crash', hostId: 'host-b' });
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'failed');
    assert.equal(s.error, 'destination crashed');
    assert.equal(await c.b.vmStatus('vm-1'), null);
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-a']);
    assert.equal(fault(c, 'dc').firedAtV, 30_000);
    c.sim.close();
  });

  test('destination-crash injected before: fires when the migration reaches its stage', async () => {
    for (const [stage, at] of [[2, 4000], [3, 4781.25]] as const) {
      const c = openTestCluster();
      const { uri } = await prepared(c);
      c.sim.injectFault({ id: 'dc', kind: 'destination-crash', hostId: 'host-b', stage });
      assert.equal(fault(c, 'dc').firedAtV, undefined, 'no migration yet');
      await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
      c.clock.set(60_000);
      const s = await c.a.migrationStatus('vm-1');
      assert.equal(s.status, 'failed', `stage ${stage}`);
      assert.equal(fault(c, 'dc').firedAtV, at);
      assert.equal((await c.a.vmStatus('vm-1'))?.state, 'running');
      assert.equal(await c.b.vmStatus('vm-1'), null);
      c.sim.close();
    }
    const c = openTestCluster();
    const { spec } = await startTestVm(c.a, 'vm-1');
    c.sim.injectFault({ kind: 'destination-crash', hostId: 'host-b', stage: 1 });
    await assert.rejects(c.b.prepareIncoming(spec), code('UNREACHABLE'));
    c.sim.close();
  });

  test('link-cut fails the migration and refuses new ones until cleared', async () => {
    const c = openTestCluster();
    const { spec, uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri });
    c.clock.set(1000);
    c.sim.injectFault({ id: 'cut', kind: 'link-cut', hostId: 'host-a', peerHostId: 'host-b' });
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'failed');
    assert.match(s.error!, /link down/);
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-a']);
    const again = await c.b.prepareIncoming(spec);
    await assert.rejects(c.a.startMigration('vm-1', again), code('UNREACHABLE'));
    c.sim.clearFaults({ id: 'cut' });
    await c.a.startMigration('vm-1', { ...again, autoSwitchover: true });
    c.clock.set(60_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'completed');
    assert.ok(fault(c, 'cut') === undefined);
    c.sim.close();
  });

  test('dirty-rate above the bandwidth never converges; clearing it lets it converge', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    c.sim.injectFault({ id: 'hot', kind: 'dirty-rate', vmId: 'vm-1', value: 2 * GiB });
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.set(3600_000);
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'active');
    assert.ok(s.round > 800, `${s.round} rounds`);
    assert.equal(s.dirtyRateBytesPerSec, 2 * GiB);
    assert.equal(fault(c, 'hot').firedAtV, 0);
    c.sim.clearFaults({ id: 'hot' });
    c.clock.set(3700_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'completed');
    c.sim.close();
  });

  test('slow-disk on a host: disk copies at 1/10 throughput', async () => {
    const c = openTestCluster();
    c.sim.injectFault({ id: 'slow', kind: 'slow-disk', hostId: 'host-a' });
    await c.a.createDisk({ name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 2 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: false } });
    assert.equal(c.sim.virtualNow(), 40_000, '2 GiB at 51.2 MiB/s');
    assert.ok(fault(c, 'slow').firedCount >= 1);
    c.sim.close();
  });

  test('fault input is validated with the field named', () => {
    const c = openTestCluster();
    assert.throws(() => c.sim.injectFault({ kind: 'meteor' as never }), /fault\.kind/);
    assert.throws(() => c.sim.injectFault({ kind: 'destination-crash' }), /fault\.hostId/);
    assert.throws(() => c.sim.injectFault({ kind: 'link-cut', hostId: 'host-z' }), /host-z/);
    assert.throws(() => c.sim.injectFault({ kind: 'dirty-rate', vmId: 'vm-1', value: -1 }), /fault\.value/);
    assert.throws(() => c.sim.injectFault({ kind: 'fail-step', step: 'startVm', count: 0 }), /fault\.count/);
    assert.deepEqual(c.sim.listFaults(), []);
    c.sim.close();
  });
});
