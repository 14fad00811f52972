// Simulator VM lifecycle and live migration: stages, pre-switchover downtime, cancel and
// rollback, the postmigrate fence, and "a guest never runs on two hosts".
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverError } from '../../domain/hypervisor.js';
import { GiB, MiB, openTestCluster, startTestVm, type TestCluster } from '../../drivers/sim/fixtures.js';
import { simulatePrecopy, DEFAULT_DEVICE_STATE_BYTES, transferMs } from '../../domain/precopy-model.js';

const code = (c: string, permanent?: boolean) => (e: unknown) => {
  assert.ok(e instanceof DriverError, `expected DriverError, got ${String(e)}`);
  assert.equal(e.code, c, e.message);
  if (permanent !== undefined) assert.equal(e.permanent, permanent, e.message);
  return true;
};

const WORKLOAD = { dirtyRateBytesPerSec: 200 * MiB, writableWorkingSetBytes: 4 * GiB };

async function prepared(c: TestCluster, vmId = 'vm-1') {
  const { spec } = await startTestVm(c.a, vmId, { workload: WORKLOAD });
  const { uri } = await c.b.prepareIncoming(spec);
  return { spec, uri };
}

describe('sim VM lifecycle', () => {
  test('define/start/pause/resume/reboot/stop/destroy are idempotent where the interface says so', async () => {
    const c = openTestCluster();
    const { spec } = await startTestVm(c.a, 'vm-1');
    assert.deepEqual((await c.a.defineVm(spec)).state, 'running', 'same spec again is a no-op');
    assert.equal((await c.a.startVm('vm-1')).state, 'running');
    assert.equal((await c.a.pauseVm('vm-1')).state, 'paused');
    assert.equal((await c.a.pauseVm('vm-1')).state, 'paused');
    assert.equal((await c.a.resumeVm('vm-1')).state, 'running');
    assert.equal((await c.a.rebootVm('vm-1')).state, 'running');
    assert.equal((await c.a.stopVm('vm-1', { timeoutMs: 1000, force: false })).state, 'stopped');
    assert.equal((await c.a.stopVm('vm-1', { timeoutMs: 1000, force: true })).state, 'stopped');
    assert.deepEqual((await c.a.listVms()).map((v) => v.vmId), ['vm-1']);
    await c.a.destroyVm('vm-1');
    await c.a.destroyVm('vm-1');
    assert.equal(await c.a.vmStatus('vm-1'), null);
    await assert.rejects(c.a.startVm('vm-1'), code('NOT_FOUND', true));
    c.sim.close();
  });

  test('refuses to start a VM whose disk is missing or not on this host', async () => {
    const c = openTestCluster();
    await c.a.defineVm({ vmId: 'vm-1', name: 'vm-1', cpus: 1, memoryBytes: GiB, disks: ['sim://shared/nope.qcow2'], cpuFeatures: [] });
    await assert.rejects(c.a.startVm('vm-1'), (e: unknown) => code('INVALID_STATE')(e) && /nope\.qcow2/.test((e as Error).message));
    const d = await c.b.createDisk({ name: 'vm-2-root', datastoreId: 'local-b', sizeBytes: GiB, source: { kind: 'blank' } });
    await c.a.defineVm({ vmId: 'vm-2', name: 'vm-2', cpus: 1, memoryBytes: GiB, disks: [d.path], cpuFeatures: [] });
    await assert.rejects(c.a.startVm('vm-2'), /not reachable from host-a/);
    await assert.rejects(c.a.defineVm({ vmId: 'vm-3', name: 'x', cpus: 0, memoryBytes: GiB, disks: [], cpuFeatures: [] }), /cpus/);
    await assert.rejects(c.a.defineVm({ vmId: 'vm-3', name: 'x', cpus: 1, memoryBytes: GiB, disks: [], cpuFeatures: ['sgx'] }), /lacks sgx/);
    c.sim.close();
  });
});

describe('sim live migration', () => {
  test('stages 1-5: the destination inherits the guest state and only it runs afterwards', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    assert.equal(uri, 'sim://host-b/vm-1');
    assert.deepEqual(await c.b.prepareIncoming((await c.a.vmStatus('vm-1'))!.spec), { uri }, 'prepareIncoming is idempotent');
    assert.equal((await c.b.vmStatus('vm-1'))?.state, 'incoming');
    await assert.rejects(c.b.activateIncoming('vm-1'), code('INVALID_STATE', true), 'nothing arrived yet');
    c.sim.bumpGeneration('host-a', 'vm-1');
    const gen = c.sim.bumpGeneration('host-a', 'vm-1');
    await c.a.startMigration('vm-1', { uri, downtimeLimitMs: 300 });
    await c.a.startMigration('vm-1', { uri, downtimeLimitMs: 300 }); // idempotent
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'active');
    const want = simulatePrecopy({ memoryBytes: 4 * GiB, bandwidthBytesPerSec: GiB, ...WORKLOAD, downtimeLimitMs: 300 });
    c.clock.set(want.precopyMs + 500);
    const pre = await c.a.migrationStatus('vm-1');
    assert.equal(pre.status, 'pre-switchover');
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'paused');
    await assert.rejects(c.a.resumeVm('vm-1'), code('INVALID_STATE'), 'paused by the migration');
    await c.a.continueSwitchover('vm-1');
    c.clock.advance(1000);
    const done = await c.a.migrationStatus('vm-1');
    assert.equal(done.status, 'completed');
    // QEMU counts the time paused at pre-switchover as downtime
    assert.equal(done.downtimeMs, 500 + transferMs(want.rounds.at(-1)!.dirtiedBytes + DEFAULT_DEVICE_STATE_BYTES, GiB));
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'postmigrate');
    assert.equal((await c.b.vmStatus('vm-1'))?.state, 'paused');
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), []);
    assert.equal((await c.b.activateIncoming('vm-1')).state, 'running');
    assert.equal((await c.b.activateIncoming('vm-1')).state, 'running', 'idempotent');
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-b']);
    assert.equal(c.sim.snapshot().vms.find((v) => v.hostId === 'host-b')!.generation, gen, 'memory state crossed');
    assert.equal((await c.b.migrationStatus('vm-1')).status, 'completed', 'the destination sees it too');
    c.sim.close();
  });

  test('a postmigrate source cannot be cancelled back, started, or resumed while the guest runs elsewhere', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.advance(60_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'completed');
    await assert.rejects(c.a.cancelMigration('vm-1'), code('INVALID_STATE', true));
    await assert.rejects(c.a.startVm('vm-1'), code('INVALID_STATE', true));
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'postmigrate');
    await c.b.activateIncoming('vm-1');
    await assert.rejects(c.a.resumeVm('vm-1'), (e: unknown) => code('INVALID_STATE', true)(e) && /runs on host-b/.test((e as Error).message));
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-b']);
    await c.a.destroyVm('vm-1');
    c.sim.close();
  });

  test('rollback after a completed transfer whose commit is known absent: A resumes, B\'s paused copy goes', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri, autoSwitchover: true });
    c.clock.advance(60_000);
    assert.equal((await c.b.vmStatus('vm-1'))?.state, 'paused', 'B holds the guest, paused: it cannot run');
    assert.equal((await c.a.resumeVm('vm-1')).state, 'running');
    await c.b.destroyVm('vm-1');
    assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-a']);
    c.sim.close();
  });

  test('cancel while active or at pre-switchover resumes the source and removes the destination container', async () => {
    for (const when of ['active', 'pre-switchover'] as const) {
      const c = openTestCluster();
      const { uri } = await prepared(c);
      await c.a.startMigration('vm-1', { uri });
      c.clock.advance(when === 'active' ? 2000 : 30_000);
      assert.equal((await c.a.migrationStatus('vm-1')).status, when);
      await c.a.cancelMigration('vm-1');
      await c.a.cancelMigration('vm-1'); // idempotent
      const s = await c.a.migrationStatus('vm-1');
      assert.equal(s.status, 'cancelled');
      assert.equal((await c.a.vmStatus('vm-1'))?.state, 'running', when);
      assert.equal(await c.b.vmStatus('vm-1'), null, 'destination exited');
      assert.deepEqual(c.sim.runningHostsOf('vm-1'), ['host-a']);
      c.sim.close();
    }
  });

  test('a source that was paused before the migration stays paused after a cancel', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.pauseVm('vm-1');
    await c.a.startMigration('vm-1', { uri });
    c.clock.advance(1000);
    await c.a.cancelMigration('vm-1');
    assert.equal((await c.a.vmStatus('vm-1'))?.state, 'paused');
    c.sim.close();
  });

  test('continueSwitchover while active forces stop-and-copy of the current remainder', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await c.a.startMigration('vm-1', { uri, hold: true });
    c.clock.set(5000); // 1 s into round 2
    const s = await c.a.migrationStatus('vm-1');
    assert.equal(s.status, 'active');
    await c.a.continueSwitchover('vm-1');
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'device');
    c.clock.advance(10_000);
    const done = await c.a.migrationStatus('vm-1');
    assert.equal(done.status, 'completed');
    assert.equal(done.round, s.round);
    assert.equal(done.downtimeMs, transferMs(s.remainingBytes + DEFAULT_DEVICE_STATE_BYTES, GiB));
    c.sim.close();
  });

  test('setMigrationParams: a higher downtime limit lets it converge at the next round end', async () => {
    const c = openTestCluster();
    // dirties faster than 512 MiB/s, capped at a 1 GiB working set: steady 2 s rounds
    const { spec } = await startTestVm(c.a, 'vm-1', { workload: { dirtyRateBytesPerSec: GiB, writableWorkingSetBytes: GiB } });
    const { uri } = await c.b.prepareIncoming(spec);
    await c.a.startMigration('vm-1', { uri, downtimeLimitMs: 1000, maxBandwidthBytesPerSec: 512 * MiB });
    // round 1: 8 s (4 GiB at 512 MiB/s), then 2 s rounds: ends at 10 s, 12 s, ...
    c.clock.set(61_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'active');
    await assert.rejects(c.a.setMigrationParams('vm-1', { throttlePct: 150 }), /throttlePct/);
    await c.a.setMigrationParams('vm-1', { downtimeLimitMs: 5000, autoSwitchover: true });
    c.clock.set(61_999);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'active', 'the current round finishes first');
    c.clock.set(62_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'device');
    c.clock.set(65_000);
    const done = await c.a.migrationStatus('vm-1');
    assert.equal(done.status, 'completed');
    assert.equal(done.downtimeMs, transferMs(GiB + DEFAULT_DEVICE_STATE_BYTES, 512 * MiB));
    await assert.rejects(c.a.setMigrationParams('vm-1', { downtimeLimitMs: 1 }), code('INVALID_STATE', true));
    c.sim.close();
  });

  test('bad migration input is refused with the field named', async () => {
    const c = openTestCluster();
    const { uri } = await prepared(c);
    await assert.rejects(c.a.startMigration('vm-1', { uri: 'tcp:1.2.3.4:4444' }), /uri/);
    await assert.rejects(c.a.startMigration('vm-1', { uri: 'sim://host-b/vm-2' }), /for vm vm-2/);
    await assert.rejects(c.a.startMigration('vm-1', { uri, maxBandwidthBytesPerSec: -5 }), /maxBandwidthBytesPerSec/);
    await assert.rejects(c.a.startMigration('vm-1', { uri: 'sim://host-c/vm-1' }), (e: unknown) => code('INVALID_STATE', true)(e) && /prepareIncoming/.test((e as Error).message));
    await assert.rejects(c.a.startMigration('vm-9', { uri: 'sim://host-b/vm-9' }), code('NOT_FOUND', true));
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'none');
    c.sim.close();
  });

  test('a local disk needs copyDisks; with it the disk arrives on the destination', async () => {
    const c = openTestCluster();
    const { spec } = await startTestVm(c.a, 'vm-1', { datastoreId: 'local-a', memoryBytes: GiB });
    const { uri } = await c.b.prepareIncoming(spec);
    await assert.rejects(c.a.startMigration('vm-1', { uri }), /copyDisks/);
    await c.a.startMigration('vm-1', { uri, copyDisks: true, autoSwitchover: true });
    c.clock.advance(2000);
    const mid = await c.a.migrationStatus('vm-1');
    assert.equal(mid.round, 0, 'disks first');
    c.clock.advance(60_000);
    assert.equal((await c.a.migrationStatus('vm-1')).status, 'completed');
    const vm = await c.b.activateIncoming('vm-1');
    assert.deepEqual(vm.spec.disks, ['sim://local-b/vm-1-root.qcow2']);
    assert.ok(await c.b.diskInfo('sim://local-b/vm-1-root.qcow2'));
    c.sim.close();
  });

  test('a guest never runs on two hosts, whatever happens, at any instant', async () => {
    const c = openTestCluster();
    const check = () => {
      for (const v of ['vm-1', 'vm-2', 'vm-3', 'vm-4']) assert.ok(c.sim.runningHostsOf(v).length <= 1, `${v} on ${c.sim.runningHostsOf(v).join()}`);
    };
    // four migrations ending differently: completed, cancelled, destination crashed, forced
    const uris: Record<string, string> = {};
    for (const v of ['vm-1', 'vm-2', 'vm-3', 'vm-4']) {
      const { spec } = await startTestVm(c.a, v, { workload: WORKLOAD, memoryBytes: 2 * GiB });
      uris[v] = (await (v === 'vm-3' ? c.c : c.b).prepareIncoming(spec)).uri;
    }
    await c.a.startMigration('vm-1', { uri: uris['vm-1']!, autoSwitchover: true });
    await c.a.startMigration('vm-2', { uri: uris['vm-2']! });
    await c.a.startMigration('vm-3', { uri: uris['vm-3']! });
    await c.a.startMigration('vm-4', { uri: uris['vm-4']!, hold: true });
    for (let t = 0; t < 40; t++) {
      c.clock.advance(250);
      check();
      if (t === 5) c.sim.injectFault({ kind: 'destination-crash', hostId: 'host-c' });
      if (t === 10) await c.a.continueSwitchover('vm-4');
      if (t === 30) await c.a.cancelMigration('vm-2');
      if (t === 35) {
        await c.b.activateIncoming('vm-1');
        await c.b.activateIncoming('vm-4');
      }
    }
    assert.deepEqual(
      ['vm-1', 'vm-2', 'vm-3', 'vm-4'].map((v) => c.sim.runningHostsOf(v).join()),
      ['host-b', 'host-a', 'host-a', 'host-b'],
    );
    c.sim.close();
  });
});
