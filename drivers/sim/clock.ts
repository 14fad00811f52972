// Virtual time. virtual = epochVirtualMs + (wall - epochWallMs) * timeScale, with the epoch
// persisted in the state file (clock row) so every process, and a restarted one, continues the
// same virtual timeline. Tests inject a ManualClock: wall time then moves only when the test
// advances it or when the simulator "sleeps", so waits are exact and instantaneous.

export interface ClockEpoch {
  epochWallMs: number;
  epochVirtualMs: number;
  /** virtual seconds per wall second */
  timeScale: number;
}

export function virtualAt(epoch: ClockEpoch, wallMs: number): number {
  return epoch.epochVirtualMs + (wallMs - epoch.epochWallMs) * epoch.timeScale;
}

/** Wall ms needed for `virtualMs` of virtual time to pass. */
export function wallFor(epoch: ClockEpoch, virtualMs: number): number {
  return virtualMs / epoch.timeScale;
}

/** Same virtual instant, new scale: keeps virtual time continuous when a process changes the scale. */
export function rebase(epoch: ClockEpoch, wallMs: number, timeScale: number): ClockEpoch {
  return { epochWallMs: wallMs, epochVirtualMs: virtualAt(epoch, wallMs), timeScale };
}

export function assertTimeScale(timeScale: number): void {
  if (!Number.isFinite(timeScale) || timeScale <= 0) {
    throw new RangeError(`timeScale must be a positive number (virtual seconds per wall second), got ${timeScale}`);
  }
}

/** A wall clock for tests: `sleep` advances it instead of waiting. */
export class ManualClock {
  constructor(private wallMs = 0) {}
  readonly now = (): number => this.wallMs;
  readonly advance = (ms: number): number => {
    if (!(ms >= 0)) throw new RangeError(`advance(ms) needs a non-negative number, got ${ms}`);
    this.wallMs += ms;
    return this.wallMs;
  };
  readonly set = (wallMs: number): void => {
    if (wallMs < this.wallMs) throw new RangeError(`ManualClock cannot go back from ${this.wallMs} to ${wallMs}`);
    this.wallMs = wallMs;
  };
  /** advances the clock, then yields to the event loop so concurrent callers interleave */
  readonly sleep = async (ms: number): Promise<void> => {
    this.wallMs += Math.max(0, ms);
    await new Promise<void>((resolve) => setImmediate(resolve));
  };
}

export const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
