// The live-migration convergence controller (ARCHITECTURE.md section 3, LiveMigrate stage 2).
//
// The workflow samples the hypervisor's MigrationStats about once a second, adds `elapsedMs`
// (workflow time since the migration started) and calls `decide(state, sample)`. The controller
// answers with a verdict, a progress report and plain-object actions for the workflow to carry
// out (setMigrationParams / continueSwitchover / rollback). Everything is a pure function of the
// inputs, state is plain JSON, so the workflow can keep it across continue-as-new and its
// decisions replay identically.
//
// What the controller does:
// - Downtime stepping (Nova's live_migration_downtime_steps): step i of N is due at
//   i * downtimeStepDelaySecPerGiB * memoryGiB seconds and sets
//   initial + (ceiling - initial) * i / N (rounded to whole ms; step N is exactly the ceiling).
//   When several steps fall between two samples only the latest value is sent.
// - Trips ("rounds stop paying off"): completion budget (completionTimeoutSecPerGiB x GiB),
//   progress timeout (no new minimum of remainingBytes for progressTimeoutSec), round >= maxRounds,
//   transferred > maxSentFactor x memory. On the first trip, if the current remainder fits the
//   downtime ceiling, the controller jumps straight to the ceiling (what the stepping would reach
//   anyway) and waits; it applies policy.onStall once the remainder stops fitting while a trip
//   still holds. Otherwise it applies policy.onStall at once:
//     'abort'         -> one abort action (the workflow rolls back; the VM keeps running on A);
//     'switchover'    -> one switchover action (forced stop-and-copy, accepting a longer downtime);
//     'auto-converge' -> throttle throttleInitialPct at once, then +throttleIncrementPct at most
//                        every throttleStepSec while the migration is still "over budget"
//                        (verdict not 'converging', or the completion budget spent), up to
//                        throttleMaxPct. Once at the maximum for a full throttleStepSec and still
//                        over budget, the controller applies policy.onThrottleExhausted
//                        ('abort' by default: a nearly frozen guest that still does not
//                        converge is safer left running on A than paused for an unknown time).
//   After a trip, whenever a sample's remainder fits the ceiling while the limit in force is
//   lower (the first trip's sample did not fit and the throttle then made it fit, say), the
//   controller also raises the limit to the ceiling (one set-downtime, step N): its 'converging'
//   verdict rests on that fit and stops the throttle rising, but the hypervisor switches over
//   only at the limit in force, so without it the migration would wait for the downtime steps
//   (DecideOptions.ceilingInForce=false: the behaviour before, for replaying old histories).
//   With approveSwitchover=true a switchover is never emitted; Decision.awaitingApproval carries the
//   reason and the workflow waits for the operator.
// - Steering (steps, trips, throttle) happens only while sample.status is 'active' (or absent);
//   at pre-switchover, device, completed or failed nothing the controller could do helps.
// - Normal convergence needs no action: the hypervisor enters stop-and-copy by itself once the
//   remainder fits the downtime limit (autoSwitchover, see initialMigrationParams).
// - Verdict: 'converging' if the remainder fits the downtime ceiling; else 'diverging' if the
//   effective dirty rate (dirty x (1 - throttle)) summed over the last RATE_WINDOW samples is
//   >= the transfer rate summed likewise; else 'stalled' if remainingBytes made no new minimum for
//   stallWindowSec; else 'converging'. For steady inputs this is analyticVerdict (precopy-model).
// - Progress: percent = max(previous, estimate), never backwards, 100 only when completed.

import { fitsDowntime } from './precopy-model.js';
import { PolicyError, type ConvergencePolicy } from './policies.js';

const GiB = 1024 ** 3;
/** samples whose rates are summed for the verdict (smooths a noisy dirty-rate reading) */
export const RATE_WINDOW = 5;

/**
 * One reading of the hypervisor's migration stats plus the time since the migration started.
 * Structurally the driver's MigrationStats (drivers/hypervisor.ts) with `elapsedMs` added; only
 * the fields the controller reads are required, so `{ ...stats, elapsedMs }` fits.
 */
export interface ControllerSample {
  /** MigrationStatusName; 'completed' drives progress to 100 */
  status?: string;
  round: number;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  dirtyRateBytesPerSec: number;
  transferRateBytesPerSec: number;
  expectedDowntimeMs: number;
  /** guest throttle in effect, percent */
  throttlePct: number;
  /** ms since the migration started (workflow time, monotonic) */
  elapsedMs: number;
}

export type ControllerAction =
  | { kind: 'set-downtime'; ms: number; reason: string }
  | { kind: 'throttle'; pct: number; reason: string }
  | { kind: 'switchover'; reason: string }
  | { kind: 'abort'; reason: string };

export type Verdict = 'converging' | 'stalled' | 'diverging';

export type TripKind = 'completion-timeout' | 'progress-timeout' | 'max-rounds' | 'max-sent';

export interface ControllerState {
  policy: ConvergencePolicy;
  memoryBytes: number;
  /** downtime limit currently applied to the hypervisor */
  downtimeMs: number;
  /** index of the downtime step applied, 0..policy.downtimeSteps */
  downtimeStep: number;
  /** current ceiling (policy.maxDowntimeMs unless an operator moved it) */
  maxDowntimeMs: number;
  /** throttle the controller has asked for, percent */
  throttlePct: number;
  /** elapsedMs of the last throttle action, null before the first */
  lastThrottleAtMs: number | null;
  minRemainingBytes: number | null;
  minRemainingAtMs: number;
  lastElapsedMs: number;
  samples: number;
  /** recent rates for the verdict, newest last, at most RATE_WINDOW */
  recentRates: Array<{ effDirty: number; transfer: number }>;
  percent: number;
  /** first trip seen (sticky) */
  trip: { kind: TripKind; reason: string; atMs: number } | null;
  /** policy.onStall has been applied for the trip (false while a jump to the ceiling is tried) */
  stallHandled: boolean;
  /** the final action emitted (abort or switchover); no further stall handling after it */
  final: { kind: 'abort' | 'switchover'; reason: string } | null;
  /** a forced switchover the policy wants but an operator must approve (sticky) */
  pendingSwitchover: string | null;
  /** last sample: under hold, the remainder fits the downtime limit (operator may approve) */
  readyForSwitchover: string | null;
}

export interface Progress {
  /** 0..100, never decreases; 100 only once the hypervisor reports completed */
  percent: number;
  /** seconds until the migration should complete; null when it is not converging */
  etaSec: number | null;
  expectedDowntimeMs: number;
  round: number;
  remainingBytes: number;
  downtimeLimitMs: number;
  throttlePct: number;
}

export interface Decision {
  state: ControllerState;
  verdict: Verdict;
  actions: ControllerAction[];
  progress: Progress;
  /** non-null: a switchover is wanted but needs the operator's approval (approveSwitchover=true) */
  awaitingApproval: string | null;
}

/** Parameters for startMigration that match the policy's starting point. */
export function initialMigrationParams(policy: ConvergencePolicy): {
  downtimeLimitMs: number;
  maxBandwidthBytesPerSec?: number;
  autoSwitchover: boolean;
  hold: boolean;
} {
  return {
    downtimeLimitMs: policy.initialDowntimeMs,
    ...(policy.maxBandwidthBytesPerSec === null ? {} : { maxBandwidthBytesPerSec: policy.maxBandwidthBytesPerSec }),
    autoSwitchover: !policy.approveSwitchover,
    hold: policy.approveSwitchover,
  };
}

export function initialControllerState(policy: ConvergencePolicy, memoryBytes: number): ControllerState {
  if (!Number.isFinite(memoryBytes) || memoryBytes <= 0) {
    throw new RangeError(`memoryBytes must be a positive number, got ${memoryBytes}`);
  }
  return {
    policy,
    memoryBytes,
    downtimeMs: policy.initialDowntimeMs,
    downtimeStep: 0,
    maxDowntimeMs: policy.maxDowntimeMs,
    throttlePct: 0,
    lastThrottleAtMs: null,
    minRemainingBytes: null,
    minRemainingAtMs: 0,
    lastElapsedMs: 0,
    samples: 0,
    recentRates: [],
    percent: 0,
    trip: null,
    stallHandled: false,
    final: null,
    pendingSwitchover: null,
    readyForSwitchover: null,
  };
}

/** Seconds between downtime steps for this VM. */
export function downtimeStepDelayMs(policy: ConvergencePolicy, memoryBytes: number): number {
  return policy.downtimeStepDelaySecPerGiB * (memoryBytes / GiB) * 1000;
}

/** The downtime limit of step `i` (0..steps) under ceiling `maxMs`; never above the ceiling. */
export function downtimeAtStep(policy: ConvergencePolicy, maxMs: number, i: number): number {
  const n = policy.downtimeSteps;
  const initial = Math.min(policy.initialDowntimeMs, maxMs);
  if (i >= n) return maxMs;
  return Math.min(maxMs, Math.round(initial + ((maxMs - initial) * i) / n));
}

/** The whole-migration budget in ms (Infinity when disabled). */
export function completionBudgetMs(policy: ConvergencePolicy, memoryBytes: number): number {
  return policy.completionTimeoutSecPerGiB === 0 ? Infinity : policy.completionTimeoutSecPerGiB * (memoryBytes / GiB) * 1000;
}

const SAMPLE_FIELDS = [
  'round',
  'transferredBytes',
  'remainingBytes',
  'totalBytes',
  'dirtyRateBytesPerSec',
  'transferRateBytesPerSec',
  'expectedDowntimeMs',
  'throttlePct',
  'elapsedMs',
] as const;

function validateSample(state: ControllerState, s: ControllerSample): void {
  for (const k of SAMPLE_FIELDS) {
    const v = s[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`sample.${k} must be a non-negative finite number, got ${String(v)}`);
    }
  }
  if (s.throttlePct > 100) throw new RangeError(`sample.throttlePct must be at most 100, got ${s.throttlePct}`);
  if (state.samples > 0 && s.elapsedMs < state.lastElapsedMs) {
    throw new RangeError(`sample.elapsedMs went backwards: ${s.elapsedMs} after ${state.lastElapsedMs}`);
  }
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const secs = (ms: number) => `${Math.round(ms / 1000)} s`;

function findTrip(state: ControllerState, s: ControllerSample): { kind: TripKind; reason: string } | null {
  const p = state.policy;
  const budget = completionBudgetMs(p, state.memoryBytes);
  if (s.elapsedMs > budget) {
    return {
      kind: 'completion-timeout',
      reason: `completion budget spent: ${secs(s.elapsedMs)} elapsed, budget ${secs(budget)} (${p.completionTimeoutSecPerGiB} s/GiB x ${(state.memoryBytes / GiB).toFixed(2)} GiB)`,
    };
  }
  if (p.progressTimeoutSec > 0 && s.elapsedMs - state.minRemainingAtMs >= p.progressTimeoutSec * 1000) {
    return {
      kind: 'progress-timeout',
      reason: `no progress: remaining has not gone below ${mib(state.minRemainingBytes ?? s.remainingBytes)} for ${secs(s.elapsedMs - state.minRemainingAtMs)} (progress timeout ${p.progressTimeoutSec} s)`,
    };
  }
  if (s.round >= p.maxRounds) {
    return { kind: 'max-rounds', reason: `round ${s.round} reached the limit of ${p.maxRounds} rounds` };
  }
  const maxSent = p.maxSentFactor * state.memoryBytes;
  if (s.transferredBytes > maxSent) {
    return {
      kind: 'max-sent',
      reason: `sent ${mib(s.transferredBytes)}, more than ${p.maxSentFactor} x memory (${mib(maxSent)})`,
    };
  }
  return null;
}

function verdictOf(state: ControllerState, s: ControllerSample, madeNewMinimum: boolean): Verdict {
  if (s.transferRateBytesPerSec > 0 && fitsDowntime(s.remainingBytes, s.transferRateBytesPerSec, state.maxDowntimeMs)) {
    return 'converging';
  }
  let effDirty = 0;
  let transfer = 0;
  for (const r of state.recentRates) {
    effDirty += r.effDirty;
    transfer += r.transfer;
  }
  if (transfer > 0 && effDirty >= transfer) return 'diverging';
  if (!madeNewMinimum && s.elapsedMs - state.minRemainingAtMs >= state.policy.stallWindowSec * 1000) return 'stalled';
  return 'converging';
}

function progressOf(state: ControllerState, s: ControllerSample, verdict: Verdict): Progress {
  const completed = s.status === 'completed';
  let estimate: number;
  if (completed) {
    estimate = 100;
  } else if (s.totalBytes > 0 && s.transferredBytes < s.totalBytes) {
    // first pass over memory: the bulk of the work, 0..90 %
    estimate = (90 * s.transferredBytes) / s.totalBytes;
  } else if (s.remainingBytes === 0) {
    estimate = 99;
  } else {
    // later rounds: 90..99 % by how close the remainder is to fitting the current downtime limit
    const fitting = (state.downtimeMs * s.transferRateBytesPerSec) / 1000;
    estimate = 90 + 9 * Math.min(1, fitting / s.remainingBytes);
  }
  const percent = Math.max(state.percent, Math.min(completed ? 100 : 99, estimate));

  const effDirty = s.dirtyRateBytesPerSec * (1 - s.throttlePct / 100);
  const xfer = s.transferRateBytesPerSec;
  let etaSec: number | null = null;
  if (completed) etaSec = 0;
  else if (xfer > 0 && fitsDowntime(s.remainingBytes, xfer, state.downtimeMs)) etaSec = s.remainingBytes / xfer;
  // geometric series of rounds: R/bw * (1 + q + q^2 + ...) = R / (bw - effDirty)
  else if (xfer > 0 && verdict !== 'diverging' && effDirty < xfer) etaSec = s.remainingBytes / (xfer - effDirty);
  if (etaSec !== null) etaSec = Math.round(etaSec * 10) / 10;

  const expectedDowntimeMs =
    s.expectedDowntimeMs > 0 ? s.expectedDowntimeMs : xfer > 0 ? Math.round((s.remainingBytes * 1000) / xfer) : 0;

  return {
    percent: Math.round(percent * 100) / 100,
    etaSec,
    expectedDowntimeMs,
    round: s.round,
    remainingBytes: s.remainingBytes,
    downtimeLimitMs: state.downtimeMs,
    throttlePct: s.throttlePct,
  };
}

function xferFits(s: ControllerSample, downtimeMs: number): boolean {
  return s.transferRateBytesPerSec > 0 && fitsDowntime(s.remainingBytes, s.transferRateBytesPerSec, downtimeMs);
}

/** Emits the final action (or asks for approval when a switchover is not pre-approved). */
function finish(state: ControllerState, kind: 'abort' | 'switchover', reason: string, actions: ControllerAction[]): void {
  if (kind === 'switchover' && state.policy.approveSwitchover) {
    state.pendingSwitchover = `switchover needs operator approval: ${reason}`;
    return;
  }
  state.final = { kind, reason };
  actions.push({ kind, reason });
}

/** policy.onStall for a trip: abort, forced switchover, or the first auto-converge throttle. */
function applyOnStall(state: ControllerState, reason: string, atMs: number, actions: ControllerAction[]): void {
  const p = state.policy;
  state.stallHandled = true;
  if (p.onStall === 'abort') finish(state, 'abort', reason, actions);
  else if (p.onStall === 'switchover') finish(state, 'switchover', reason, actions);
  else {
    state.throttlePct = p.throttleInitialPct;
    state.lastThrottleAtMs = atMs;
    actions.push({ kind: 'throttle', pct: state.throttlePct, reason: `auto-converge: ${reason}` });
  }
}

/** `decide`'s changed behaviours; LiveMigrate asks for the old ones to replay old histories. */
export interface DecideOptions {
  /** true (default): after a trip, a remainder that fits the ceiling puts it in force (header); false: as before patch 'controller-ceiling-in-force' */
  ceilingInForce?: boolean;
}

/** One controller step: fold the sample into the state and say what to do. */
export function decide(prev: ControllerState, sample: ControllerSample, options: DecideOptions = {}): Decision {
  validateSample(prev, sample);
  const state: ControllerState = {
    ...prev,
    recentRates: [
      ...prev.recentRates,
      {
        effDirty: sample.dirtyRateBytesPerSec * (1 - sample.throttlePct / 100),
        transfer: sample.transferRateBytesPerSec,
      },
    ].slice(-RATE_WINDOW),
    trip: prev.trip ? { ...prev.trip } : null,
    final: prev.final ? { ...prev.final } : null,
  };
  const actions: ControllerAction[] = [];
  const p = state.policy;

  // progress bookkeeping: a strictly new minimum of remainingBytes counts as progress
  const madeNewMinimum = state.minRemainingBytes === null || sample.remainingBytes < state.minRemainingBytes;
  if (madeNewMinimum) {
    state.minRemainingBytes = sample.remainingBytes;
    state.minRemainingAtMs = sample.elapsedMs;
  }
  state.samples += 1;
  state.lastElapsedMs = sample.elapsedMs;

  const verdict = verdictOf(state, sample, madeNewMinimum);
  const xfer = sample.transferRateBytesPerSec;

  // Only an active pre-copy is steered; at pre-switchover / device / completed / failed the
  // migration is past the point where throttling or stepping could help.
  const steerable = sample.status === undefined || sample.status === 'active';
  if (!state.final && steerable) {
    // downtime stepping
    const due = Math.min(p.downtimeSteps, Math.floor(sample.elapsedMs / downtimeStepDelayMs(p, state.memoryBytes)));
    if (due > state.downtimeStep) {
      state.downtimeStep = due;
      const ms = downtimeAtStep(p, state.maxDowntimeMs, due);
      if (ms !== state.downtimeMs) {
        state.downtimeMs = ms;
        actions.push({ kind: 'set-downtime', ms, reason: `downtime step ${due} of ${p.downtimeSteps} at ${secs(sample.elapsedMs)}` });
      }
    }

    const trip = findTrip(state, sample);
    if (trip && !state.trip) {
      state.trip = { ...trip, atMs: sample.elapsedMs };
      if (xferFits(sample, state.maxDowntimeMs)) {
        // The remainder fits the ceiling the stepping would reach anyway: go there now (if not
        // there yet) and apply onStall only if it stops fitting while still tripped (below).
        if (state.downtimeMs < state.maxDowntimeMs) {
          state.downtimeStep = p.downtimeSteps;
          state.downtimeMs = state.maxDowntimeMs;
          actions.push({ kind: 'set-downtime', ms: state.downtimeMs, reason: `${trip.reason}; remainder fits the ${state.maxDowntimeMs} ms ceiling` });
        }
      } else {
        applyOnStall(state, trip.reason, sample.elapsedMs, actions);
      }
    } else if (state.trip && !state.stallHandled) {
      if (trip && verdict !== 'converging') applyOnStall(state, `${trip.reason} (at the ${state.downtimeMs} ms ceiling)`, sample.elapsedMs, actions);
    } else if (state.trip && p.onStall === 'auto-converge' && state.lastThrottleAtMs !== null && state.pendingSwitchover === null) {
      const overBudget = verdict !== 'converging' || sample.elapsedMs > completionBudgetMs(p, state.memoryBytes);
      const stepDue = sample.elapsedMs - state.lastThrottleAtMs >= p.throttleStepSec * 1000;
      if (overBudget && stepDue) {
        if (state.throttlePct < p.throttleMaxPct) {
          state.throttlePct = Math.min(p.throttleMaxPct, state.throttlePct + p.throttleIncrementPct);
          state.lastThrottleAtMs = sample.elapsedMs;
          actions.push({ kind: 'throttle', pct: state.throttlePct, reason: `auto-converge: still ${verdict} at ${secs(sample.elapsedMs)}` });
        } else {
          finish(
            state,
            p.onThrottleExhausted,
            `auto-converge exhausted: throttle at ${state.throttlePct}% for ${secs(sample.elapsedMs - state.lastThrottleAtMs)} and still ${verdict} (first trip: ${state.trip.reason})`,
            actions,
          );
        }
      }
    }

    // After a trip a remainder that fits the ceiling is 'converging' (the throttle stops rising),
    // but the hypervisor switches over only at the limit in force: put the ceiling in force.
    const tripped = state.trip;
    if (options.ceilingInForce !== false && tripped && !state.final && verdict === 'converging' && state.downtimeMs < state.maxDowntimeMs && xferFits(sample, state.maxDowntimeMs)) {
      const reason = `${tripped.reason}; remainder ${mib(sample.remainingBytes)} fits the ${state.maxDowntimeMs} ms ceiling, not the ${state.downtimeMs} ms limit in force`;
      state.downtimeStep = p.downtimeSteps;
      state.downtimeMs = state.maxDowntimeMs;
      actions.push({ kind: 'set-downtime', ms: state.downtimeMs, reason });
    }
  }

  // Under hold (approveSwitchover=true) the hypervisor will not enter stop-and-copy itself:
  // tell the workflow when the migration is ready for the operator's approval.
  state.readyForSwitchover =
    p.approveSwitchover && xferFits(sample, state.downtimeMs)
      ? `ready for switchover: ${mib(sample.remainingBytes)} remaining fits the ${state.downtimeMs} ms downtime limit`
      : null;

  const progress = progressOf(state, sample, verdict);
  state.percent = progress.percent;
  return { state, verdict, actions, progress, awaitingApproval: state.pendingSwitchover ?? state.readyForSwitchover };
}

/**
 * Operator steering (a signal the workflow receives): move the downtime ceiling. The current
 * limit becomes the current step's value under the new ceiling (so lowering the ceiling below the
 * current limit lowers it at once); a set-downtime action is returned when it changes.
 */
export function applyOperatorChange(
  prev: ControllerState,
  change: { maxDowntimeMs?: number; approveSwitchover?: boolean },
): { state: ControllerState; actions: ControllerAction[] } {
  const state: ControllerState = { ...prev };
  const actions: ControllerAction[] = [];
  if (change.approveSwitchover !== undefined) {
    if (typeof change.approveSwitchover !== 'boolean') {
      throw new PolicyError('approveSwitchover', `approveSwitchover must be a boolean, got ${String(change.approveSwitchover)}`);
    }
    // the operator's approval: from now on the switchover is pre-approved
    if (change.approveSwitchover) state.policy = { ...state.policy, approveSwitchover: false };
    const waiting = state.pendingSwitchover ?? state.readyForSwitchover;
    if (change.approveSwitchover && waiting !== null && state.final === null) {
      // the switchover this approval was waiting for
      const reason = `operator approved: ${waiting}`;
      state.final = { kind: 'switchover', reason };
      actions.push({ kind: 'switchover', reason });
    }
    if (change.approveSwitchover) {
      state.pendingSwitchover = null;
      state.readyForSwitchover = null;
    }
  }
  if (change.maxDowntimeMs !== undefined) {
    const ms = change.maxDowntimeMs;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0 || ms > 600_000) {
      throw new PolicyError('maxDowntimeMs', `maxDowntimeMs must be a number in (0, 600000], got ${String(ms)}`);
    }
    state.maxDowntimeMs = ms;
    const next = downtimeAtStep(state.policy, ms, state.downtimeStep);
    if (next !== state.downtimeMs) {
      state.downtimeMs = next;
      actions.push({ kind: 'set-downtime', ms: next, reason: `operator set the downtime ceiling to ${ms} ms` });
    }
  }
  return { state, actions };
}
