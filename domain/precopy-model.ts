// The analytic pre-copy model (ARCHITECTURE.md section 2). Pure and deterministic: the
// simulator steps through exactly these rounds, the convergence controller's verdicts are
// checked against it, and `npm run bench` compares the simulator with it.
//
// Round 1 sends all memory. Every later round sends the pages dirtied during the previous
// round: dirtied = min(writable working set, dirtyRate * (1 - throttle) * roundDuration).
// Stop when the remainder fits the downtime limit (converged), after maxRounds, or when more
// than maxSentFactor x memory has been sent.

export interface PrecopyInput {
  memoryBytes: number;
  bandwidthBytesPerSec: number;
  dirtyRateBytesPerSec: number;
  writableWorkingSetBytes: number;
  downtimeLimitMs: number;
  /** guest throttle 0..0.99 (auto-converge) */
  throttle?: number;
  maxRounds?: number;
  maxSentFactor?: number;
  /** CPU and device state sent during stop-and-copy */
  deviceStateBytes?: number;
  /**
   * memory that is all-zero pages when the migration starts (default 0). Round 1 sends each such
   * page as a ZERO_PAGE_WIRE_BYTES marker instead of its 4 KiB, as QEMU does (measured against
   * real QEMU: bench/precopy-qemu.ts); later rounds send only dirtied pages, which are not zero.
   */
  zeroBytes?: number;
}

export interface PrecopyRound {
  round: number;
  /** bytes sent in this round */
  sentBytes: number;
  durationMs: number;
  /** bytes dirtied while this round was sent = what the next round must send */
  dirtiedBytes: number;
}

export type PrecopyStopReason = 'converged' | 'max-rounds' | 'max-sent';

export interface PrecopyResult {
  rounds: PrecopyRound[];
  stopReason: PrecopyStopReason;
  precopyMs: number;
  precopySentBytes: number;
  /** remainder + device state sent while paused */
  stopCopyBytes: number;
  downtimeMs: number;
  totalSentBytes: number;
  totalMs: number;
}

export const DEFAULT_MAX_ROUNDS = 30;
export const DEFAULT_MAX_SENT_FACTOR = 3;
export const DEFAULT_DEVICE_STATE_BYTES = 256 * 1024;
export const PAGE_BYTES = 4096;
/** what QEMU 7.2 sends for a zero page: an 8-byte page header (offset | ZERO flag) and one byte */
export const ZERO_PAGE_WIRE_BYTES = 9;

/** Round 1's bytes on the wire: every page, zero pages as markers. */
export function firstRoundBytes(memoryBytes: number, zeroBytes = 0): number {
  const zero = Math.min(memoryBytes, Math.max(0, zeroBytes));
  return memoryBytes - zero + Math.ceil(zero / PAGE_BYTES) * ZERO_PAGE_WIRE_BYTES;
}

/** Bytes dirtied while a round of `durationMs` runs. */
export function dirtiedDuring(
  durationMs: number,
  dirtyRateBytesPerSec: number,
  writableWorkingSetBytes: number,
  throttle = 0,
): number {
  const raw = Math.floor((dirtyRateBytesPerSec * (1 - throttle) * durationMs) / 1000);
  return Math.min(writableWorkingSetBytes, raw);
}

export function transferMs(bytes: number, bandwidthBytesPerSec: number): number {
  return (bytes * 1000) / bandwidthBytesPerSec;
}

/** True when `remainingBytes` can be sent within the downtime limit. */
export function fitsDowntime(remainingBytes: number, bandwidthBytesPerSec: number, downtimeLimitMs: number): boolean {
  return transferMs(remainingBytes, bandwidthBytesPerSec) <= downtimeLimitMs;
}

/** One round: what it sends and what it leaves dirty. */
export function nextRound(
  prev: PrecopyRound | undefined,
  input: Pick<PrecopyInput, 'memoryBytes' | 'bandwidthBytesPerSec' | 'dirtyRateBytesPerSec' | 'writableWorkingSetBytes' | 'throttle' | 'zeroBytes'>,
): PrecopyRound {
  const round = (prev?.round ?? 0) + 1;
  const sentBytes = prev ? prev.dirtiedBytes : input.zeroBytes ? firstRoundBytes(input.memoryBytes, input.zeroBytes) : input.memoryBytes;
  const durationMs = transferMs(sentBytes, input.bandwidthBytesPerSec);
  const dirtiedBytes = dirtiedDuring(durationMs, input.dirtyRateBytesPerSec, input.writableWorkingSetBytes, input.throttle ?? 0);
  return { round, sentBytes, durationMs, dirtiedBytes };
}

export function validatePrecopyInput(input: PrecopyInput): void {
  const positive: (keyof PrecopyInput)[] = ['memoryBytes', 'bandwidthBytesPerSec'];
  for (const k of positive) {
    const v = input[k] as number;
    if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${k} must be a positive number, got ${v}`);
  }
  for (const k of ['dirtyRateBytesPerSec', 'writableWorkingSetBytes', 'downtimeLimitMs', 'zeroBytes'] as const) {
    const v = k === 'zeroBytes' ? (input.zeroBytes ?? 0) : input[k];
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${k} must be a non-negative number, got ${v}`);
  }
  if ((input.zeroBytes ?? 0) > input.memoryBytes) throw new RangeError(`zeroBytes (${input.zeroBytes}) exceeds memoryBytes (${input.memoryBytes})`);
  const t = input.throttle ?? 0;
  if (!(t >= 0 && t < 1)) throw new RangeError(`throttle must be in [0, 1), got ${t}`);
}

/** The whole pre-copy, round by round, until one of the stop rules fires. */
export function simulatePrecopy(input: PrecopyInput): PrecopyResult {
  validatePrecopyInput(input);
  const maxRounds = input.maxRounds ?? DEFAULT_MAX_ROUNDS;
  const maxSent = (input.maxSentFactor ?? DEFAULT_MAX_SENT_FACTOR) * input.memoryBytes;
  const device = input.deviceStateBytes ?? DEFAULT_DEVICE_STATE_BYTES;
  const rounds: PrecopyRound[] = [];
  let sent = 0;
  let ms = 0;
  let stopReason: PrecopyStopReason;
  for (;;) {
    const r = nextRound(rounds.at(-1), input);
    rounds.push(r);
    sent += r.sentBytes;
    ms += r.durationMs;
    if (fitsDowntime(r.dirtiedBytes, input.bandwidthBytesPerSec, input.downtimeLimitMs)) {
      stopReason = 'converged';
      break;
    }
    if (r.round >= maxRounds) {
      stopReason = 'max-rounds';
      break;
    }
    if (sent > maxSent) {
      stopReason = 'max-sent';
      break;
    }
  }
  const stopCopyBytes = rounds.at(-1)!.dirtiedBytes + device;
  const downtimeMs = transferMs(stopCopyBytes, input.bandwidthBytesPerSec);
  return {
    rounds,
    stopReason,
    precopyMs: ms,
    precopySentBytes: sent,
    stopCopyBytes,
    downtimeMs,
    totalSentBytes: sent + stopCopyBytes,
    totalMs: ms + downtimeMs,
  };
}

/**
 * The model's verdict for steady inputs: pre-copy converges only when the guest dirties
 * memory slower than the link drains it (or its whole writable working set fits the limit).
 */
export function analyticVerdict(input: PrecopyInput): 'converging' | 'diverging' {
  const effDirty = input.dirtyRateBytesPerSec * (1 - (input.throttle ?? 0));
  if (fitsDowntime(input.writableWorkingSetBytes, input.bandwidthBytesPerSec, input.downtimeLimitMs)) return 'converging';
  return effDirty < input.bandwidthBytesPerSec ? 'converging' : 'diverging';
}
