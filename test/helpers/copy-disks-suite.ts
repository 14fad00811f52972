// The copyDisks workflow tests every real driver must pass (test/qemu/copy-disks.test.ts,
// test/libvirt/copy-disks.test.ts): without shared storage the disk content (a pattern written
// through the guest's disk), the seed and the guest's counter arrive on the target and the source
// holds nothing; the destination QEMU killed while the disks are copied and during the memory
// pre-copy both roll back. Each test ends with the invariant checker (driver-ferry.ts
// assertConsistent); the suite's `after` checks once more with everything cleaned up.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { Allocation, Vm } from '../../db/entities.js';
import { migrationProgressQuery, type MigrationProgress, type MigrationResult, type ProvisionResult } from '../../workflows/definitions.js';
import { assertConsistent, type WorkflowFerry } from './driver-ferry.js';
import { outcome, stopOwnTemporal, waitFor } from './ferry.js';
import { suiteContext } from './workflow-suite.js';

const MiB = 1024 ** 2;

/** Where the copy-disks tests write their pattern on the 1 GiB disk (past the 1 MiB boot image). */
const PATTERN = { byte: '0xab', offset: '64M' };

/**
 * Live migration WITHOUT shared storage (copyDisks): every host has only a local datastore, so the
 * disks travel with the VM. `diskCopyFailure`: how the driver's error reads when the destination
 * dies while the disks are being copied (the QEMU driver's disk mirror, libvirt's copy inside the
 * migration job).
 */
export function copyDisksSuite<F extends WorkflowFerry>(o: { title: string; skip: string | false; hosts: { a: string; b: string }; start: () => Promise<F>; diskCopyFailure: RegExp }): void {
  const { a, b } = o.hosts;
  describe(o.title, { skip: o.skip }, () => {
    let f: F;
    const { provisionRunning, operationOf, cleanup, migrate } = suiteContext(() => f, 'cdvm');
    const local = (hostId: string) => f.datastoresOf(hostId).find((d) => !d.shared)!;
    let scratch: string;

    before(async () => {
      f = await o.start();
      scratch = await mkdtemp(path.join(os.tmpdir(), 'fcd-'));
    });
    after(async () => {
      if (f) await assertConsistent(f);
      await f?.close();
      if (scratch) await rm(scratch, { recursive: true, force: true });
      await stopOwnTemporal();
    });

    async function provisionOnLocal() {
      const p = await provisionRunning(a);
      assert.equal(p.result.datastoreId, local(a).id);
      return p;
    }

    /**
     * Writes the pattern through the VM's QEMU (the guest's view of its disk); the expected content
     * is a reference image: template + the same pattern.
     */
    async function writePattern(vmId: string, len: string): Promise<string> {
      await f.guestDiskIo(a, vmId, `write -P ${PATTERN.byte} ${PATTERN.offset} ${len}`);
      await f.guestDiskIo(a, vmId, 'flush');
      const ref = path.join(scratch, `ref-${vmId}.qcow2`);
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', f.guest.qcow2, '-F', 'qcow2', ref, String(1024 * MiB)]);
      await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P ${PATTERN.byte} ${PATTERN.offset} ${len}`, ref]);
      return ref;
    }

    /** The guest-visible content of a (possibly running: -U) disk equals the reference. */
    async function assertSameContent(disk: string, ref: string) {
      const r = await execa('qemu-img', ['compare', '-U', disk, ref], { reject: false });
      assert.equal(r.exitCode, 0, `${disk} vs ${ref}: ${r.stdout} ${r.stderr}`);
    }

    const filesOn = async (hostId: string, vmId: string) => (await fs.readdir(local(hostId).path).catch(() => [] as string[])).filter((x) => x.includes(vmId));

    /** The rollback invariant: running on A on its own disks; B has no copy, record or disk copy. */
    async function assertRolledBack(vmId: string, disks: ProvisionResult) {
      await waitFor(`nothing on ${b}`, async () => (await f.copies(vmId)).length === 1, 15_000);
      assert.deepEqual(await f.copies(vmId), [a]);
      assert.equal((await f.driver(a).vmStatus(vmId))?.state, 'running');
      await f.assertNothingOn(b, vmId);
      assert.deepEqual(await filesOn(b, vmId), [], `no disk copy left on ${b}`);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.hostId, a);
      assert.equal(vm.state, 'running');
      assert.deepEqual(vm.diskPaths, disks.diskPaths);
      assert.equal(vm.datastoreId, local(a).id);
      const allocs = await f.db.em().find(Allocation, { vmId });
      assert.deepEqual(allocs.map((x) => `${x.hostId}:${x.kind}`), [`${a}:vm`]);
      // the source's copy job is gone: no block job left on the running VM
      await f.assertNoDiskJobs(a, vmId);
      const before = await f.heartbeat(a, vmId);
      await waitFor(`the guest still counting on ${a}`, async () => (await f.heartbeat(a, vmId)) > before);
      await assertConsistent(f);
    }

    test(`completes: the guest keeps counting on ${b}, its disk content and seed arrived, ${a} holds nothing`, async () => {
      const { vmId, result } = await provisionOnLocal();
      try {
        const ref = await writePattern(vmId, '8M');
        await assertSameContent(result.diskPaths[0]!, ref);
        const h = await migrate({ vmId, targetHostId: b, overrides: { maxBandwidthBytesPerSec: 512 * MiB } });
        const atA = await f.heartbeat(a, vmId);
        const r = await outcome<MigrationResult>(h);
        assert.ok(r.ok, !r.ok ? r.message : '');
        assert.deepEqual(await f.copies(vmId), [b]);
        assert.ok((await f.heartbeat(b, vmId)) >= atA, `the counter continued from where it was on ${a}`);
        const later = await f.heartbeat(b, vmId);
        await waitFor(`the guest counting on ${b}`, async () => (await f.heartbeat(b, vmId)) > later);
        const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
        assert.equal(vm.hostId, b);
        assert.equal(vm.datastoreId, local(b).id);
        assert.ok(vm.diskPaths.every((p) => path.dirname(p) === local(b).path), `disks on ${b}: ${vm.diskPaths.join(', ')}`);
        await assertSameContent(vm.diskPaths[0]!, ref);
        assert.equal(path.dirname(vm.seedPath ?? ''), local(b).path, 'the seed moved too');
        assert.deepEqual(await f.driver(b).vmStatus(vmId).then((s) => s?.spec.disks), vm.diskPaths, `${b} runs the VM on its own copies`);
        for (const p of result.diskPaths) await assert.rejects(fs.access(p), `source disk ${p} deleted`);
        assert.deepEqual(await filesOn(a, vmId), [], `${a} holds no file of the VM`);
        await f.assertNothingOn(a, vmId);
        const allocs = await f.db.em().find(Allocation, { vmId });
        assert.deepEqual(allocs.map((x) => `${x.hostId}:${x.kind}:${x.datastoreId}`), [`${b}:vm:${local(b).id}`]);
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.ok(p.disks && p.disks.inSync && p.disks.totalBytes > 0, `disk progress: ${JSON.stringify(p.disks)}`);
        await f.assertNoDiskJobs(b, vmId);
        await assertConsistent(f);
        console.log(`# ${f.kind} copyDisks migration: downtime ${r.value.downtimeMs} ms, disks ${(p.disks.totalBytes / MiB).toFixed(0)} MiB`);
      } finally {
        await cleanup(vmId);
      }
    });

    test(`destination QEMU killed while the disks are copied: rolled back, ${a} keeps its disks, ${b} holds no copy`, async () => {
      const { vmId, result } = await provisionOnLocal();
      try {
        // a copy capped at 8 MiB/s takes seconds (the disk mirror's own cap on QEMU; on libvirt the
        // migration's bandwidth caps the disk copy inside the job too)
        const ref = await writePattern(vmId, '24M');
        const h = await migrate({ vmId, targetHostId: b, diskMirrorBandwidthBytesPerSec: 8 * MiB, policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 8 * MiB, maxRounds: 1000 } });
        await waitFor('the disk copy under way', async () => {
          const p: MigrationProgress = await h.query(migrationProgressQuery);
          assert.equal(p.state, 'running', p.error);
          return p.disks !== undefined && p.disks.copiedBytes > 0 && !p.disks.inSync && p;
        });
        assert.ok((await filesOn(b, vmId)).length > 0, `${b} holds the copies being filled`);
        await f.killQemu(b, vmId);
        const r = await outcome(h);
        assert.equal(r.ok, false);
        const op = await operationOf(h);
        assert.equal(op.state, 'rolled-back', op.error ?? '');
        assert.match(op.error ?? '', o.diskCopyFailure);
        await assertRolledBack(vmId, result);
        await assertSameContent(result.diskPaths[0]!, ref);
      } finally {
        await cleanup(vmId);
      }
    });

    test('destination QEMU killed during the memory pre-copy (disks in sync): rolled back the same way', async () => {
      const { vmId, result } = await provisionOnLocal();
      try {
        const ref = await writePattern(vmId, '1M');
        // 8 MiB/s: the memory of a guest that rewrites 16 MiB does not converge. On libvirt the
        // migration's bandwidth also caps the disk copy before it (1 GiB: about two minutes)
        const h = await migrate({ vmId, targetHostId: b, policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 8 * MiB, maxRounds: 1000 } });
        let last: MigrationProgress | undefined;
        await waitFor('memory pre-copy under way with the disks in sync', async () => {
          const p: MigrationProgress = (last = await h.query(migrationProgressQuery));
          assert.equal(p.state, 'running', p.error);
          return p.stage === 'pre-copy' && p.disks?.inSync === true && p.progress.transferredBytes > 0 && p;
        }, 420_000).catch((e: Error) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
        await f.killQemu(b, vmId);
        const r = await outcome(h);
        assert.equal(r.ok, false);
        const op = await operationOf(h);
        assert.equal(op.state, 'rolled-back', op.error ?? '');
        await assertRolledBack(vmId, result);
        await assertSameContent(result.diskPaths[0]!, ref);
      } finally {
        await cleanup(vmId);
      }
    });
  });
}
