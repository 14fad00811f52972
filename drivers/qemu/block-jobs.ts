// Disk mirrors over QMP (QEMU 7.2, measured: shared/notes/qemu-facts.md section 5):
//   - live migration without shared storage (the order libvirt uses): the destination creates
//     empty copies of the disks, opens them in its `-incoming defer` QEMU and exports them over NBD
//     (`nbd-server-start` + `block-export-add` writable); the source `blockdev-add`s each export
//     and runs `blockdev-mirror` sync full (dirty tracking) until every job is ready; the memory
//     migration runs meanwhile; at pre-switchover (source paused) `block-job-cancel` of a READY job
//     completes it without pivot: the target holds a consistent copy; then `migrate-continue`.
//   - storage migration (same host): `blockdev-add` a new qcow2 on the other datastore,
//     `blockdev-mirror`, ready, `block-job-complete` pivots the device onto it; the seed (read-only,
//     immutable) is copied as a file; spec.json names the new paths; the workflow deletes the old files once the move is committed.
// Jobs run with auto-dismiss off so a failed job stays visible (status concluded + error) until we
// dismiss it. Everything a restarted agent needs is in runtime.json (`mirror`, `nbd`). Each mirror
// names its jobs and target nodes afresh (`sm<n>-disk0`, `mig<n>-disk0`): after a pivot the old
// target node IS the drive's node, so a VM's next mirror must not reuse its name.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DriverError, type DiskMirrorStats, type DiskMirrorTarget, type IncomingDiskCopy, type VmSpec } from '../hypervisor.js';
import { datastore } from './host.js';
import { qemuImg } from './img.js';
import { portIsFree, portOrder, sleep } from './process.js';
import type { VmDeps } from './processes.js';
import { QmpCommandError } from './qmp.js';
import type { MirrorJobRecord, MirrorRecord } from './vm-store.js';

interface QueryJob {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}
interface QueryBlockJob {
  device: string;
  len: number;
  offset: number;
  ready: boolean;
  status: string;
}
interface QueryBlock {
  device: string;
  inserted?: { 'node-name': string; image: { 'virtual-size': number; filename: string } };
}

const DONE = new Set(['concluded', 'null']);

/** The drive ids buildQemuArgs gives a spec's disks (`disk<i>`) and seed (`seed`). */
function drives(spec: VmSpec): Array<{ device: string; path: string; seed: boolean }> {
  return [...spec.disks.map((p, i) => ({ device: `disk${i}`, path: p, seed: false })), ...(spec.seedPath ? [{ device: 'seed', path: spec.seedPath, seed: true }] : [])];
}

export function createBlockJobs({ cfg, store, sessions }: VmDeps) {
  const { hostId, migrationAddress, portRange, qemuImgBinary, migrationWaitMs } = cfg;
  const { qmp } = sessions;
  const tolerate = (p: Promise<unknown>) => p.catch((e) => (e instanceof QmpCommandError ? undefined : Promise.reject(e)));

  // ------------------------------------------------------------------ destination (copyDisks)
  /** The spec the destination runs: the same disks on `datastoreId`, empty copies created. */
  async function createIncomingCopies(spec: VmSpec, copy: { datastoreId: string; disks: IncomingDiskCopy[] }): Promise<{ spec: VmSpec; created: string[] }> {
    const ds = datastore(cfg, copy.datastoreId);
    await fs.mkdir(ds.path, { recursive: true });
    const sizeOf = new Map(copy.disks.map((d) => [d.sourcePath, d]));
    const created: string[] = [];
    const target = (src: string) => path.join(ds.path, path.basename(src));
    for (const d of drives(spec)) {
      const info = sizeOf.get(d.path);
      if (!info) throw new DriverError(`copyDisks.disks has no size for ${d.path}`, 'INVALID_ARGUMENT', true);
      const file = target(d.path);
      if (path.resolve(file) === path.resolve(d.path)) throw new DriverError(`copy of ${d.path} would overwrite it: datastore ${ds.id} is the source's`, 'INVALID_ARGUMENT', true);
      await fs.rm(file, { force: true });
      await qemuImg(qemuImgBinary, ['create', '-q', '-f', d.seed ? 'raw' : 'qcow2', file, String(info.virtualSizeBytes)], {});
      created.push(file);
    }
    return { spec: { ...spec, disks: spec.disks.map(target), ...(spec.seedPath ? { seedPath: target(spec.seedPath) } : {}) }, created };
  }

  async function nodeNames(vmId: string): Promise<Map<string, QueryBlock['inserted'] & object>> {
    const blocks = await qmp<QueryBlock[]>(vmId, 'query-block');
    return new Map(blocks.filter((b) => b.inserted).map((b) => [b.device, b.inserted!]));
  }

  /** NBD server on the migration address with every disk (and the seed) exported writable. */
  async function exportIncoming(vmId: string, spec: VmSpec): Promise<DiskMirrorTarget> {
    const nodes = await nodeNames(vmId);
    let port: number | undefined;
    for (const p of portOrder(`${hostId}/${vmId}/nbd`, portRange).slice(0, 64)) {
      if (!cfg.netns && !(await portIsFree(migrationAddress, p))) continue;
      try {
        await qmp(vmId, 'nbd-server-start', { addr: { type: 'inet', data: { host: migrationAddress, port: String(p) } } });
        port = p;
        break;
      } catch (err) {
        if (!(err instanceof QmpCommandError)) throw err;
      }
    }
    if (port === undefined) throw new DriverError(`no free NBD port in ${portRange.join('-')} on ${migrationAddress}`, 'HYPERVISOR');
    const exports: Array<{ device: string; exportName: string }> = [];
    const exportIds: string[] = [];
    const sideNodes: string[] = [];
    for (const d of drives(spec)) {
      let node = nodes.get(d.device)?.['node-name'];
      if (d.seed) {
        // the seed drive is read-only: a second, writable raw node on the same file receives it
        // (locking off: the read-only drive of this very process holds the file's lock)
        node = 'seed-copy';
        await qmp(vmId, 'blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: d.path, locking: 'off' } });
        sideNodes.push(node);
      }
      if (!node) throw new DriverError(`vm "${vmId}": drive ${d.device} has no node on host "${hostId}"`, 'HYPERVISOR', true);
      const id = `exp-${d.device}`;
      await qmp(vmId, 'block-export-add', { type: 'nbd', id, 'node-name': node, writable: true, name: d.device });
      exportIds.push(id);
      exports.push({ device: d.device, exportName: d.device });
    }
    await store.updateRuntime(vmId, { nbd: { host: migrationAddress, port, exportIds, sideNodes, exports } });
    return { kind: 'nbd', host: migrationAddress, port, exports };
  }

  /** Before the destination runs: exports, side nodes and the NBD server go away. Idempotent. */
  async function stopExports(vmId: string): Promise<void> {
    const rec = (await store.readRuntime(vmId)).nbd;
    if (!rec) return;
    for (const id of rec.exportIds) await tolerate(qmp(vmId, 'block-export-del', { id, mode: 'hard' }));
    for (const node of rec.sideNodes) {
      // block-export-del is asynchronous: the node is in use until BLOCK_EXPORT_DELETED
      for (let i = 0; ; i++) {
        try {
          await qmp(vmId, 'blockdev-del', { 'node-name': node });
          break;
        } catch (err) {
          if (!(err instanceof QmpCommandError)) throw err;
          if (/not found|Cannot find/i.test(err.message) || i >= 50) break;
          await sleep(20);
        }
      }
    }
    await tolerate(qmp(vmId, 'nbd-server-stop'));
    await store.updateRuntime(vmId, { nbd: undefined });
  }

  // ------------------------------------------------------------------ source
  async function jobsOf(vmId: string): Promise<{ jobs: Map<string, QueryJob>; block: Map<string, QueryBlockJob> }> {
    const jobs = await qmp<QueryJob[]>(vmId, 'query-jobs');
    const block = await qmp<QueryBlockJob[]>(vmId, 'query-block-jobs');
    return { jobs: new Map(jobs.map((j) => [j.id, j])), block: new Map(block.map((j) => [j.device, j])) };
  }

  /**
   * Job ids and target node names for a new mirror of `devices`: `<prefix><n>-<device>` with the
   * smallest n that no job and no block node of this QEMU uses. A storage migration's pivot makes
   * its target node the device's node for the rest of the process's life, so a fixed name
   * (`sm-disk0`) collides with the next mirror's blockdev-add ("Duplicate nodes with node-name").
   */
  async function freshNames(vmId: string, prefix: string, devices: string[]): Promise<(device: string) => string> {
    const nodes = await qmp<Array<{ 'node-name'?: string }>>(vmId, 'query-named-block-nodes', { flat: true });
    const { jobs } = await jobsOf(vmId);
    const used = new Set([...nodes.flatMap((n) => (n['node-name'] ? [n['node-name']] : [])), ...jobs.keys()]);
    for (let n = 1; ; n++) {
      const name = (device: string) => `${prefix}${n}-${device}`;
      if (devices.every((d) => !used.has(name(d)))) return name;
    }
  }

  /** A mirror's target as text, to tell a retry of the same start from a different one. */
  const targetKey = (t: { kind: string; datastoreId?: string; host?: string; port?: number }) => (t.kind === 'nbd' ? `nbd://${t.host}:${t.port}` : `datastore ${t.datastoreId}`);
  /** (records written before the nbd target was kept in them match any nbd target) */
  const sameTarget = (rec: MirrorRecord, t: DiskMirrorTarget) => (rec.kind === 'nbd' && t.kind === 'nbd' && rec.host === undefined) || targetKey(rec) === targetKey(t);

  async function startDiskMirror(vmId: string, target: DiskMirrorTarget): Promise<void> {
    return store.withLock(`mirror:${vmId}`, async () => {
      const spec = await store.requireSpec(vmId);
      const rt = await store.readRuntime(vmId);
      if (rt.mirror?.pivoted || rt.mirror?.finished) rt.mirror = undefined; // an earlier mirror, done
      if (rt.mirror) {
        const { jobs } = await jobsOf(vmId);
        const live = rt.mirror.jobs.length > 0 && rt.mirror.jobs.every((j) => jobs.has(j.job) && !jobs.get(j.job)!.error && !DONE.has(jobs.get(j.job)!.status));
        if (live && sameTarget(rt.mirror, target)) return; // idempotent: a retry of this start
        if (live) throw new DriverError(`vm "${vmId}" has a disk mirror to ${targetKey(rt.mirror)} running; cancel it before mirroring to ${targetKey(target)}`, 'INVALID_STATE', true);
        // what an interrupted or failed start left (its record is written before the first job):
        // cleaned up as a cancel would, then started afresh
        await abandon(vmId, rt.mirror);
      }
      const speed = target.speedBytesPerSec ? { speed: Math.round(target.speedBytesPerSec) } : {};
      const nodes = await nodeNames(vmId);
      if (target.kind === 'nbd') {
        const rec: MirrorRecord = { kind: 'nbd', host: target.host, port: target.port, jobs: [] };
        const name = await freshNames(vmId, 'mig', target.exports.map((e) => e.device));
        for (const e of target.exports) rec.jobs.push({ job: name(e.device), device: e.device, node: name(e.device) });
        await store.updateRuntime(vmId, { mirror: rec });
        for (const [i, e] of target.exports.entries()) {
          const j = rec.jobs[i]!;
          await qmp(vmId, 'blockdev-add', { driver: 'nbd', 'node-name': j.node, server: { type: 'inet', host: target.host, port: String(target.port) }, export: e.exportName });
          await qmp(vmId, 'blockdev-mirror', { 'job-id': j.job, device: e.device, target: j.node, sync: 'full', 'auto-dismiss': false, ...speed });
        }
        return;
      }
      const ds = datastore(cfg, target.datastoreId);
      await fs.mkdir(ds.path, { recursive: true });
      const rec: MirrorRecord = { kind: 'datastore', datastoreId: ds.id, jobs: [] };
      const disks = drives(spec).filter((d) => !d.seed);
      const name = await freshNames(vmId, 'sm', disks.map((d) => d.device));
      for (const d of drives(spec)) {
        const targetPath = path.join(ds.path, path.basename(d.path));
        if (path.resolve(targetPath) === path.resolve(d.path)) throw new DriverError(`vm "${vmId}" already has ${d.path} on datastore ${ds.id}`, 'INVALID_ARGUMENT', true);
        if (d.seed) rec.seed = { sourcePath: d.path, targetPath };
        else rec.jobs.push({ job: name(d.device), device: d.device, node: name(d.device), targetPath, sourcePath: d.path });
      }
      // recorded before any file exists, so a cancel after a crash finds what to delete
      await store.updateRuntime(vmId, { mirror: rec });
      if (rec.seed) await fs.copyFile(rec.seed.sourcePath, rec.seed.targetPath);
      for (const j of rec.jobs) {
        const size = nodes.get(j.device)?.image['virtual-size'];
        if (!size) throw new DriverError(`vm "${vmId}": drive ${j.device} has no image`, 'HYPERVISOR', true);
        await qemuImg(qemuImgBinary, ['create', '-q', '-f', 'qcow2', j.targetPath!, String(size)], {});
        await qmp(vmId, 'blockdev-add', { driver: 'qcow2', 'node-name': j.node, file: { driver: 'file', filename: j.targetPath } });
        await qmp(vmId, 'blockdev-mirror', { 'job-id': j.job, device: j.device, target: j.node, sync: 'full', 'auto-dismiss': false, ...speed });
      }
    });
  }

  function statsOf(rec: MirrorRecord | undefined, jobs: Map<string, QueryJob>, block: Map<string, QueryBlockJob>): DiskMirrorStats {
    const out: DiskMirrorStats = { status: 'none', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: false };
    if (!rec) return out;
    if (rec.finished || rec.pivoted) {
      const total = rec.totalBytes ?? 0;
      return { ...out, status: 'completed', inSync: true, copiedBytes: total, totalBytes: total, ...(rec.pivotMs !== undefined ? { pivotMs: rec.pivotMs } : {}) };
    }
    let ready = true;
    const errors: string[] = [];
    for (const j of rec.jobs) {
      const q = jobs.get(j.job);
      const b = block.get(j.job);
      if (!q) {
        errors.push(`${j.device}: mirror job ${j.job} is gone`);
        continue;
      }
      if (q.error) errors.push(`${j.device}: ${q.error}`);
      else if (DONE.has(q.status) || q.status === 'aborting') errors.push(`${j.device}: mirror job ended (${q.status})`);
      out.copiedBytes += b?.offset ?? q['current-progress'];
      out.totalBytes += b?.len ?? q['total-progress'];
      // a paused source (pre-switchover) puts ready jobs in standby; `ready` stays true
      ready &&= b?.ready === true;
    }
    out.dirtyBytes = Math.max(0, out.totalBytes - out.copiedBytes);
    if (errors.length) return { ...out, status: 'failed', error: errors.join('; ') };
    out.inSync = ready;
    out.status = ready ? 'ready' : 'running';
    return out;
  }

  async function diskMirrorStatus(vmId: string): Promise<DiskMirrorStats> {
    const rec = (await store.readRuntime(vmId)).mirror;
    if (!rec) return statsOf(undefined, new Map(), new Map());
    const { jobs, block } = await jobsOf(vmId);
    return statsOf(rec, jobs, block);
  }

  /** Waits until every job of `rec` is concluded (or gone); returns their errors. */
  async function waitConcluded(vmId: string, rec: MirrorRecord, what: string): Promise<string[]> {
    const deadline = Date.now() + migrationWaitMs;
    for (;;) {
      const { jobs } = await jobsOf(vmId);
      const open = rec.jobs.filter((j) => jobs.has(j.job) && !DONE.has(jobs.get(j.job)!.status));
      if (open.length === 0) {
        const errors = rec.jobs.flatMap((j) => (jobs.get(j.job)?.error ? [`${j.device}: ${jobs.get(j.job)!.error}`] : []));
        for (const j of rec.jobs) if (jobs.get(j.job)?.status === 'concluded') await tolerate(qmp(vmId, 'job-dismiss', { id: j.job }));
        return errors;
      }
      if (Date.now() > deadline) throw new DriverError(`vm "${vmId}": disk mirror did not ${what} within ${migrationWaitMs} ms`, 'TIMEOUT');
      await sleep(20);
    }
  }

  /**
   * copyDisks at pre-switchover (the source is paused, nothing writes): cancel each READY job,
   * which completes it without pivot, so the target is a consistent copy. Refuses (permanent)
   * when a disk is not in sync: the migration must then roll back. Idempotent.
   */
  async function finishForSwitchover(vmId: string): Promise<void> {
    return store.withLock(`mirror:${vmId}`, async () => {
      const rec = (await store.readRuntime(vmId)).mirror;
      if (!rec || rec.kind !== 'nbd' || rec.finished) return;
      const { jobs, block } = await jobsOf(vmId);
      const st = statsOf(rec, jobs, block);
      if (!st.inSync) throw new DriverError(`vm "${vmId}": disk mirror is ${st.status} at switchover${st.error ? `: ${st.error}` : ''}`, 'HYPERVISOR', true);
      for (const j of rec.jobs) await qmp(vmId, 'block-job-cancel', { device: j.job });
      const errors = await waitConcluded(vmId, rec, 'complete');
      if (errors.length) throw new DriverError(`vm "${vmId}": disk mirror failed at switchover: ${errors.join('; ')}`, 'HYPERVISOR', true);
      for (const j of rec.jobs) await tolerate(qmp(vmId, 'blockdev-del', { 'node-name': j.node }));
      await store.updateRuntime(vmId, { mirror: { ...rec, finished: true, totalBytes: st.totalBytes } });
    });
  }

  /** Storage migration: pivot every in-sync disk onto its copy, then spec.json and old files follow. */
  async function completeDiskMirror(vmId: string): Promise<DiskMirrorStats> {
    return store.withLock(`mirror:${vmId}`, async () => {
      const rec = (await store.readRuntime(vmId)).mirror;
      if (!rec || rec.kind !== 'datastore') throw new DriverError(`vm "${vmId}" has no storage mirror on host "${hostId}"`, 'INVALID_STATE', true);
      const spec = await store.requireSpec(vmId);
      if (!rec.pivoted) {
        const { jobs, block } = await jobsOf(vmId);
        const st = statsOf(rec, jobs, block);
        if (!st.inSync) throw new DriverError(`vm "${vmId}": storage mirror is ${st.status}, not in sync${st.error ? `: ${st.error}` : ''}`, st.status === 'failed' ? 'HYPERVISOR' : 'INVALID_STATE', st.status === 'failed');
        const t0 = Date.now();
        for (const j of rec.jobs) await qmp(vmId, 'block-job-complete', { device: j.job });
        const errors = await waitConcluded(vmId, rec, 'pivot');
        const pivotMs = Date.now() - t0;
        if (errors.length) throw new DriverError(`vm "${vmId}": pivot failed: ${errors.join('; ')}`, 'HYPERVISOR', true);
        const now = await nodeNames(vmId);
        for (const j of rec.jobs) {
          const file = now.get(j.device)?.image.filename;
          if (file !== j.targetPath) throw new DriverError(`vm "${vmId}": ${j.device} runs on ${file} after the pivot, not ${j.targetPath}`, 'HYPERVISOR', true);
        }
        const moved = new Map(rec.jobs.map((j) => [j.sourcePath!, j.targetPath!]));
        await store.writeSpec(vmId, { ...spec, disks: spec.disks.map((d) => moved.get(d) ?? d), ...(rec.seed ? { seedPath: rec.seed.targetPath } : {}) });
        await store.updateRuntime(vmId, { mirror: { ...rec, pivoted: true, pivotMs, totalBytes: st.totalBytes } });
      }
      // the old files stay until the workflow has committed the move (its clean-up deletes them)
      const after = await store.requireSpec(vmId);
      const done = (await store.readRuntime(vmId)).mirror ?? rec;
      return { status: 'completed', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: true, diskPaths: after.disks, ...(after.seedPath ? { seedPath: after.seedPath } : {}), pivotMs: done.pivotMs ?? 0 };
    });
  }

  /**
   * Jobs of `rec` cancelled (force), their target nodes removed, a storage mirror's copies
   * deleted — never a file a drive of the VM runs on (a pivot whose record was not yet written).
   * Caller holds the mirror lock.
   */
  async function abandon(vmId: string, rec: MirrorRecord): Promise<void> {
    const alive = await qmp<QueryJob[]>(vmId, 'query-jobs').then(
      (j) => new Map(j.map((x) => [x.id, x])),
      () => undefined, // no QEMU: nothing left to cancel in it
    );
    let inUse = new Set<string>();
    if (alive) {
      for (const j of rec.jobs) if (alive.has(j.job) && !DONE.has(alive.get(j.job)!.status)) await tolerate(qmp(vmId, 'block-job-cancel', { device: j.job, force: true }));
      await waitConcluded(vmId, rec, 'cancel');
      for (const j of rec.jobs) await tolerate(qmp(vmId, 'blockdev-del', { 'node-name': j.node }));
      inUse = new Set([...(await nodeNames(vmId)).values()].map((n) => path.resolve(n.image.filename)));
    }
    const partial: string[] = [...rec.jobs.flatMap((j) => (j.targetPath ? [j.targetPath] : [])), ...(rec.seed ? [rec.seed.targetPath] : [])];
    for (const f of partial) if (!inUse.has(path.resolve(f))) await fs.rm(f, { force: true });
    await store.updateRuntime(vmId, { mirror: undefined });
  }

  /** Abort: jobs cancelled (force), target nodes removed, a storage mirror's copies deleted. Idempotent. */
  async function cancelDiskMirror(vmId: string): Promise<void> {
    return store.withLock(`mirror:${vmId}`, async () => {
      if (!(await store.readSpec(vmId))) return;
      const rec = (await store.readRuntime(vmId)).mirror;
      if (!rec) return;
      if (rec.pivoted) return; // the VM runs on its new disks: nothing to cancel, nothing partial
      await abandon(vmId, rec);
    });
  }

  /** The copies a never-activated incoming container created (destroyVm deletes them). */
  async function incomingCopies(vmId: string): Promise<string[]> {
    if (!(await store.readSpec(vmId).catch(() => undefined))) return [];
    const rt = await store.readRuntime(vmId);
    return rt.role === 'incoming' ? (rt.diskCopies ?? []) : [];
  }

  return { createIncomingCopies, exportIncoming, stopExports, startDiskMirror, diskMirrorStatus, finishForSwitchover, completeDiskMirror, cancelDiskMirror, incomingCopies };
}

export type BlockJobs = ReturnType<typeof createBlockJobs>;
export type { MirrorJobRecord };
