// Pre-copy steered by the convergence controller, in virtual time: what LiveMigrate stage 2 does
// to a migration that does not converge at its policy's initial downtime limit. Pure and
// deterministic, so the fleet planner can predict such a move (planner-predict.ts).
//
// The rounds are precopy-model's (nextRound / fitsDowntime) and follow the simulator's timeline
// (drivers/sim/model.ts): an optional disk mirror first, a parameter change shapes the rounds
// that start after it, the downtime limit in force at a round's end decides whether the source
// pauses, a forced switchover pauses mid-round and sends what is dirty then. Every
// `samplePeriodMs` of controller time (the workflow's watch window) the controller (`decide`)
// gets the stats the model gives at that instant; its actions are applied at once:
//   set-downtime -> the limit for the end-of-round check; throttle -> the next rounds;
//   switchover   -> stop-and-copy now; abort -> the move ends here, the VM stays on its host.
// A switchover that needs an operator's approval (approveSwitchover) is counted as approved at
// once: the planner cannot predict the operator.
import {
  RATE_WINDOW,
  completionBudgetMs,
  decide,
  downtimeStepDelayMs,
  initialControllerState,
  type ControllerAction,
  type ControllerSample,
  type ControllerState,
} from './convergence.js';
import type { ConvergencePolicy } from './policies.js';
import { DEFAULT_DEVICE_STATE_BYTES, dirtiedDuring, fitsDowntime, nextRound, transferMs, type PrecopyInput, type PrecopyRound } from './precopy-model.js';

/** Controller ms between two samples: live-migrate's watch window (WATCH_WINDOW_MS). */
export const CONTROLLER_SAMPLE_MS = 1000;
/** Samples after which a migration that has not ended is given up on (counted as an abort). */
export const MAX_CONTROLLER_SAMPLES = 200_000;

/** The guest and link as the pre-copy model takes them, plus who steers and how fast time runs. */
export interface SteeredPrecopyInput
  extends Pick<PrecopyInput, 'memoryBytes' | 'bandwidthBytesPerSec' | 'dirtyRateBytesPerSec' | 'writableWorkingSetBytes' | 'deviceStateBytes'> {
  policy: ConvergencePolicy;
  /** hypervisor ms per controller ms (the simulator's time scale; 1 for a real hypervisor) */
  timeScale: number;
  /** copyDisks: disk bytes mirrored before the first RAM round */
  diskBytes?: number;
  /** controller ms between samples (default CONTROLLER_SAMPLE_MS) */
  samplePeriodMs?: number;
}

export type SteeredOutcome = 'converges' | 'switchover' | 'abort';

export interface SteeredPrecopyResult {
  outcome: SteeredOutcome;
  /** hypervisor ms from the migration's start to its completion (or to the abort) */
  totalMs: number;
  /** hypervisor ms the guest is paused (0 for an abort) */
  downtimeMs: number;
  /** the controller's actions, at controller ms since the start */
  actions: Array<{ atMs: number; action: ControllerAction }>;
  samples: number;
}

/** The migration of `input` with the controller sampling and steering it, until it ends. */
export function simulateSteeredPrecopy(input: SteeredPrecopyInput): SteeredPrecopyResult {
  const { memoryBytes: memory, bandwidthBytesPerSec: bw, dirtyRateBytesPerSec: dirty, writableWorkingSetBytes: wws, policy } = input;
  if (!(input.timeScale > 0)) throw new RangeError(`timeScale must be a positive number, got ${input.timeScale}`);
  const period = input.samplePeriodMs ?? CONTROLLER_SAMPLE_MS;
  const periodV = period * input.timeScale;
  const device = input.deviceStateBytes ?? DEFAULT_DEVICE_STATE_BYTES;
  const disk = input.diskBytes ?? 0;
  const diskMs = transferMs(disk, bw);
  const hold = policy.approveSwitchover;

  let ctrl = initialControllerState(policy, memory);
  let limitMs = policy.initialDowntimeMs;
  let throttle = 0;
  const actions: SteeredPrecopyResult['actions'] = [];
  const done = (outcome: SteeredOutcome, totalMs: number, downtimeMs: number, samples: number): SteeredPrecopyResult => ({
    outcome,
    totalMs,
    downtimeMs,
    actions,
    samples,
  });
  const stopCopyMs = (remainder: number) => transferMs(remainder + device, bw);

  // the round in flight (null between rounds), when it started, the one before it
  let round: { r: PrecopyRound; throttle: number } | null = null;
  let roundStart = diskMs;
  let prev: PrecopyRound | undefined;
  let completed = 0;
  let transferred = disk;
  const roundInput = () => ({ memoryBytes: memory, bandwidthBytesPerSec: bw, dirtyRateBytesPerSec: dirty, writableWorkingSetBytes: wws, throttle });

  for (let k = 1; k <= MAX_CONTROLLER_SAMPLES; k++) {
    k = Math.max(k, quietUntil(k));
    const at = k * periodV;
    // the rounds that end by `at`
    for (;;) {
      if (roundStart > at) break;
      round ??= { r: nextRound(prev, roundInput()), throttle };
      const r = round.r;
      if (r.durationMs === 0) break; // nothing dirty (held): idle until the controller acts
      const end = roundStart + r.durationMs;
      if (end > at) break;
      completed += 1;
      transferred += r.sentBytes;
      if (!hold && fitsDowntime(r.dirtiedBytes, bw, limitMs)) return done('converges', end + stopCopyMs(r.dirtiedBytes), stopCopyMs(r.dirtiedBytes), k - 1);
      roundStart = end;
      if (prev && r.sentBytes === prev.sentBytes && r.dirtiedBytes === prev.dirtiedBytes && round.throttle === throttle) {
        // steady state: the same round again until `at` (same limit, so the same verdict)
        const n = Math.floor((at - roundStart) / r.durationMs);
        completed += n;
        transferred += n * r.sentBytes;
        roundStart += n * r.durationMs;
      }
      prev = r;
      round = null;
    }

    const sample = sampleAt(at);
    const d = decide(ctrl, { ...sample, elapsedMs: k * period });
    ctrl = d.state;
    for (const a of d.actions) {
      actions.push({ atMs: k * period, action: a });
      if (a.kind === 'set-downtime') limitMs = a.ms;
      else if (a.kind === 'throttle') throttle = a.pct / 100;
      else if (a.kind === 'abort') return done('abort', at, 0, k);
      else return done('switchover', at + stopCopyMs(sample.remainingBytes), stopCopyMs(sample.remainingBytes), k);
    }
    // the operator's approval, assumed at once
    if (d.awaitingApproval !== null) return done('switchover', at + stopCopyMs(sample.remainingBytes), stopCopyMs(sample.remainingBytes), k);
  }
  return done('abort', MAX_CONTROLLER_SAMPLES * periodV, 0, MAX_CONTROLLER_SAMPLES);

  /**
   * The first sample worth taking from `k` on. A tripped migration in a steady state (the same
   * round again and again, not fitting the limit) whose remainder fits the ceiling at every
   * instant of the round gets only 'converging' verdicts, so the controller does nothing until
   * its next downtime step or its completion budget: skip to RATE_WINDOW + 1 samples before
   * that (those rebuild the rate window the verdict reads). Keeps a large VM waiting for its
   * steps (75 s/GiB apart by default) from costing one `decide` per second of the wait. Since
   * `decide` puts the ceiling in force on such a 'converging' sample (ceilingInForce) the wait
   * does not arise (the sample before this one already fitted and raised the limit); kept as a
   * guard, it only skips what the controller would not act on.
   */
  function quietUntil(k: number): number {
    const r = round?.r;
    if (!r || !prev || ctrl.trip === null || ctrl.final !== null || ctrl.pendingSwitchover !== null || hold) return k;
    if (r.sentBytes !== prev.sentBytes || r.dirtiedBytes !== prev.dirtiedBytes || round!.throttle !== throttle) return k;
    if (fitsDowntime(r.dirtiedBytes, bw, limitMs) || !fitsDowntime(maxRemaining(r, throttle), bw, ctrl.maxDowntimeMs)) return k;
    const until = Math.min(nextStepAtMs(ctrl), completionBudgetMs(policy, memory));
    return Math.max(k, Math.ceil(until / period) - RATE_WINDOW - 2);
  }

  /** The largest remainder the hypervisor reports during steady round `r` (+1 for rounding). */
  function maxRemaining(r: PrecopyRound, t: number): number {
    const effDirty = dirty * (1 - t);
    const at = (e: number) => r.sentBytes - (bw * e) / 1000 + Math.min(wws, (effDirty * e) / 1000) + 1;
    const kink = effDirty > 0 ? (wws * 1000) / effDirty : Infinity;
    return Math.min(memory, Math.max(at(0), at(r.durationMs), kink < r.durationMs ? at(kink) : 0));
  }

  /** Controller ms of the next downtime step (Infinity once at the last). */
  function nextStepAtMs(c: ControllerState): number {
    return c.downtimeStep >= policy.downtimeSteps ? Infinity : (c.downtimeStep + 1) * downtimeStepDelayMs(policy, memory);
  }

  /** What the hypervisor reports at hypervisor time `at` (as the simulator does). */
  function sampleAt(at: number): Omit<ControllerSample, 'elapsedMs'> {
    const base = { status: 'active', transferRateBytesPerSec: bw };
    if (at < diskMs) {
      const sent = Math.min(disk, Math.floor((bw * at) / 1000));
      const remainingBytes = memory + disk - sent;
      return { ...base, round: 0, transferredBytes: sent, remainingBytes, totalBytes: memory + disk, dirtyRateBytesPerSec: dirty, expectedDowntimeMs: transferMs(remainingBytes, bw), throttlePct: 0 };
    }
    const t = round?.throttle ?? throttle;
    const r = round?.r;
    const e = at - roundStart;
    const sent = r ? Math.min(r.sentBytes, Math.floor((bw * e) / 1000)) : 0;
    const remainingBytes = r ? Math.min(memory, r.sentBytes - sent + dirtiedDuring(e, dirty, wws, t)) : 0;
    return {
      ...base,
      round: completed,
      transferredBytes: transferred + sent,
      remainingBytes,
      totalBytes: memory,
      dirtyRateBytesPerSec: Math.floor(dirty * (1 - t)),
      expectedDowntimeMs: transferMs(remainingBytes, bw),
      throttlePct: Math.round(t * 100),
    };
  }
}

/**
 * Controller periods the prediction tries: the watch window plus 0..80 ms of activity latency.
 * Which instant of a round the controller samples decides some verdicts (a mid-round remainder
 * fits the ceiling or not), so one fixed period can be far from what a run sees; the median
 * over a few periods is what a typical run does.
 */
export const PREDICTION_SAMPLE_PERIODS_MS = [1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070, 1080];

/** `simulateSteeredPrecopy` over PREDICTION_SAMPLE_PERIODS_MS: the run with the median totalMs. */
export function predictSteeredPrecopy(input: Omit<SteeredPrecopyInput, 'samplePeriodMs'>): SteeredPrecopyResult {
  const runs = PREDICTION_SAMPLE_PERIODS_MS.map((samplePeriodMs) => simulateSteeredPrecopy({ ...input, samplePeriodMs }));
  runs.sort((a, b) => a.totalMs - b.totalMs);
  return runs[(runs.length - 1) >> 1]!;
}
