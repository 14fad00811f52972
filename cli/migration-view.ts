// How a migration reads at a terminal: the one-line progress of --watch, the block of
// `migrations show`, and the closing line of a watched migration.
import { aligned, duration, fmtDuration, ms, str } from './output.js';

const MiB = 1024 * 1024;
const BAR_WIDTH = 24;

/**
 * The fields of a migration the CLI reads. The OpenAPI document gives GET /v1/migrations/:id
 * as an open object (api/schemas AnyObject: the live progress while running, the audit record
 * once finished), so the generated types say nothing about them; this is what the API sends
 * (api/queries.ts, MigrationProgress in workflows/definitions.ts), every field optional.
 */
export interface Migration {
  id?: string;
  vmId?: string | null;
  kind?: string;
  state?: string;
  stage?: string | null;
  sourceHostId?: string | null;
  targetHostId?: string | null;
  policy?: string | null;
  awaitingApproval?: boolean;
  queue?: { reason?: string } | null;
  progress?: {
    round?: number;
    transferredBytes?: number;
    remainingBytes?: number;
    dirtyRateBytesPerSec?: number;
    expectedDowntimeMs?: number;
    percent?: number;
    etaSeconds?: number;
    verdict?: string;
  };
  downtimeMs?: number | null;
  durationMs?: number | null;
  startedAt?: string | null;
  error?: string;
  progressUnavailable?: string;
}

export function progressBar(percent: number, width = BAR_WIDTH): string {
  const p = Math.max(0, Math.min(100, percent));
  const full = Math.floor((p / 100) * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`;
}

const mib = (bytes: number | undefined) => (typeof bytes === 'number' ? `${(bytes / MiB).toFixed(bytes >= 100 * MiB ? 0 : 1)} MiB` : '-');
const rate = (bytesPerSec: number | undefined) => (typeof bytesPerSec === 'number' ? `${(bytesPerSec / MiB).toFixed(1)} MiB/s` : '-');

/** One status line of a running migration; `percent` is the shown (never decreasing) value. */
export function progressLine(m: Migration, percent: number): string {
  const p = m.progress ?? {};
  const parts = [
    (m.stage ?? '-').padEnd(13),
    `${progressBar(percent)} ${percent.toFixed(1).padStart(5)}%`,
    `round ${p.round ?? 0}`,
    `sent ${mib(p.transferredBytes)}`,
    `left ${mib(p.remainingBytes)}`,
    `dirty ${rate(p.dirtyRateBytesPerSec)}`,
    `downtime ${typeof p.expectedDowntimeMs === 'number' ? `~${ms(p.expectedDowntimeMs)}` : '-'}`,
    p.verdict ?? 'unknown',
    `ETA ${typeof p.etaSeconds === 'number' ? fmtDuration(p.etaSeconds * 1000) : '-'}`,
  ];
  if (m.queue?.reason) parts.push(`queued: ${m.queue.reason}`);
  if (m.awaitingApproval) parts.push(`AWAITING APPROVAL: ferry migrations switchover ${m.id ?? ''}`.trimEnd());
  return parts.join('  ');
}

/** The last line of a watched migration: its end state, hosts, downtime and duration. */
export function endLine(m: Migration, id: string): string {
  const where = m.targetHostId ? ` (${m.sourceHostId ?? '?'} -> ${m.targetHostId})` : '';
  return `migration ${m.id ?? id} ${m.state}${where}: downtime ${ms(m.downtimeMs)}, duration ${duration(m.durationMs)}`;
}

export function describeMigration(m: Migration): string {
  const p = m.progress ?? {};
  const rows: [string, string][] = [
    ['id', str(m.id)],
    ['vm', str(m.vmId)],
    ['kind', str(m.kind)],
    ['state', str(m.state)],
    ['stage', str(m.stage)],
    ['from', str(m.sourceHostId)],
    ['to', str(m.targetHostId)],
    ['policy', str(m.policy)],
  ];
  if (typeof p.percent === 'number') rows.push(['progress', `${progressBar(p.percent)} ${p.percent.toFixed(1)}%`]);
  rows.push(
    ['round', str(p.round)],
    ['sent', mib(p.transferredBytes)],
    ['remaining', mib(p.remainingBytes)],
    ['dirty rate', rate(p.dirtyRateBytesPerSec)],
    ['expected downtime', ms(p.expectedDowntimeMs)],
  );
  if (p.verdict) rows.push(['verdict', p.verdict]);
  if (typeof p.etaSeconds === 'number') rows.push(['eta', fmtDuration(p.etaSeconds * 1000)]);
  if (m.awaitingApproval) rows.push(['awaiting approval', `yes: ferry migrations switchover ${str(m.id)}`]);
  rows.push(['downtime', ms(m.downtimeMs)], ['duration', duration(m.durationMs)]);
  if (m.error) rows.push(['error', m.error]);
  if (m.progressUnavailable) rows.push(['live progress unavailable', m.progressUnavailable]);
  return aligned(rows);
}
