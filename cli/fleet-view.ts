// How fleet operations (evacuations, rebalances) and their plans read at a terminal: the plan
// table of a dry run or stored plan, the block of `evacuations show`, the per-VM lines of
// --watch, and its closing lines.
import { aligned, duration, fmtDuration, printTable, str, table } from './output.js';

/**
 * The fields of a fleet operation the CLI reads. The OpenAPI document gives GET
 * /v1/evacuations/:id as an open object (api/routes/fleet.ts fleetDto: the workflow's
 * FleetProgress while it runs, the operation record once finished); every field optional.
 */
export interface FleetVm {
  vmId?: string;
  vmName?: string;
  from?: string;
  to?: string;
  kind?: string;
  state?: string;
  attempts?: number;
  failedTargets?: string[];
  predictedMs?: number;
  startedAtMs?: number;
  durationMs?: number;
  downtimeMs?: number;
  reason?: string;
}
export interface FleetCounts {
  moved?: number;
  inFlight?: number;
  waiting?: number;
  failed?: number;
  left?: number;
  cancelled?: number;
}
export interface Fleet {
  id?: string | null;
  workflowId?: string | null;
  kind?: string;
  subject?: string | null;
  state?: string;
  counts?: FleetCounts | null;
  vms?: FleetVm[];
  maxInFlightSeen?: number | null;
  predictedMakespanMs?: number | null;
  etaMs?: number | null;
  startedAt?: string | null;
  endedAt?: string | null;
  error?: string | null;
}

/** A plan as a dry run answers it (api/routes/fleet.ts planAnswer) or as stored (its `plan`). */
export interface PlanView {
  planId?: string;
  kind?: string;
  subject?: string;
  makespanMs?: number;
  lowerBoundMs?: number;
  imbalanceBefore?: number;
  imbalanceAfter?: number;
  moves?: Array<FleetVm & { order?: number }>;
  left?: Array<{ vmId?: string; vmName?: string; from?: string; reason?: string }>;
}
/** GET /v1/plans/:id */
export interface StoredPlan {
  id?: string;
  kind?: string;
  subject?: string;
  state?: string;
  request?: Record<string, unknown>;
  plan?: PlanView & { maxParallel?: number };
  workflowId?: string | null;
  refusal?: string | null;
  createdAt?: string;
  decidedAt?: string | null;
}

/** Fleet states after which nothing changes any more. */
export const FLEET_ENDED = ['completed', 'failed', 'cancelled', 'refused', 'planned'];
const STAYED = ['failed', 'left', 'cancelled'];

/** Seconds with one decimal, '-' when not a number. */
export const secs = (ms: unknown) => (typeof ms === 'number' ? (ms / 1000).toFixed(1) : '-');
const vmName = (v: { vmId?: string; vmName?: string }) => v.vmName || v.vmId || '?';

/** The plan: its moves in order, the makespan against the lower bound, who stays and why, how to approve. */
export function planText(p: PlanView, opts: { approve: boolean }): string {
  const moves = [...(p.moves ?? [])].sort((a, b) => (a.order ?? 0) - (b.order ?? 0));
  const left = p.left ?? [];
  const lines = [
    `plan ${str(p.planId)} (${str(p.kind)} of ${str(p.subject)}): ${moves.length} move${moves.length === 1 ? '' : 's'}, ${left.length} VM${left.length === 1 ? '' : 's'} would stay`,
    table(
      ['VM', 'FROM', 'TO', 'KIND', 'PREDICTED s', 'ORDER'],
      moves.map((m, i) => [vmName(m), str(m.from), str(m.to), str(m.kind), secs(m.predictedMs), String((m.order ?? i) + 1)]),
    ),
    `predicted makespan: ${secs(p.makespanMs)} s (lower bound ${secs(p.lowerBoundMs)} s)`,
  ];
  if (typeof p.imbalanceBefore === 'number' || typeof p.imbalanceAfter === 'number') {
    lines.push(`imbalance: ${imbalance(p.imbalanceBefore)} before, ${imbalance(p.imbalanceAfter)} after`);
  }
  if (left.length) lines.push('would stay:', ...left.map((l) => `  ${vmName(l)}${l.from ? ` on ${l.from}` : ''}: ${str(l.reason)}`));
  if (opts.approve && p.planId && moves.length) lines.push(`approve with: ferry plans approve ${p.planId}`);
  return lines.join('\n');
}

const imbalance = (v: unknown) => (typeof v === 'number' ? v.toFixed(3) : '-');

export function storedPlanText(p: StoredPlan): string {
  const head = aligned([
    ['id', str(p.id)],
    ['kind', str(p.kind)],
    ['subject', str(p.subject)],
    ['state', str(p.state)],
    ['request', str(p.request)],
    ['created', str(p.createdAt)],
    ['decided', str(p.decidedAt)],
    ['workflow', str(p.workflowId)],
    ...(p.refusal ? ([['refused', p.refusal]] as [string, string][]) : []),
  ]);
  const plan = planText({ ...p.plan, planId: p.id, kind: p.kind, subject: p.subject }, { approve: p.state === 'proposed' });
  return `${head}\n\n${plan}`;
}

/** `running: 3 moved, 2 in flight, 4 waiting, 0 failed, 1 left` (cancelled only when some are). */
export function countsLine(f: Fleet, label?: string): string {
  const n = f.counts ?? {};
  const parts = [`${n.moved ?? 0} moved`, `${n.inFlight ?? 0} in flight`, `${n.waiting ?? 0} waiting`, `${n.failed ?? 0} failed`, `${n.left ?? 0} left`];
  if (n.cancelled) parts.push(`${n.cancelled} cancelled`);
  return `${f.kind ?? 'fleet operation'} ${str(f.workflowId ?? label ?? f.id)} ${f.state ?? 'running'}: ${parts.join(', ')}`;
}

/**
 * One VM of a watched operation: name, state, target, duration (moved), reason (stayed). `now`
 * (terminals only) adds the elapsed time of a move in flight; without it a line changes only
 * when the VM's state does.
 */
export function vmLine(v: FleetVm, nameWidth: number, now?: number): string {
  const state = v.state ?? '?';
  let time = '';
  if (typeof v.durationMs === 'number') time = fmtDuration(v.durationMs);
  else if (state === 'in-flight' && now !== undefined && typeof v.startedAtMs === 'number') time = `${fmtDuration(Math.max(0, now - v.startedAtMs))} of ~${secs(v.predictedMs)} s`;
  else if (typeof v.predictedMs === 'number' && (state === 'waiting' || state === 'in-flight')) time = `~${secs(v.predictedMs)} s`;
  const parts = [`  ${vmName(v).padEnd(nameWidth)}`, state.padEnd(9), `-> ${v.to ?? '-'}`.padEnd(12), time];
  if (v.attempts && v.attempts > 1) parts.push(`attempt ${v.attempts}`);
  if (STAYED.includes(state) && v.reason) parts.push(v.reason);
  return parts.join('  ').trimEnd();
}

export function nameWidth(vms: FleetVm[]): number {
  return Math.max(2, ...vms.map((v) => vmName(v).length));
}

export function stayed(f: Fleet): FleetVm[] {
  return (f.vms ?? []).filter((v) => STAYED.includes(v.state ?? ''));
}

/** The closing lines of a watched operation: its end, and every VM that stayed with the reason. */
export function endLines(f: Fleet, label?: string): string[] {
  const s = stayed(f);
  const moved = (f.vms ?? []).filter((v) => v.state === 'moved').length;
  const lines = [`${f.kind ?? 'fleet operation'} ${str(f.workflowId ?? label ?? f.id)} ${str(f.state)}: ${moved} moved, ${s.length} stayed (at most ${str(f.maxInFlightSeen)} in flight)`];
  lines.push(...s.map((v) => `  stayed: ${vmName(v)} (${str(v.state)}) on ${str(v.from)}: ${str(v.reason)}`));
  if (f.error) lines.push(`  error: ${f.error}`);
  return lines;
}

/** `evacuations show`: the operation, then one row per VM. */
export function fleetText(f: Fleet): string {
  const head = aligned([
    ['id', str(f.id)],
    ['workflow', str(f.workflowId)],
    ['kind', str(f.kind)],
    ['subject', str(f.subject)],
    ['state', str(f.state)],
    ['counts', countsLine(f).replace(/^.*?: /, '')],
    ['predicted makespan', typeof f.predictedMakespanMs === 'number' ? `${secs(f.predictedMakespanMs)} s` : '-'],
    ['eta', typeof f.etaMs === 'number' ? new Date(f.etaMs).toISOString() : '-'],
    ['max in flight', str(f.maxInFlightSeen)],
    ['started', str(f.startedAt)],
    ['ended', str(f.endedAt)],
    ...(f.error ? ([['error', f.error]] as [string, string][]) : []),
  ]);
  const rows = (f.vms ?? []).map((v) => [
    vmName(v),
    str(v.state),
    str(v.from),
    str(v.to),
    str(v.kind),
    str(v.attempts),
    secs(v.predictedMs),
    duration(v.durationMs),
    typeof v.downtimeMs === 'number' ? `${Math.round(v.downtimeMs)} ms` : '-',
    str(v.reason),
  ]);
  return `${head}\n\n${table(['VM', 'STATE', 'FROM', 'TO', 'KIND', 'ATTEMPTS', 'PREDICTED s', 'DURATION', 'DOWNTIME', 'REASON'], rows)}`;
}

/** `evacuations ls`, `rebalances ls`: one row per operation (`subject`: the host column's head). */
export function printFleetList(c: { json: boolean; out: (line?: string) => void }, items: Fleet[], subject?: string): number {
  const head = ['ID', 'WORKFLOW', ...(subject ? [subject] : []), 'STATE', 'MOVED', 'FAILED', 'LEFT', 'MAKESPAN s', 'STARTED', 'ENDED'];
  return printTable(c, items, head, (f) => [
    str(f.id),
    str(f.workflowId),
    ...(subject ? [str(f.subject)] : []),
    str(f.state),
    str(f.counts?.moved),
    str(f.counts?.failed),
    str(f.counts?.left),
    secs(f.predictedMakespanMs),
    str(f.startedAt),
    str(f.endedAt),
  ]);
}
