// Real QEMU live migration between two "hosts" (two state folders) on 127.0.0.1, under TCG,
// while the guest dirties 16 MiB of memory. At most one busy guest runs at a time (2 cores).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { DriverError, type MigrationStats, type VmSpec } from '../../domain/hypervisor.js';
import { createQemuDriver, type QemuDriver } from '../../drivers/qemu/index.js';
import { buildGuest, readHeartbeat, type GuestImages } from '../../workers/lab/guest-images.js';
import { filesUnder, pidsMentioning, qemuSkipReason, sweep, tempRoot, waitFor } from '../helpers/qemu-env.js';

const MiB = 1024 * 1024;

describe('qemu live migration A -> B (real QEMU, TCG)', { skip: qemuSkipReason }, () => {
  let root: string;
  let A: QemuDriver;
  let B: QemuDriver;
  let guest: GuestImages;
  let shared: string;
  let n = 0;

  before(async () => {
    root = await tempRoot();
    shared = path.join(root, 'shared');
    const ds = [{ id: 'shared', path: shared, shared: true }];
    A = createQemuDriver({ hostId: 'host-a', stateDir: path.join(root, 'a'), datastores: ds, portRange: [47100, 47199] });
    B = createQemuDriver({ hostId: 'host-b', stateDir: path.join(root, 'b'), datastores: ds, portRange: [47200, 47299] });
    guest = await buildGuest({ kind: 'dirty', dirtyBytes: 16 * MiB });
  });

  afterEach(async () => {
    // every test leaves both hosts empty; sweep anyway so a failed test leaks no QEMU
    for (const d of [A, B]) for (const vm of await d.listVms().catch(() => [])) await d.destroyVm(vm.vmId).catch(() => undefined);
  });

  after(async () => {
    await A?.close();
    await B?.close();
    if (root) await sweep(root);
  });

  /** A running dirtying VM on A with a linked clone on the shared datastore. */
  async function runningOnA(): Promise<VmSpec> {
    const vmId = `mig${++n}`;
    const disk = await A.createDisk({ name: `${vmId}-root`, datastoreId: 'shared', sizeBytes: 0, source: { kind: 'template', imagePath: guest.qcow2, linked: true } });
    const spec: VmSpec = { vmId, name: vmId, cpus: 1, memoryBytes: 128 * MiB, disks: [disk.path], cpuFeatures: ['sse2'], network: 'default' };
    await A.defineVm(spec);
    await A.startVm(vmId);
    await waitFor('the guest to start counting', async () => (await hb(A, vmId)) > 50);
    return spec;
  }

  const hb = (d: QemuDriver, vmId: string) => readHeartbeat((c) => d.hmp(vmId, c));

  async function assertGoneFromB(vmId: string): Promise<void> {
    assert.deepEqual(await pidsMentioning(B.vmPaths(vmId).dir), [], 'no QEMU left on B');
    assert.deepEqual(await filesUnder(path.join(root, 'b')), [], 'no files left on B');
    assert.equal(await B.vmStatus(vmId), null);
  }

  it('held pre-copy, forced switchover: the heartbeat on B continues from A, downtime from QEMU', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    assert.match(uri, /^tcp:127\.0\.0\.1:472\d\d$/);
    assert.deepEqual(await B.prepareIncoming(spec), { uri }, 'prepareIncoming is idempotent');
    assert.equal((await B.vmStatus(spec.vmId))?.state, 'incoming');

    await A.startMigration(spec.vmId, { uri, hold: true, maxBandwidthBytesPerSec: 128 * MiB, downtimeLimitMs: 300 });
    await A.startMigration(spec.vmId, { uri, hold: true }); // idempotent
    // held: rounds go on, the source keeps running and never pauses on its own
    const s = await waitFor('pre-copy round 3', async () => {
      const st = await A.migrationStatus(spec.vmId);
      return st.round >= 3 && st;
    });
    assert.equal(s.status, 'active');
    assert.ok(s.transferredBytes > 0 && s.totalBytes >= 128 * MiB);
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'running');

    await A.continueSwitchover(spec.vmId);
    const done = await A.migrationStatus(spec.vmId);
    assert.equal(done.status, 'completed');
    assert.ok(done.downtimeMs !== undefined && done.downtimeMs > 0, `downtime ${done.downtimeMs}`);
    assert.ok(done.totalTimeMs !== undefined && done.totalTimeMs >= done.downtimeMs!);
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'postmigrate');

    // the received copy is paused, with exactly the source's final counter
    assert.equal((await B.vmStatus(spec.vmId))?.state, 'paused');
    const atSwitch = await hb(A, spec.vmId);
    assert.equal(await hb(B, spec.vmId), atSwitch);

    // the source refuses to be resumed after a completed migration
    await assert.rejects(A.cancelMigration(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE' && /postmigrate/.test(e.message));
    await assert.rejects(A.resumeVm(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE');
    await assert.rejects(A.startVm(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE');
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'postmigrate');

    const act = await B.activateIncoming(spec.vmId);
    assert.equal(act.state, 'running');
    assert.equal((await B.activateIncoming(spec.vmId)).state, 'running', 'activateIncoming is idempotent');
    await waitFor('the counter to advance on B', async () => (await hb(B, spec.vmId)) > atSwitch);

    const pidA = (await A.vmStatus(spec.vmId))!.pid!;
    await A.destroyVm(spec.vmId);
    assert.deepEqual(await pidsMentioning(A.vmPaths(spec.vmId).dir), [], "A's process is gone");
    assert.ok(pidA > 1);
    assert.equal((await B.vmStatus(spec.vmId))?.state, 'running');
  });

  it('autoSwitchover continues from pre-switchover by itself', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, autoSwitchover: true, downtimeLimitMs: 2000, maxBandwidthBytesPerSec: 1024 * MiB });
    const done = await waitFor('completed', async () => {
      const st = await A.migrationStatus(spec.vmId);
      assert.notEqual(st.status, 'failed', st.error);
      return st.status === 'completed' && st;
    });
    assert.ok(done.downtimeMs! > 0);
    assert.equal((await B.activateIncoming(spec.vmId)).state, 'running');
  });

  it("a received copy lost after the switchover (B's QEMU killed): recoverIncoming boots a fresh QEMU on B from the disk", async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, autoSwitchover: true, downtimeLimitMs: 2000, maxBandwidthBytesPerSec: 1024 * MiB });
    await waitFor('completed', async () => (await A.migrationStatus(spec.vmId)).status === 'completed');
    const lost = (await B.vmStatus(spec.vmId))!;
    assert.equal(lost.state, 'paused');
    await assert.rejects(B.recoverIncoming(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE' && /not lost/.test(e.message), 'a paused copy is activated, not rebooted');
    process.kill(lost.pid!, 'SIGKILL');
    await waitFor('the copy to be gone', async () => (await B.vmStatus(spec.vmId))?.state === 'crashed');
    await assert.rejects(B.activateIncoming(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE' && e.permanent === true);
    await A.destroyVm(spec.vmId); // the workflow destroys the stale source first: the guest never runs twice
    const up = await B.recoverIncoming(spec.vmId);
    assert.equal(up.state, 'running');
    assert.notEqual(up.pid, lost.pid, 'a fresh QEMU process');
    assert.equal((await B.recoverIncoming(spec.vmId)).state, 'running', 'idempotent');
    await waitFor('the restarted guest to count', async () => (await hb(B, spec.vmId)) > 5);
    assert.deepEqual(await pidsMentioning(A.vmPaths(spec.vmId).dir), [], 'nothing of the VM runs on A');
  });

  it('cancel during pre-copy: VM keeps running on A, B has no process and no files', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, hold: true, maxBandwidthBytesPerSec: 64 * MiB });
    await waitFor('pre-copy round 2', async () => (await A.migrationStatus(spec.vmId)).round >= 2);
    await A.cancelMigration(spec.vmId);
    await A.cancelMigration(spec.vmId); // idempotent
    const st = await A.migrationStatus(spec.vmId);
    assert.equal(st.status, 'cancelled');
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'running');
    const c = await hb(A, spec.vmId);
    await waitFor('A to keep counting', async () => (await hb(A, spec.vmId)) > c);

    // the destination QEMU exits by itself (single use); B reports it, destroy cleans up
    await waitFor('B to notice its copy died', async () => (await B.vmStatus(spec.vmId))?.state === 'crashed');
    await B.destroyVm(spec.vmId);
    await assertGoneFromB(spec.vmId);

    // a retry needs a fresh destination: prepareIncoming spawns one, and this time it completes
    const again = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri: again.uri, autoSwitchover: true, downtimeLimitMs: 2000 });
    await waitFor('completed', async () => (await A.migrationStatus(spec.vmId)).status === 'completed');
    assert.equal((await B.activateIncoming(spec.vmId)).state, 'running');
  });

  it('cancel at pre-switchover: the paused source resumes on A', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, downtimeLimitMs: 2000, maxBandwidthBytesPerSec: 1024 * MiB });
    await waitFor('pre-switchover', async () => (await A.migrationStatus(spec.vmId)).status === 'pre-switchover');
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'paused');
    await A.cancelMigration(spec.vmId);
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'running');
    await B.destroyVm(spec.vmId);
    await assertGoneFromB(spec.vmId);
  });

  it('SIGKILL of the destination during pre-copy: migration fails, VM runs on A, B cleans up', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, hold: true, maxBandwidthBytesPerSec: 64 * MiB });
    await waitFor('pre-copy round 2', async () => (await A.migrationStatus(spec.vmId)).round >= 2);
    const pidB = (await B.vmStatus(spec.vmId))!.pid!;
    process.kill(pidB, 'SIGKILL');
    const failed: MigrationStats = await waitFor('failed', async () => {
      const st = await A.migrationStatus(spec.vmId);
      return st.status === 'failed' && st;
    });
    assert.ok(failed.error && failed.error.length > 0);
    await A.cancelMigration(spec.vmId); // compensation on an already failed migration: resume if needed, no error
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'running');
    await assert.rejects(A.continueSwitchover(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE');
    assert.equal((await B.vmStatus(spec.vmId))?.state, 'crashed');
    await assert.rejects(B.activateIncoming(spec.vmId), (e: DriverError) => e.code === 'INVALID_STATE');
    await B.destroyVm(spec.vmId);
    await assertGoneFromB(spec.vmId);
  });

  it('a destination that died is replaced by prepareIncoming (single-use destination)', async () => {
    const spec = await runningOnA();
    const first = await B.prepareIncoming(spec);
    process.kill((await B.vmStatus(spec.vmId))!.pid!, 'SIGKILL');
    await waitFor('dead', async () => (await B.vmStatus(spec.vmId))?.state === 'crashed');
    const second = await B.prepareIncoming(spec);
    assert.equal((await B.vmStatus(spec.vmId))?.state, 'incoming');
    assert.ok(second.uri.startsWith('tcp:127.0.0.1:'), `${first.uri} -> ${second.uri}`);
    await A.startMigration(spec.vmId, { uri: second.uri, autoSwitchover: true, downtimeLimitMs: 2000 });
    await waitFor('completed', async () => (await A.migrationStatus(spec.vmId)).status === 'completed');
    await B.activateIncoming(spec.vmId);
  });

  it('agent restart mid-migration: a new source driver instance steers the held migration to completion', async () => {
    const spec = await runningOnA();
    const { uri } = await B.prepareIncoming(spec);
    await A.startMigration(spec.vmId, { uri, hold: true, autoSwitchover: true, maxBandwidthBytesPerSec: 64 * MiB });
    await waitFor('pre-copy round 2', async () => (await A.migrationStatus(spec.vmId)).round >= 2);
    await A.close(); // the host agent dies; QEMU and the migration go on
    const A2 = createQemuDriver({ hostId: 'host-a', stateDir: path.join(root, 'a'), datastores: [{ id: 'shared', path: shared, shared: true }] });
    try {
      assert.equal((await A2.migrationStatus(spec.vmId)).status, 'active');
      // steering from the new instance: throttle ceiling and bandwidth reach QEMU
      await A2.setMigrationParams(spec.vmId, { throttlePct: 40, maxBandwidthBytesPerSec: 96 * MiB });
      const p = await A2.qmp<Record<string, number>>(spec.vmId, 'query-migrate-parameters');
      assert.equal(p['max-cpu-throttle'], 40);
      assert.equal(p['max-bandwidth'], 96 * MiB);
      assert.equal(p['downtime-limit'], 1, 'still held');
      // release the hold: the persisted autoSwitchover makes the new instance continue by itself
      await A2.setMigrationParams(spec.vmId, { hold: false, downtimeLimitMs: 2000 });
      await waitFor('completed', async () => (await A2.migrationStatus(spec.vmId)).status === 'completed');
      assert.equal((await A2.vmStatus(spec.vmId))?.state, 'postmigrate');
      assert.equal((await B.activateIncoming(spec.vmId)).state, 'running');
    } finally {
      await A2.close();
    }
  });

  it('bad migration input is refused with the field named', async () => {
    const spec = await runningOnA();
    await assert.rejects(A.startMigration(spec.vmId, { uri: 'exec:rm -rf /' }), (e: DriverError) => e.code === 'INVALID_ARGUMENT' && /uri/.test(e.message));
    await assert.rejects(A.startMigration(spec.vmId, { uri: 'tcp:127.0.0.1:1', throttlePct: 150 }), (e: DriverError) => /throttlePct/.test(e.message));
    await assert.rejects(A.startMigration(spec.vmId, { uri: 'tcp:127.0.0.1:1', copyDisks: true }), (e: DriverError) => /copyDisks/.test(e.message));
    // a closed port fails at once with QEMU's reason, and the VM keeps running
    await assert.rejects(A.startMigration(spec.vmId, { uri: 'tcp:127.0.0.1:1' }), (e: DriverError) => e.code === 'HYPERVISOR' && /refused/i.test(e.message));
    assert.equal((await A.vmStatus(spec.vmId))?.state, 'running');
    await assert.rejects(B.prepareIncoming({ ...spec, cpuFeatures: ['avx512f'] }), (e: DriverError) => /cpuFeatures.*avx512f/.test(e.message));
    await assert.rejects(B.prepareIncoming({ ...spec, network: 'nope' }), (e: DriverError) => /spec\.network/.test(e.message));
    assert.deepEqual(await filesUnder(path.join(root, 'b')), []);
  });
});
