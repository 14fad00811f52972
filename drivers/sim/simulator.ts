// The simulated cluster: topology, virtual clock, fault injection, and the bookkeeping that
// turns migration timelines (model.ts) into VM states. Every public call opens one IMMEDIATE
// transaction, reads the virtual clock inside it and first "settles" open migrations, i.e.
// writes into the vm rows what the migration timelines say happened up to now (source paused,
// postmigrate, destination holding the guest, rollback). So the persisted rows plus virtual now
// are the whole truth, whichever process looks.
import type { HypervisorDriver, MigrationStats, VmPowerState, VmSpec } from '../hypervisor.js';
import { DriverError } from '../hypervisor.js';
import { assertTimeScale, realSleep, rebase, virtualAt, wallFor, type ClockEpoch } from './clock.js';
import {
  consume,
  insertFault,
  liveFaults,
  markFired,
  matches,
  toFault,
  type SimFault,
} from './faults.js';
import { validateFaultInput, type SimFaultInput, type SimFaultKind } from '../../domain/faults.js';
import { DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC, evaluateMigration, type MigrationModelInput, type MigrationView, type SegmentParams } from './model.js';
import { SimDriver } from './driver.js';
import { Store, type DatastoreRow, type DiskRow, type FaultRow, type HostRow, type MigrationParamRow, type MigrationRow, type VmRow } from './store.js';
import {
  invalid,
  invalidState,
  nonEmptyString,
  nonNegativeInt,
  notFound,
  positiveInt,
  positiveNumber,
  safeName,
  stringArray,
} from './validate.js';

export interface SimulatorOptions {
  /** SQLite file shared by every process of the cluster, or ':memory:' */
  path: string;
  /** virtual seconds per wall second; absent = keep the persisted scale (1 for a new file) */
  timeScale?: number;
  /** wall clock (ms); inject a ManualClock's `now` in tests */
  now?: () => number;
  /** wall sleep used while waiting for disk copies; inject a ManualClock's `sleep` in tests */
  sleep?: (ms: number) => Promise<void>;
  /** longest wall wait between two looks at a running disk copy (default 25 ms) */
  pollMs?: number;
  /** how long a call waits for another process's write lock (default 10 s) */
  busyTimeoutMs?: number;
}

export interface SimHostInput {
  id: string;
  cpuModel: string;
  cpuFeatures: string[];
  cpus: number;
  memoryBytes: number;
  networks: string[];
  migrationAddress?: string;
}

export interface SimDatastoreInput {
  id: string;
  shared: boolean;
  capacityBytes: number;
  throughputBytesPerSec: number;
  hostIds: string[];
}

export interface SimLinkInput {
  a: string;
  b: string;
  bandwidthBytesPerSec: number;
}

export interface SimImageInput {
  /** e.g. sim://<datastoreId>/templates/debian-12.qcow2 */
  path: string;
  datastoreId: string;
  sizeBytes: number;
  format?: 'qcow2' | 'raw' | 'vmdk' | 'vhdx';
}

export interface SimVmSnapshot {
  hostId: string;
  vmId: string;
  state: VmPowerState;
  generation: number;
  memoryBytes: number;
  disks: string[];
}

export interface SimMigrationSnapshot {
  id: number;
  vmId: string;
  sourceHostId: string;
  targetHostId: string;
  startedAtV: number;
  endedAtV?: number;
  stats: MigrationStats;
}

export interface SimSnapshot {
  virtualNowMs: number;
  hosts: { id: string; datastores: string[]; networks: string[] }[];
  vms: SimVmSnapshot[];
  disks: { path: string; datastoreId: string; kind: 'disk' | 'seed'; ready: boolean; virtualSizeBytes: number }[];
  migrations: SimMigrationSnapshot[];
  faults: SimFault[];
}

/** A disk the destination gets when a copyDisks migration completes. */
export interface DiskCopyPlan {
  sourcePath: string;
  targetPath: string;
  targetDatastoreId: string;
  name: string;
}

export const DISK_PATH = /^sim:\/\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\/(.+)$/;

export function diskPath(datastoreId: string, file: string): string {
  return `sim://${datastoreId}/${file}`;
}

export function parseDiskPath(path: string): { datastoreId: string; file: string } {
  const m = typeof path === 'string' ? DISK_PATH.exec(path) : null;
  if (!m) throw invalid(`path "${String(path)}" is not a simulator path (sim://<datastoreId>/<file>)`);
  return { datastoreId: m[1]!, file: m[2]! };
}

/**
 * Thrown inside a transaction when the error must reach the caller but the writes made so far
 * (a spent fault, a crashed destination) must be committed: Simulator.run unwraps it after commit.
 */
export class CommitThenThrow {
  constructor(readonly error: Error) {}
}

export const OPEN_STATUSES = new Set(['active', 'pre-switchover', 'device']);

export class Simulator {
  readonly store: Store;
  readonly sleep: (ms: number) => Promise<void>;
  readonly pollMs: number;
  private readonly wallNow: () => number;

  private constructor(opts: SimulatorOptions) {
    if (!opts || typeof opts.path !== 'string' || opts.path.length === 0) throw invalid('Simulator.open: path must be a file path or ":memory:"');
    if (opts.timeScale !== undefined) assertTimeScale(opts.timeScale);
    this.wallNow = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? realSleep;
    this.pollMs = opts.pollMs ?? 25;
    this.store = new Store(opts.path, opts.busyTimeoutMs);
    this.store.tx(() => {
      const wall = this.wallNow();
      const c = this.store.readClock();
      if (!c) this.store.writeClock({ epochWallMs: wall, epochVirtualMs: 0, timeScale: opts.timeScale ?? 1 });
      else if (opts.timeScale !== undefined && opts.timeScale !== c.timeScale) this.store.writeClock(rebase(c, wall, opts.timeScale));
    });
  }

  /** Opens (creating when missing) the simulated cluster stored at `path`. */
  static open(opts: SimulatorOptions): Simulator {
    return new Simulator(opts);
  }

  close(): void {
    this.store.close();
  }

  get path(): string {
    return this.store.path;
  }

  private epoch(): ClockEpoch {
    const c = this.store.readClock();
    if (!c) throw new Error('simulator clock row is missing');
    return c;
  }

  /** Virtual now (ms on the cluster's shared timeline). */
  virtualNow(): number {
    return virtualAt(this.epoch(), this.wallNow());
  }

  get timeScale(): number {
    return this.epoch().timeScale;
  }

  /** Changes the time scale for every process of the cluster; virtual time stays continuous. */
  setTimeScale(timeScale: number): void {
    assertTimeScale(timeScale);
    this.store.tx(() => this.store.writeClock(rebase(this.epoch(), this.wallNow(), timeScale)));
  }

  /** Wall ms for `virtualMs` of virtual time at the current scale. */
  wallFor(virtualMs: number): number {
    return wallFor(this.epoch(), virtualMs);
  }

  /** A driver bound to one host (the host must exist when its methods are called). */
  forHost(hostId: string): HypervisorDriver {
    safeName('hostId', hostId);
    return new SimDriver(this, hostId);
  }

  /**
   * Runs fn inside one IMMEDIATE transaction with virtual now read inside it, after settling
   * every open migration up to now. Internal to drivers/sim.
   */
  tx<T>(fn: (nowV: number) => T): T {
    const out = this.store.tx((): { ok: T } | { err: Error } => {
      const nowV = this.virtualNow();
      this.settle(nowV);
      try {
        return { ok: fn(nowV) };
      } catch (e) {
        if (e instanceof CommitThenThrow) return { err: e.error };
        throw e;
      }
    });
    if ('err' in out) throw out.err;
    return out.ok;
  }

  // ---------------------------------------------------------------- topology

  upsertHost(h: SimHostInput): void {
    const id = safeName('host.id', h?.id);
    const cpuModel = nonEmptyString('host.cpuModel', h.cpuModel);
    const features = stringArray('host.cpuFeatures', h.cpuFeatures);
    const cpus = positiveInt('host.cpus', h.cpus);
    const mem = positiveInt('host.memoryBytes', h.memoryBytes);
    const nets = stringArray('host.networks', h.networks);
    nets.forEach((n, i) => safeName(`host.networks[${i}]`, n));
    const addr = h.migrationAddress === undefined ? `sim://${id}` : nonEmptyString('host.migrationAddress', h.migrationAddress);
    this.store.tx(() => {
      this.store.run(
        `INSERT INTO hosts (id, cpu_model, cpu_features, cpus, memory_bytes, migration_address) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET cpu_model = excluded.cpu_model, cpu_features = excluded.cpu_features,
           cpus = excluded.cpus, memory_bytes = excluded.memory_bytes, migration_address = excluded.migration_address`,
        id,
        cpuModel,
        JSON.stringify(features),
        cpus,
        mem,
        addr,
      );
      this.store.run('DELETE FROM networks WHERE host_id = ?', id);
      for (const n of new Set(nets)) this.store.run('INSERT INTO networks (host_id, name) VALUES (?, ?)', id, n);
    });
  }

  /** Removes a host with no VMs and no open migration (its links and datastore attachments go too). */
  removeHost(hostId: string): void {
    safeName('hostId', hostId);
    this.tx(() => {
      this.requireHost(hostId);
      const vms = this.store.all<{ vm_id: string }>('SELECT vm_id FROM vms WHERE host_id = ?', hostId);
      if (vms.length > 0) throw invalidState(`host ${hostId} still has VMs: ${vms.map((v) => v.vm_id).join(', ')}`);
      const m = this.store.get<MigrationRow>('SELECT * FROM migrations WHERE finalized = 0 AND (source_host = ? OR target_host = ?)', hostId, hostId);
      if (m) throw invalidState(`host ${hostId} has a migration in progress (vm ${m.vm_id})`);
      this.store.run('DELETE FROM hosts WHERE id = ?', hostId);
      this.store.run('DELETE FROM networks WHERE host_id = ?', hostId);
      this.store.run('DELETE FROM datastore_hosts WHERE host_id = ?', hostId);
      this.store.run('DELETE FROM links WHERE a = ? OR b = ?', hostId, hostId);
    });
  }

  upsertDatastore(d: SimDatastoreInput): void {
    const id = safeName('datastore.id', d?.id);
    if (typeof d.shared !== 'boolean') throw invalid('datastore.shared must be a boolean');
    const cap = nonNegativeInt('datastore.capacityBytes', d.capacityBytes);
    const tput = positiveNumber('datastore.throughputBytesPerSec', d.throughputBytesPerSec);
    const hostIds = [...new Set(stringArray('datastore.hostIds', d.hostIds))];
    if (!d.shared && hostIds.length > 1) throw invalid(`datastore ${id} is not shared but names ${hostIds.length} hosts (datastore.hostIds)`);
    this.store.tx(() => {
      for (const h of hostIds) if (!this.hostRow(h)) throw notFound(`datastore.hostIds: host "${h}" is not in the simulator`);
      this.store.run(
        `INSERT INTO datastores (id, shared, capacity_bytes, throughput_bytes_per_sec) VALUES (?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET shared = excluded.shared, capacity_bytes = excluded.capacity_bytes,
           throughput_bytes_per_sec = excluded.throughput_bytes_per_sec`,
        id,
        d.shared ? 1 : 0,
        cap,
        tput,
      );
      this.store.run('DELETE FROM datastore_hosts WHERE datastore_id = ?', id);
      for (const h of hostIds) this.store.run('INSERT INTO datastore_hosts (datastore_id, host_id) VALUES (?, ?)', id, h);
    });
  }

  /** Undirected migration link; hosts without a link row talk at 1 GiB/s. */
  upsertLink(l: SimLinkInput): void {
    const a = safeName('link.a', l?.a);
    const b = safeName('link.b', l.b);
    if (a === b) throw invalid(`link.a and link.b must differ, both are "${a}"`);
    const bw = positiveNumber('link.bandwidthBytesPerSec', l.bandwidthBytesPerSec);
    const [x, y] = a < b ? [a, b] : [b, a];
    this.store.tx(() => {
      for (const h of [a, b]) if (!this.hostRow(h)) throw notFound(`link: host "${h}" is not in the simulator`);
      this.store.run(
        `INSERT INTO links (a, b, bandwidth_bytes_per_sec) VALUES (?, ?, ?)
         ON CONFLICT (a, b) DO UPDATE SET bandwidth_bytes_per_sec = excluded.bandwidth_bytes_per_sec`,
        x,
        y,
        bw,
      );
    });
  }

  /** A template (or importable) image file on a datastore. */
  upsertImage(i: SimImageInput): void {
    const path = nonEmptyString('image.path', i?.path);
    if (/\s/.test(path)) throw invalid(`image.path "${path}" must not contain whitespace`);
    const ds = safeName('image.datastoreId', i.datastoreId);
    const size = positiveInt('image.sizeBytes', i.sizeBytes);
    const format = i.format ?? 'qcow2';
    if (!['qcow2', 'raw', 'vmdk', 'vhdx'].includes(format)) throw invalid(`image.format must be qcow2, raw, vmdk or vhdx, got ${format}`);
    this.store.tx(() => {
      if (!this.datastoreRow(ds)) throw notFound(`image.datastoreId: datastore "${ds}" is not in the simulator`);
      if (this.store.get('SELECT path FROM disks WHERE path = ?', path)) throw invalid(`image.path "${path}" is already a disk`);
      this.store.run(
        `INSERT INTO images (path, datastore_id, size_bytes, format) VALUES (?, ?, ?, ?)
         ON CONFLICT (path) DO UPDATE SET datastore_id = excluded.datastore_id, size_bytes = excluded.size_bytes, format = excluded.format`,
        path,
        ds,
        size,
        format,
      );
    });
  }

  listHosts(): SimHostInput[] {
    return this.store.all<HostRow>('SELECT * FROM hosts ORDER BY id').map((h) => ({
      id: h.id,
      cpuModel: h.cpu_model,
      cpuFeatures: JSON.parse(h.cpu_features) as string[],
      cpus: h.cpus,
      memoryBytes: h.memory_bytes,
      networks: this.networksOf(h.id),
      migrationAddress: h.migration_address,
    }));
  }

  // ---------------------------------------------------------------- faults

  /** Persists a fault; destination-crash and link-cut hit open migrations at once. */
  injectFault(input: SimFaultInput): SimFault {
    const f = validateFaultInput(input);
    return this.tx((nowV) => {
      for (const k of ['hostId', 'peerHostId'] as const) {
        const h = f[k];
        if (h !== undefined && !this.hostRow(h)) throw notFound(`fault.${k}: host "${h}" is not in the simulator`);
      }
      if (f.datastoreId !== undefined && !this.datastoreRow(f.datastoreId)) {
        throw notFound(`fault.datastoreId: datastore "${f.datastoreId}" is not in the simulator`);
      }
      const row = insertFault(this.store, f, nowV);
      this.applyFaultToOpenMigrations(row, nowV);
      if (row.kind === 'slow-disk') this.rescheduleDisks(nowV);
      return toFault(this.store.get<FaultRow>('SELECT * FROM faults WHERE id = ?', row.id)!);
    });
  }

  listFaults(): SimFault[] {
    return this.store.all<FaultRow>('SELECT * FROM faults ORDER BY seq').map(toFault);
  }

  /** Removes faults (all, or by id / kind); a cleared dirty-rate restores the guest's own rate. Returns how many. */
  clearFaults(filter: { id?: string; kind?: SimFaultKind } = {}): number {
    return this.tx((nowV) => {
      const rows = this.store
        .all<FaultRow>('SELECT * FROM faults ORDER BY seq')
        .filter((r) => (filter.id === undefined || r.id === filter.id) && (filter.kind === undefined || r.kind === filter.kind));
      for (const r of rows) {
        this.store.run('DELETE FROM faults WHERE id = ?', r.id);
        if (r.kind === 'dirty-rate' && r.vm_id) {
          for (const m of this.openMigrations().filter((x) => x.vm_id === r.vm_id)) {
            const other = liveFaults(this.store, 'dirty-rate').find((x) => x.vm_id === r.vm_id);
            this.addSegment(m.id, nowV, { dirtyRateBytesPerSec: other?.value ?? m.dirty_rate });
          }
        }
      }
      if (rows.some((r) => r.kind === 'slow-disk')) this.rescheduleDisks(nowV);
      return rows.length;
    });
  }

  private applyFaultToOpenMigrations(f: FaultRow, nowV: number): void {
    for (const m of this.openMigrations()) {
      if (!matches(f.vm_id, m.vm_id)) continue;
      const status = this.evaluate(m, nowV).status;
      if (!OPEN_STATUSES.has(status)) continue;
      if (f.kind === 'destination-crash' && f.host_id === m.target_host) {
        this.abortMigration(m, nowV, 'failed', 'destination crashed');
        consume(this.store, f, nowV);
      } else if (f.kind === 'link-cut' && this.cutMatches(f, m.source_host, m.target_host)) {
        this.abortMigration(m, nowV, 'failed', `link down between ${m.source_host} and ${m.target_host}`);
        markFired(this.store, f.id, nowV);
      } else if (f.kind === 'dirty-rate' && f.vm_id === m.vm_id && status === 'active') {
        this.addSegment(m.id, nowV, { dirtyRateBytesPerSec: f.value ?? 0 });
        markFired(this.store, f.id, nowV);
      }
      const left = this.store.get<FaultRow>('SELECT * FROM faults WHERE id = ?', f.id);
      if (!left || left.remaining === 0) return;
    }
  }

  cutMatches(f: FaultRow, a: string, b: string): boolean {
    if (f.peer_host_id === null) return f.host_id === a || f.host_id === b;
    return (f.host_id === a && f.peer_host_id === b) || (f.host_id === b && f.peer_host_id === a);
  }

  /**
   * The first live fail-step fault for `step` on this host/vm is spent and recorded, then
   * FAULT_INJECTED is thrown (as CommitThenThrow, so the spending is kept). A disk name matches a
   * vm filter when it is `<vmId>` or starts with `<vmId>-`.
   */
  spendStepFault(step: string, hostId: string, vmId: string | undefined, nowV: number, diskName?: string): void {
    const f = liveFaults(this.store, 'fail-step').find(
      (r) =>
        r.step === step &&
        matches(r.host_id, hostId) &&
        (r.vm_id === null || r.vm_id === vmId || (diskName !== undefined && (diskName === r.vm_id || diskName.startsWith(`${r.vm_id}-`)))),
    );
    if (f) {
      consume(this.store, f, nowV);
      throw new CommitThenThrow(
        new DriverError(`injected fault ${f.id}: ${step} failed on host ${hostId}${vmId ? ` (vm ${vmId})` : ''}`, 'FAULT_INJECTED'),
      );
    }
  }

  /**
   * For callers outside the driver (e.g. a control-worker hook): spends a matching fail-step fault
   * in its own transaction and throws DriverError FAULT_INJECTED. hostId '' matches only faults
   * without a host filter. Do not call it from inside Simulator.tx.
   */
  checkStepFault(step: string, hostId: string, vmId?: string, _nowV?: number): void {
    this.tx((nowV) => this.spendStepFault(step, hostId, vmId, nowV));
  }

  /** Live fail-stage / destination-crash fault for a migration stage, filtered by host and vm (not spent). */
  findStageFault(kind: 'fail-stage' | 'destination-crash', stage: number, hosts: string[], vmId: string): FaultRow | undefined {
    return liveFaults(this.store, kind).find(
      (r) =>
        (r.stage ?? (kind === 'destination-crash' ? 2 : -1)) === stage &&
        (r.host_id === null || hosts.includes(r.host_id)) &&
        matches(r.vm_id, vmId),
    );
  }

  /** Throughput divisor from slow-disk faults on these datastores or this host (1 = none); records firing. */
  slowFactor(datastoreIds: string[], hostId: string | null, nowV: number): number {
    let factor = 1;
    for (const f of liveFaults(this.store, 'slow-disk')) {
      const hit = (f.datastore_id !== null && datastoreIds.includes(f.datastore_id)) || (f.datastore_id === null && f.host_id === hostId);
      if (!hit) continue;
      factor = Math.max(factor, f.value ?? 10);
      consume(this.store, f, nowV);
    }
    return factor;
  }

  /** Bytes written of a disk at virtual time v (piecewise linear from its last checkpoint). */
  diskDone(d: DiskRow, v: number): number {
    if (v >= d.end_v) return d.bytes_to_write;
    return Math.min(d.bytes_to_write, d.ckpt_bytes + (Math.max(v, d.ckpt_v) - d.ckpt_v) * d.rate / 1000);
  }

  /** After slow-disk faults change: copies in progress continue at their new rate from now. */
  private rescheduleDisks(nowV: number): void {
    for (const d of this.store.all<DiskRow>('SELECT * FROM disks WHERE end_v > ? AND bytes_to_write > 0', nowV)) {
      const factor = this.slowFactor([d.datastore_id, ...(JSON.parse(d.src_datastores) as string[])], d.host_id, nowV);
      const rate = d.base_rate / factor;
      if (rate === d.rate) continue;
      const done = this.diskDone(d, nowV);
      this.store.run(
        'UPDATE disks SET ckpt_v = ?, ckpt_bytes = ?, rate = ?, end_v = ? WHERE path = ?',
        nowV,
        done,
        rate,
        nowV + ((d.bytes_to_write - done) * 1000) / rate,
        d.path,
      );
    }
  }

  linkCut(a: string, b: string): FaultRow | undefined {
    return liveFaults(this.store, 'link-cut').find((f) => this.cutMatches(f, a, b));
  }

  // ---------------------------------------------------------------- lookups (inside tx)

  hostRow(id: string): HostRow | undefined {
    return this.store.get<HostRow>('SELECT * FROM hosts WHERE id = ?', id);
  }

  requireHost(id: string): HostRow {
    const h = this.hostRow(id);
    if (!h) throw notFound(`host "${id}" is not in the simulator`);
    return h;
  }

  datastoreRow(id: string): DatastoreRow | undefined {
    return this.store.get<DatastoreRow>('SELECT * FROM datastores WHERE id = ?', id);
  }

  networksOf(hostId: string): string[] {
    return this.store.all<{ name: string }>('SELECT name FROM networks WHERE host_id = ? ORDER BY name', hostId).map((r) => r.name);
  }

  datastoresOf(hostId: string): DatastoreRow[] {
    return this.store.all<DatastoreRow>(
      'SELECT d.* FROM datastores d JOIN datastore_hosts h ON h.datastore_id = d.id WHERE h.host_id = ? ORDER BY d.id',
      hostId,
    );
  }

  hostsOf(datastoreId: string): string[] {
    return this.store.all<{ host_id: string }>('SELECT host_id FROM datastore_hosts WHERE datastore_id = ? ORDER BY host_id', datastoreId).map((r) => r.host_id);
  }

  attached(datastoreId: string, hostId: string): boolean {
    return !!this.store.get('SELECT 1 AS x FROM datastore_hosts WHERE datastore_id = ? AND host_id = ?', datastoreId, hostId);
  }

  /** Bytes allocated on a datastore: disks (virtual size), seeds and images. */
  usedBytes(datastoreId: string): number {
    const d = this.store.get<{ s: number | null }>("SELECT SUM(CASE WHEN kind = 'seed' THEN actual_size_bytes ELSE virtual_size_bytes END) AS s FROM disks WHERE datastore_id = ?", datastoreId);
    const i = this.store.get<{ s: number | null }>('SELECT SUM(size_bytes) AS s FROM images WHERE datastore_id = ?', datastoreId);
    return (d?.s ?? 0) + (i?.s ?? 0);
  }

  linkBandwidth(a: string, b: string): number {
    const [x, y] = a < b ? [a, b] : [b, a];
    const r = this.store.get<{ bandwidth_bytes_per_sec: number }>('SELECT bandwidth_bytes_per_sec FROM links WHERE a = ? AND b = ?', x, y);
    return r?.bandwidth_bytes_per_sec ?? DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC;
  }

  vmRow(hostId: string, vmId: string): VmRow | undefined {
    return this.store.get<VmRow>('SELECT * FROM vms WHERE host_id = ? AND vm_id = ?', hostId, vmId);
  }

  setVmState(hostId: string, vmId: string, state: VmPowerState, nowV: number): void {
    this.store.run('UPDATE vms SET state = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?', state, nowV, hostId, vmId);
  }

  diskRow(path: string): DiskRow | undefined {
    return this.store.get<DiskRow>('SELECT * FROM disks WHERE path = ?', path);
  }

  // ---------------------------------------------------------------- migrations

  openMigrations(): MigrationRow[] {
    return this.store.all<MigrationRow>('SELECT * FROM migrations WHERE finalized = 0 ORDER BY id');
  }

  /** The newest migration of vmId whose source (or, failing that, target) is hostId. */
  latestMigration(vmId: string, hostId: string): MigrationRow | undefined {
    return (
      this.store.get<MigrationRow>('SELECT * FROM migrations WHERE vm_id = ? AND source_host = ? ORDER BY id DESC LIMIT 1', vmId, hostId) ??
      this.store.get<MigrationRow>('SELECT * FROM migrations WHERE vm_id = ? AND target_host = ? ORDER BY id DESC LIMIT 1', vmId, hostId)
    );
  }

  modelInput(m: MigrationRow): MigrationModelInput {
    const segs = this.store.all<MigrationParamRow>('SELECT * FROM migration_params WHERE migration_id = ? ORDER BY id', m.id);
    return {
      startV: m.start_v,
      memoryBytes: m.memory_bytes,
      linkBandwidthBytesPerSec: m.link_bw,
      dirtyRateBytesPerSec: m.dirty_rate,
      writableWorkingSetBytes: m.wws,
      deviceStateBytes: m.device_bytes,
      diskBytes: m.disk_bytes,
      segments: segs.map((s) => ({ atV: s.at_v, params: JSON.parse(s.params) as SegmentParams })),
      continueAtV: m.continue_at_v,
      abort:
        m.abort_at_v === null ? null : { atV: m.abort_at_v, status: m.abort_status === 'cancelled' ? 'cancelled' : 'failed', error: m.abort_error ?? 'aborted' },
      failAfterRound1: m.fail_round1,
      failAtPause: m.fail_pause,
      failAtContinue: m.fail_continue,
    };
  }

  evaluate(m: MigrationRow, nowV: number): MigrationView {
    if (m.finalized && m.final_json) return JSON.parse(m.final_json) as MigrationView;
    return evaluateMigration(this.modelInput(m), nowV);
  }

  addSegment(migrationId: number, atV: number, params: SegmentParams): void {
    this.store.run('INSERT INTO migration_params (migration_id, at_v, params) VALUES (?, ?, ?)', migrationId, atV, JSON.stringify(params));
  }

  /** Records an external terminal event (cancel, crash, link cut) at nowV and settles it. */
  abortMigration(m: MigrationRow, nowV: number, status: 'failed' | 'cancelled', error: string): void {
    this.store.run(
      'UPDATE migrations SET abort_at_v = ?, abort_status = ?, abort_error = ? WHERE id = ? AND abort_at_v IS NULL AND finalized = 0',
      nowV,
      status,
      error,
      m.id,
    );
    this.settle(nowV);
  }

  /** Writes into the vm rows what every open migration's timeline says happened by nowV. */
  settle(nowV: number): void {
    for (const m of this.openMigrations()) {
      const v = this.evaluate(m, nowV);
      const src = this.vmRow(m.source_host, m.vm_id);
      const dst = this.vmRow(m.target_host, m.vm_id);
      if (v.status === 'pre-switchover' || v.status === 'device') {
        if (src && src.state === 'running') this.setVmState(m.source_host, m.vm_id, 'paused', nowV);
        continue;
      }
      if (v.status === 'active') continue;
      if (v.status === 'completed') {
        if (src) this.setVmState(m.source_host, m.vm_id, 'postmigrate', nowV);
        if (dst) {
          let spec = JSON.parse(dst.spec) as VmSpec;
          const plan = JSON.parse(m.disk_plan) as DiskCopyPlan[];
          if (plan.length > 0) spec = this.materializeDiskCopies(plan, spec, nowV);
          this.store.run(
            'UPDATE vms SET state = ?, generation = ?, spec = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?',
            'paused',
            src?.generation ?? dst.generation,
            JSON.stringify(spec),
            nowV,
            m.target_host,
            m.vm_id,
          );
        }
      } else {
        // failed / cancelled: A is primary; resume it if it ran before; B's container exits
        if (src && (src.state === 'paused' || src.state === 'postmigrate') && m.source_prev_state === 'running') {
          this.setVmState(m.source_host, m.vm_id, 'running', nowV);
        }
        if (dst && dst.state === 'incoming') this.store.run('DELETE FROM vms WHERE host_id = ? AND vm_id = ?', m.target_host, m.vm_id);
        const bound = JSON.parse(m.bound_faults) as Partial<Record<'round1' | 'pause' | 'continue', string>>;
        const id = v.cause && v.cause !== 'abort' ? bound[v.cause] : undefined;
        if (id) markFired(this.store, id, v.endedAtV ?? nowV);
      }
      this.store.run('UPDATE migrations SET finalized = 1, final_json = ? WHERE id = ?', JSON.stringify(v), m.id);
    }
  }

  private materializeDiskCopies(plan: DiskCopyPlan[], spec: VmSpec, nowV: number): VmSpec {
    const rename = new Map<string, string>();
    for (const p of plan) {
      const src = this.diskRow(p.sourcePath);
      if (!src) continue;
      if (!this.diskRow(p.targetPath)) {
        this.store.run(
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
    return { ...spec, disks: spec.disks.map((d) => rename.get(d) ?? d) };
  }

  // ---------------------------------------------------------------- invariants and tests

  /** Hosts on which the guest vmId is running right now (an invariant checker wants at most one). */
  runningHostsOf(vmId: string): string[] {
    return this.tx(() =>
      this.store.all<{ host_id: string }>("SELECT host_id FROM vms WHERE vm_id = ? AND state = 'running' ORDER BY host_id", vmId).map((r) => r.host_id),
    );
  }

  /** The guest writes to its memory: its generation counter goes up (a migrated guest keeps it). */
  bumpGeneration(hostId: string, vmId: string): number {
    return this.tx(() => {
      const vm = this.vmRow(hostId, vmId);
      if (!vm) throw notFound(`vm "${vmId}" is not on host ${hostId}`);
      if (vm.state !== 'running') throw invalidState(`vm ${vmId} on ${hostId} is ${vm.state}; only a running guest writes memory`);
      this.store.run('UPDATE vms SET generation = generation + 1 WHERE host_id = ? AND vm_id = ?', hostId, vmId);
      return vm.generation + 1;
    });
  }

  /** Everything, settled at virtual now, for invariant checkers and tests. */
  snapshot(): SimSnapshot {
    return this.tx((nowV) => {
      const hosts = this.store.all<HostRow>('SELECT * FROM hosts ORDER BY id').map((h) => ({
        id: h.id,
        datastores: this.datastoresOf(h.id).map((d) => d.id),
        networks: this.networksOf(h.id),
      }));
      const vms = this.store.all<VmRow>('SELECT * FROM vms ORDER BY vm_id, host_id').map((r) => {
        const spec = JSON.parse(r.spec) as VmSpec;
        return { hostId: r.host_id, vmId: r.vm_id, state: r.state as VmPowerState, generation: r.generation, memoryBytes: spec.memoryBytes, disks: spec.disks };
      });
      const disks = this.store.all<DiskRow>('SELECT * FROM disks ORDER BY path').map((d) => ({
        path: d.path,
        datastoreId: d.datastore_id,
        kind: d.kind,
        ready: d.end_v <= nowV,
        virtualSizeBytes: d.virtual_size_bytes,
      }));
      return { virtualNowMs: nowV, hosts, vms, disks, migrations: this.migrationsAt(nowV), faults: this.listFaults() };
    });
  }

  /** Every migration (newest last) with its stats at virtual now. */
  migrations(vmId?: string): SimMigrationSnapshot[] {
    return this.tx((nowV) => this.migrationsAt(nowV).filter((m) => vmId === undefined || m.vmId === vmId));
  }

  private migrationsAt(nowV: number): SimMigrationSnapshot[] {
    return this.store.all<MigrationRow>('SELECT * FROM migrations ORDER BY id').map((m) => {
      const v = this.evaluate(m, nowV);
      const out: SimMigrationSnapshot = {
        id: m.id,
        vmId: m.vm_id,
        sourceHostId: m.source_host,
        targetHostId: m.target_host,
        startedAtV: m.start_v,
        stats: v.stats,
      };
      if (v.endedAtV !== undefined) out.endedAtV = v.endedAtV;
      return out;
    });
  }
}
