// The QEMU hypervisor driver: one instance bound to one "host", which is a state folder.
//
// <stateDir>/vms/<vmId>/   spec.json, runtime.json, qmp.sock, qemu.pid, serial.log
// <datastore.path>/        <disk>.qcow2, <vmId>-seed.img (default datastore: <stateDir>/datastores/local)
//
// QEMU runs daemonized (-daemonize -pidfile), so a VM outlives the agent; a new driver instance on
// the same stateDir re-attaches through the pid file and the QMP socket. Every fact about a VM
// that matters after a crash lives in the folder (spec.json, runtime.json) or in QEMU itself
// (query-status, query-migrate), never only in this process's memory.
import { constants as fsc, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import {
  DriverError,
  assertSafeName,
  type CloudInitSeed,
  type DiskInfo,
  type DiskSpec,
  type HostInfo,
  type HypervisorDriver,
  type LongCallOptions,
  type MigrationParams,
  type MigrationStats,
  type MigrationStatusName,
  type StartMigrationOptions,
  type VmPowerState,
  type VmRuntime,
  type VmSpec,
} from '../hypervisor.js';
import { buildQemuArgs, validateVmSpec, type QemuPaths } from './args.js';
import { abortReason, buildSeedImage, imgConvert, imgInfo, isDiskFormat, qemuImg } from './img.js';
import { isOurProcess, portIsFree, portOrder, readPidFile, sleep, waitForExit } from './process.js';
import { QmpClient, QmpCommandError, type QmpEvent } from './qmp.js';

export interface QemuDatastoreConfig {
  id: string;
  path: string;
  shared: boolean;
  /** reported in hostInfo (placement's copy-time estimates); default 500 MB/s */
  throughputBytesPerSec?: number;
}

export interface QemuDriverOptions {
  hostId: string;
  stateDir: string;
  /** address other hosts use to reach this host's incoming migrations */
  migrationAddress?: string;
  /** inclusive TCP port range for incoming migrations; default [47000, 47999] */
  portRange?: [number, number];
  /** `-cpu` model; default qemu64 */
  cpuModel?: string;
  /** features the CPU model offers guests; a VM spec asking for more is refused */
  cpuFeatures?: string[];
  cpus?: number;
  memoryBytes?: number;
  datastores?: QemuDatastoreConfig[];
  /** network names; every network is user-mode networking here (no bridges on CI) */
  networks?: string[];
  /** default tcg (faster and deterministic on the CI machines, see shared/notes/qemu-facts.md) */
  accel?: 'tcg' | 'kvm' | 'auto';
  /** machine type; the same on both ends of a migration. Default `pc` */
  machine?: string;
  qemuBinary?: string;
  qemuImgBinary?: string;
  /** per-command QMP timeout; default 10 s */
  qmpTimeoutMs?: number;
  /** how long continueSwitchover / cancelMigration wait for QEMU to reach the end state; default 60 s */
  migrationWaitMs?: number;
}

export interface QemuDriver extends HypervisorDriver {
  readonly kind: 'qemu';
  readonly stateDir: string;
  /** files of one VM on this host */
  vmPaths(vmId: string): VmPaths;
  /** a raw QMP command on a VM (tests, diagnostics) */
  qmp<T = unknown>(vmId: string, command: string, args?: Record<string, unknown>): Promise<T>;
  /** HMP passthrough (`xp /1wx 0x500`) */
  hmp(vmId: string, commandLine: string): Promise<string>;
  /**
   * Like the interface's resumeVm; `afterCompletedMigration` allows resuming a `postmigrate`
   * source, which only the workflow may decide (when the commit is known not to have happened).
   */
  resumeVm(vmId: string, opts?: { afterCompletedMigration?: boolean }): Promise<VmRuntime>;
  /** closes this instance's QMP sessions; VMs keep running (a new instance re-attaches) */
  close(): Promise<void>;
}

export interface VmPaths extends QemuPaths {
  dir: string;
  spec: string;
  runtime: string;
}

/** Source-side migration settings that must survive an agent restart. */
interface MigrationRecord {
  uri: string;
  hold: boolean;
  autoSwitchover: boolean;
  /** the downtime limit the caller wants once not held */
  downtimeLimitMs: number;
  throttlePct: number;
  maxBandwidthBytesPerSec: number;
  /** the source ran before the migration: a rollback resumes it */
  wasRunning: boolean;
}

interface RuntimeRecord {
  /** incoming = migration container waiting for / holding received state, not yet activated */
  role: 'normal' | 'incoming';
  /** the VM has been started at least once */
  started: boolean;
  /** the process should be alive (set on start, cleared on a deliberate stop) */
  expectRunning: boolean;
  incomingUri?: string;
  migration?: MigrationRecord;
}

/**
 * QEMU's downtime-limit while a migration is held: 1 ms makes the switchover threshold tiny, so a
 * guest that dirties memory keeps the source in pre-copy rounds. (0 does not work in 7.2: with a
 * zero threshold QEMU never re-syncs the dirty bitmap, sees nothing pending after round 1 and
 * switches over at once.) A guest that dirties (almost) nothing can still converge while held;
 * it then waits, paused, at pre-switchover for continueSwitchover or cancelMigration.
 */
const HOLD_DOWNTIME_MS = 1;
/**
 * QEMU 7.2 computes the switchover threshold only every 100 ms; until then it is 0, and a first
 * round that finishes inside that window (a mostly-zero 128 MiB guest takes ~20 ms) switches over
 * without ever re-syncing. A held migration therefore starts at this bandwidth for its first
 * HOLD_WARMUP_MS and only then gets the bandwidth asked for.
 */
const HOLD_WARMUP_BYTES_PER_SEC = 256 * 1024;
const HOLD_WARMUP_MS = 300;
/** QEMU 7.2's default max-bandwidth (bytes/s) */
const QEMU_DEFAULT_BANDWIDTH = 128 * 1024 * 1024;
/** QEMU 7.2's maximum downtime-limit (ms): forces the next iteration into stop-and-copy. */
const FORCE_DOWNTIME_MS = 2_000_000;
const DEFAULT_DOWNTIME_MS = 300;
const SUN_PATH_MAX = 107;

const QEMU64_FEATURES = [
  'fpu', 'tsc', 'pae', 'cx8', 'apic', 'sep', 'cmov', 'clflush', 'mmx', 'fxsr',
  'sse', 'sse2', 'pni', 'cx16', 'lm', 'syscall', 'nx', 'lahf_lm',
];

const IN_PROGRESS = new Set(['setup', 'active', 'pre-switchover', 'device', 'wait-unplug', 'cancelling', 'postcopy-active']);

interface QueryMigrate {
  status?: string;
  ram?: Record<string, number>;
  'expected-downtime'?: number;
  downtime?: number;
  'total-time'?: number;
  'setup-time'?: number;
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
}

/**
 * query-migrate reports the LAST migration of the process, in either direction: a VM that arrived
 * by an incoming migration reads `{"status":"completed"}` (and nothing else) although it never
 * sent anything. A completed OUTGOING migration leaves the source in finish-migrate, then
 * postmigrate; in a runstate a migration can start from, "completed" is stale (an incoming
 * migration, or an outgoing one rolled back after the commit was known absent): no outgoing
 * migration is in flight or done, and a new one may start.
 */
function staleCompleted(runstate: string): boolean {
  return runstate === 'running' || runstate === 'paused' || runstate === 'prelaunch';
}

function mapMigrationStatus(s: string | undefined): MigrationStatusName {
  switch (s) {
    case undefined:
    case 'none':
      return 'none';
    case 'setup':
      return 'setup';
    case 'pre-switchover':
      return 'pre-switchover';
    case 'device':
      return 'device';
    case 'completed':
      return 'completed';
    case 'failed':
      return 'failed';
    case 'cancelled':
      return 'cancelled';
    default:
      // active, cancelling, wait-unplug, postcopy-*: the transfer is still going
      return 'active';
  }
}

/** QEMU runstate -> VmPowerState (prelaunch depends on the role: see vmStatus). */
export function mapRunState(runstate: string, role: RuntimeRecord['role']): VmPowerState {
  switch (runstate) {
    case 'running':
      return 'running';
    case 'inmigrate':
      return 'incoming';
    case 'postmigrate':
      return 'postmigrate';
    case 'prelaunch':
      // a received migration whose source never ran lands in prelaunch: a paused copy
      return role === 'incoming' ? 'paused' : 'defined';
    case 'shutdown':
      return 'stopped';
    case 'internal-error':
    case 'io-error':
    case 'guest-panicked':
    case 'watchdog':
      return 'crashed';
    default:
      // paused, finish-migrate, suspended, debug, save-vm, restore-vm, colo
      return 'paused';
  }
}

export function createQemuDriver(options: QemuDriverOptions): QemuDriver {
  assertSafeName('hostId', options.hostId);
  if (typeof options.stateDir !== 'string' || !path.isAbsolute(options.stateDir)) {
    throw new DriverError(`stateDir "${options.stateDir}" must be an absolute path`, 'INVALID_ARGUMENT', true);
  }
  const stateDir = path.resolve(options.stateDir);
  const hostId = options.hostId;
  const migrationAddress = options.migrationAddress ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:-]+$/.test(migrationAddress)) {
    throw new DriverError(`migrationAddress "${migrationAddress}" is not a host name or address`, 'INVALID_ARGUMENT', true);
  }
  const portRange = options.portRange ?? [47000, 47999];
  if (!(Number.isInteger(portRange[0]) && Number.isInteger(portRange[1]) && portRange[0] >= 1024 && portRange[1] <= 65535 && portRange[0] <= portRange[1])) {
    throw new DriverError(`portRange ${JSON.stringify(portRange)} must be [lo, hi] within 1024..65535`, 'INVALID_ARGUMENT', true);
  }
  const datastores: QemuDatastoreConfig[] = options.datastores ?? [
    { id: 'local', path: path.join(stateDir, 'datastores', 'local'), shared: false },
  ];
  for (const ds of datastores) {
    assertSafeName('datastore id', ds.id);
    if (!path.isAbsolute(ds.path)) throw new DriverError(`datastore "${ds.id}" path "${ds.path}" must be absolute`, 'INVALID_ARGUMENT', true);
  }
  const networks = options.networks ?? ['default'];
  networks.forEach((n) => assertSafeName('network', n));
  const cpuModel = options.cpuModel ?? 'qemu64';
  const cpuFeatures = options.cpuFeatures ?? QEMU64_FEATURES;
  const qemuBinary = options.qemuBinary ?? 'qemu-system-x86_64';
  const qemuImgBinary = options.qemuImgBinary ?? 'qemu-img';
  const machine = options.machine ?? 'pc';
  const qmpTimeoutMs = options.qmpTimeoutMs ?? 10_000;
  const migrationWaitMs = options.migrationWaitMs ?? 60_000;
  let accelResolved: Promise<'tcg' | 'kvm'> | undefined;

  const clients = new Map<string, Promise<QmpClient>>();
  const locks = new Map<string, Promise<unknown>>();

  // ---------- helpers ----------

  function vmPaths(vmId: string): VmPaths {
    assertSafeName('vmId', vmId);
    const dir = path.join(stateDir, 'vms', vmId);
    const p: VmPaths = {
      dir,
      spec: path.join(dir, 'spec.json'),
      runtime: path.join(dir, 'runtime.json'),
      qmpSocket: path.join(dir, 'qmp.sock'),
      pidFile: path.join(dir, 'qemu.pid'),
      serialLog: path.join(dir, 'serial.log'),
    };
    if (Buffer.byteLength(p.qmpSocket) > SUN_PATH_MAX) {
      throw new DriverError(
        `stateDir "${stateDir}" is too long: the QMP socket path for vm "${vmId}" exceeds ${SUN_PATH_MAX} bytes`,
        'INVALID_ARGUMENT',
        true,
      );
    }
    return p;
  }

  /** Serializes lifecycle operations per VM (two concurrent startVm must not spawn twice). */
  async function withLock<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(vmId) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    locks.set(vmId, tail);
    try {
      return await run;
    } finally {
      if (locks.get(vmId) === tail) locks.delete(vmId);
    }
  }

  async function readJson<T>(file: string): Promise<T | undefined> {
    try {
      return JSON.parse(await fs.readFile(file, 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DriverError(`cannot read ${file}: ${(err as Error).message}`, 'HYPERVISOR');
    }
  }

  /** Atomic write (temp + rename): a crash never leaves a half-written state file. */
  async function writeJson(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.tmp-${process.pid}`;
    await fs.writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
    await fs.rename(tmp, file);
  }

  async function readSpec(vmId: string): Promise<VmSpec | undefined> {
    return readJson<VmSpec>(vmPaths(vmId).spec);
  }

  async function readRuntime(vmId: string): Promise<RuntimeRecord> {
    return (await readJson<RuntimeRecord>(vmPaths(vmId).runtime)) ?? { role: 'normal', started: false, expectRunning: false };
  }

  async function updateRuntime(vmId: string, patch: Partial<RuntimeRecord>): Promise<RuntimeRecord> {
    const cur = await readRuntime(vmId);
    const next = { ...cur, ...patch };
    for (const k of Object.keys(patch) as (keyof RuntimeRecord)[]) if (patch[k] === undefined) delete next[k];
    await writeJson(vmPaths(vmId).runtime, next);
    return next;
  }

  async function requireSpec(vmId: string): Promise<VmSpec> {
    const spec = await readSpec(vmId);
    if (!spec) throw new DriverError(`vm "${vmId}" is not defined on host "${hostId}"`, 'NOT_FOUND', true);
    return spec;
  }

  /** pid of the VM's live QEMU, or undefined. */
  async function livePid(vmId: string): Promise<number | undefined> {
    const p = vmPaths(vmId);
    const pid = await readPidFile(p.pidFile);
    if (pid === undefined) return undefined;
    return (await isOurProcess(pid, p.qmpSocket)) ? pid : undefined;
  }

  function resolveAccel(): Promise<'tcg' | 'kvm'> {
    accelResolved ??= (async () => {
      const a = options.accel ?? 'tcg';
      if (a !== 'auto') return a;
      try {
        await fs.access('/dev/kvm', fsc.R_OK | fsc.W_OK);
        return 'kvm';
      } catch {
        return 'tcg';
      }
    })();
    return accelResolved;
  }

  async function getQmp(vmId: string): Promise<QmpClient> {
    const cached = clients.get(vmId);
    if (cached) {
      try {
        const c = await cached;
        if (!c.closed) return c;
      } catch {
        // fall through and reconnect
      }
      if (clients.get(vmId) === cached) clients.delete(vmId);
    }
    const p = vmPaths(vmId);
    const connecting = (async () => {
      if ((await livePid(vmId)) === undefined) {
        throw new DriverError(`vm "${vmId}" has no running QEMU process on host "${hostId}"`, 'INVALID_STATE');
      }
      const c = await QmpClient.connect(p.qmpSocket, { connectTimeoutMs: 5_000, commandTimeoutMs: qmpTimeoutMs });
      c.onClose(() => {
        if (clients.get(vmId) === connecting) clients.delete(vmId);
      });
      // re-arm the auto-switchover watcher after an agent restart
      c.onEvent((e) => void onMigrationEvent(vmId, e), ['MIGRATION']);
      return c;
    })();
    clients.set(vmId, connecting);
    try {
      return await connecting;
    } catch (err) {
      if (clients.get(vmId) === connecting) clients.delete(vmId);
      throw err;
    }
  }

  function dropClient(vmId: string): void {
    const c = clients.get(vmId);
    clients.delete(vmId);
    c?.then((x) => x.close()).catch(() => undefined);
  }

  async function qmp<T = unknown>(vmId: string, command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    const c = await getQmp(vmId);
    return c.execute<T>(command, args, { timeoutMs });
  }

  async function runstate(vmId: string): Promise<string> {
    const r = await qmp<{ status: string }>(vmId, 'query-status');
    return r.status;
  }

  async function queryMigrate(vmId: string): Promise<QueryMigrate> {
    return qmp<QueryMigrate>(vmId, 'query-migrate');
  }

  /** Spawns QEMU daemonized; resolves with its pid once the parent has exited 0. */
  async function spawn(vmId: string, spec: VmSpec, incoming: boolean): Promise<number> {
    const p = vmPaths(vmId);
    await fs.mkdir(p.dir, { recursive: true });
    await fs.rm(p.qmpSocket, { force: true });
    await fs.rm(p.pidFile, { force: true });
    const args = buildQemuArgs(spec, p, { accel: await resolveAccel(), cpuModel, machine, startPaused: true, incoming });
    const r = await execa(qemuBinary, args, { reject: false, stdin: 'ignore', timeout: 60_000 });
    if (r.failed || r.exitCode !== 0) {
      const why = (r as { code?: string }).code === 'ENOENT' ? `binary "${qemuBinary}" not found` : String(r.stderr ?? '').trim().slice(-800) || r.shortMessage;
      // a parent that timed out may have left a child behind
      const pid = await readPidFile(p.pidFile);
      if (pid && (await isOurProcess(pid, p.qmpSocket))) await killPid(vmId, pid);
      throw new DriverError(`qemu failed to start vm "${vmId}": ${why}`, 'HYPERVISOR');
    }
    const pid = await readPidFile(p.pidFile);
    if (!pid) throw new DriverError(`qemu started vm "${vmId}" but wrote no pid file ${p.pidFile}`, 'HYPERVISOR');
    return pid;
  }

  /** quit over QMP, then SIGKILL if the process lingers; resolves when it is gone. */
  async function killPid(vmId: string, pid: number): Promise<void> {
    const marker = vmPaths(vmId).qmpSocket;
    try {
      const c = await Promise.race([getQmp(vmId), sleep(3_000).then(() => undefined)]);
      await c?.execute('quit', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
    } catch {
      // unreachable monitor: fall through to SIGKILL
    }
    if (!(await waitForExit(pid, marker, 3_000))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      if (!(await waitForExit(pid, marker, 5_000))) {
        throw new DriverError(`qemu process ${pid} of vm "${vmId}" did not exit after SIGKILL`, 'HYPERVISOR');
      }
    }
    dropClient(vmId);
    const p = vmPaths(vmId);
    await fs.rm(p.qmpSocket, { force: true });
    await fs.rm(p.pidFile, { force: true });
  }

  function checkHostOffers(spec: VmSpec): void {
    const missing = spec.cpuFeatures.filter((f) => !cpuFeatures.includes(f));
    if (missing.length) {
      throw new DriverError(`spec.cpuFeatures: host "${hostId}" (${cpuModel}) does not offer ${missing.join(', ')}`, 'INVALID_ARGUMENT', true);
    }
    if (spec.network !== undefined && !networks.includes(spec.network)) {
      throw new DriverError(`spec.network "${spec.network}" is not present on host "${hostId}" (has ${networks.join(', ') || 'none'})`, 'INVALID_ARGUMENT', true);
    }
  }

  async function status(vmId: string): Promise<VmRuntime | null> {
    const spec = await readSpec(vmId);
    if (!spec) return null;
    const rt = await readRuntime(vmId);
    const pid = await livePid(vmId);
    if (pid === undefined) {
      const state: VmPowerState = rt.role === 'incoming' || rt.expectRunning ? 'crashed' : rt.started ? 'stopped' : 'defined';
      return { vmId, state, spec };
    }
    let rs: string;
    try {
      rs = await runstate(vmId);
    } catch (err) {
      // the process may have exited between the pid check and the query (a destination after a
      // cancelled migration exits by itself)
      if ((await livePid(vmId)) === undefined) return status(vmId);
      throw err;
    }
    return { vmId, state: mapRunState(rs, rt.role), pid, spec };
  }

  async function requireStatus(vmId: string): Promise<VmRuntime> {
    const s = await status(vmId);
    if (!s) throw new DriverError(`vm "${vmId}" is not defined on host "${hostId}"`, 'NOT_FOUND', true);
    return s;
  }

  // ---------- migration internals ----------

  /** The MIGRATION event watcher: continue at once from pre-switchover when pre-approved. */
  async function onMigrationEvent(vmId: string, e: QmpEvent): Promise<void> {
    if (e.data?.status !== 'pre-switchover') return;
    try {
      const rec = (await readRuntime(vmId)).migration;
      if (rec?.autoSwitchover && !rec.hold) await migrateContinue(vmId);
    } catch {
      // migrationStatus() retries the same decision on its next poll
    }
  }

  /** migrate-continue, tolerating a concurrent continue (state already device/completed). */
  async function migrateContinue(vmId: string): Promise<void> {
    try {
      await qmp(vmId, 'migrate-continue', { state: 'pre-switchover' });
    } catch (err) {
      if (!(err instanceof QmpCommandError)) throw err;
      const s = (await queryMigrate(vmId)).status;
      if (s !== 'device' && s !== 'completed') throw err;
    }
  }

  /** Polls query-migrate until `done` says so; events are not needed for this (and survive restarts). */
  async function waitMigration(vmId: string, done: (s: string) => boolean, what: string): Promise<QueryMigrate> {
    const deadline = Date.now() + migrationWaitMs;
    for (;;) {
      const q = await queryMigrate(vmId);
      if (done(q.status ?? 'none')) return q;
      if (Date.now() >= deadline) {
        throw new DriverError(`vm "${vmId}": migration did not reach ${what} within ${migrationWaitMs} ms (status ${q.status ?? 'none'})`, 'TIMEOUT');
      }
      await sleep(20);
    }
  }

  function migrationParamsFor(rec: MigrationRecord, params: MigrationParams): Record<string, unknown> {
    const out: Record<string, unknown> = { 'downtime-limit': rec.hold ? HOLD_DOWNTIME_MS : rec.downtimeLimitMs };
    out['max-bandwidth'] = Math.round(rec.maxBandwidthBytesPerSec);
    if (params.throttlePct !== undefined) {
      // auto-converge is always on (capabilities cannot change mid-migration); the ceiling is
      // what the caller allows. 0 = "do not throttle" = the smallest ceiling QEMU accepts (1 %).
      const pct = Math.max(1, Math.min(99, Math.round(params.throttlePct)));
      Object.assign(out, { 'cpu-throttle-initial': pct, 'cpu-throttle-increment': pct, 'max-cpu-throttle': pct });
    }
    return out;
  }

  function validateMigrationParams(p: MigrationParams): void {
    if (p.maxBandwidthBytesPerSec !== undefined && !(Number.isFinite(p.maxBandwidthBytesPerSec) && p.maxBandwidthBytesPerSec > 0)) {
      throw new DriverError(`maxBandwidthBytesPerSec ${p.maxBandwidthBytesPerSec} must be > 0`, 'INVALID_ARGUMENT', true);
    }
    if (p.downtimeLimitMs !== undefined && !(Number.isInteger(p.downtimeLimitMs) && p.downtimeLimitMs >= 1 && p.downtimeLimitMs <= FORCE_DOWNTIME_MS)) {
      throw new DriverError(`downtimeLimitMs ${p.downtimeLimitMs} must be an integer 1..${FORCE_DOWNTIME_MS}`, 'INVALID_ARGUMENT', true);
    }
    if (p.throttlePct !== undefined && !(Number.isFinite(p.throttlePct) && p.throttlePct >= 0 && p.throttlePct <= 99)) {
      throw new DriverError(`throttlePct ${p.throttlePct} must be 0..99`, 'INVALID_ARGUMENT', true);
    }
  }

  function mapStats(q: QueryMigrate): MigrationStats {
    const ram = q.ram ?? {};
    const pageSize = ram['page-size'] ?? 4096;
    const status = mapMigrationStatus(q.status);
    const stats: MigrationStats = {
      status,
      round: ram['dirty-sync-count'] ?? 0,
      transferredBytes: ram.transferred ?? 0,
      remainingBytes: ram.remaining ?? 0,
      totalBytes: ram.total ?? 0,
      dirtyRateBytesPerSec: (ram['dirty-pages-rate'] ?? 0) * pageSize,
      transferRateBytesPerSec: Math.round(((ram.mbps ?? 0) * 1e6) / 8),
      expectedDowntimeMs: q['expected-downtime'] ?? 0,
      throttlePct: q['cpu-throttle-percentage'] ?? 0,
    };
    if (q.downtime !== undefined) stats.downtimeMs = q.downtime;
    if (q['total-time'] !== undefined) stats.totalTimeMs = q['total-time'];
    if (q['error-desc'] !== undefined) stats.error = q['error-desc'];
    return stats;
  }

  // ---------- disks ----------

  function datastore(id: string): QemuDatastoreConfig {
    const ds = datastores.find((d) => d.id === id);
    if (!ds) throw new DriverError(`datastoreId "${id}" is not a datastore of host "${hostId}"`, 'NOT_FOUND', true);
    return ds;
  }

  function datastoreOf(file: string): QemuDatastoreConfig | undefined {
    const abs = path.resolve(file);
    return datastores.find((d) => path.dirname(abs) === path.resolve(d.path));
  }

  async function exists(file: string): Promise<boolean> {
    try {
      await fs.access(file);
      return true;
    } catch {
      return false;
    }
  }

  async function toDiskInfo(file: string): Promise<DiskInfo> {
    const info = await imgInfo(qemuImgBinary, file);
    const ds = datastoreOf(file);
    const format = isDiskFormat(info.format) ? info.format : 'raw';
    const out: DiskInfo = {
      name: path.basename(file).replace(/\.(qcow2|img|raw|vmdk|vhdx)$/, ''),
      datastoreId: ds?.id ?? '',
      path: file,
      format,
      virtualSizeBytes: info['virtual-size'],
      actualSizeBytes: info['actual-size'] ?? 0,
    };
    const backing = info['full-backing-filename'] ?? info['backing-filename'];
    if (backing) out.backingPath = backing;
    return out;
  }

  function validateDiskSpec(spec: DiskSpec): QemuDatastoreConfig {
    assertSafeName('disk name', spec.name);
    if (!Number.isSafeInteger(spec.sizeBytes) || spec.sizeBytes < 0) {
      throw new DriverError(`sizeBytes ${spec.sizeBytes} of disk "${spec.name}" must be a non-negative integer`, 'INVALID_ARGUMENT', true);
    }
    const src = spec.source;
    const srcPath = src.kind === 'template' ? src.imagePath : src.kind === 'clone' || src.kind === 'import' ? src.sourcePath : undefined;
    if (srcPath !== undefined && (typeof srcPath !== 'string' || !path.isAbsolute(srcPath))) {
      throw new DriverError(`source path "${srcPath}" of disk "${spec.name}" must be an absolute path`, 'INVALID_ARGUMENT', true);
    }
    if (src.kind === 'import' && !isDiskFormat(src.format)) {
      throw new DriverError(`source.format "${String(src.format)}" must be one of qcow2, raw, vmdk, vhdx`, 'INVALID_ARGUMENT', true);
    }
    if (src.kind === 'blank' && spec.sizeBytes <= 0) {
      throw new DriverError(`sizeBytes of blank disk "${spec.name}" must be > 0`, 'INVALID_ARGUMENT', true);
    }
    return datastore(spec.datastoreId);
  }

  async function createDiskImpl(spec: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    const ds = validateDiskSpec(spec);
    await fs.mkdir(ds.path, { recursive: true });
    const final = path.join(ds.path, `${spec.name}.qcow2`);
    // idempotent by name: only a complete disk has the final name (written under a temp name, renamed)
    if (await exists(final)) return toDiskInfo(final);
    const tmp = path.join(ds.path, `.${spec.name}.qcow2.partial`);
    await fs.rm(tmp, { force: true });
    const src = spec.source;
    try {
      if (opts.signal?.aborted) throw abortReason(opts.signal, `createDisk "${spec.name}"`);
      let convertedFrom: { path: string; format?: string } | undefined;
      if (src.kind === 'blank') {
        await qemuImg(qemuImgBinary, ['create', '-q', '-f', 'qcow2', tmp, String(spec.sizeBytes)], opts);
      } else if (src.kind === 'template' && src.linked) {
        const base = await sourceInfo(src.imagePath, 'source.imagePath');
        const size = Math.max(spec.sizeBytes, base['virtual-size']);
        await qemuImg(qemuImgBinary, ['create', '-q', '-f', 'qcow2', '-b', path.resolve(src.imagePath), '-F', base.format, tmp, String(size)], opts);
      } else if (src.kind === 'template') {
        convertedFrom = { path: src.imagePath };
      } else if (src.kind === 'clone') {
        convertedFrom = { path: src.sourcePath };
      } else {
        convertedFrom = { path: src.sourcePath, format: src.format };
      }
      if (convertedFrom) {
        const info = await sourceInfo(convertedFrom.path, src.kind === 'template' ? 'source.imagePath' : 'source.sourcePath');
        if (convertedFrom.format && info.format !== convertedFrom.format) {
          throw new DriverError(`source.format "${convertedFrom.format}" does not match ${convertedFrom.path} (qemu-img says ${info.format})`, 'INVALID_ARGUMENT', true);
        }
        await imgConvert(
          qemuImgBinary,
          { src: convertedFrom.path, srcFormat: info.format, dst: tmp, dstFormat: 'qcow2' },
          { ...opts, totalBytes: info['virtual-size'] },
        );
        if (spec.sizeBytes > info['virtual-size']) {
          await qemuImg(qemuImgBinary, ['resize', '-q', '-f', 'qcow2', tmp, String(spec.sizeBytes)], opts);
        }
      }
      await fs.rename(tmp, final);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    opts.onProgress?.({ fraction: 1, message: `disk ${spec.name} ready` });
    return toDiskInfo(final);
  }

  async function sourceInfo(file: string, what: string) {
    if (!(await exists(file))) throw new DriverError(`${what} "${file}" does not exist`, 'NOT_FOUND', true);
    return imgInfo(qemuImgBinary, file);
  }

  // ---------- the driver ----------

  const driver: QemuDriver = {
    kind: 'qemu',
    hostId,
    stateDir,
    vmPaths,

    async hostInfo(): Promise<HostInfo> {
      const dsInfo = [];
      for (const ds of datastores) {
        await fs.mkdir(ds.path, { recursive: true });
        const st = await fs.statfs(ds.path);
        dsInfo.push({
          id: ds.id,
          path: ds.path,
          shared: ds.shared,
          capacityBytes: st.blocks * st.bsize,
          freeBytes: st.bavail * st.bsize,
          throughputBytesPerSec: ds.throughputBytesPerSec ?? 500e6,
        });
      }
      return {
        hostId,
        cpuModel,
        cpuFeatures: [...cpuFeatures],
        cpus: options.cpus ?? os.availableParallelism(),
        memoryBytes: options.memoryBytes ?? os.totalmem(),
        datastores: dsInfo,
        networks: [...networks],
        migrationAddress,
      };
    },

    createDisk: (spec, opts) => createDiskImpl(spec, opts),

    async deleteDisk(file: string): Promise<void> {
      if (typeof file !== 'string' || !path.isAbsolute(file) || !datastoreOf(file)) {
        throw new DriverError(`path "${file}" is not a disk in a datastore of host "${hostId}"`, 'INVALID_ARGUMENT', true);
      }
      await fs.rm(file, { force: true });
    },

    async diskInfo(file: string): Promise<DiskInfo | null> {
      if (typeof file !== 'string' || !path.isAbsolute(file)) {
        throw new DriverError(`path "${file}" must be an absolute path`, 'INVALID_ARGUMENT', true);
      }
      if (!(await exists(file))) return null;
      return toDiskInfo(file);
    },

    async writeSeed(vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }> {
      assertSafeName('vmId', vmId);
      const ds = datastore(datastoreId);
      await fs.mkdir(ds.path, { recursive: true });
      const final = path.join(ds.path, `${vmId}-seed.img`);
      const tmp = path.join(ds.path, `.${vmId}-seed.img.partial`);
      // rewritten every time (a retry may carry a corrected seed), atomically by rename
      await fs.rm(tmp, { force: true });
      try {
        await buildSeedImage(qemuImgBinary, seed, tmp);
        await fs.rename(tmp, final);
      } catch (err) {
        await fs.rm(tmp, { force: true });
        throw err;
      }
      return { path: final };
    },

    copyDisk: (sourcePath, target, opts) => createDiskImpl({ ...target, source: { kind: 'clone', sourcePath } }, opts),

    defineVm: (spec) =>
      withLock(spec?.vmId, async () => {
        validateVmSpec(spec);
        checkHostOffers(spec);
        const p = vmPaths(spec.vmId);
        const existing = await readSpec(spec.vmId);
        if (existing) {
          if (JSON.stringify(existing) !== JSON.stringify(spec)) {
            throw new DriverError(`vm "${spec.vmId}" is already defined on host "${hostId}" with a different spec`, 'INVALID_STATE', true);
          }
          return requireStatus(spec.vmId);
        }
        await fs.mkdir(p.dir, { recursive: true });
        await writeJson(p.runtime, { role: 'normal', started: false, expectRunning: false } satisfies RuntimeRecord);
        await writeJson(p.spec, spec);
        return { vmId: spec.vmId, state: 'defined', spec };
      }),

    startVm: (vmId) =>
      withLock(vmId, async () => {
        const spec = await requireSpec(vmId);
        const cur = await requireStatus(vmId);
        const rt = await readRuntime(vmId);
        if (cur.state === 'running') return cur;
        if (cur.state === 'incoming' || rt.role === 'incoming') {
          throw new DriverError(`vm "${vmId}" on host "${hostId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
        }
        if (cur.state === 'postmigrate') {
          throw new DriverError(`vm "${vmId}" migrated away from host "${hostId}" (postmigrate): it must not be started here`, 'INVALID_STATE', true);
        }
        if (cur.pid !== undefined && (cur.state === 'stopped' || cur.state === 'crashed')) {
          // guest powered off (-no-shutdown keeps the process) or a QEMU error: fresh process
          await killPid(vmId, cur.pid);
        } else if (cur.pid !== undefined) {
          // defined (prelaunch after a spawn whose `cont` never happened) or paused
          await qmp(vmId, 'cont');
          await updateRuntime(vmId, { started: true, expectRunning: true });
          return requireStatus(vmId);
        }
        checkHostOffers(spec);
        await spawn(vmId, spec, false);
        try {
          await qmp(vmId, 'cont');
          const rs = await runstate(vmId);
          if (rs !== 'running') throw new DriverError(`vm "${vmId}" is "${rs}" after cont, not running`, 'HYPERVISOR');
        } catch (err) {
          const pid = await livePid(vmId);
          if (pid) await killPid(vmId, pid);
          throw err;
        }
        await updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true });
        return requireStatus(vmId);
      }),

    stopVm: (vmId, opts) =>
      withLock(vmId, async () => {
        await requireSpec(vmId);
        if (!opts || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs < 0) {
          throw new DriverError('opts.timeoutMs must be a non-negative number', 'INVALID_ARGUMENT', true);
        }
        const pid = await livePid(vmId);
        if (pid === undefined) {
          await updateRuntime(vmId, { expectRunning: false });
          return requireStatus(vmId);
        }
        let rs = await runstate(vmId);
        if (rs !== 'shutdown') {
          if (rs === 'running') await qmp(vmId, 'system_powerdown');
          const deadline = Date.now() + opts.timeoutMs;
          while (rs !== 'shutdown' && Date.now() < deadline) {
            await sleep(Math.min(100, Math.max(1, deadline - Date.now())));
            if (!(await isOurProcess(pid, vmPaths(vmId).qmpSocket))) break;
            rs = await runstate(vmId).catch(() => 'gone');
          }
          if (rs !== 'shutdown' && rs !== 'gone' && !opts.force) {
            throw new DriverError(`vm "${vmId}" did not shut down within ${opts.timeoutMs} ms (runstate ${rs}); retry with force`, 'TIMEOUT');
          }
        }
        await killPid(vmId, pid);
        await updateRuntime(vmId, { expectRunning: false });
        return requireStatus(vmId);
      }),

    rebootVm: (vmId) =>
      withLock(vmId, async () => {
        const cur = await requireStatus(vmId);
        if (cur.state !== 'running' && cur.state !== 'paused') {
          throw new DriverError(`vm "${vmId}" cannot be rebooted while ${cur.state}`, 'INVALID_STATE', true);
        }
        await qmp(vmId, 'system_reset');
        return requireStatus(vmId);
      }),

    pauseVm: (vmId) =>
      withLock(vmId, async () => {
        const cur = await requireStatus(vmId);
        if (cur.state === 'paused') return cur;
        if (cur.state !== 'running') throw new DriverError(`vm "${vmId}" cannot be paused while ${cur.state}`, 'INVALID_STATE', true);
        await qmp(vmId, 'stop');
        return requireStatus(vmId);
      }),

    resumeVm: (vmId, opts) =>
      withLock(vmId, async () => {
        const cur = await requireStatus(vmId);
        if (cur.state === 'running') return cur;
        if (cur.state === 'postmigrate' && !opts?.afterCompletedMigration) {
          throw new DriverError(
            `vm "${vmId}" on host "${hostId}" completed an outgoing migration (postmigrate): resuming it could run the guest twice`,
            'INVALID_STATE',
            true,
          );
        }
        const rt = await readRuntime(vmId);
        if (rt.role === 'incoming' || cur.state === 'incoming') {
          throw new DriverError(`vm "${vmId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
        }
        if (cur.state !== 'paused' && cur.state !== 'postmigrate') {
          throw new DriverError(`vm "${vmId}" cannot be resumed while ${cur.state}`, 'INVALID_STATE', true);
        }
        await qmp(vmId, 'cont');
        return requireStatus(vmId);
      }),

    destroyVm: (vmId) =>
      withLock(vmId, async () => {
        const p = vmPaths(vmId);
        const pid = await livePid(vmId);
        if (pid !== undefined) await killPid(vmId, pid);
        dropClient(vmId);
        await fs.rm(p.dir, { recursive: true, force: true });
      }),

    vmStatus: (vmId) => status(vmId),

    async listVms(): Promise<VmRuntime[]> {
      let names: string[];
      try {
        names = await fs.readdir(path.join(stateDir, 'vms'));
      } catch {
        return [];
      }
      const out: VmRuntime[] = [];
      for (const n of names.sort()) {
        try {
          assertSafeName('vmId', n);
        } catch {
          continue;
        }
        const s = await status(n);
        if (s) out.push(s);
      }
      return out;
    },

    // ---------- migration: destination ----------

    prepareIncoming: (spec) =>
      withLock(spec?.vmId, async () => {
        validateVmSpec(spec);
        checkHostOffers(spec);
        const vmId = spec.vmId;
        const p = vmPaths(vmId);
        const existing = await readSpec(vmId);
        if (existing) {
          const rt = await readRuntime(vmId);
          const pid = await livePid(vmId);
          if (rt.role !== 'incoming') {
            throw new DriverError(`vm "${vmId}" already exists on host "${hostId}" (not an incoming copy)`, 'INVALID_STATE', true);
          }
          if (pid !== undefined && rt.incomingUri) return { uri: rt.incomingUri };
          // a destination is single-use: after a cancelled/failed migration QEMU exited; start afresh
          if (pid !== undefined) await killPid(vmId, pid);
          await fs.rm(p.dir, { recursive: true, force: true });
        }
        await fs.mkdir(p.dir, { recursive: true });
        await writeJson(p.runtime, { role: 'incoming', started: false, expectRunning: false } satisfies RuntimeRecord);
        await writeJson(p.spec, spec);
        try {
          await spawn(vmId, spec, true);
          await qmp(vmId, 'migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
          const taken = new Set<string>();
          // ports handed to this host's other incoming VMs (their QEMU may not be listening yet)
          for (const other of await fs.readdir(path.join(stateDir, 'vms')).catch(() => [] as string[])) {
            if (other === vmId) continue;
            const u = (await readJson<RuntimeRecord>(path.join(stateDir, 'vms', other, 'runtime.json')).catch(() => undefined))?.incomingUri;
            if (u) taken.add(u);
          }
          let uri: string | undefined;
          let lastErr: unknown;
          for (const port of portOrder(`${hostId}/${vmId}`, portRange).slice(0, 64)) {
            const candidate = `tcp:${migrationAddress}:${port}`;
            if (taken.has(candidate) || !(await portIsFree(migrationAddress, port))) continue;
            try {
              await qmp(vmId, 'migrate-incoming', { uri: candidate });
              uri = candidate;
              break;
            } catch (err) {
              lastErr = err; // lost a race for the port: next one
              if (!(err instanceof QmpCommandError)) throw err;
            }
          }
          if (!uri) {
            throw new DriverError(`no free migration port in ${portRange.join('-')} on ${migrationAddress}: ${(lastErr as Error | undefined)?.message ?? 'all busy'}`, 'HYPERVISOR');
          }
          await updateRuntime(vmId, { incomingUri: uri });
          return { uri };
        } catch (err) {
          // leave nothing half done
          const pid = await livePid(vmId);
          if (pid !== undefined) await killPid(vmId, pid).catch(() => undefined);
          dropClient(vmId);
          await fs.rm(p.dir, { recursive: true, force: true });
          throw err;
        }
      }),

    activateIncoming: (vmId) =>
      withLock(vmId, async () => {
        await requireSpec(vmId);
        const pid = await livePid(vmId);
        if (pid === undefined) {
          throw new DriverError(`vm "${vmId}" has no QEMU process on host "${hostId}" (the incoming copy is gone)`, 'INVALID_STATE', true);
        }
        let rs = await runstate(vmId);
        if (rs === 'running') {
          await updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true, incomingUri: undefined });
          return requireStatus(vmId);
        }
        if (rs === 'inmigrate') {
          // query-migrate says completed a moment before the runstate leaves inmigrate
          const q = await queryMigrate(vmId);
          if (q.status === 'completed') {
            const deadline = Date.now() + 5_000;
            while (rs === 'inmigrate' && Date.now() < deadline) {
              await sleep(20);
              rs = await runstate(vmId);
            }
          }
          if (rs === 'inmigrate') {
            throw new DriverError(`vm "${vmId}": incoming migration not finished (status ${q.status ?? 'waiting'})`, 'INVALID_STATE');
          }
        }
        if (rs !== 'paused' && rs !== 'prelaunch') {
          throw new DriverError(`vm "${vmId}" cannot be activated from runstate ${rs}`, 'INVALID_STATE', true);
        }
        await qmp(vmId, 'cont');
        await qmp(vmId, 'announce-self', { initial: 50, max: 550, rounds: 5, step: 100 });
        rs = await runstate(vmId);
        if (rs !== 'running') throw new DriverError(`vm "${vmId}" is ${rs} after cont, not running`, 'HYPERVISOR');
        await updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true, incomingUri: undefined });
        return requireStatus(vmId);
      }),

    // ---------- migration: source ----------

    async startMigration(vmId: string, opts: StartMigrationOptions): Promise<void> {
      await requireSpec(vmId);
      if (!opts || typeof opts.uri !== 'string' || !/^(tcp:[A-Za-z0-9.:-]+:\d{1,5}|unix:\/[^\s,]+)$/.test(opts.uri)) {
        throw new DriverError(`uri "${opts?.uri}" is not a tcp:host:port or unix:/path migration uri`, 'INVALID_ARGUMENT', true);
      }
      if (opts.copyDisks) {
        throw new DriverError('copyDisks is not supported by the qemu driver yet (shared storage only)', 'INVALID_ARGUMENT', true);
      }
      validateMigrationParams(opts);
      const rt = await readRuntime(vmId);
      const q = await queryMigrate(vmId);
      let st = q.status ?? 'none';
      const rs = await runstate(vmId);
      if (st === 'completed' && staleCompleted(rs)) st = 'none';
      if (IN_PROGRESS.has(st) || st === 'completed') {
        if (rt.migration?.uri === opts.uri) {
          if (st !== 'completed') await driver.setMigrationParams(vmId, opts);
          return; // idempotent: the same migration is already under way (or done)
        }
        throw new DriverError(`vm "${vmId}" already has a migration ${st} to ${rt.migration?.uri ?? 'another destination'}`, 'INVALID_STATE', true);
      }
      if (rs !== 'running' && rs !== 'paused' && rs !== 'prelaunch') {
        throw new DriverError(`vm "${vmId}" cannot be migrated from runstate ${rs}`, 'INVALID_STATE', true);
      }
      const rec: MigrationRecord = {
        uri: opts.uri,
        hold: opts.hold ?? false,
        autoSwitchover: opts.autoSwitchover ?? false,
        downtimeLimitMs: opts.downtimeLimitMs ?? DEFAULT_DOWNTIME_MS,
        throttlePct: opts.throttlePct ?? 0,
        maxBandwidthBytesPerSec: opts.maxBandwidthBytesPerSec ?? QEMU_DEFAULT_BANDWIDTH,
        wasRunning: rs === 'running',
      };
      await qmp(vmId, 'migrate-set-capabilities', {
        capabilities: [
          { capability: 'events', state: true },
          { capability: 'pause-before-switchover', state: true },
          { capability: 'auto-converge', state: true },
        ],
      });
      const params = migrationParamsFor(rec, { ...opts, throttlePct: rec.throttlePct });
      if (rec.hold) params['max-bandwidth'] = HOLD_WARMUP_BYTES_PER_SEC;
      await qmp(vmId, 'migrate-set-parameters', params);
      await updateRuntime(vmId, { migration: rec });
      await getQmp(vmId); // the connection carries the auto-switchover watcher
      await qmp(vmId, 'migrate', { uri: opts.uri });
      // connecting is asynchronous: wait until QEMU leaves setup so a refused connection is
      // reported here with its reason rather than on the next poll
      let after = await queryMigrate(vmId);
      for (const deadline = Date.now() + 2_000; after.status === 'setup' && Date.now() < deadline; ) {
        await sleep(10);
        after = await queryMigrate(vmId);
      }
      if (after.status === 'failed') {
        throw new DriverError(`migration of vm "${vmId}" to ${opts.uri} failed: ${after['error-desc'] ?? 'unknown error'}`, 'HYPERVISOR');
      }
      if (rec.hold) {
        // warm-up over (see HOLD_WARMUP_MS); a retry after a crash here restores it through the
        // idempotent path above (setMigrationParams)
        await sleep(HOLD_WARMUP_MS);
        await qmp(vmId, 'migrate-set-parameters', { 'max-bandwidth': Math.round(rec.maxBandwidthBytesPerSec) });
      }
    },

    async migrationStatus(vmId: string): Promise<MigrationStats> {
      await requireSpec(vmId);
      if ((await livePid(vmId)) === undefined) {
        return { ...mapStats({}), status: 'failed', error: `vm "${vmId}" has no QEMU process on host "${hostId}"` };
      }
      let q = await queryMigrate(vmId);
      if (q.status === 'completed' && staleCompleted(await runstate(vmId))) return mapStats({});
      // the first query that shows completed can read 0 timings: re-query shortly after
      for (let i = 0; i < 10 && q.status === 'completed' && !q['total-time']; i++) {
        await sleep(50);
        q = await queryMigrate(vmId);
      }
      if (q.status === 'pre-switchover') {
        // safety net for a watcher lost with a restarted agent
        const rec = (await readRuntime(vmId)).migration;
        if (rec?.autoSwitchover && !rec.hold) {
          await migrateContinue(vmId);
          q = await queryMigrate(vmId);
        }
      }
      return mapStats(q);
    },

    async setMigrationParams(vmId: string, params: MigrationParams): Promise<void> {
      await requireSpec(vmId);
      validateMigrationParams(params);
      const rt = await readRuntime(vmId);
      const prev: MigrationRecord = rt.migration ?? {
        uri: '',
        hold: false,
        autoSwitchover: false,
        downtimeLimitMs: DEFAULT_DOWNTIME_MS,
        throttlePct: 0,
        maxBandwidthBytesPerSec: QEMU_DEFAULT_BANDWIDTH,
        wasRunning: true,
      };
      const rec: MigrationRecord = {
        ...prev,
        hold: params.hold ?? prev.hold,
        autoSwitchover: params.autoSwitchover ?? prev.autoSwitchover,
        downtimeLimitMs: params.downtimeLimitMs ?? prev.downtimeLimitMs,
        throttlePct: params.throttlePct ?? prev.throttlePct,
        maxBandwidthBytesPerSec: params.maxBandwidthBytesPerSec ?? prev.maxBandwidthBytesPerSec,
      };
      await updateRuntime(vmId, { migration: rec });
      await qmp(vmId, 'migrate-set-parameters', migrationParamsFor(rec, params));
      if (rec.autoSwitchover && !rec.hold && (await queryMigrate(vmId)).status === 'pre-switchover') await migrateContinue(vmId);
    },

    async continueSwitchover(vmId: string): Promise<void> {
      await requireSpec(vmId);
      const rt = await readRuntime(vmId);
      if (rt.migration) await updateRuntime(vmId, { migration: { ...rt.migration, hold: false } });
      let st = (await queryMigrate(vmId)).status ?? 'none';
      if (st === 'completed') return;
      if (!IN_PROGRESS.has(st) || st === 'cancelling') {
        throw new DriverError(`vm "${vmId}" has no migration to switch over (status ${st})`, 'INVALID_STATE', true);
      }
      if (st === 'setup' || st === 'active' || st === 'wait-unplug') {
        // forced switchover: any remainder now fits the limit, so the next pass stops the source
        await qmp(vmId, 'migrate-set-parameters', { 'downtime-limit': FORCE_DOWNTIME_MS });
        st = (await waitMigration(vmId, (s) => !['setup', 'active', 'wait-unplug'].includes(s), 'pre-switchover')).status ?? 'none';
      }
      if (st === 'pre-switchover') await migrateContinue(vmId);
      const q = await waitMigration(vmId, (s) => !IN_PROGRESS.has(s), 'completed');
      if (q.status !== 'completed') {
        throw new DriverError(`migration of vm "${vmId}" ended ${q.status}: ${q['error-desc'] ?? 'no error given'}`, 'HYPERVISOR', true);
      }
    },

    async cancelMigration(vmId: string): Promise<void> {
      await requireSpec(vmId);
      const refuse = (): DriverError =>
        new DriverError(
          `migration of vm "${vmId}" already completed: the source on host "${hostId}" is in postmigrate and must not be resumed`,
          'INVALID_STATE',
          true,
        );
      if ((await livePid(vmId)) === undefined) {
        throw new DriverError(`vm "${vmId}" has no QEMU process on host "${hostId}" to resume`, 'INVALID_STATE', true);
      }
      const rt = await readRuntime(vmId);
      let st = (await queryMigrate(vmId)).status ?? 'none';
      if (st === 'completed') throw refuse();
      if (IN_PROGRESS.has(st)) {
        await qmp(vmId, 'migrate_cancel');
        st = (await waitMigration(vmId, (s) => !IN_PROGRESS.has(s), 'cancelled')).status ?? 'none';
        if (st === 'completed') throw refuse();
      }
      const wasRunning = rt.migration?.wasRunning ?? true;
      if (rt.migration) await updateRuntime(vmId, { migration: undefined });
      const rs = await runstate(vmId);
      if (wasRunning && (rs === 'paused' || rs === 'finish-migrate' || rs === 'postmigrate')) {
        // the migration ended cancelled/failed (never completed), so the source is still primary
        await qmp(vmId, 'cont');
      }
    },

    qmp: (vmId, command, args) => qmp(vmId, command, args),
    hmp: async (vmId, commandLine) => (await getQmp(vmId)).hmp(commandLine),

    async close(): Promise<void> {
      const all = [...clients.values()];
      clients.clear();
      await Promise.all(all.map((c) => c.then((x) => x.close()).catch(() => undefined)));
    },
  };
  return driver;
}
