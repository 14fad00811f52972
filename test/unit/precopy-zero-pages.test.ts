// The pre-copy model's zero-page input (domain/precopy-model.ts, zeroBytes): round 1 sends each
// all-zero page as QEMU 7.2 does, an 8-byte header and one byte, and later rounds are unchanged.
// Checked against real QEMU by bench/precopy-qemu.ts (bytes within 2 % where the plain model
// was 8-47x over); here the arithmetic and the validation.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { firstRoundBytes, nextRound, PAGE_BYTES, simulatePrecopy, ZERO_PAGE_WIRE_BYTES, type PrecopyInput } from '../../domain/precopy-model.js';

const MiB = 2 ** 20;

const base: PrecopyInput = {
  memoryBytes: 128 * MiB,
  bandwidthBytesPerSec: 32 * MiB,
  dirtyRateBytesPerSec: 1000 * MiB,
  writableWorkingSetBytes: 4 * MiB,
  downtimeLimitMs: 50,
};

describe('pre-copy model: zero pages', () => {
  it('round 1 sends non-zero memory plus a 9-byte marker per zero page', () => {
    const zero = 120 * MiB;
    assert.equal(firstRoundBytes(128 * MiB, zero), 8 * MiB + (zero / PAGE_BYTES) * ZERO_PAGE_WIRE_BYTES);
    const r1 = nextRound(undefined, { ...base, zeroBytes: zero });
    assert.equal(r1.sentBytes, 8 * MiB + 30720 * 9);
    assert.equal(r1.durationMs, (r1.sentBytes * 1000) / base.bandwidthBytesPerSec);
  });

  it('later rounds send what was dirtied, zero pages or not', () => {
    const withZero = simulatePrecopy({ ...base, zeroBytes: 100 * MiB });
    const plain = simulatePrecopy(base);
    assert.ok(withZero.rounds[0]!.sentBytes < plain.rounds[0]!.sentBytes / 3);
    for (const r of withZero.rounds.slice(1)) assert.equal(r.sentBytes, 4 * MiB);
    assert.equal(withZero.stopReason, plain.stopReason);
  });

  it('zeroBytes 0 or absent is the plain model exactly (the simulator reproduces that one)', () => {
    assert.deepEqual(simulatePrecopy({ ...base, zeroBytes: 0 }), simulatePrecopy(base));
  });

  it('refuses negative zero memory and more zero memory than memory', () => {
    assert.throws(() => simulatePrecopy({ ...base, zeroBytes: -1 }), /zeroBytes must be a non-negative number/);
    assert.throws(() => simulatePrecopy({ ...base, zeroBytes: 129 * MiB }), /zeroBytes .* exceeds memoryBytes/);
  });
});
