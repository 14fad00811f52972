// What QEMU 7.2's migration reports mean and what ferry's migration settings become in QMP:
// query-migrate's shape and statuses, MigrationStats, migrate-set-parameters, the hold constants.
// Pure but for queryMigrate (see shared/notes/qemu-facts.md for the QEMU facts behind them).
import { DriverError, type MigrationParams, type MigrationStats, type MigrationStatusName } from '../hypervisor.js';
import type { MigrationRecord } from './vm-store.js';

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
export const HOLD_WARMUP_BYTES_PER_SEC = 256 * 1024;
export const HOLD_WARMUP_MS = 300;
/** QEMU 7.2's default max-bandwidth (bytes/s) */
export const QEMU_DEFAULT_BANDWIDTH = 128 * 1024 * 1024;
/** QEMU 7.2's maximum downtime-limit (ms): forces the next iteration into stop-and-copy. */
export { FORCE_DOWNTIME_MS } from '../common.js';
export const DEFAULT_DOWNTIME_MS = 300;

export const IN_PROGRESS = new Set(['setup', 'active', 'pre-switchover', 'device', 'wait-unplug', 'cancelling', 'postcopy-active']);

export interface QueryMigrate {
  status?: string;
  ram?: Record<string, number>;
  'expected-downtime'?: number;
  downtime?: number;
  'total-time'?: number;
  'setup-time'?: number;
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
}

type Qmp = <T>(vmId: string, command: string) => Promise<T>;

export function queryMigrate(qmp: Qmp, vmId: string): Promise<QueryMigrate> {
  return qmp<QueryMigrate>(vmId, 'query-migrate');
}

/**
 * query-migrate reports the LAST migration of the process, in either direction: a VM that arrived
 * by an incoming migration reads `{"status":"completed"}` (and nothing else) although it never
 * sent anything. A completed OUTGOING migration leaves the source in finish-migrate, then
 * postmigrate; in a runstate a migration can start from, "completed" is stale (an incoming
 * migration, or an outgoing one rolled back after the commit was known absent): no outgoing
 * migration is in flight or done, and a new one may start.
 */
export function staleCompleted(runstate: string): boolean {
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

export function migrationParamsFor(rec: MigrationRecord, params: MigrationParams): Record<string, unknown> {
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

export { validateMigrationParams } from '../common.js';

export function mapStats(q: QueryMigrate): MigrationStats {
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
