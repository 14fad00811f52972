// The driver's disk calls on one host: create (blank, template, clone, import), copy, delete,
// inspect, cloud-init seeds. A copy's start and end virtual times are persisted first and then
// waited for, so a retry after the caller died finds the same disk (the name is the idempotency
// key) and waits for it; an abort removes only a disk still being written.
import {
  DriverError,
  type CloudInitSeed,
  type DiskFormat,
  type DiskInfo,
  type DiskSource,
  type DiskSpec,
  type LongCallOptions,
  type VmSpec,
} from '../hypervisor.js';
import type { SimFaultStep } from '../../domain/faults.js';
import { diskDone, diskPath, parseDiskPath } from './disks.js';
import { linkCut, markFired, slowFactor } from './faults.js';
import type { SimHost } from './host.js';
import { attached, datastoreRow, diskRow, freeBytes, hostsOf, imageRow, linkBandwidth } from './lookups.js';
import { commitThenThrow, type DiskRow, type VmRow } from './store.js';
import { invalid, invalidState, nonEmptyString, nonNegativeInt, notFound, safeName, stableJson } from './validate.js';

const DISK_FORMATS: readonly DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vhdx'];

type DiskMode = { kind: 'create'; source: DiskSource } | { kind: 'copy'; sourcePath: string };

/** A disk or image that can be read as a source. */
interface SourceFile {
  path: string;
  datastoreId: string;
  sizeBytes: number;
  format: string;
  ready: boolean;
}

export function createDisk(h: SimHost, spec: DiskSpec, opts: LongCallOptions): Promise<DiskInfo> {
  validateDiskSpec(spec, true);
  return provisionDisk(h, spec, { kind: 'create', source: spec.source }, 'createDisk', opts);
}

export function copyDisk(h: SimHost, sourcePath: string, target: DiskSpec, opts: LongCallOptions): Promise<DiskInfo> {
  nonEmptyString('sourcePath', sourcePath);
  validateDiskSpec(target, false);
  return provisionDisk(h, target, { kind: 'copy', sourcePath }, 'copyDisk', opts);
}

async function provisionDisk(h: SimHost, spec: DiskSpec, mode: DiskMode, step: SimFaultStep, opts: LongCallOptions): Promise<DiskInfo> {
  for (;;) {
    const path = h.op(step, undefined, (nowV) => beginDisk(h, spec, mode, nowV), spec.name);
    const info = await waitDisk(h, path, step, opts);
    // null: the disk vanished while we waited (another caller aborted it); create it again
    if (info) return info;
  }
}

function beginDisk(h: SimHost, spec: DiskSpec, mode: DiskMode, nowV: number): string {
  const ds = datastoreRow(h.store, spec.datastoreId);
  if (!ds) throw notFound(`datastoreId: datastore "${spec.datastoreId}" is not in the simulator`);
  const remote = !attached(h.store, ds.id, h.hostId);
  if (remote && mode.kind === 'create') throw invalid(`datastoreId: datastore ${ds.id} is not attached to host ${h.hostId}`);
  const path = diskPath(ds.id, `${spec.name}.qcow2`);
  const wanted = stableJson({
    datastoreId: spec.datastoreId,
    sizeBytes: spec.sizeBytes,
    source: mode.kind === 'create' ? mode.source : { kind: 'copy', sourcePath: mode.sourcePath },
  });
  const existing = diskRow(h.store, path);
  if (existing) {
    // the idempotency key is the name: a retry finds its own disk (finished or still copying)
    if (existing.spec !== wanted) throw invalidState(`disk ${path} already exists with a different spec (${existing.spec})`, true);
    return path;
  }
  if (imageRow(h.store, path)) throw invalidState(`path ${path} is an image`, true);

  let virtual = spec.sizeBytes;
  let actual = 0;
  let bytes = 0;
  let backing: string | null = null;
  let format: DiskFormat = 'qcow2';
  const srcDatastores: string[] = [];
  const kind = mode.kind === 'create' ? mode.source.kind : 'copy';
  if (kind !== 'blank') {
    const srcPath = mode.kind === 'copy' ? mode.sourcePath : mode.source.kind === 'template' ? mode.source.imagePath : (mode.source as { sourcePath: string }).sourcePath;
    const field = kind === 'template' ? 'source.imagePath' : mode.kind === 'copy' ? 'sourcePath' : 'source.sourcePath';
    const src = sourceFile(h, srcPath);
    if (!src) throw notFound(`${field}: ${kind === 'template' ? 'template image' : 'source'} "${srcPath}" does not exist`);
    if (!attached(h.store, src.datastoreId, h.hostId)) {
      throw notFound(`${field}: "${srcPath}" is on datastore ${src.datastoreId}, which host ${h.hostId} cannot reach`);
    }
    if (!src.ready) throw invalidState(`${field}: "${srcPath}" is still being created`);
    if (mode.kind === 'create' && mode.source.kind === 'import' && src.format !== mode.source.format) {
      throw invalid(`source.format is ${mode.source.format} but "${srcPath}" is ${src.format}`);
    }
    srcDatastores.push(src.datastoreId);
    virtual = Math.max(spec.sizeBytes, src.sizeBytes);
    if (mode.kind === 'create' && mode.source.kind === 'template' && mode.source.linked) {
      backing = src.path; // copy-on-write overlay: nothing to copy
    } else {
      actual = src.sizeBytes;
      bytes = src.sizeBytes;
    }
    if (mode.kind === 'copy' && src.format !== 'qcow2') format = src.format as DiskFormat;
  }
  const free = freeBytes(h.store, ds);
  if (virtual > free) {
    throw new DriverError(`datastore ${ds.id} has ${free} bytes free, disk ${spec.name} needs ${virtual}`, 'INSUFFICIENT_SPACE', true);
  }
  let throughput = ds.throughput_bytes_per_sec;
  for (const id of srcDatastores) throughput = Math.min(throughput, datastoreRow(h.store, id)!.throughput_bytes_per_sec);
  if (remote) {
    const peers = hostsOf(h.store, ds.id).filter((p) => p !== h.hostId);
    if (peers.length === 0) throw invalid(`datastoreId: datastore ${ds.id} is attached to no host`);
    const open = peers.filter((p) => !linkCut(h.store, h.hostId, p));
    if (open.length === 0) {
      const cut = linkCut(h.store, h.hostId, peers[0]!)!;
      markFired(h.store, cut.id, nowV);
      commitThenThrow(new DriverError(`link down between ${h.hostId} and ${peers.join(', ')}`, 'UNREACHABLE'));
    }
    throughput = Math.min(throughput, Math.max(...open.map((p) => linkBandwidth(h.store, h.hostId, p))));
  }
  // the copy's end is persisted (not awaited in memory): a retry after a crash waits for the same
  // disk, and slow-disk faults injected or cleared meanwhile re-time it from their instant
  const rate = bytes > 0 ? throughput / slowFactor(h.store, [ds.id, ...srcDatastores], h.hostId, nowV) : throughput;
  const durationV = bytes > 0 ? (bytes * 1000) / rate : 0;
  h.store.run(
    `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write,
       start_v, end_v, token, content, host_id, src_datastores, base_rate, rate, ckpt_v, ckpt_bytes)
     VALUES (?, ?, ?, 'disk', ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, 0)`,
    path,
    spec.name,
    ds.id,
    format,
    virtual,
    actual,
    backing,
    wanted,
    bytes,
    nowV,
    nowV + durationV,
    `${process.pid}-${nowV}-${Math.random().toString(36).slice(2)}`,
    h.hostId,
    JSON.stringify(srcDatastores),
    throughput,
    rate,
    nowV,
  );
  return path;
}

function sourceFile(h: SimHost, path: string): SourceFile | undefined {
  const img = imageRow(h.store, path);
  if (img) return { path, datastoreId: img.datastore_id, sizeBytes: img.size_bytes, format: img.format, ready: true };
  const d = diskRow(h.store, path);
  if (d) return { path, datastoreId: d.datastore_id, sizeBytes: d.virtual_size_bytes, format: d.format, ready: d.end_v <= h.sim.virtualNow() };
  return undefined;
}

/** Waits (wall sleeps in small steps) until the disk's end time; null if the disk vanished. */
async function waitDisk(h: SimHost, path: string, step: string, opts: LongCallOptions): Promise<DiskInfo | null> {
  for (;;) {
    const row = diskRow(h.store, path);
    if (!row) return null;
    const nowV = h.sim.virtualNow();
    const total = row.bytes_to_write;
    if (nowV >= row.end_v) {
      opts.onProgress?.({ fraction: 1, doneBytes: total, totalBytes: total });
      return diskInfoOf(row, nowV);
    }
    if (opts.signal?.aborted) {
      // the partial disk goes (only while it is still being written: a finished one is kept)
      h.sim.tx((v) => h.store.run('DELETE FROM disks WHERE path = ? AND end_v > ?', path, v));
      const err = new DriverError(`${step} ${path} aborted: ${describeReason(opts.signal.reason)}`, 'HYPERVISOR', true);
      err.name = 'AbortError';
      throw err;
    }
    const doneBytes = Math.floor(diskDone(row, nowV));
    opts.onProgress?.({ fraction: total > 0 ? doneBytes / total : 0, doneBytes, totalBytes: total, message: `${step} ${path}` });
    await h.sim.sleep(Math.max(0.01, Math.min(h.sim.pollMs, h.sim.wallFor(row.end_v - nowV))));
  }
}

export function deleteDisk(h: SimHost, path: string): void {
  const { file } = parseDiskPath(path);
  const name = file.replace(/\.(qcow2|iso|raw)$/, '');
  h.op(
    'deleteDisk',
    undefined,
    () => {
      const row = diskRow(h.store, path);
      if (!row) return;
      const users = h.store
        .all<VmRow>("SELECT * FROM vms WHERE state IN ('running', 'paused', 'incoming')")
        .filter((v) => {
          const s = JSON.parse(v.spec) as VmSpec;
          return s.disks.includes(path) || s.seedPath === path || s.isoPath === path;
        });
      if (users.length > 0) {
        throw invalidState(`disk ${path} is in use by ${users.map((u) => `${u.vm_id} (${u.state} on ${u.host_id})`).join(', ')}`);
      }
      const children = h.store.all<{ path: string }>('SELECT path FROM disks WHERE backing_path = ?', path);
      if (children.length > 0) throw invalidState(`disk ${path} backs linked clones: ${children.map((c) => c.path).join(', ')}`);
      h.store.run('DELETE FROM disks WHERE path = ?', path);
    },
    name,
  );
}

export function diskInfo(h: SimHost, path: string): DiskInfo | null {
  nonEmptyString('path', path);
  return h.op('diskInfo', undefined, (nowV) => {
    const row = diskRow(h.store, path);
    if (row) return diskInfoOf(row, nowV);
    const img = imageRow(h.store, path);
    if (!img) return null;
    return {
      name: img.path.split('/').pop()!.replace(/\.[a-z0-9]+$/, ''),
      datastoreId: img.datastore_id,
      path: img.path,
      format: img.format as DiskFormat,
      virtualSizeBytes: img.size_bytes,
      actualSizeBytes: img.size_bytes,
    };
  });
}

export function writeSeed(h: SimHost, vmId: string, datastoreId: string, seed: CloudInitSeed): { path: string } {
  safeName('vmId', vmId);
  safeName('datastoreId', datastoreId);
  validateSeed(seed);
  return h.op('writeSeed', vmId, (nowV) => {
    const ds = datastoreRow(h.store, datastoreId);
    if (!ds) throw notFound(`datastoreId: datastore "${datastoreId}" is not in the simulator`);
    if (!attached(h.store, ds.id, h.hostId)) throw invalid(`datastoreId: datastore ${ds.id} is not attached to host ${h.hostId}`);
    const path = diskPath(ds.id, `${vmId}-seed.iso`);
    const content = stableJson(seed);
    const size = Buffer.byteLength(content);
    const existing = diskRow(h.store, path);
    if (existing) {
      if (existing.content !== content) {
        h.store.run('UPDATE disks SET content = ?, actual_size_bytes = ?, virtual_size_bytes = ? WHERE path = ?', content, size, size, path);
      }
      return { path };
    }
    const free = freeBytes(h.store, ds);
    if (size > free) throw new DriverError(`datastore ${ds.id} has ${free} bytes free, seed needs ${size}`, 'INSUFFICIENT_SPACE', true);
    h.store.run(
      `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write, start_v, end_v, token, content)
       VALUES (?, ?, ?, 'seed', 'raw', ?, ?, NULL, ?, 0, ?, ?, ?, ?)`,
      path,
      `${vmId}-seed`,
      ds.id,
      size,
      size,
      stableJson({ seedFor: vmId }),
      nowV,
      nowV,
      `seed-${vmId}`,
      content,
    );
    return { path };
  });
}

function diskInfoOf(row: DiskRow, nowV: number): DiskInfo {
  const done = row.end_v <= nowV || row.bytes_to_write === 0 ? 1 : diskDone(row, nowV) / row.bytes_to_write;
  return toDiskInfo(row, done);
}

function toDiskInfo(row: DiskRow, done: number): DiskInfo {
  const info: DiskInfo = {
    name: row.name,
    datastoreId: row.datastore_id,
    path: row.path,
    format: row.format as DiskFormat,
    virtualSizeBytes: row.virtual_size_bytes,
    actualSizeBytes: Math.floor(row.actual_size_bytes * done),
  };
  if (row.backing_path) info.backingPath = row.backing_path;
  return info;
}

function describeReason(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}

function validateDiskSpec(spec: DiskSpec, withSource: boolean): void {
  if (!spec || typeof spec !== 'object') throw invalid('disk spec must be an object');
  safeName('name', spec.name);
  safeName('datastoreId', spec.datastoreId);
  nonNegativeInt('sizeBytes', spec.sizeBytes);
  if (!withSource) return;
  const s = spec.source;
  if (!s || typeof s !== 'object') throw invalid('source must be an object with a kind');
  switch (s.kind) {
    case 'blank':
      return;
    case 'template':
      nonEmptyString('source.imagePath', s.imagePath);
      if (typeof s.linked !== 'boolean') throw invalid('source.linked must be a boolean');
      return;
    case 'clone':
      nonEmptyString('source.sourcePath', s.sourcePath);
      return;
    case 'import':
      nonEmptyString('source.sourcePath', s.sourcePath);
      if (!DISK_FORMATS.includes(s.format)) throw invalid(`source.format must be one of ${DISK_FORMATS.join(', ')}, got ${String(s.format)}`);
      return;
    default:
      throw invalid(`source.kind must be blank, template, clone or import, got ${String((s as { kind?: unknown }).kind)}`);
  }
}

function validateSeed(seed: CloudInitSeed): void {
  if (!seed || typeof seed !== 'object') throw invalid('seed must be an object');
  nonEmptyString('seed.instanceId', seed.instanceId);
  nonEmptyString('seed.hostname', seed.hostname);
  if (!Array.isArray(seed.sshAuthorizedKeys) || seed.sshAuthorizedKeys.some((k) => typeof k !== 'string')) {
    throw invalid('seed.sshAuthorizedKeys must be an array of strings');
  }
}
