// How long moves take and when they run: the pre-copy prediction of one move over its link, and
// the list schedule of a whole plan under the parallel limits. Pure, deterministic.
import { POLICIES, type ConvergencePolicy } from './policies.js';
import { simulatePrecopy } from './precopy-model.js';
import { predictSteeredPrecopy, type SteeredOutcome } from './precopy-steer.js';
import type { ClusterSnapshot, MoveKind, PlannedMove, PlanHost, PlanVm, PredictionSettings } from './plan-types.js';
import type { Leg } from './planner-state.js';
import { byId, needNumber, needParallel, pairKey, planError, validateSettings } from './planner-validate.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Bandwidth of the (undirected) link a–b, or the snapshot default when no link row names the pair. */
export function linkBandwidth(snapshot: ClusterSnapshot, a: string, b: string): number {
  const key = pairKey(a, b);
  const link = snapshot.links.find((l) => pairKey(l.a, l.b) === key);
  return link ? link.bandwidthBytesPerSec : snapshot.defaultLinkBandwidthBytesPerSec;
}

export interface MovePrediction {
  predictedMs: number;
  predictedDowntimeMs: number;
  /** false when the move does not converge at the policy's initial downtime limit */
  converges: boolean;
  /** set when it does not: how the convergence controller ends it (precopy-steer.ts) */
  outcome?: SteeredOutcome;
}

/**
 * One move's wall-clock duration and guest downtime.
 * live: optional disk copy (diskGiB over the link) then the pre-copy rounds of `simulatePrecopy`
 * at the initial downtime limit; a move that does not converge there is stepped through the
 * convergence controller of its policy (`simulateSteeredPrecopy`: downtime steps, throttling,
 * forced switchover or abort; an abort's time is the time until the controller gives up);
 * cold: the disk copy at min(link, datastore throughput), memory is not sent, the guest is down
 * for the whole move. Model time / timeScale + the fixed per-move overhead; integer ms.
 */
export function predictMove(
  vm: PlanVm,
  fromHostId: string,
  toHostId: string,
  kind: MoveKind,
  copyDisks: boolean,
  snapshot: ClusterSnapshot,
  s: PredictionSettings,
): MovePrediction {
  validateSettings(s);
  needNumber('vm.memoryMiB', vm.memoryMiB, 'positive');
  needNumber('vm.diskGiB', vm.diskGiB, 'non-negative');
  if (kind !== 'live' && kind !== 'cold') planError('kind', "must be 'live' or 'cold'", kind);
  const bandwidth = Math.min(linkBandwidth(snapshot, fromHostId, toHostId), s.maxBandwidthBytesPerSec ?? Infinity);
  const diskBytes = copyDisks ? vm.diskGiB * GiB : 0;
  if (kind === 'cold') {
    const modelMs = (diskBytes * 1000) / Math.min(bandwidth, s.coldCopyBytesPerSec);
    const ms = Math.round(modelMs / s.timeScale + s.perMoveOverheadMs);
    return { predictedMs: ms, predictedDowntimeMs: ms, converges: true };
  }
  const precopy = simulatePrecopy({
    memoryBytes: vm.memoryMiB * MiB,
    bandwidthBytesPerSec: bandwidth,
    dirtyRateBytesPerSec: vm.dirtyRateBytesPerSec,
    writableWorkingSetBytes: vm.writableWorkingSetBytes,
    downtimeLimitMs: s.downtimeLimitMs,
  });
  if (precopy.stopReason !== 'converged') {
    const steered = predictSteeredPrecopy({
      memoryBytes: vm.memoryMiB * MiB,
      bandwidthBytesPerSec: Math.min(bandwidth, s.policy?.maxBandwidthBytesPerSec ?? Infinity),
      dirtyRateBytesPerSec: vm.dirtyRateBytesPerSec,
      writableWorkingSetBytes: vm.writableWorkingSetBytes,
      policy: s.policy ?? defaultPolicy(s.downtimeLimitMs),
      timeScale: s.timeScale,
      diskBytes,
    });
    return {
      predictedMs: Math.round(steered.totalMs / s.timeScale + s.perMoveOverheadMs),
      predictedDowntimeMs: Math.round(steered.downtimeMs / s.timeScale),
      converges: false,
      outcome: steered.outcome,
    };
  }
  const modelMs = (diskBytes * 1000) / bandwidth + precopy.totalMs;
  return {
    predictedMs: Math.round(modelMs / s.timeScale + s.perMoveOverheadMs),
    predictedDowntimeMs: Math.round(precopy.downtimeMs / s.timeScale),
    converges: precopy.stopReason === 'converged',
  };
}

/** The default policy, starting at `downtimeLimitMs` (settings that name no policy). */
function defaultPolicy(downtimeLimitMs: number): ConvergencePolicy {
  const p = POLICIES.default;
  return { ...p, initialDowntimeMs: downtimeLimitMs, maxDowntimeMs: Math.max(p.maxDowntimeMs, downtimeLimitMs) };
}

export interface ScheduleInput {
  vmId: string;
  from: string;
  to: string;
  predictedMs: number;
}

export interface ScheduledMove {
  vmId: string;
  startAtMs: number;
  endAtMs: number;
}

/** A move already holding its slots (running since `startAtMs`, expected until `endAtMs`). */
export interface BusyMove {
  from: string;
  to: string;
  startAtMs: number;
  endAtMs: number;
}

/** A host's limit; 0 (unset in the inventory) counts as 1 so that a move can always start. */
export function hostLimit(n: number): number {
  return Math.max(1, n);
}

/**
 * List scheduling in the given order: each move starts at the earliest instant, not before the
 * previous move's start (moves never overtake: the executing workflow starts them strictly in
 * order), at which a global slot (maxParallel), an outgoing slot of its source (maxOutgoing) and
 * an incoming slot of its target (maxIncoming) are all free. A host limit of 0 counts as 1.
 * Intervals are half-open: a move ending at t frees its slots for a move starting at t.
 * The makespan is the largest endAtMs.
 */
/** What scheduling reads of a host. */
export type HostLimits = Pick<PlanHost, 'id' | 'maxOutgoing' | 'maxIncoming'>;

export function scheduleMoves(moves: ScheduleInput[], hosts: HostLimits[], maxParallel: number): ScheduledMove[] {
  return scheduleAfter(moves, hosts, maxParallel, [], 0);
}

/** `scheduleMoves` with slots already held by running moves and no start before `notBeforeMs`. */
export function scheduleAfter(
  moves: ScheduleInput[],
  hosts: HostLimits[],
  maxParallel: number,
  busy: BusyMove[],
  notBeforeMs: number,
): ScheduledMove[] {
  needParallel('maxParallel', maxParallel);
  const limits = new Map<string, { out: number; in: number }>();
  hosts.forEach((h, i) => {
    needNumber(`hosts[${i}].maxOutgoing`, h.maxOutgoing, 'non-negative integer');
    needNumber(`hosts[${i}].maxIncoming`, h.maxIncoming, 'non-negative integer');
    limits.set(h.id, { out: hostLimit(h.maxOutgoing), in: hostLimit(h.maxIncoming) });
  });
  const limitOf = (field: string, id: string) => limits.get(id) ?? planError(field, 'is not one of the hosts', id);
  let active: BusyMove[] = busy.map((b) => ({ ...b }));
  let t = notBeforeMs;
  return moves.map((m, i) => {
    needNumber(`moves[${i}].predictedMs`, m.predictedMs, 'non-negative');
    const out = limitOf(`moves[${i}].from`, m.from).out;
    const inn = limitOf(`moves[${i}].to`, m.to).in;
    for (;;) {
      active = active.filter((a) => a.endAtMs > t);
      const running = active.filter((a) => a.startAtMs <= t);
      const fits =
        running.length < maxParallel &&
        running.filter((a) => a.from === m.from).length < out &&
        running.filter((a) => a.to === m.to).length < inn;
      if (fits) break;
      // some running move blocks this one: wait for the next one to end
      t = Math.min(...running.map((a) => a.endAtMs));
    }
    const slot = { from: m.from, to: m.to, startAtMs: t, endAtMs: t + m.predictedMs };
    active.push(slot);
    return { vmId: m.vmId, startAtMs: slot.startAtMs, endAtMs: slot.endAtMs };
  });
}

/** max(Σ t_j / k, max t_j), rounded up to whole ms (fleet-anchors.md section 3). */
export function makespanLowerBound(durations: number[], k: number): number {
  if (durations.length === 0) return 0;
  const sum = durations.reduce((a, b) => a + b, 0);
  return Math.ceil(Math.max(sum / k, Math.max(...durations)));
}

/** A decided move before it has a time: what the planners hand to `timeMoves`. */
export type MoveDraft = Leg & { reason: string };

/**
 * Predicts every draft, orders longest predicted first (LPT; ties by VM id), list-schedules them
 * (`scheduleMoves`) and fills order / startAtMs / endAtMs. Returns the moves, the makespan and
 * the lower bound max(Σ t / maxParallel, max t).
 */
export function timeMoves(
  drafts: MoveDraft[],
  snapshot: ClusterSnapshot,
  s: PredictionSettings,
  maxParallel: number,
): { moves: PlannedMove[]; makespanMs: number; lowerBoundMs: number } {
  const predicted = drafts.map((d) => ({ d, p: predictMove(d.vm, d.from, d.to, d.kind, d.copyDisks, snapshot, s) }));
  predicted.sort((a, b) => b.p.predictedMs - a.p.predictedMs || byId(a.d.vm.id, b.d.vm.id));
  const slots = scheduleMoves(
    predicted.map(({ d, p }) => ({ vmId: d.vm.id, from: d.from, to: d.to, predictedMs: p.predictedMs })),
    snapshot.hosts,
    maxParallel,
  );
  const moves: PlannedMove[] = predicted.map(({ d, p }, order) => ({
    order,
    vmId: d.vm.id,
    vmName: d.vm.name,
    from: d.from,
    to: d.to,
    kind: d.kind,
    copyDisks: d.copyDisks,
    targetDatastoreId: d.targetDatastoreId,
    predictedMs: p.predictedMs,
    predictedDowntimeMs: p.predictedDowntimeMs,
    converges: p.converges,
    startAtMs: slots[order]!.startAtMs,
    endAtMs: slots[order]!.endAtMs,
    reason: d.reason,
  }));
  return {
    moves,
    makespanMs: moves.reduce((m, x) => Math.max(m, x.endAtMs), 0),
    lowerBoundMs: makespanLowerBound(moves.map((m) => m.predictedMs), maxParallel),
  };
}
