// The driver's cold-migration calls on one simulated host. A VM's home is its definition (the
// "config", a virtual file: the spec as JSON), its disks and its seed. The target copies each disk
// or seed as a new row on its datastore whose end time is persisted first (the same progress
// model as copyDisk: piecewise linear at min(datastore throughput, link bandwidth, cap)), so a copy
// keeps going while the agent that started it is dead, and a retry waits for the same rows.
//
// Checksums: the simulator has no bytes, so a file's sha256 is taken over what it models as the
// file: its content identity (a seed's JSON, a disk's creation token) and its layout (format,
// sizes, backing file). A copy inherits its source's identity, so an exact copy has the same sha256;
// a flattened copy has a new layout and records the content digest it was made from.
import { createHash } from 'node:crypto';
import type { ColdCopyOptions, ColdCopyProgress, ColdCopyRequest, ColdCopyResult, ColdCopiedFile, VmHomeFile, VmHomeManifest, VmSpec } from '../hypervisor.js';
import { DriverError, baseName, copySizeOf } from '../hypervisor.js';
import { diskDone, diskPath } from './disks.js';
import type { SimHost } from './host.js';
import { attached, datastoreRow, diskRow, freeBytes, hostsOf, linkBandwidth } from './lookups.js';
import type { DiskRow } from './store.js';
import { invalid, notFound, safeName } from './validate.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const identity = (r: DiskRow) => r.content ?? `token:${r.token}`;

/** sha256 of a disk or seed row as the simulator models the file. */
export function fileSha256(r: DiskRow): string {
  return sha(JSON.stringify({ id: identity(r), format: r.format, virtual: r.virtual_size_bytes, actual: r.actual_size_bytes, backing: r.backing_path }));
}

/** Digest of the guest-visible content (the backing chain folded in). */
function contentDigest(h: SimHost, r: DiskRow): string {
  const id = identity(r);
  if (id.startsWith('flat:')) return id.slice(5);
  const base = r.backing_path ? (diskRow(h.store, r.backing_path) ? contentDigest(h, diskRow(h.store, r.backing_path)!) : `image:${r.backing_path}`) : '';
  return sha(`${base}|${id}|${r.virtual_size_bytes}`);
}

export function describeVmHome(h: SimHost, vmId: string): VmHomeManifest {
  safeName('vmId', vmId);
  return h.op('diskInfo', vmId, () => {
    const row = h.requireVm(vmId);
    if (row.state === 'running' || row.state === 'paused') throw new DriverError(`vm ${vmId} is ${row.state} on ${h.hostId}: stop it before describing its home`, 'INVALID_STATE', true);
    const spec = JSON.parse(row.spec) as VmSpec;
    const config = JSON.stringify(spec);
    const files: VmHomeFile[] = [{ kind: 'config', path: `sim-config://${h.hostId}/${vmId}`, sizeBytes: Buffer.byteLength(config), sha256: sha(config) }];
    for (const p of [...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])]) {
      const d = diskRow(h.store, p);
      if (!d) throw notFound(`disk ${p} of vm ${vmId} does not exist`);
      const f: VmHomeFile = { kind: d.kind === 'seed' ? 'seed' : 'disk', path: p, sizeBytes: d.actual_size_bytes, sha256: fileSha256(d), format: d.format as VmHomeFile['format'], virtualSizeBytes: d.virtual_size_bytes };
      if (d.backing_path) f.backingPath = d.backing_path;
      files.push(f);
    }
    return { vmId, hostId: h.hostId, files, totalBytes: files.reduce((s, f) => s + (f.kind === 'config' ? 0 : f.sizeBytes), 0) };
  });
}

function targetPathOf(req: Pick<ColdCopyRequest, 'targetDatastoreId'>, f: VmHomeFile): string {
  return diskPath(req.targetDatastoreId, baseName(f.path));
}

/** Starts (or finds) the copy row of one file; returns its path. One transaction. */
function beginFile(h: SimHost, req: ColdCopyRequest, f: VmHomeFile, peer: string | undefined): string {
  const target = targetPathOf(req, f);
  return h.op('copyDisk', req.vmId, (nowV) => {
    if (diskRow(h.store, target)) return target; // a retry finds its own copy (done or still being written)
    const src = diskRow(h.store, f.path);
    if (!src) throw notFound(`source ${f.path} of vm ${req.vmId} does not exist`);
    const ds = datastoreRow(h.store, req.targetDatastoreId)!;
    const flatten = src.backing_path !== null && req.flatten;
    const actual = flatten ? src.virtual_size_bytes : src.actual_size_bytes;
    const free = freeBytes(h.store, ds);
    if (src.virtual_size_bytes > free) throw new DriverError(`datastore ${ds.id} has ${free} bytes free, ${baseName(f.path)} needs ${src.virtual_size_bytes}`, 'INSUFFICIENT_SPACE', true);
    let rate = Math.min(ds.throughput_bytes_per_sec, datastoreRow(h.store, src.datastore_id)!.throughput_bytes_per_sec);
    if (peer) rate = Math.min(rate, linkBandwidth(h.store, h.hostId, peer));
    if (req.maxBandwidthBytesPerSec) rate = Math.min(rate, req.maxBandwidthBytesPerSec);
    const content = flatten ? `flat:${contentDigest(h, src)}` : identity(src);
    h.store.run(
      `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write,
         start_v, end_v, token, content, host_id, src_datastores, base_rate, rate, ckpt_v, ckpt_bytes)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`,
      target,
      baseName(f.path).replace(/\.(qcow2|iso|raw)$/, ''),
      ds.id,
      src.kind,
      src.format,
      src.virtual_size_bytes,
      actual,
      flatten ? null : src.backing_path,
      JSON.stringify({ datastoreId: ds.id, sizeBytes: src.virtual_size_bytes, source: { kind: 'cold-copy', sourcePath: f.path, flatten } }),
      actual,
      nowV,
      nowV + (actual * 1000) / rate,
      `cold-${req.vmId}-${nowV}`,
      content,
      h.hostId,
      JSON.stringify([src.datastore_id]),
      rate,
      rate,
      nowV,
    );
    return target;
  }, baseName(f.path).replace(/\.(qcow2|iso|raw)$/, ''));
}

export async function receiveVmHome(h: SimHost, req: ColdCopyRequest, opts: ColdCopyOptions = {}): Promise<ColdCopyResult> {
  safeName('vmId', req.vmId);
  safeName('targetDatastoreId', req.targetDatastoreId);
  const ds = datastoreRow(h.store, req.targetDatastoreId);
  if (!ds) throw notFound(`targetDatastoreId: datastore "${req.targetDatastoreId}" is not in the simulator`);
  if (!attached(h.store, ds.id, h.hostId)) throw invalid(`targetDatastoreId: datastore ${ds.id} is not attached to host ${h.hostId}`);
  const startedWall = Date.now();
  const data = req.files.filter((f) => f.kind !== 'config');
  const resumedFromBytes = data.reduce((s, f) => s + Math.min(req.resumeFrom?.files[f.path]?.doneBytes ?? 0, copySizeOf(f, req.flatten)), 0);
  const rename = new Map<string, string>();
  const copied: ColdCopiedFile[] = [];
  let done = 0;
  let last: ColdCopyProgress | undefined;
  const totalBytes = data.reduce((s, f) => s + copySizeOf(f, req.flatten), 0);
  const incomplete = (): ColdCopyResult => ({ complete: false, checkpoint: last?.checkpoint ?? { files: {} }, ...(last ? { progress: last } : {}), files: [], spec: req.spec, totalBytes, copiedBytes: 0, resumedFromBytes, durationMs: Date.now() - startedWall });
  for (const f of data) {
    const src = diskRow(h.store, f.path);
    const srcHost = src ? hostsOf(h.store, src.datastore_id).find((p) => p !== h.hostId && !attached(h.store, src.datastore_id, h.hostId)) : undefined;
    const target = beginFile(h, req, f, srcHost);
    rename.set(f.path, target);
    for (;;) {
      const row = diskRow(h.store, target);
      if (!row) throw new DriverError(`copy ${target} vanished (discarded by a compensation)`, 'HYPERVISOR');
      const nowV = h.sim.virtualNow();
      const fileDone = Math.floor(diskDone(row, nowV));
      const report = (complete: boolean) => {
        last = {
          file: f.path,
          doneBytes: done + fileDone,
          totalBytes,
          filesDone: copied.length,
          filesTotal: data.length,
          throughputBytesPerSec: row.rate,
          resumedFromBytes,
          perFile: data.map((x) => ({ path: x.path, doneBytes: x === f ? fileDone : copied.some((c) => c.source === x.path) ? copySizeOf(x, req.flatten) : 0, totalBytes: copySizeOf(x, req.flatten) })),
          checkpoint: { files: Object.fromEntries([...copied.map((c) => [c.source, { doneBytes: c.sizeBytes, complete: true }]), [f.path, { doneBytes: fileDone, complete }]]) },
        };
        opts.onProgress?.(last);
      };
      if (nowV >= row.end_v) {
        report(true);
        done += row.actual_size_bytes;
        copied.push({ kind: f.kind, source: f.path, target, sizeBytes: row.actual_size_bytes, sha256: fileSha256(row), flattened: row.backing_path !== (src?.backing_path ?? null), contentVerified: src ? contentDigest(h, row) === contentDigest(h, src) : false });
        break;
      }
      if (opts.signal?.aborted) {
        const err = new DriverError(`cold copy of ${req.vmId} aborted`, 'HYPERVISOR', true);
        err.name = 'AbortError';
        throw err;
      }
      report(false);
      if (req.budgetMs !== undefined && Date.now() - startedWall >= req.budgetMs) return incomplete();
      await h.sim.sleep(Math.max(0.01, Math.min(h.sim.pollMs, h.sim.wallFor(row.end_v - nowV))));
    }
  }
  const spec: VmSpec = { ...req.spec, disks: req.spec.disks.map((d) => rename.get(d) ?? d) };
  if (req.spec.seedPath) spec.seedPath = rename.get(req.spec.seedPath) ?? req.spec.seedPath;
  return { complete: true, checkpoint: last?.checkpoint ?? { files: {} }, ...(last ? { progress: last } : {}), files: copied, spec, totalBytes, copiedBytes: Math.max(0, done - resumedFromBytes), resumedFromBytes, durationMs: Date.now() - startedWall };
}

export function discardVmHome(h: SimHost, req: Pick<ColdCopyRequest, 'vmId' | 'files' | 'targetDatastoreId'>): void {
  safeName('vmId', req.vmId);
  h.op('deleteDisk', req.vmId, () => {
    for (const f of req.files) {
      if (f.kind === 'config') continue;
      const target = targetPathOf(req, f);
      if (target === f.path) continue; // never the source itself
      h.store.run("DELETE FROM disks WHERE path = ? AND spec LIKE '%\"cold-copy\"%'", target);
    }
  });
}

/** Reads what the simulator holds at a path (tests compare checksums of both sides). */
export function simFileSha256(h: SimHost, path: string): string | null {
  const r = diskRow(h.store, path);
  return r ? fileSha256(r) : null;
}
