// The qemu driver's cold copy (drivers/qemu/cold-copy.ts) on its own, without Temporal: a defined
// VM's home listed without checksums and pulled by another host's driver in many short windows.
// The copy hashes the source as it reads it and the target as it reads each chunk back, so the
// result's two sha256 must equal sha256 of the real files; the hash states carried between windows
// in the process, and rebuilt from the files by a fresh driver (an agent that died), must give the
// same; a partial file damaged before a fresh driver resumes from it must show as a mismatch.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { coldCopyMismatches, type ColdCopyCheckpoint, type ColdCopyResult, type VmHomeManifest } from '../../domain/cold.js';
import type { VmSpec } from '../../domain/hypervisor.js';
import { createQemuDriver, type QemuDriver } from '../../drivers/qemu/index.js';
import { buildGuest, type GuestImages } from '../../workers/lab/guest-images.js';
import { qemuSkipReason, sweep, tempRoot } from '../helpers/qemu-env.js';

const MiB = 1024 * 1024;

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

describe('qemu cold copy: checksums while copying, windows, resume', { skip: qemuSkipReason }, () => {
  let root: string;
  let guest: GuestImages;
  let a: QemuDriver;
  const drivers: QemuDriver[] = [];
  const hostB = () => {
    const d = createQemuDriver({ hostId: 'cb', stateDir: path.join(root, 'cb'), datastores: [{ id: 'dsb', path: path.join(root, 'dsb'), shared: false }] });
    drivers.push(d);
    return d;
  };

  before(async () => {
    root = await tempRoot('fcc-');
    guest = await buildGuest({ kind: 'halt' });
    a = createQemuDriver({ hostId: 'ca', stateDir: path.join(root, 'ca'), datastores: [{ id: 'dsa', path: path.join(root, 'dsa'), shared: false }] });
    drivers.push(a);
  });
  after(async () => {
    for (const d of drivers) await d.close().catch(() => undefined);
    if (root) await sweep(root);
  });

  /** A defined (never started) VM on ca whose linked clone holds `dataMiB` of a pattern. */
  async function vmOnA(vmId: string, dataMiB: number): Promise<{ spec: VmSpec; manifest: VmHomeManifest }> {
    const disk = await a.createDisk({ name: `${vmId}-root`, datastoreId: 'dsa', sizeBytes: 64 * MiB, source: { kind: 'template', imagePath: guest.qcow2, linked: true } });
    await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x6b 1M ${dataMiB}M`, disk.path]);
    const spec: VmSpec = { vmId, name: vmId, cpus: 1, memoryBytes: 64 * MiB, disks: [disk.path], cpuFeatures: [] };
    await a.defineVm(spec);
    const manifest = await a.describeVmHome(vmId, { checksums: false });
    assert.ok(manifest.files.every((f) => f.sha256 === ''), 'listed without a hashing pass');
    return { spec, manifest };
  }

  /** Windows of ~one chunk each until complete; `between(n)` runs after window n and may swap the driver. */
  async function copyInWindows(spec: VmSpec, manifest: VmHomeManifest, pick: (window: number) => QemuDriver, between?: (window: number, ckpt: ColdCopyCheckpoint) => Promise<void>) {
    let checkpoint: ColdCopyCheckpoint | undefined;
    for (let window = 1; window < 500; window++) {
      const r: ColdCopyResult = await pick(window).receiveVmHome({ vmId: spec.vmId, spec, files: manifest.files, targetDatastoreId: 'dsb', flatten: false, budgetMs: 1, ...(checkpoint ? { resumeFrom: checkpoint } : {}) });
      if (r.complete) return { result: r, windows: window };
      checkpoint = r.checkpoint;
      await between?.(window, checkpoint);
    }
    throw new Error('the copy never completed');
  }

  test('many windows in one process: both checksums equal the real files, sizes equal', async () => {
    const { spec, manifest } = await vmOnA('vm-cc1', 40);
    const b = hostB();
    const { result, windows } = await copyInWindows(spec, manifest, () => b);
    assert.ok(windows > 3, `copied in ${windows} windows`);
    assert.deepEqual(coldCopyMismatches(manifest.files, result.files), []);
    for (const c of result.files) {
      assert.equal(c.sourceSha256, await sha256(c.source), `${c.source}: source checksum`);
      assert.equal(c.sha256, await sha256(c.target), `${c.target}: target checksum`);
      assert.equal(c.sizeBytes, (await fs.stat(c.source)).size);
    }
    await b.discardVmHome({ vmId: spec.vmId, files: manifest.files, targetDatastoreId: 'dsb' });
  });

  test('a fresh driver every window (the agent restarted): the hash states are rebuilt from the files, same checksums', async () => {
    const { spec, manifest } = await vmOnA('vm-cc2', 24);
    const { result, windows } = await copyInWindows(spec, manifest, () => hostB());
    assert.ok(windows > 3, `copied in ${windows} windows`);
    assert.deepEqual(coldCopyMismatches(manifest.files, result.files), []);
    const disk = result.files.find((c) => c.kind === 'disk')!;
    assert.equal(disk.sha256, await sha256(disk.source));
    assert.ok(result.resumedFromBytes > 0);
    await hostB().discardVmHome({ vmId: spec.vmId, files: manifest.files, targetDatastoreId: 'dsb' });
  });

  test('a partial file damaged before a fresh driver resumes from it: verification reports the mismatch', async () => {
    const { spec, manifest } = await vmOnA('vm-cc3', 24);
    const disk = manifest.files.find((f) => f.kind === 'disk')!;
    const partial = path.join(root, 'dsb', `.${path.basename(disk.path)}.cold-partial`);
    let damaged = false;
    const { result } = await copyInWindows(spec, manifest, () => hostB(), async (_w, ckpt) => {
      const done = ckpt.files[disk.path];
      if (damaged || !done || done.complete || done.doneBytes < 8 * MiB) return;
      const fh = await fs.open(partial, 'r+');
      await fh.write(Buffer.from('damage'), 0, 6, 2 * MiB); // inside the checkpointed prefix
      await fh.close();
      damaged = true;
    });
    assert.ok(damaged, 'the partial was damaged mid-copy');
    const bad = coldCopyMismatches(manifest.files, result.files);
    assert.equal(bad.length, 1, bad.join('; '));
    assert.match(bad[0]!, new RegExp(`${path.basename(disk.path)}.*on the target`));
    await hostB().discardVmHome({ vmId: spec.vmId, files: manifest.files, targetDatastoreId: 'dsb' });
  });
});
