// Disk rows as the cluster keeps them: sim:// paths, the progress of a copy at a virtual instant
// (piecewise linear from its last checkpoint), re-timing copies when slow-disk faults change, and
// the disks a copyDisks migration leaves on its destination. The driver's disk calls are in
// disk-ops.ts.
import type { VmSpec } from '../hypervisor.js';
import { slowFactor } from './faults.js';
import { diskRow } from './lookups.js';
import type { DiskRow, Store } from './store.js';
import { invalid } from './validate.js';

export const DISK_PATH = /^sim:\/\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\/(.+)$/;

export function diskPath(datastoreId: string, file: string): string {
  return `sim://${datastoreId}/${file}`;
}

export function parseDiskPath(path: string): { datastoreId: string; file: string } {
  const m = typeof path === 'string' ? DISK_PATH.exec(path) : null;
  if (!m) throw invalid(`path "${String(path)}" is not a simulator path (sim://<datastoreId>/<file>)`);
  return { datastoreId: m[1]!, file: m[2]! };
}

/** A disk the destination gets when a copyDisks migration completes. */
export interface DiskCopyPlan {
  sourcePath: string;
  targetPath: string;
  targetDatastoreId: string;
  name: string;
}

/** Bytes written of a disk at virtual time v (piecewise linear from its last checkpoint). */
export function diskDone(d: DiskRow, v: number): number {
  if (v >= d.end_v) return d.bytes_to_write;
  return Math.min(d.bytes_to_write, d.ckpt_bytes + (Math.max(v, d.ckpt_v) - d.ckpt_v) * d.rate / 1000);
}

/** After slow-disk faults change: copies in progress continue at their new rate from now. */
export function rescheduleDisks(store: Store, nowV: number): void {
  for (const d of store.all<DiskRow>('SELECT * FROM disks WHERE end_v > ? AND bytes_to_write > 0', nowV)) {
    const factor = slowFactor(store, [d.datastore_id, ...(JSON.parse(d.src_datastores) as string[])], d.host_id, nowV);
    const rate = d.base_rate / factor;
    if (rate === d.rate) continue;
    const done = diskDone(d, nowV);
    store.run(
      'UPDATE disks SET ckpt_v = ?, ckpt_bytes = ?, rate = ?, end_v = ? WHERE path = ?',
      nowV,
      done,
      rate,
      nowV + ((d.bytes_to_write - done) * 1000) / rate,
      d.path,
    );
  }
}

/** The planned copies appear on the destination (complete at nowV); returns the spec naming them. */
export function materializeDiskCopies(store: Store, plan: DiskCopyPlan[], spec: VmSpec, nowV: number): VmSpec {
  const rename = new Map<string, string>();
  for (const p of plan) {
    const src = diskRow(store, p.sourcePath);
    if (!src) continue;
    if (!diskRow(store, p.targetPath)) {
      store.run(
        `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write, start_v, end_v, token, content)
         VALUES (?, ?, ?, 'disk', ?, ?, ?, NULL, ?, 0, ?, ?, ?, NULL)`,
        p.targetPath,
        p.name,
        p.targetDatastoreId,
        src.format,
        src.virtual_size_bytes,
        src.actual_size_bytes,
        JSON.stringify({ datastoreId: p.targetDatastoreId, sizeBytes: src.virtual_size_bytes, source: { kind: 'mirror', sourcePath: p.sourcePath } }),
        nowV,
        nowV,
        `mirror-${p.sourcePath}`,
      );
    }
    rename.set(p.sourcePath, p.targetPath);
  }
  const seedPath = spec.seedPath ? (rename.get(spec.seedPath) ?? spec.seedPath) : undefined;
  return { ...spec, disks: spec.disks.map((d) => rename.get(d) ?? d), ...(seedPath ? { seedPath } : {}) };
}
