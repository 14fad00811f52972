// The driver's storage-mirror calls (live storage migration on one host): startDiskMirror
// persists a mirror row (start time, bytes, bandwidth, the guest's disk write rate); its status
// is a function of the row and virtual now (mirror-model.ts); completeDiskMirror pivots: the
// copies appear on the target datastore (flattened) and the VM's spec names them; cancel drops the
// row (the copies exist only from the pivot on, so nothing partial is left).
import { DriverError, type DiskMirrorStats, type DiskMirrorTarget, type VmSpec } from '../hypervisor.js';
import { diskPath, parseDiskPath } from './disks.js';
import type { SimHost } from './host.js';
import { attached, datastoreRow, diskRow, freeBytes } from './lookups.js';
import { evaluateMirror, pivotMs, type MirrorModelInput } from './mirror-model.js';
import { invalid, invalidState, safeName, stableJson } from './validate.js';

interface MirrorRow {
  vm_id: string;
  host_id: string;
  target_ds: string;
  start_v: number;
  bytes: number;
  bandwidth: number;
  write_rate: number;
  pivoted: number;
  pivot_ms: number;
  /** source path -> target path */
  plan: string;
}

function table(h: SimHost): void {
  h.store.db.exec(`CREATE TABLE IF NOT EXISTS disk_mirrors (
    vm_id TEXT NOT NULL, host_id TEXT NOT NULL, target_ds TEXT NOT NULL, start_v REAL NOT NULL, bytes REAL NOT NULL,
    bandwidth REAL NOT NULL, write_rate REAL NOT NULL, pivoted INTEGER NOT NULL DEFAULT 0, pivot_ms REAL NOT NULL DEFAULT 0,
    plan TEXT NOT NULL, PRIMARY KEY (host_id, vm_id))`);
}

const row = (h: SimHost, vmId: string) => h.store.get<MirrorRow>('SELECT * FROM disk_mirrors WHERE host_id = ? AND vm_id = ?', h.hostId, vmId);
const model = (r: MirrorRow): MirrorModelInput => ({ startV: r.start_v, bytes: r.bytes, bandwidthBytesPerSec: r.bandwidth, writeRateBytesPerSec: r.write_rate });

function files(spec: VmSpec): string[] {
  return [...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])];
}

export function startDiskMirror(h: SimHost, vmId: string, target: DiskMirrorTarget): void {
  safeName('vmId', vmId);
  if (target?.kind !== 'datastore') throw invalid('the simulator mirrors only onto a datastore of the same host (kind datastore); copyDisks travels with the migration');
  table(h);
  h.vmOp('startDiskMirror', vmId, (vm, nowV) => {
    if (row(h, vmId)) return; // idempotent
    if (vm.state !== 'running' && vm.state !== 'paused') throw invalidState(`vm ${vmId} on ${h.hostId} is ${vm.state}; only a running vm mirrors its disks`, true);
    const ds = datastoreRow(h.store, target.datastoreId);
    if (!ds || !attached(h.store, ds.id, h.hostId)) throw new DriverError(`datastore ${target.datastoreId} is not reachable from ${h.hostId}`, 'NOT_FOUND', true);
    const spec = JSON.parse(vm.spec) as VmSpec;
    const disks = files(spec).map((p) => ({ p, d: diskRow(h.store, p) })).filter((x) => x.d);
    if (disks.some((x) => x.d!.datastore_id === ds.id)) throw invalid(`vm ${vmId} already has disks on datastore ${ds.id}`);
    const need = disks.reduce((s, x) => s + x.d!.virtual_size_bytes, 0);
    if (freeBytes(h.store, ds) < need) throw new DriverError(`datastore ${ds.id} has less than ${need} bytes free`, 'INSUFFICIENT_SPACE', true);
    const bytes = disks.reduce((s, x) => s + x.d!.actual_size_bytes, 0);
    const srcThroughput = Math.min(...disks.map((x) => datastoreRow(h.store, x.d!.datastore_id)!.throughput_bytes_per_sec));
    const bw = Math.min(srcThroughput, ds.throughput_bytes_per_sec, target.speedBytesPerSec ?? Infinity);
    const plan = Object.fromEntries(disks.map((x) => [x.p, diskPath(ds.id, parseDiskPath(x.p).file)]));
    h.store.run(
      'INSERT INTO disk_mirrors (vm_id, host_id, target_ds, start_v, bytes, bandwidth, write_rate, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      vmId, h.hostId, ds.id, nowV, bytes, bw, spec.workload?.diskWriteRateBytesPerSec ?? 0, JSON.stringify(plan),
    );
  });
}

export function diskMirrorStatus(h: SimHost, vmId: string): DiskMirrorStats {
  safeName('vmId', vmId);
  table(h);
  return h.op('diskMirrorStatus', vmId, (nowV) => {
    const r = row(h, vmId);
    if (!r) return { status: 'none', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: false };
    if (r.pivoted) return { status: 'completed', copiedBytes: r.bytes, totalBytes: r.bytes, dirtyBytes: 0, inSync: true, pivotMs: r.pivot_ms };
    const v = evaluateMirror(model(r), nowV);
    return { status: v.inSync ? 'ready' : 'running', copiedBytes: v.copiedBytes, totalBytes: v.totalBytes, dirtyBytes: v.dirtyBytes, inSync: v.inSync, writeRateBytesPerSec: r.write_rate, transferRateBytesPerSec: r.bandwidth };
  });
}

export function completeDiskMirror(h: SimHost, vmId: string): DiskMirrorStats {
  safeName('vmId', vmId);
  table(h);
  return h.vmOp('completeDiskMirror', vmId, (vm, nowV) => {
    const r = row(h, vmId);
    if (!r) throw invalidState(`vm ${vmId} has no storage mirror on ${h.hostId}`, true);
    const spec = JSON.parse(vm.spec) as VmSpec;
    if (!r.pivoted) {
      if (!evaluateMirror(model(r), nowV).inSync) throw invalidState(`the storage mirror of ${vmId} is not in sync yet`);
      const plan = JSON.parse(r.plan) as Record<string, string>;
      for (const [src, dst] of Object.entries(plan)) {
        if (diskRow(h.store, dst)) continue;
        h.store.run(
          `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write, start_v, end_v, token, content)
           SELECT ?, name, ?, kind, format, virtual_size_bytes, actual_size_bytes, NULL, spec, 0, ?, ?, ?, content FROM disks WHERE path = ?`,
          dst, r.target_ds, nowV, nowV, `mirror-${src}`, src,
        );
      }
      const moved = (p: string) => plan[p] ?? p;
      const next: VmSpec = { ...spec, disks: spec.disks.map(moved), ...(spec.seedPath ? { seedPath: moved(spec.seedPath) } : {}) };
      h.store.run('UPDATE vms SET spec = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?', stableJson(next), nowV, h.hostId, vmId);
      h.store.run('UPDATE disk_mirrors SET pivoted = 1, pivot_ms = ? WHERE host_id = ? AND vm_id = ?', pivotMs(model(r), nowV), h.hostId, vmId);
    }
    const after = JSON.parse(h.requireVm(vmId).spec) as VmSpec;
    const done = row(h, vmId)!;
    return { status: 'completed', copiedBytes: done.bytes, totalBytes: done.bytes, dirtyBytes: 0, inSync: true, pivotMs: done.pivot_ms, diskPaths: after.disks, ...(after.seedPath ? { seedPath: after.seedPath } : {}) };
  });
}

export function cancelDiskMirror(h: SimHost, vmId: string): void {
  safeName('vmId', vmId);
  table(h);
  h.op('cancelDiskMirror', vmId, () => {
    const r = row(h, vmId);
    if (!r) return;
    if (r.pivoted) throw invalidState(`vm ${vmId} already runs on its new disks (pivoted): not cancelling`, true);
    h.store.run('DELETE FROM disk_mirrors WHERE host_id = ? AND vm_id = ?', h.hostId, vmId);
  });
}
