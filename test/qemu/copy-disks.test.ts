// Live migration WITHOUT shared storage on real QEMU (TCG): every host has only a local datastore,
// so LiveMigrate copies the disks (destination: empty copies exported over NBD; source:
// blockdev-mirror until in sync, then the memory pre-copy, the mirrors cancelled in sync at
// pre-switchover). The guest's disk gets a pattern written through QEMU before the move; after it
// the destination reads the same pattern through its own QEMU and the guest's counter goes on.
// Faults during the disk mirror and during the memory pre-copy (destination QEMU SIGKILLed) roll
// back: the VM runs on qa on its own disks, qb holds no process and no file of it.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import type { WorkflowHandle } from '@temporalio/client';
import { Allocation, Operation, Vm } from '../../db/entities.js';
import { migrationProgressQuery, type MigrationProgress, type MigrationResult, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, stopOwnTemporal, waitFor } from '../helpers/ferry.js';
import { filesUnder, qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

const MiB = 1024 ** 2;
/** where the pattern goes on the 1 GiB disk (past the 1 MiB boot image) */
const PATTERN = { byte: '0xab', offset: '64M' };

describe('live migration without shared storage on real QEMU (copyDisks)', { skip: qemuSkipReason }, () => {
  let f: QemuFerry;
  let n = 0;

  before(async () => {
    f = await startQemuFerry({ hosts: ['qa', 'qb'], storage: 'local', basePort: 48200 });
  });
  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  async function provisionRunning(): Promise<{ vmId: string; result: ProvisionResult }> {
    const name = `qcd-${++n}-${f.prefix.slice(1, 5)}`;
    const vmId = `vm-${name}`;
    const r = await outcome<ProvisionResult>(await f.provision({ name, vmId, hostId: 'qa', memoryMiB: 64 }));
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.datastoreId, 'qlocal-qa');
    return { vmId, result: r.value };
  }

  /** qemu-io through the running QEMU's own drive (the guest's view of its disk). */
  async function qemuIo(hostId: string, vmId: string, cmd: string): Promise<string> {
    return f.driver(hostId).hmp(vmId, `qemu-io disk0 "${cmd}"`);
  }

  /**
   * Writes the pattern through the VM's QEMU (HMP qemu-io prints to QEMU's own stdout, so the
   * answer is empty); the expected content is a reference image: template + the same pattern.
   */
  async function writePattern(hostId: string, vmId: string, len: string): Promise<string> {
    await qemuIo(hostId, vmId, `write -P ${PATTERN.byte} ${PATTERN.offset} ${len}`);
    await qemuIo(hostId, vmId, 'flush');
    const ref = path.join(f.root, `ref-${vmId}.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', f.guest.qcow2, '-F', 'qcow2', ref, String(1024 * MiB)]);
    await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P ${PATTERN.byte} ${PATTERN.offset} ${len}`, ref]);
    return ref;
  }

  /** The guest-visible content of a (possibly running: -U) disk equals the reference. */
  async function assertSameContent(disk: string, ref: string) {
    const r = await execa('qemu-img', ['compare', '-U', disk, ref], { reject: false });
    assert.equal(r.exitCode, 0, `${disk} vs ${ref}: ${r.stdout} ${r.stderr}`);
  }

  const datastoreFiles = async (hostId: string, vmId: string) =>
    (await fs.readdir(f.datastoresOf(hostId)[0]!.path).catch(() => [] as string[])).filter((x) => x.includes(vmId));

  /** The rollback invariant: running on qa on its own disks; qb has no process, folder or copy. */
  async function assertRolledBack(vmId: string, disks: ProvisionResult) {
    assert.deepEqual((await f.qemuProcesses(vmId)).map((p) => p.hostId), ['qa']);
    assert.equal((await f.driver('qa').qmp<{ status: string }>(vmId, 'query-status')).status, 'running');
    assert.deepEqual(await filesUnder(f.vmFolder('qb', vmId)), []);
    assert.deepEqual(await datastoreFiles('qb', vmId), [], 'no disk copy left on qb');
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, 'qa');
    assert.equal(vm.state, 'running');
    assert.deepEqual(vm.diskPaths, disks.diskPaths);
    assert.equal(vm.datastoreId, 'qlocal-qa');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), ['qa:vm']);
    // the source's mirror is gone: no block job, no NBD node left on the running VM
    assert.deepEqual(await f.driver('qa').qmp(vmId, 'query-block-jobs'), []);
    const before = await f.heartbeat('qa', vmId);
    await waitFor('the guest still counting on qa', async () => (await f.heartbeat('qa', vmId)) > before);
  }

  async function operationOf(h: WorkflowHandle) {
    return f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
  }

  test('completes: the guest keeps counting on qb, its disk content arrived, qa holds nothing', async () => {
    const { vmId, result } = await provisionRunning();
    try {
      const ref = await writePattern('qa', vmId, '8M');
      await assertSameContent(result.diskPaths[0]!, ref);
      const h = await f.migrate({ vmId, targetHostId: 'qb', overrides: { maxBandwidthBytesPerSec: 512 * MiB } });
      const atA = await f.heartbeat('qa', vmId);
      const r = await outcome<MigrationResult>(h);
      assert.ok(r.ok, !r.ok ? r.message : '');
      assert.deepEqual((await f.qemuProcesses(vmId)).map((p) => p.hostId), ['qb']);
      assert.ok((await f.heartbeat('qb', vmId)) >= atA, 'the counter continued from where it was on qa');
      const later = await f.heartbeat('qb', vmId);
      await waitFor('the guest counting on qb', async () => (await f.heartbeat('qb', vmId)) > later);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.hostId, 'qb');
      assert.equal(vm.datastoreId, 'qlocal-qb');
      const qbDs = f.datastoresOf('qb')[0]!.path;
      assert.ok(vm.diskPaths.every((p) => path.dirname(p) === qbDs), `disks on qb: ${vm.diskPaths.join(', ')}`);
      await assertSameContent(vm.diskPaths[0]!, ref);
      assert.equal(path.dirname(vm.seedPath ?? ''), qbDs, 'the seed moved too');
      for (const p of [...result.diskPaths]) await assert.rejects(fs.access(p), `source disk ${p} deleted`);
      assert.deepEqual(await datastoreFiles('qa', vmId), [], 'qa holds no file of the VM');
      assert.deepEqual(await filesUnder(f.vmFolder('qa', vmId)), []);
      const allocs = await f.db.em().find(Allocation, { vmId });
      assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}:${a.datastoreId}`), ['qb:vm:qlocal-qb']);
      const p: MigrationProgress = await h.query(migrationProgressQuery);
      assert.ok(p.disks && p.disks.inSync && p.disks.totalBytes > 0, `disk progress: ${JSON.stringify(p.disks)}`);
      // the NBD exports are gone from the running destination
      assert.deepEqual(await f.driver('qb').qmp(vmId, 'query-block-exports'), []);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('destination QEMU killed during the disk mirror: rolled back, qa keeps its disks, qb holds no copy', async () => {
    const { vmId, result } = await provisionRunning();
    try {
      // a mirror capped at 8 MiB/s takes seconds
      const ref = await writePattern('qa', vmId, '24M');
      const h = await f.migrate({ vmId, targetHostId: 'qb', diskMirrorBandwidthBytesPerSec: 8 * MiB });
      await waitFor('the disk mirror under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.disks !== undefined && p.disks.copiedBytes > 0 && !p.disks.inSync && p;
      });
      assert.ok((await datastoreFiles('qb', vmId)).length > 0, 'qb holds the copies being filled');
      const dst = (await f.qemuProcesses(vmId)).filter((p) => p.hostId === 'qb');
      assert.equal(dst.length, 1);
      process.kill(dst[0]!.pid, 'SIGKILL');
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await operationOf(h);
      assert.equal(op.state, 'rolled-back', op.error ?? '');
      assert.match(op.error ?? '', /disk mirror/i);
      await assertRolledBack(vmId, result);
      await assertSameContent(result.diskPaths[0]!, ref);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('destination QEMU killed during the memory pre-copy (disks in sync): rolled back the same way', async () => {
    const { vmId, result } = await provisionRunning();
    try {
      const ref = await writePattern('qa', vmId, '1M');
      const h = await f.migrate({ vmId, targetHostId: 'qb', policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 4 * MiB, maxRounds: 1000 } });
      let last: MigrationProgress | undefined;
      await waitFor('memory pre-copy under way with the disks in sync', async () => {
        const p: MigrationProgress = (last = await h.query(migrationProgressQuery));
        assert.equal(p.state, 'running', p.error);
        return p.stage === 'pre-copy' && p.disks?.inSync === true && p.progress.transferredBytes > 0 && p;
      }).catch((e: Error) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
      const dst = (await f.qemuProcesses(vmId)).filter((p) => p.hostId === 'qb');
      process.kill(dst[0]!.pid, 'SIGKILL');
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await operationOf(h);
      assert.equal(op.state, 'rolled-back', op.error ?? '');
      await assertRolledBack(vmId, result);
      await assertSameContent(result.diskPaths[0]!, ref);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });
});
