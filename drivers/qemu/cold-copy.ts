// Cold migration's copy on qemu hosts: the source lists a stopped VM's home (spec.json, NVRAM,
// logs, disks, seed) with sizes and sha256; the TARGET pulls the files into its own datastore and
// VM folder (hosts here are folders on one machine, so the source paths are readable; across
// machines this is where an NBD export or an ssh stream would go).
//
// Resumable by design: `qemu-img convert` cannot continue an interrupted copy, so a disk whose
// backing chain is kept is copied as qcow2 FILE BYTES by the chunked copier below (a qcow2 file is
// position independent: its backing reference is an absolute path in the header, valid on the
// target when the base is reachable there). It writes `.<name>.cold-partial` with explicit byte
// offsets, fdatasyncs at every checkpoint and only then reports the checkpoint, so the offset a
// retry gets from the activity's heartbeat details is always on disk; the retry truncates the
// partial to that offset and continues. Flattening rewrites the image (`qemu-img convert`), which
// restarts from zero after a crash; it is verified with `qemu-img compare` instead of sha256.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import {
  DriverError,
  baseName,
  copySizeOf,
  type ColdCopiedFile,
  type ColdCopyOptions,
  type ColdCopyProgress,
  type ColdCopyRequest,
  type ColdCopyResult,
  type VmHomeFile,
  type VmHomeManifest,
  type VmRuntime,
  type VmSpec,
} from '../hypervisor.js';
import { datastore, type HostConfig } from './host.js';
import { abortReason, imgConvert, imgInfo, isDiskFormat, qemuImg } from './img.js';
import type { VmStore } from './vm-store.js';

const CHUNK = 1024 * 1024;
/** fdatasync + checkpoint every this many bytes or this often, whichever comes first */
const CHECKPOINT_BYTES = 8 * CHUNK;
const CHECKPOINT_MS = 500;
const NVRAM = 'nvram.fd';

/** the window's budget ran out at a checkpoint: the copy returns incomplete and goes on next window */
class OutOfBudget extends Error {}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function size(file: string): Promise<number | undefined> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return undefined;
  }
}

export function createColdCopy(cfg: HostConfig, store: VmStore, status: (vmId: string) => Promise<VmRuntime | null>) {
  async function describeVmHome(vmId: string): Promise<VmHomeManifest> {
    const vm = await status(vmId);
    if (!vm) throw new DriverError(`vm "${vmId}" is not defined on host "${cfg.hostId}"`, 'NOT_FOUND', true);
    if (vm.state === 'running' || vm.state === 'paused') throw new DriverError(`vm "${vmId}" is ${vm.state} on "${cfg.hostId}": stop it before copying its home`, 'INVALID_STATE', true);
    const p = store.vmPaths(vmId);
    const files: VmHomeFile[] = [];
    const add = async (kind: VmHomeFile['kind'], file: string) => {
      const n = await size(file);
      if (n === undefined) throw new DriverError(`${kind} file ${file} of vm "${vmId}" is missing`, 'NOT_FOUND', true);
      const f: VmHomeFile = { kind, path: file, sizeBytes: n, sha256: await sha256File(file) };
      if (kind === 'disk') {
        const info = await imgInfo(cfg.qemuImgBinary, file);
        if (isDiskFormat(info.format)) f.format = info.format;
        f.virtualSizeBytes = info['virtual-size'];
        const backing = info['full-backing-filename'] ?? info['backing-filename'];
        if (backing) f.backingPath = backing;
      }
      files.push(f);
    };
    await add('config', p.spec);
    if ((await size(path.join(p.dir, NVRAM))) !== undefined) await add('nvram', path.join(p.dir, NVRAM));
    for (const n of (await fs.readdir(p.dir)).sort()) if (/\.log$/.test(n)) await add('log', path.join(p.dir, n));
    for (const d of vm.spec.disks) await add('disk', d);
    if (vm.spec.seedPath) await add('seed', vm.spec.seedPath);
    return { vmId, hostId: cfg.hostId, files, totalBytes: files.reduce((s, f) => s + (f.kind === 'config' ? 0 : f.sizeBytes), 0) };
  }

  /** Where a source file goes on this host. */
  function targetOf(req: Pick<ColdCopyRequest, 'vmId' | 'targetDatastoreId'>, f: VmHomeFile): string {
    const dir = store.vmPaths(req.vmId).dir;
    if (f.kind === 'nvram') return path.join(dir, NVRAM);
    // QEMU truncates serial.log when the VM starts on the target: the source's log is kept beside it
    if (f.kind === 'log') return path.join(dir, `prev-${baseName(f.path)}`);
    return path.join(datastore(cfg, req.targetDatastoreId).path, baseName(f.path));
  }
  const partialOf = (target: string) => path.join(path.dirname(target), `.${path.basename(target)}.cold-partial`);

  async function receiveVmHome(req: ColdCopyRequest, opts: ColdCopyOptions = {}): Promise<ColdCopyResult> {
    const ds = datastore(cfg, req.targetDatastoreId);
    await fs.mkdir(ds.path, { recursive: true });
    await fs.mkdir(store.vmPaths(req.vmId).dir, { recursive: true });
    const started = Date.now();
    const data = req.files.filter((f) => f.kind !== 'config');
    const totalBytes = data.reduce((s, f) => s + copySizeOf(f, req.flatten), 0);
    const ckpt: ColdCopyProgress['checkpoint'] = { files: {} };
    const perFile = new Map(data.map((f) => [f.path, 0]));
    let resumedFromBytes = 0;
    let written = 0;
    let filesDone = 0;
    let windowStart = Date.now();
    let windowBytes = 0;
    let rate = 0;

    let last: ColdCopyProgress | undefined;
    const overBudget = () => req.budgetMs !== undefined && Date.now() - started >= req.budgetMs;
    const report = (file: string) => {
      const doneBytes = [...perFile.values()].reduce((s, n) => s + n, 0);
      last = { file, doneBytes, totalBytes, filesDone, filesTotal: data.length, throughputBytesPerSec: rate, resumedFromBytes, perFile: data.map((f) => ({ path: f.path, doneBytes: perFile.get(f.path)!, totalBytes: copySizeOf(f, req.flatten) })), checkpoint: structuredClone(ckpt) };
      opts.onProgress?.(last);
    };
    const account = (n: number) => {
      written += n;
      windowBytes += n;
      const dt = Date.now() - windowStart;
      if (dt >= 1000) {
        rate = Math.round((windowBytes * 1000) / dt);
        windowStart = Date.now();
        windowBytes = 0;
      }
    };
    /** bandwidth cap: sleep until the bytes written this attempt fit the budget */
    const throttle = async () => {
      const cap = req.maxBandwidthBytesPerSec;
      if (!cap) return;
      const ahead = (written * 1000) / cap - (Date.now() - started);
      if (ahead > 0) await new Promise((r) => setTimeout(r, Math.min(ahead, 1000)));
    };

    async function copyBytes(f: VmHomeFile, target: string): Promise<void> {
      const partial = partialOf(target);
      const prior = req.resumeFrom?.files[f.path];
      const have = await size(partial);
      let pos = prior && !prior.complete && have !== undefined ? Math.min(prior.doneBytes, have) : 0;
      resumedFromBytes += pos;
      const src = await fs.open(f.path, 'r');
      const dst = await fs.open(partial, pos > 0 ? 'r+' : 'w');
      try {
        await dst.truncate(pos);
        const buf = Buffer.allocUnsafe(CHUNK);
        let sinceSync = 0;
        let lastSync = Date.now();
        perFile.set(f.path, pos);
        for (;;) {
          if (opts.signal?.aborted) throw abortReason(opts.signal, `cold copy of ${f.path}`);
          const { bytesRead } = await src.read(buf, 0, CHUNK, pos);
          if (bytesRead === 0) break;
          await dst.write(buf, 0, bytesRead, pos);
          pos += bytesRead;
          sinceSync += bytesRead;
          account(bytesRead);
          if (sinceSync >= CHECKPOINT_BYTES || Date.now() - lastSync >= CHECKPOINT_MS) {
            await dst.datasync(); // the checkpoint is reported only once its bytes are on disk
            ckpt.files[f.path] = { doneBytes: pos, complete: false };
            perFile.set(f.path, pos);
            sinceSync = 0;
            lastSync = Date.now();
            report(f.path);
            if (overBudget()) throw new OutOfBudget();
          }
          await throttle();
        }
        if (pos !== f.sizeBytes) throw new DriverError(`source ${f.path} is ${pos} bytes, the manifest says ${f.sizeBytes}: it changed since it was listed`, 'INVALID_STATE', true);
        await dst.sync();
      } finally {
        await src.close();
        await dst.close();
      }
      await fs.rename(partial, target);
    }

    async function flattenDisk(f: VmHomeFile, target: string): Promise<void> {
      const partial = partialOf(target);
      await fs.rm(partial, { force: true }); // convert cannot resume: start over
      await imgConvert(cfg.qemuImgBinary, { src: f.path, srcFormat: f.format, dst: partial, dstFormat: 'qcow2' }, {
        signal: opts.signal,
        totalBytes: copySizeOf(f, true),
        onProgress: (p) => {
          perFile.set(f.path, Math.floor((p.fraction ?? 0) * copySizeOf(f, true)));
          report(f.path);
        },
      });
      await fs.rename(partial, target);
    }

    const copied: ColdCopiedFile[] = [];
    const rename = new Map<string, string>();
    const incomplete = (): ColdCopyResult => ({ complete: false, checkpoint: structuredClone(ckpt), ...(last ? { progress: last } : {}), files: [], spec: req.spec, totalBytes, copiedBytes: written, resumedFromBytes, durationMs: Date.now() - started });
    // files completed in earlier windows or attempts count as done from the start
    for (const [p, c] of Object.entries(req.resumeFrom?.files ?? {})) if (c.complete && perFile.has(p)) ckpt.files[p] = c;
    for (const f of data) {
      if (overBudget()) return incomplete();
      const target = targetOf(req, f);
      rename.set(f.path, target);
      if (path.resolve(target) === path.resolve(f.path)) throw new DriverError(`target ${target} is the source file itself`, 'INVALID_ARGUMENT', true);
      const flatten = f.kind === 'disk' && req.flatten && f.backingPath !== undefined;
      const prior = req.resumeFrom?.files[f.path];
      const finalSize = await size(target);
      // complete before the crash: renamed into place after its last fsync
      const already = finalSize !== undefined && (prior?.complete || !flatten) && (flatten || finalSize === f.sizeBytes);
      try {
        if (already) resumedFromBytes += f.sizeBytes;
        else if (flatten) await flattenDisk(f, target);
        else await copyBytes(f, target);
      } catch (err) {
        if (err instanceof OutOfBudget) return incomplete();
        throw err;
      }
      perFile.set(f.path, copySizeOf(f, flatten));
      ckpt.files[f.path] = { doneBytes: copySizeOf(f, flatten), complete: true };
      filesDone++;
      report(f.path);
      copied.push({ kind: f.kind, source: f.path, target, sizeBytes: 0, sha256: '', flattened: flatten });
    }
    // verification reads every copy back from the target's disk (not from what was written)
    for (const c of copied) {
      c.sizeBytes = (await size(c.target))!;
      c.sha256 = await sha256File(c.target);
      if (c.flattened) c.contentVerified = await identical(c.source, c.target);
    }
    const spec: VmSpec = { ...req.spec, disks: req.spec.disks.map((d) => rename.get(d) ?? d) };
    if (req.spec.seedPath) spec.seedPath = rename.get(req.spec.seedPath) ?? req.spec.seedPath;
    return { complete: true, checkpoint: structuredClone(ckpt), ...(last ? { progress: last } : {}), files: copied, spec, totalBytes, copiedBytes: written, resumedFromBytes, durationMs: Date.now() - started };
  }

  async function identical(a: string, b: string): Promise<boolean> {
    try {
      return (await qemuImg(cfg.qemuImgBinary, ['compare', '-q', a, b])) !== undefined;
    } catch {
      return false; // exit 1: images differ
    }
  }

  async function discardVmHome(req: Pick<ColdCopyRequest, 'vmId' | 'files' | 'targetDatastoreId'>): Promise<void> {
    for (const f of req.files) {
      if (f.kind === 'config') continue;
      const target = targetOf(req, f);
      if (path.resolve(target) === path.resolve(f.path)) continue; // never the source itself
      await fs.rm(partialOf(target), { force: true });
      await fs.rm(target, { force: true });
    }
    // a folder holding only copied logs / NVRAM (not registered) goes too
    const dir = store.vmPaths(req.vmId).dir;
    if (!(await store.readSpec(req.vmId))) await fs.rm(dir, { recursive: true, force: true });
  }

  return { describeVmHome, receiveVmHome, discardVmHome };
}
