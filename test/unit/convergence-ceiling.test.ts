// The controller puts the downtime ceiling in force when its verdict rests on it (a tripped
// migration whose remainder fits the ceiling, not the lower limit in force). Before, only the
// first trip's sample could jump to the ceiling: a migration throttled on that sample was then
// 'converging' (the throttle stopped rising) while the hypervisor kept the lower limit, and the
// migration waited for the downtime steps (~2,700 s for the demo VM in ~1 of 3 sample phases).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide, initialControllerState, type ControllerSample, type ControllerState, type DecideOptions } from '../../domain/convergence.js';
import { POLICIES } from '../../domain/policies.js';
import { DEFAULT_MAX_ROUNDS } from '../../domain/precopy-model.js';
import { simulateSteeredPrecopy } from '../../domain/precopy-steer.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const MB = 1e6;
const policy = POLICIES.default;

/** 1 GiB VM on a 100 MB/s link: the 500 ms ceiling fits 50 MB, the 50 ms initial limit 5 MB. */
function sample(over: Partial<ControllerSample>): ControllerSample {
  return {
    status: 'active',
    round: DEFAULT_MAX_ROUNDS, // tripped (max-rounds) from the first sample on
    transferredBytes: 1.5 * GiB,
    remainingBytes: 200 * MB,
    totalBytes: GiB,
    dirtyRateBytesPerSec: 50 * MB,
    transferRateBytesPerSec: 100 * MB,
    expectedDowntimeMs: 2000,
    throttlePct: 0,
    elapsedMs: 0,
    ...over,
  };
}

function run(samples: ControllerSample[], options?: DecideOptions): { state: ControllerState; actions: Array<{ t: number; kind: string; v?: number }> } {
  let state = initialControllerState(policy, GiB);
  const actions: Array<{ t: number; kind: string; v?: number }> = [];
  for (const s of samples) {
    const d = decide(state, s, options);
    state = d.state;
    for (const a of d.actions) actions.push({ t: s.elapsedMs / 1000, kind: a.kind, ...(a.kind === 'set-downtime' ? { v: a.ms } : a.kind === 'throttle' ? { v: a.pct } : {}) });
  }
  return { state, actions };
}

// trip at 10 s with 200 MB left (does not fit 500 ms: throttle 20 %), then 40 MB left (fits the
// ceiling, not the 50 ms limit) until step 1 is due (75 s for 1 GiB) and past it
const TRIPPED_THEN_FITS = [
  sample({ elapsedMs: 10_000 }),
  ...Array.from({ length: 80 }, (_, i) => sample({ elapsedMs: (11 + i) * 1000, remainingBytes: 40 * MB, throttlePct: 20 })),
];

describe('the ceiling in force when the verdict rests on it', () => {
  it('a migration throttled on its trip sample gets the ceiling once its remainder fits it, once', () => {
    const { state, actions } = run(TRIPPED_THEN_FITS);
    assert.deepEqual(actions, [
      { t: 10, kind: 'throttle', v: 20 },
      { t: 11, kind: 'set-downtime', v: 500 },
    ]);
    assert.deepEqual([state.downtimeMs, state.downtimeStep, state.throttlePct], [500, policy.downtimeSteps, 20]);
  });

  it('the set-downtime names the limit it replaces', () => {
    const d1 = decide(initialControllerState(policy, GiB), TRIPPED_THEN_FITS[0]!);
    const d2 = decide(d1.state, TRIPPED_THEN_FITS[1]!);
    assert.equal(d2.verdict, 'converging');
    assert.equal(d2.actions.length, 1);
    assert.match((d2.actions[0] as { reason: string }).reason, /fits the 500 ms ceiling, not the 50 ms limit in force/);
    assert.equal(d2.progress.downtimeLimitMs, 500);
  });

  it('ceilingInForce: false is the behaviour before (no raise, the Nova steps later)', () => {
    const { state, actions } = run(TRIPPED_THEN_FITS, { ceilingInForce: false });
    assert.deepEqual(actions, [
      { t: 10, kind: 'throttle', v: 20 },
      { t: 75, kind: 'set-downtime', v: 95 },
    ]);
    assert.equal(state.downtimeMs, 95);
  });

  it('before any trip a remainder that fits the ceiling is left to the Nova-like stepping', () => {
    const { actions } = run(Array.from({ length: 80 }, (_, i) => sample({ round: 3, elapsedMs: (1 + i) * 1000, remainingBytes: 40 * MB })));
    assert.deepEqual(actions, [{ t: 75, kind: 'set-downtime', v: 95 }]);
  });

  it('a remainder that does not fit the ceiling after a trip keeps the throttle rising, no raise', () => {
    const { actions } = run([
      sample({ elapsedMs: 10_000 }),
      ...Array.from({ length: 12 }, (_, i) => sample({ elapsedMs: (11 + i) * 1000, remainingBytes: 200 * MB, dirtyRateBytesPerSec: 150 * MB })),
    ]);
    assert.deepEqual(actions, [
      { t: 10, kind: 'throttle', v: 20 },
      { t: 15, kind: 'throttle', v: 30 },
      { t: 20, kind: 'throttle', v: 40 },
    ]);
  });
});

describe('the demo VM (4 GiB, 1500 MiB/s dirty, 512 MiB wws, 1150 MiB/s link, default policy)', () => {
  const demo = { memoryBytes: 4 * GiB, dirtyRateBytesPerSec: 1500 * MiB, writableWorkingSetBytes: 512 * MiB, bandwidthBytesPerSec: 1150 * MiB, policy, timeScale: 1 };

  it('finishes within 60 s at every sample phase 1000..1080 ms, at most one raise', () => {
    const slow: string[] = [];
    for (let samplePeriodMs = 1000; samplePeriodMs <= 1080; samplePeriodMs++) {
      const r = simulateSteeredPrecopy({ ...demo, samplePeriodMs });
      const raises = r.actions.filter((a) => a.action.kind === 'set-downtime');
      assert.equal(r.outcome, 'converges', `@${samplePeriodMs}`);
      assert.ok(r.downtimeMs <= policy.maxDowntimeMs, `@${samplePeriodMs}: downtime ${r.downtimeMs} ms`);
      assert.ok(raises.length <= 1, `@${samplePeriodMs}: ${raises.length} set-downtime`);
      if (r.totalMs >= 60_000) slow.push(`${samplePeriodMs} ms: ${Math.round(r.totalMs / 1000)} s`);
    }
    assert.deepEqual(slow, []);
  });
});
