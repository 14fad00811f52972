// Pure live-migration timeline of the simulator: the state of a migration at any virtual
// instant, computed from its persisted start, parameters and events only. Nothing here reads
// a clock or a database, so a migration "keeps running" while no process watches it and every
// process that opens the state file sees the same thing.
//
// Rounds follow workflows/lib/precopy-model.ts exactly (nextRound / fitsDowntime / transferMs).
// Differences from simulatePrecopy are the ones a real hypervisor has: no max-rounds or
// max-sent stop (the workflow's controller forces or cancels), parameters that change between
// rounds, a pre-switchover pause that waits for continueSwitchover, and external events.
import type { MigrationParams, MigrationStats, MigrationStatusName } from '../hypervisor.js';
import {
  DEFAULT_DEVICE_STATE_BYTES,
  dirtiedDuring,
  fitsDowntime,
  nextRound,
  transferMs,
  type PrecopyRound,
} from '../../domain/precopy-model.js';

/** QEMU's default downtime-limit (ms). */
export const DEFAULT_DOWNTIME_LIMIT_MS = 300;
/** Default migration link bandwidth when no link row names the pair: 1 GiB/s. */
export const DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC = 1024 ** 3;

/** A parameter change, in force from `atV` (virtual ms); it shapes rounds that start at or after it. */
export interface ParamSegment {
  atV: number;
  params: SegmentParams;
}

/** MigrationParams plus the simulator-internal dirty-rate override (fault `dirty-rate`). */
export interface SegmentParams extends MigrationParams {
  dirtyRateBytesPerSec?: number;
}

export interface ResolvedParams {
  bandwidthBytesPerSec: number;
  downtimeLimitMs: number;
  throttlePct: number;
  hold: boolean;
  autoSwitchover: boolean;
  dirtyRateBytesPerSec: number;
}

export interface MigrationModelInput {
  startV: number;
  memoryBytes: number;
  linkBandwidthBytesPerSec: number;
  dirtyRateBytesPerSec: number;
  writableWorkingSetBytes: number;
  deviceStateBytes?: number;
  /** copyDisks: disk bytes mirrored before the first RAM round (at the start bandwidth) */
  diskBytes?: number;
  /** in the order they were recorded; the first one usually carries the start options */
  segments: ParamSegment[];
  /** virtual time of the first continueSwitchover call (force when still active) */
  continueAtV?: number | null;
  /** external terminal event: cancel, destination crash, link cut */
  abort?: { atV: number; status: 'failed' | 'cancelled'; error: string } | null;
  /** injected failures bound to this migration (error messages) */
  failAfterRound1?: string | null;
  failAtPause?: string | null;
  failAtContinue?: string | null;
}

export type ModelCause = 'abort' | 'round1' | 'pause' | 'continue';

export interface MigrationView {
  status: Exclude<MigrationStatusName, 'none' | 'setup'>;
  stats: MigrationStats;
  /** source paused since (pre-switchover, device, completed) */
  pausedAtV?: number;
  /** when a terminal status was reached */
  endedAtV?: number;
  /** which event ended it (failed/cancelled) */
  cause?: ModelCause;
}

export function resolveParams(input: MigrationModelInput, atV: number): ResolvedParams {
  let maxBw: number | undefined;
  let downtimeLimitMs = DEFAULT_DOWNTIME_LIMIT_MS;
  let throttlePct = 0;
  let hold = false;
  let autoSwitchover = false;
  let dirty = input.dirtyRateBytesPerSec;
  for (const s of input.segments) {
    if (s.atV > atV) continue;
    const p = s.params;
    if (p.maxBandwidthBytesPerSec !== undefined) maxBw = p.maxBandwidthBytesPerSec;
    if (p.downtimeLimitMs !== undefined) downtimeLimitMs = p.downtimeLimitMs;
    if (p.throttlePct !== undefined) throttlePct = p.throttlePct;
    if (p.hold !== undefined) hold = p.hold;
    if (p.autoSwitchover !== undefined) autoSwitchover = p.autoSwitchover;
    if (p.dirtyRateBytesPerSec !== undefined) dirty = p.dirtyRateBytesPerSec;
  }
  const bw = maxBw === undefined ? input.linkBandwidthBytesPerSec : Math.min(maxBw, input.linkBandwidthBytesPerSec);
  return { bandwidthBytesPerSec: bw, downtimeLimitMs, throttlePct, hold, autoSwitchover, dirtyRateBytesPerSec: dirty };
}

/** Smallest segment time strictly after `t` (Infinity when none). */
function nextSegmentAfter(input: MigrationModelInput, t: number): number {
  let best = Infinity;
  for (const s of input.segments) if (s.atV > t && s.atV < best) best = s.atV;
  return best;
}

/** Rounds skipped in one arithmetic step once they repeat identically (non-converging steady state). */
const FAST_FORWARD_MIN_ROUNDS = 1000;

/** The migration's state at virtual time `atV` (clamped to its start). */
export function evaluateMigration(input: MigrationModelInput, atV: number): MigrationView {
  const at = Math.max(atV, input.startV);
  const memory = input.memoryBytes;
  const device = input.deviceStateBytes ?? DEFAULT_DEVICE_STATE_BYTES;
  const wws = input.writableWorkingSetBytes;
  const abortAt = input.abort?.atV ?? Infinity;
  const continueAt = input.continueAtV ?? Infinity;

  let elapsed = 0; // precopy ms since start, summed round by round (as simulatePrecopy does)
  let t = input.startV;
  let prev: PrecopyRound | undefined;
  let completed = 0;
  let transferred = 0;

  const base = (p: ResolvedParams): Omit<MigrationStats, 'status' | 'round' | 'transferredBytes' | 'remainingBytes'> => ({
    totalBytes: memory,
    dirtyRateBytesPerSec: Math.floor(p.dirtyRateBytesPerSec * (1 - p.throttlePct / 100)),
    transferRateBytesPerSec: p.bandwidthBytesPerSec,
    expectedDowntimeMs: 0,
    throttlePct: p.throttlePct,
  });

  const terminal = (
    status: 'failed' | 'cancelled',
    endV: number,
    cause: ModelCause,
    error: string,
    sent: number,
    remaining: number,
    p: ResolvedParams,
    pausedAtV?: number,
  ): MigrationView => ({
    status,
    endedAtV: endV,
    cause,
    pausedAtV,
    stats: {
      ...base(p),
      status,
      round: completed,
      transferredBytes: sent,
      remainingBytes: remaining,
      transferRateBytesPerSec: 0,
      totalTimeMs: endV - input.startV,
      error,
    },
  });

  /** From the instant the source pauses: pre-switchover wait, stop-and-copy, completion. */
  const switchover = (pauseAt: number, elapsedAtPause: number, remainder: number, sentBefore: number): MigrationView => {
    const pp = resolveParams(input, pauseAt);
    if (input.failAtPause) return terminal('failed', pauseAt, 'pause', input.failAtPause, sentBefore, remainder, pp);
    // when does stop-and-copy start: at once (autoSwitchover), at continueSwitchover, or when a
    // later parameter change pre-approves it
    let contAt = Infinity;
    if (pp.autoSwitchover) contAt = pauseAt;
    else {
      if (continueAt >= pauseAt) contAt = continueAt;
      for (const s of [...input.segments].filter((x) => x.atV > pauseAt).sort((a, b) => a.atV - b.atV)) {
        if (s.atV >= contAt) break;
        if (resolveParams(input, s.atV).autoSwitchover) {
          contAt = s.atV;
          break;
        }
      }
    }
    if (abortAt < contAt && abortAt <= at) {
      return terminal(input.abort!.status, abortAt, 'abort', input.abort!.error, sentBefore, remainder, pp, pauseAt);
    }
    if (at < contAt) {
      return {
        status: 'pre-switchover',
        pausedAtV: pauseAt,
        stats: {
          ...base(pp),
          status: 'pre-switchover',
          round: completed,
          transferredBytes: sentBefore,
          remainingBytes: remainder,
          transferRateBytesPerSec: 0,
          dirtyRateBytesPerSec: 0,
          expectedDowntimeMs: transferMs(remainder, pp.bandwidthBytesPerSec),
        },
      };
    }
    const pd = resolveParams(input, contAt);
    if (input.failAtContinue) return terminal('failed', contAt, 'continue', input.failAtContinue, sentBefore, remainder, pd, pauseAt);
    const stopCopy = remainder + device;
    const devMs = transferMs(stopCopy, pd.bandwidthBytesPerSec);
    const doneAt = contAt + devMs;
    if (abortAt < doneAt && abortAt <= at) {
      const sent = Math.min(stopCopy, Math.floor((pd.bandwidthBytesPerSec * (abortAt - contAt)) / 1000));
      return terminal(input.abort!.status, abortAt, 'abort', input.abort!.error, sentBefore + sent, stopCopy - sent, pd, pauseAt);
    }
    if (at < doneAt) {
      const sent = Math.min(stopCopy, Math.floor((pd.bandwidthBytesPerSec * (at - contAt)) / 1000));
      return {
        status: 'device',
        pausedAtV: pauseAt,
        stats: {
          ...base(pd),
          status: 'device',
          round: completed,
          transferredBytes: sentBefore + sent,
          remainingBytes: stopCopy - sent,
          dirtyRateBytesPerSec: 0,
          expectedDowntimeMs: transferMs(stopCopy - sent, pd.bandwidthBytesPerSec),
        },
      };
    }
    const downtimeMs = (contAt - pauseAt) + devMs;
    return {
      status: 'completed',
      pausedAtV: pauseAt,
      endedAtV: doneAt,
      stats: {
        ...base(pd),
        status: 'completed',
        round: completed,
        transferredBytes: sentBefore + stopCopy,
        remainingBytes: 0,
        dirtyRateBytesPerSec: 0,
        transferRateBytesPerSec: 0,
        downtimeMs,
        totalTimeMs: elapsedAtPause + downtimeMs,
      },
    };
  };

  const diskBytes = input.diskBytes ?? 0;
  if (diskBytes > 0) {
    // disk mirror phase: RAM rounds start once the disks are in sync; a switchover
    // requested meanwhile happens right after it
    const p = resolveParams(input, t);
    const diskEnd = t + transferMs(diskBytes, p.bandwidthBytesPerSec);
    const sentAt = (x: number) => Math.min(diskBytes, Math.floor((p.bandwidthBytesPerSec * (x - t)) / 1000));
    if (abortAt < diskEnd && abortAt <= at) {
      const sent = sentAt(abortAt);
      return terminal(input.abort!.status, abortAt, 'abort', input.abort!.error, sent, memory + diskBytes - sent, p);
    }
    if (at < diskEnd) {
      const sent = sentAt(at);
      return {
        status: 'active',
        stats: {
          ...base(p),
          status: 'active',
          round: 0,
          transferredBytes: sent,
          remainingBytes: memory + diskBytes - sent,
          totalBytes: memory + diskBytes,
          expectedDowntimeMs: transferMs(memory + diskBytes - sent, p.bandwidthBytesPerSec),
        },
      };
    }
    elapsed = diskEnd - t;
    t = diskEnd;
    transferred = diskBytes;
  }

  for (;;) {
    const p = resolveParams(input, t);
    const bw = p.bandwidthBytesPerSec;
    const throttle = p.throttlePct / 100;
    const r = nextRound(prev, {
      memoryBytes: memory,
      bandwidthBytesPerSec: bw,
      dirtyRateBytesPerSec: p.dirtyRateBytesPerSec,
      writableWorkingSetBytes: wws,
      throttle,
    });
    const roundEnd = t + r.durationMs;

    // inside the round: the observation instant, a forced switchover or an external abort
    const force = continueAt < roundEnd ? Math.max(continueAt, t) : Infinity;
    const abortIn = abortAt < roundEnd ? Math.max(abortAt, t) : Infinity;
    const partial = (x: number) => {
      const e = x - t;
      const sent = Math.min(r.sentBytes, Math.floor((bw * e) / 1000));
      const dirtied = dirtiedDuring(e, p.dirtyRateBytesPerSec, wws, throttle);
      return { sent, remaining: Math.min(memory, r.sentBytes - sent + dirtied), e };
    };
    if (at < roundEnd && at < force && at < abortIn) {
      const { sent, remaining } = partial(at);
      return {
        status: 'active',
        stats: {
          ...base(p),
          status: 'active',
          round: completed,
          transferredBytes: transferred + sent,
          remainingBytes: remaining,
          expectedDowntimeMs: transferMs(remaining, bw),
        },
      };
    }
    if (abortIn <= force && abortIn < roundEnd) {
      const { sent, remaining } = partial(abortIn);
      return terminal(input.abort!.status, abortIn, 'abort', input.abort!.error, transferred + sent, remaining, p);
    }
    if (force < roundEnd) {
      // forced switchover mid-round: pause now, send what is still dirty
      const { sent, remaining, e } = partial(force);
      return switchover(force, elapsed + e, remaining, transferred + sent);
    }

    // the round completed at roundEnd <= at (an empty round repeated while idle is not a new one)
    if (!(r.durationMs === 0 && prev?.durationMs === 0)) completed += 1;
    transferred += r.sentBytes;
    elapsed += r.durationMs;
    t = input.startV + elapsed;
    if (abortAt <= t) return terminal(input.abort!.status, t, 'abort', input.abort!.error, transferred, r.dirtiedBytes, p);
    if (r.round === 1 && input.failAfterRound1) {
      return terminal('failed', t, 'round1', input.failAfterRound1, transferred, r.dirtiedBytes, p);
    }
    const pe = resolveParams(input, t); // the limit in force at the round's end decides
    if (!pe.hold && fitsDowntime(r.dirtiedBytes, pe.bandwidthBytesPerSec, pe.downtimeLimitMs)) {
      return switchover(t, elapsed, r.dirtiedBytes, transferred);
    }
    if (continueAt <= t) return switchover(t, elapsed, r.dirtiedBytes, transferred);

    if (r.durationMs === 0) {
      // nothing dirty and held: idle until the next event or the observation
      const c = Math.min(nextSegmentAfter(input, t), continueAt, abortAt, at);
      if (c === at && at < Math.min(nextSegmentAfter(input, t), continueAt, abortAt)) {
        return {
          status: 'active',
          stats: { ...base(pe), status: 'active', round: completed, transferredBytes: transferred, remainingBytes: 0 },
        };
      }
      elapsed += Math.max(0, c - t);
      t = input.startV + elapsed;
      prev = r;
      continue;
    }
    if (prev && r.round > 2 && r.sentBytes === prev.sentBytes && r.dirtiedBytes === prev.dirtiedBytes && r.durationMs === prev.durationMs) {
      // steady state: every round until the next event is this one again; skip them in one step
      const c = Math.min(nextSegmentAfter(input, t), continueAt, abortAt, at);
      const n = Math.ceil((c - t) / r.durationMs) - 1;
      if (Number.isFinite(n) && n > FAST_FORWARD_MIN_ROUNDS) {
        completed += n;
        transferred += n * r.sentBytes;
        elapsed += n * r.durationMs;
        t = input.startV + elapsed;
        prev = { ...r, round: r.round + n };
        continue;
      }
    }
    prev = r;
  }
}
