// Pure readers of virsh's machine-readable output (no I/O): `domstate --reason`, `domjobinfo
// --rawstats`, `domstats` / `blockjob --raw` key=value lines, `nodeinfo`, `list --name`, and the
// mapping of a libvirt job onto ferry's MigrationStats. Output that does not look like what
// libvirt 9.0 prints is a DriverError naming the command and the line, never a silent zero.
import { DriverError, type MigrationStats, type MigrationStatusName, type VmPowerState } from '../hypervisor.js';

function nonsense(what: string, detail: string): DriverError {
  return new DriverError(`virsh ${what}: unexpected output (${detail})`, 'HYPERVISOR');
}

function show(s: string): string {
  const t = s.trim();
  return JSON.stringify(t.length > 120 ? t.slice(0, 120) + '…' : t);
}

export interface DomState {
  /** libvirt's state word(s): running, paused, shut off, crashed, pmsuspended, in shutdown, blocked */
  state: string;
  /** the reason in parentheses (booted, migrated, user, destroyed, ...) */
  reason: string;
}

const DOM_STATES = new Set(['running', 'idle', 'paused', 'in shutdown', 'shut off', 'crashed', 'pmsuspended', 'blocked', 'no state']);

/** `virsh domstate --reason DOM` → "running (booted)". */
export function parseDomState(out: string): DomState {
  const m = /^([a-z ]+?) \(([a-z -]+)\)$/.exec(out.trim());
  if (!m || !DOM_STATES.has(m[1]!)) throw nonsense('domstate --reason', `expected "<state> (<reason>)", got ${show(out)}`);
  return { state: m[1]!, reason: m[2]! };
}

/**
 * libvirt state → VmPowerState. `incoming`: the domain is the paused destination of a migration
 * still under way; `paused (migration)` is also what an incoming copy shows, so the role decides.
 */
export function mapDomState(s: DomState, opts: { started?: boolean } = {}): VmPowerState {
  switch (s.state) {
    case 'running':
    case 'idle':
    case 'blocked':
    case 'in shutdown':
      return 'running';
    case 'paused':
    case 'pmsuspended':
      return s.reason === 'crashed' || s.reason === 'panicked' || s.reason === 'ioerror' ? 'crashed' : 'paused';
    case 'crashed':
      return 'crashed';
    case 'shut off':
      if (s.reason === 'migrated') return 'postmigrate';
      if (s.reason === 'crashed') return 'crashed';
      return opts.started ? 'stopped' : 'defined';
    default:
      return 'defined';
  }
}

/** "key: value" lines (domjobinfo --rawstats, nodeinfo); keys keep their case and spaces. */
export function parseColonLines(what: string, out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const raw of out.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf(':');
    if (i <= 0) throw nonsense(what, `line without "key: value": ${show(line)}`);
    m.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return m;
}

/** "key=value" lines (domstats, blockjob --raw); a leading "Domain: 'x'" header is skipped. */
export function parseEqualsLines(what: string, out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const raw of out.split('\n')) {
    const line = raw.trim();
    if (!line || /^Domain: /.test(line)) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw nonsense(what, `line without "key=value": ${show(line)}`);
    m.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return m;
}

function int(what: string, m: Map<string, string>, key: string, fallback?: number): number {
  const v = m.get(key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw nonsense(what, `no "${key}"`);
  }
  if (!/^-?\d+$/.test(v)) throw nonsense(what, `"${key}" is ${show(v)}, not an integer`);
  return Number(v);
}

/** virDomainJobType */
export const JOB_TYPE = { none: 0, bounded: 1, unbounded: 2, completed: 3, failed: 4, cancelled: 5 } as const;
/** virDomainJobOperation */
export const JOB_OPERATION = { migrationIn: 4, migrationOut: 5 } as const;

export interface JobInfo {
  type: number;
  operation: number;
  elapsedMs: number;
  /** expected downtime while active; the measured one once completed */
  downtimeMs: number;
  dataTotal: number;
  dataProcessed: number;
  dataRemaining: number;
  memoryBps: number;
  dirtyRateBytesPerSec: number;
  iteration: number;
  throttlePct: number;
  setupMs: number;
  diskTotal: number;
  diskProcessed: number;
  diskRemaining: number;
  diskBps: number;
  errMsg?: string;
}

/** `virsh domjobinfo --rawstats [--completed]`: "Job type: N" then "key: value" lines. */
export function parseJobInfo(out: string): JobInfo {
  const what = 'domjobinfo --rawstats';
  const m = parseColonLines(what, out);
  const type = int(what, m, 'Job type');
  if (type < 0 || type > 5) throw nonsense(what, `job type ${type} is not a virDomainJobType`);
  if (type === JOB_TYPE.none) {
    return { type, operation: 0, elapsedMs: 0, downtimeMs: 0, dataTotal: 0, dataProcessed: 0, dataRemaining: 0, memoryBps: 0, dirtyRateBytesPerSec: 0, iteration: 0, throttlePct: 0, setupMs: 0, diskTotal: 0, diskProcessed: 0, diskRemaining: 0, diskBps: 0 };
  }
  const pageSize = int(what, m, 'memory_page_size', 4096);
  const info: JobInfo = {
    type,
    operation: int(what, m, 'operation', 0),
    elapsedMs: int(what, m, 'time_elapsed', 0),
    downtimeMs: int(what, m, 'downtime', 0),
    dataTotal: int(what, m, 'data_total', 0),
    dataProcessed: int(what, m, 'data_processed', 0),
    dataRemaining: int(what, m, 'data_remaining', 0),
    memoryBps: int(what, m, 'memory_bps', 0),
    dirtyRateBytesPerSec: int(what, m, 'memory_dirty_rate', 0) * pageSize,
    iteration: int(what, m, 'memory_iteration', 0),
    throttlePct: int(what, m, 'auto_converge_throttle', 0),
    setupMs: int(what, m, 'setup_time', 0),
    diskTotal: int(what, m, 'disk_total', 0),
    diskProcessed: int(what, m, 'disk_processed', 0),
    diskRemaining: int(what, m, 'disk_remaining', 0),
    diskBps: int(what, m, 'disk_bps', 0),
  };
  const err = m.get('errmsg');
  if (err) info.errMsg = err;
  return info;
}

/**
 * A libvirt migration job in ferry's shape (the same fields the QEMU driver reports). The memory
 * numbers are memory only: with --copy-storage-all libvirt's data_* also count the disks, which
 * `copyStorage` reports apart, as the disk mirror the QEMU driver runs alongside.
 */
export function jobToStats(job: JobInfo, status: MigrationStatusName, error?: string, opts: { copyStorage?: boolean } = {}): MigrationStats {
  const done = status === 'completed';
  const stats: MigrationStats = {
    status,
    round: job.iteration,
    transferredBytes: Math.max(0, job.dataProcessed - job.diskProcessed),
    remainingBytes: done ? 0 : Math.max(0, job.dataRemaining - job.diskRemaining),
    totalBytes: Math.max(0, job.dataTotal - job.diskTotal),
    dirtyRateBytesPerSec: job.dirtyRateBytesPerSec,
    transferRateBytesPerSec: job.memoryBps,
    expectedDowntimeMs: done ? 0 : job.downtimeMs,
    elapsedMs: job.elapsedMs,
    throttlePct: job.throttlePct,
  };
  if (done) {
    stats.downtimeMs = job.downtimeMs;
    stats.totalTimeMs = job.elapsedMs;
  }
  if (error) stats.error = error;
  if (opts.copyStorage) {
    // libvirt copies the disks first and starts the memory only once every disk is in sync
    const inSync = done || (job.diskTotal > 0 && job.diskRemaining === 0);
    stats.disk = {
      status: done ? 'completed' : status === 'failed' || status === 'cancelled' ? status : inSync ? 'ready' : 'running',
      copiedBytes: done ? job.diskTotal : job.diskProcessed,
      totalBytes: job.diskTotal,
      dirtyBytes: done ? 0 : job.diskRemaining,
      inSync,
      transferRateBytesPerSec: job.diskBps,
      ...(error ? { error } : {}),
    };
  }
  return stats;
}

/** The status of an active job: setup until the first byte went over. */
export function activeStatus(job: JobInfo): MigrationStatusName {
  return job.dataProcessed === 0 && job.iteration === 0 ? 'setup' : 'active';
}

export interface NodeInfo {
  cpuModel: string;
  cpus: number;
  memoryBytes: number;
}

/** `virsh nodeinfo`: "CPU model: x86_64", "CPU(s): 2", "Memory size: 24641236 KiB". */
export function parseNodeInfo(out: string): NodeInfo {
  const what = 'nodeinfo';
  const m = parseColonLines(what, out);
  const cpus = int(what, m, 'CPU(s)');
  const mem = /^(\d+) KiB$/.exec(m.get('Memory size') ?? '');
  if (!mem) throw nonsense(what, `"Memory size" is ${show(m.get('Memory size') ?? '(missing)')}, not "<n> KiB"`);
  const cpuModel = m.get('CPU model');
  if (!cpuModel) throw nonsense(what, 'no "CPU model"');
  if (cpus < 1) throw nonsense(what, `CPU(s) is ${cpus}`);
  return { cpuModel, cpus, memoryBytes: Number(mem[1]) * 1024 };
}

/** `virsh list --all --name` (or `pool-list --name`): one name a line. */
export function parseNames(out: string): string[] {
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

export interface BlockJob {
  type: string;
  cur: number;
  end: number;
  bandwidth: number;
}

/** `virsh blockjob DOM DISK --raw`; no job prints nothing (→ null). */
export function parseBlockJob(out: string): BlockJob | null {
  const t = out.trim();
  if (!t || /^No current block job/i.test(t)) return null;
  const what = 'blockjob --raw';
  const m = parseEqualsLines(what, t.replace(/^\s*[a-z]+:\s*/i, ''));
  const type = m.get('type');
  if (!type) throw nonsense(what, `no "type" in ${show(t)}`);
  return { type, cur: int(what, m, 'cur'), end: int(what, m, 'end'), bandwidth: int(what, m, 'bandwidth', 0) };
}

/** virsh's one-line "error: ..." on stderr, without the prefix (the last error line wins). */
export function virshErrorMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const errs = lines.filter((l) => l.startsWith('error: ')).map((l) => l.slice(7));
  // "error: failed to get domain 'x'" is followed by the reason on the next error line
  return (errs.length ? errs.join(': ') : lines.join(' ')).slice(0, 800);
}

/** Which DriverError code a virsh failure is. */
export function classifyVirshError(message: string): { code: DriverError['code']; permanent: boolean } {
  if (/Domain not found|failed to get domain|Storage (pool|volume) not found|no storage (pool|vol)/i.test(message)) return { code: 'NOT_FOUND', permanent: true };
  if (/Failed to connect socket|failed to connect to the hypervisor|Cannot recv data|End of file while reading|unable to connect to server|No route to host|Connection refused/i.test(message)) {
    return { code: 'UNREACHABLE', permanent: false };
  }
  if (/Requested operation is not valid|domain is not running|domain is already active|already exists|is already active/i.test(message)) return { code: 'INVALID_STATE', permanent: true };
  if (/invalid argument|XML error|unsupported configuration|Unsafe migration/i.test(message)) return { code: 'INVALID_ARGUMENT', permanent: true };
  if (/No space left|not enough space/i.test(message)) return { code: 'INSUFFICIENT_SPACE', permanent: true };
  if (/Timed out|timeout/i.test(message)) return { code: 'TIMEOUT', permanent: false };
  return { code: 'HYPERVISOR', permanent: false };
}
