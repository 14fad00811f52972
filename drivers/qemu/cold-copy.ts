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
//
// One read of the source, not three: the copier hashes the source bytes as it reads them, and
// reads every chunk back from the target file right after writing it and compares it with the
// source's bytes, so the verification needs no pass of its own and the source is listed without
// hashing (describeVmHome checksums: false). The target's sha256 is then the source's — every one
// of its bytes, as its file returns them, compared equal — and after a difference it is computed
// from the target file itself, so the verification reports the mismatch. Reads run one chunk
// ahead, the hashing runs in a thread of its own (sha256-thread.ts) and the fdatasync of a
// checkpoint runs while the next chunks are written (a checkpoint is reported only once its
// fdatasync returned, and only for bytes written before it began), so the disk keeps writing
// while the copier hashes and compares. Across windows the hash state stays in
// this process, keyed by the partial file and its offset; a retry in a fresh process (the agent
// died) rebuilds it from the files: the checkpointed prefix of the source hashed again and
// compared with the partial's.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
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
import { createSha256Thread, type ThreadedHash } from './sha256-thread.js';
import type { VmStore } from './vm-store.js';

const MiB = 1024 * 1024;
/** bytes per read/write: few syscalls, and small enough that a chunk's read-back stays in cache */
const CHUNK = 4 * MiB;
/** fdatasync + checkpoint every this many bytes or this often, whichever comes first */
const CHECKPOINT_BYTES = 16 * MiB;
const CHECKPOINT_MS = 500;
const NVRAM = 'nvram.fd';

/** the window's budget ran out at a checkpoint: the copy returns incomplete and goes on next window */
class OutOfBudget extends Error {}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: CHUNK })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Offset of the first byte where `a` and `b` differ over `n` bytes, or -1. */
function firstDifference(a: Buffer, b: Buffer, n: number): number {
  if (a.subarray(0, n).equals(b.subarray(0, n))) return -1;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** A chunk buffer that owns its memory, so the hashing thread can take it over. */
const chunkBuffer = () => Buffer.allocUnsafeSlow(CHUNK);

/**
 * Bytes [0, end) of `src` fed into `h` and compared with the same bytes of `dst`: the offset of the
 * first difference (or where `dst` ends early), else undefined.
 */
async function hashAndCompare(src: FileHandle, dst: FileHandle, h: ThreadedHash, end: number, b: Buffer): Promise<number | undefined> {
  let differs: number | undefined;
  for (let pos = 0; pos < end; ) {
    const a = chunkBuffer();
    const want = Math.min(a.length, end - pos);
    const n = await readAll(src, a, want, pos);
    if (n < want) throw new DriverError(`source is ${pos + n} bytes, shorter than the ${end} already copied`, 'INVALID_STATE', true);
    if (differs === undefined) {
      const m = await readAll(dst, b, n, pos);
      const at = firstDifference(a, b, m);
      if (at >= 0) differs = pos + at;
      else if (m < n) differs = pos + m;
    }
    await h.update(a, n); // `a` now belongs to the hashing thread
    pos += n;
  }
  return differs;
}

async function writeAll(fh: FileHandle, buf: Buffer, n: number, pos: number): Promise<void> {
  for (let off = 0; off < n; ) off += (await fh.write(buf, off, n - off, pos + off)).bytesWritten;
}

async function readAll(fh: FileHandle, buf: Buffer, n: number, pos: number): Promise<number> {
  let off = 0;
  while (off < n) {
    const { bytesRead } = await fh.read(buf, off, n - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off;
}

/** A file copy's state at `pos`: bytes [0, pos) of the source hashed and compared with the target's. */
interface HashState {
  source: string;
  sourceSize: number;
  pos: number;
  src: ThreadedHash;
  /** where the target first differed from the source */
  differsAt?: number;
}

/** A file this process copied completely, with both checksums (for a later window's result). */
interface CopiedDigests {
  source: string;
  sourceSize: number;
  size: number;
  sourceSha256: string;
  sha256: string;
  differsAt?: number;
}

async function size(file: string): Promise<number | undefined> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return undefined;
  }
}

export function createColdCopy(cfg: HostConfig, store: VmStore, status: (vmId: string) => Promise<VmRuntime | null>) {
  /** hash states between windows, by partial file; digests of files copied whole, by target file */
  const hashing = new Map<string, HashState>();
  const digests = new Map<string, CopiedDigests>();
  const sha256 = createSha256Thread();

  async function describeVmHome(vmId: string, opts: { checksums?: boolean } = {}): Promise<VmHomeManifest> {
    const checksums = opts.checksums !== false;
    const vm = await status(vmId);
    if (!vm) throw new DriverError(`vm "${vmId}" is not defined on host "${cfg.hostId}"`, 'NOT_FOUND', true);
    if (vm.state === 'running' || vm.state === 'paused') throw new DriverError(`vm "${vmId}" is ${vm.state} on "${cfg.hostId}": stop it before copying its home`, 'INVALID_STATE', true);
    const p = store.vmPaths(vmId);
    const files: VmHomeFile[] = [];
    const add = async (kind: VmHomeFile['kind'], file: string) => {
      const n = await size(file);
      if (n === undefined) throw new DriverError(`${kind} file ${file} of vm "${vmId}" is missing`, 'NOT_FOUND', true);
      const f: VmHomeFile = { kind, path: file, sizeBytes: n, sha256: checksums ? await sha256File(file) : '' };
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

    async function copyBytes(f: VmHomeFile, target: string): Promise<CopiedDigests> {
      const partial = partialOf(target);
      const prior = req.resumeFrom?.files[f.path];
      const have = await size(partial);
      let pos = prior && !prior.complete && have !== undefined ? Math.min(prior.doneBytes, have) : 0;
      resumedFromBytes += pos;
      const src = await fs.open(f.path, 'r');
      const dst = await fs.open(partial, pos > 0 ? 'r+' : 'w+');
      const back = Buffer.allocUnsafe(CHUNK);
      let reading: Promise<{ bytesRead: number; buffer: Buffer }> | undefined;
      let syncing: Promise<void> | undefined;
      let syncFailed: unknown;
      let hs: HashState | undefined;
      let keep = false;
      try {
        await dst.truncate(pos);
        // the hash of [0, pos): kept by this process from the previous window, else hashed again
        hs = hashing.get(partial);
        hashing.delete(partial);
        if (!hs || hs.pos !== pos || hs.source !== f.path || hs.sourceSize !== f.sizeBytes) {
          hs?.src.drop();
          hs = { source: f.path, sourceSize: f.sizeBytes, pos, src: sha256.hash() };
          const at = await hashAndCompare(src, dst, hs.src, pos, back);
          if (at !== undefined) hs.differsAt = at;
        }
        const h = hs;
        let sinceCkpt = 0;
        let lastCkpt = Date.now();
        perFile.set(f.path, pos);
        /** fdatasync of everything written so far, in the background; the checkpoint once it returned */
        const checkpoint = () => {
          const upTo = pos;
          sinceCkpt = 0;
          lastCkpt = Date.now();
          syncing = dst.datasync().then(
            () => {
              ckpt.files[f.path] = { doneBytes: upTo, complete: false };
              perFile.set(f.path, upTo);
              report(f.path);
            },
            (err: unknown) => void (syncFailed = err),
          );
          void syncing.finally(() => (syncing = undefined));
        };
        // every chunk in a buffer of its own: once written and compared it goes to the hashing thread
        reading = src.read(chunkBuffer(), 0, CHUNK, pos);
        for (;;) {
          if (opts.signal?.aborted) throw abortReason(opts.signal, `cold copy of ${f.path}`);
          if (syncFailed) throw syncFailed;
          const chunk: { bytesRead: number; buffer: Buffer } = await reading!;
          const { bytesRead: n, buffer: buf } = chunk;
          reading = undefined;
          if (n === 0) break;
          reading = src.read(chunkBuffer(), 0, CHUNK, pos + n); // the next chunk while this one is written
          await writeAll(dst, buf, n, pos);
          // what the target's file returns, compared with what was read from the source
          if (h.differsAt === undefined) {
            const m = await readAll(dst, back, n, pos);
            const at = firstDifference(buf, back, m);
            if (at >= 0) h.differsAt = pos + at;
            else if (m < n) h.differsAt = pos + m;
          }
          await h.src.update(buf, n);
          pos += n;
          sinceCkpt += n;
          account(n);
          if (!syncing && (sinceCkpt >= CHECKPOINT_BYTES || Date.now() - lastCkpt >= CHECKPOINT_MS)) checkpoint();
          if (overBudget()) {
            // the window ends at a checkpoint of everything written, hash states kept for the next
            await reading?.catch(() => undefined);
            reading = undefined;
            await syncing;
            if (syncFailed) throw syncFailed;
            checkpoint();
            await syncing;
            if (syncFailed) throw syncFailed;
            hashing.set(partial, { ...h, pos });
            keep = true;
            throw new OutOfBudget();
          }
          await throttle();
        }
        if (pos !== f.sizeBytes) throw new DriverError(`source ${f.path} is ${pos} bytes, the manifest says ${f.sizeBytes}: it changed since it was listed`, 'INVALID_STATE', true);
        await syncing;
        if (syncFailed) throw syncFailed;
        await dst.sync();
        keep = true; // digest() finishes the hash
        const sourceSha256 = await h.src.digest();
        await fs.rename(partial, target);
        // equal byte for byte: the target's checksum is the source's; else computed from the target
        return { source: f.path, sourceSize: f.sizeBytes, size: pos, sourceSha256, sha256: h.differsAt === undefined ? sourceSha256 : await sha256File(target), ...(h.differsAt !== undefined ? { differsAt: h.differsAt } : {}) };
      } finally {
        if (!keep) hs?.src.drop();
        await reading?.catch(() => undefined);
        await syncing?.catch(() => undefined);
        await src.close();
        await dst.close();
      }
    }

    /** A file copied completely before this call: its digests from this process, else from both files now. */
    async function digestsOf(f: VmHomeFile, target: string): Promise<CopiedDigests> {
      const d = digests.get(target);
      const sizeNow = await size(target);
      if (d && d.source === f.path && d.sourceSize === f.sizeBytes && d.size === sizeNow) return d;
      const src = await fs.open(f.path, 'r');
      const dst = await fs.open(target, 'r');
      try {
        const h = sha256.hash();
        let differsAt: number | undefined;
        try {
          differsAt = await hashAndCompare(src, dst, h, f.sizeBytes, Buffer.allocUnsafe(CHUNK));
        } catch (err) {
          h.drop();
          throw err;
        }
        if (differsAt === undefined && sizeNow !== f.sizeBytes) differsAt = Math.min(sizeNow ?? 0, f.sizeBytes);
        const sourceSha256 = await h.digest();
        return { source: f.path, sourceSize: f.sizeBytes, size: sizeNow ?? 0, sourceSha256, sha256: differsAt === undefined ? sourceSha256 : await sha256File(target) };
      } finally {
        await src.close();
        await dst.close();
      }
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
    // a window returns early only after it copied something, so even a tiny budget makes progress
    let worked = false;
    for (const f of data) {
      if (worked && overBudget()) return incomplete();
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
        else digests.set(target, await copyBytes(f, target));
        worked ||= !already;
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
    // verification: the size on the target's disk, the sha256 of the bytes read back from the
    // target (while copying, or now for a file copied by an earlier process) and of the source's
    for (const c of copied) {
      c.sizeBytes = (await size(c.target))!;
      if (c.flattened) {
        c.sha256 = await sha256File(c.target);
        c.contentVerified = await identical(c.source, c.target);
        continue;
      }
      const d = await digestsOf(data.find((x) => x.path === c.source)!, c.target);
      c.sha256 = d.sha256;
      c.sourceSha256 = d.sourceSha256;
      digests.delete(c.target);
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
      hashing.get(partialOf(target))?.src.drop();
      hashing.delete(partialOf(target));
      digests.delete(target);
    }
    // a folder holding only copied logs / NVRAM (not registered) goes too
    const dir = store.vmPaths(req.vmId).dir;
    if (!(await store.readSpec(req.vmId))) await fs.rm(dir, { recursive: true, force: true });
  }

  return { describeVmHome, receiveVmHome, discardVmHome };
}
