import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MigrationStats } from '../../domain/hypervisor.js';
import {
  applyOperatorChange,
  decide,
  downtimeAtStep,
  initialControllerState,
  initialMigrationParams,
  type ControllerAction,
  type ControllerSample,
  type ControllerState,
  type Decision,
} from '../../domain/convergence.js';
import { POLICIES, POLICY_NAMES, PolicyError, resolvePolicy, type ConvergencePolicy } from '../../domain/policies.js';
import {
  DEFAULT_MAX_ROUNDS,
  DEFAULT_MAX_SENT_FACTOR,
  analyticVerdict,
  fitsDowntime,
  nextRound,
  transferMs,
  type PrecopyInput,
  type PrecopyRound,
} from '../../domain/precopy-model.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const MB = 1e6;

/** One sample per pre-copy round, as the hypervisor would report at each round's end. */
function samplesFromModel(input: PrecopyInput, limit = 60): ControllerSample[] {
  const out: ControllerSample[] = [];
  let prev: PrecopyRound | undefined;
  let elapsedMs = 0;
  let transferred = 0;
  for (let i = 0; i < limit; i++) {
    const r = nextRound(prev, input);
    elapsedMs += r.durationMs;
    transferred += r.sentBytes;
    out.push({
      status: 'active',
      round: r.round,
      transferredBytes: transferred,
      remainingBytes: r.dirtiedBytes,
      totalBytes: input.memoryBytes,
      dirtyRateBytesPerSec: input.dirtyRateBytesPerSec,
      transferRateBytesPerSec: input.bandwidthBytesPerSec,
      expectedDowntimeMs: transferMs(r.dirtiedBytes, input.bandwidthBytesPerSec),
      throttlePct: (input.throttle ?? 0) * 100,
      elapsedMs,
    });
    if (fitsDowntime(r.dirtiedBytes, input.bandwidthBytesPerSec, input.downtimeLimitMs)) break;
    prev = r;
  }
  return out;
}

/** Feeds samples one by one; returns every decision. */
function run(state: ControllerState, samples: ControllerSample[]): Decision[] {
  const out: Decision[] = [];
  for (const s of samples) {
    const d = decide(state, s);
    out.push(d);
    state = d.state;
  }
  return out;
}

function actionsOf(decisions: Decision[], kind?: ControllerAction['kind']): Array<ControllerAction & { at: number }> {
  return decisions.flatMap((d) =>
    d.actions.filter((a) => kind === undefined || a.kind === kind).map((a) => ({ ...a, at: d.state.lastElapsedMs / 1000 })),
  );
}

/** A sample with sensible defaults: 1 GiB VM, 100 MB/s link, half that dirty rate. */
function sample(over: Partial<ControllerSample>): ControllerSample {
  return {
    status: 'active',
    round: 2,
    transferredBytes: 1.5 * GiB,
    remainingBytes: 500 * MiB,
    totalBytes: GiB,
    dirtyRateBytesPerSec: 50 * MB,
    transferRateBytesPerSec: 100 * MB,
    expectedDowntimeMs: 5000,
    throttlePct: 0,
    elapsedMs: 0,
    ...over,
  };
}

/** Samples at 1 s for t = from..to seconds, built by `f(t)`. */
function perSecond(from: number, to: number, f: (t: number) => Partial<ControllerSample>): ControllerSample[] {
  const out: ControllerSample[] = [];
  for (let t = from; t <= to; t++) out.push(sample({ elapsedMs: t * 1000, ...f(t) }));
  return out;
}

describe('verdict agrees with the analytic pre-copy model for steady inputs', () => {
  const cases: PrecopyInput[] = [];
  for (const bw of [100 * MB, 1.25 * GiB]) {
    for (const dirtyFactor of [0, 0.3, 0.9, 0.999, 1, 1.5, 3]) {
      for (const wws of [64 * MiB, 512 * MiB]) {
        for (const throttle of [0, 0.5]) {
          cases.push({
            memoryBytes: GiB,
            bandwidthBytesPerSec: bw,
            dirtyRateBytesPerSec: dirtyFactor * bw,
            writableWorkingSetBytes: wws,
            downtimeLimitMs: 300,
            throttle,
          });
        }
      }
    }
  }
  // and a dirty rate that only the throttle brings below the link
  cases.push({ memoryBytes: 2 * GiB, bandwidthBytesPerSec: 100 * MB, dirtyRateBytesPerSec: 180 * MB, writableWorkingSetBytes: GiB, downtimeLimitMs: 50, throttle: 0.5 });

  it(`covers both verdicts (${cases.length} cases)`, () => {
    const verdicts = new Set(cases.map((c) => analyticVerdict(c)));
    assert.deepEqual([...verdicts].sort(), ['converging', 'diverging']);
  });

  for (const c of cases) {
    const label = `bw ${(c.bandwidthBytesPerSec / MB).toFixed(0)} MB/s, dirty ${(c.dirtyRateBytesPerSec / MB).toFixed(1)} MB/s, wws ${c.writableWorkingSetBytes / MiB} MiB, throttle ${c.throttle}`;
    it(label, () => {
      const expected = analyticVerdict(c);
      const policy = resolvePolicy('converge-or-abort', { initialDowntimeMs: c.downtimeLimitMs, maxDowntimeMs: c.downtimeLimitMs });
      const samples = samplesFromModel(c);
      const decisions = run(initialControllerState(policy, c.memoryBytes), samples);
      assert.ok(decisions.length > 0);
      for (const [i, d] of decisions.entries()) assert.equal(d.verdict, expected, `sample ${i + 1} (round ${samples[i]!.round})`);
      if (expected === 'diverging') assert.ok(decisions.length >= 30, 'a diverging model keeps producing rounds');
    });
  }
});

describe('downtime stepping', () => {
  it('takes exactly N linear steps, one per delay x GiB, ending at the ceiling', () => {
    const policy = resolvePolicy('default', { initialDowntimeMs: 50, maxDowntimeMs: 500, downtimeSteps: 10, downtimeStepDelaySecPerGiB: 10 });
    // 2 GiB: one step every 20 s; remaining keeps shrinking slowly so nothing trips
    const decisions = run(
      initialControllerState(policy, 2 * GiB),
      perSecond(0, 300, (t) => ({ totalBytes: 2 * GiB, remainingBytes: 1500 * MiB - t * MiB })),
    );
    const steps = actionsOf(decisions, 'set-downtime');
    assert.deepEqual(
      steps.map((s) => [s.at, (s as { ms: number }).ms]),
      [20, 40, 60, 80, 100, 120, 140, 160, 180, 200].map((t, i) => [t, 50 + 45 * (i + 1)]),
    );
    assert.equal(actionsOf(decisions).length, 10, 'no other action');
    assert.equal(decisions.at(-1)!.state.downtimeMs, 500);
    assert.equal(decisions.at(-1)!.progress.downtimeLimitMs, 500);
  });

  it('rounds uneven steps and lands exactly on the ceiling; a long gap sends only the latest value', () => {
    const policy = resolvePolicy('default', { initialDowntimeMs: 30, maxDowntimeMs: 500, downtimeSteps: 3, downtimeStepDelaySecPerGiB: 10 });
    assert.deepEqual([0, 1, 2, 3].map((i) => downtimeAtStep(policy, 500, i)), [30, 187, 343, 500]);
    const decisions = run(initialControllerState(policy, GiB), [sample({ elapsedMs: 0 }), sample({ elapsedMs: 25_000, remainingBytes: 400 * MiB })]);
    assert.deepEqual(actionsOf(decisions, 'set-downtime').map((a) => (a as { ms: number }).ms), [343]);
  });

  it('operator moves the ceiling: the current step is recomputed, lowering applies at once', () => {
    const policy = resolvePolicy('default', { initialDowntimeMs: 100, maxDowntimeMs: 1100, downtimeSteps: 10, downtimeStepDelaySecPerGiB: 10 });
    let state = run(initialControllerState(policy, GiB), perSecond(0, 50, (t) => ({ remainingBytes: 800 * MiB - t * MiB }))).at(-1)!.state;
    assert.equal(state.downtimeStep, 5);
    assert.equal(state.downtimeMs, 600);
    let change = applyOperatorChange(state, { maxDowntimeMs: 300 });
    assert.deepEqual(change.actions, [{ kind: 'set-downtime', ms: 200, reason: 'operator set the downtime ceiling to 300 ms' }]);
    state = change.state;
    change = applyOperatorChange(state, { maxDowntimeMs: 50 });
    assert.equal(change.state.downtimeMs, 50, 'never above the ceiling, even below the initial limit');
    change = applyOperatorChange(change.state, { maxDowntimeMs: 2100 });
    assert.equal(change.state.downtimeMs, 1100);
    const later = run(change.state, perSecond(100, 100, () => ({ remainingBytes: 600 * MiB })));
    assert.deepEqual(actionsOf(later, 'set-downtime').map((a) => (a as { ms: number }).ms), [2100]);
    assert.throws(() => applyOperatorChange(state, { maxDowntimeMs: -1 }), (e: unknown) => e instanceof PolicyError && e.field === 'maxDowntimeMs');
  });
});

describe('trips', () => {
  const abortPolicy = (over: Record<string, unknown> = {}) => resolvePolicy('converge-or-abort', over);

  it('completion budget: completionTimeoutSecPerGiB x memory', () => {
    const policy = abortPolicy({ completionTimeoutSecPerGiB: 60 });
    const decisions = run(initialControllerState(policy, 0.5 * GiB), perSecond(0, 40, (t) => ({ totalBytes: 0.5 * GiB, remainingBytes: 400 * MiB - t * MiB })));
    const aborts = actionsOf(decisions, 'abort');
    assert.equal(aborts.length, 1);
    assert.equal(aborts[0]!.at, 31); // budget 30 s, first sample past it
    assert.match(aborts[0]!.reason, /completion budget spent: 31 s elapsed, budget 30 s \(60 s\/GiB x 0\.50 GiB\)/);
    assert.equal(decisions.at(-1)!.state.trip!.kind, 'completion-timeout');
  });

  it('progress timeout: no new minimum of remaining for progressTimeoutSec; stalled verdict after the window', () => {
    const policy = abortPolicy({ progressTimeoutSec: 150, stallWindowSec: 30 });
    // a new minimum at t=10 (400 MiB), then it wobbles above it
    const decisions = run(
      initialControllerState(policy, GiB),
      perSecond(0, 200, (t) => ({ remainingBytes: t < 10 ? 500 * MiB : t === 10 ? 400 * MiB : (420 + (t % 7) * 10) * MiB })),
    );
    const at = (s: number) => decisions[s]!;
    assert.equal(at(39).verdict, 'converging');
    assert.equal(at(40).verdict, 'stalled');
    const aborts = actionsOf(decisions, 'abort');
    assert.equal(aborts.length, 1);
    assert.equal(aborts[0]!.at, 160);
    assert.match(aborts[0]!.reason, /no progress: remaining has not gone below 400\.0 MiB for 150 s \(progress timeout 150 s\)/);
  });

  it('progressTimeoutSec 0 disables the progress timeout', () => {
    const policy = abortPolicy({ progressTimeoutSec: 0 });
    const decisions = run(initialControllerState(policy, GiB), perSecond(0, 400, () => ({ remainingBytes: 400 * MiB })));
    assert.equal(actionsOf(decisions, 'abort').length, 0);
  });

  it(`rounds stop paying off: round >= maxRounds (default ${DEFAULT_MAX_ROUNDS})`, () => {
    assert.equal(POLICIES.default.maxRounds, DEFAULT_MAX_ROUNDS);
    const decisions = run(initialControllerState(abortPolicy(), GiB), perSecond(0, 40, (t) => ({ round: t + 1, remainingBytes: 900 * MiB - t * MiB })));
    const aborts = actionsOf(decisions, 'abort');
    assert.equal(aborts.length, 1);
    assert.equal(aborts[0]!.at, DEFAULT_MAX_ROUNDS - 1);
    assert.match(aborts[0]!.reason, /round 30 reached the limit of 30 rounds/);
  });

  it(`rounds stop paying off: more than maxSentFactor (default ${DEFAULT_MAX_SENT_FACTOR}) x memory sent`, () => {
    assert.equal(POLICIES.default.maxSentFactor, DEFAULT_MAX_SENT_FACTOR);
    const decisions = run(
      initialControllerState(abortPolicy(), GiB),
      perSecond(0, 40, (t) => ({ transferredBytes: t * 100 * MiB, remainingBytes: 900 * MiB - t * MiB })),
    );
    const aborts = actionsOf(decisions, 'abort');
    assert.equal(aborts.length, 1);
    assert.equal(aborts[0]!.at, 31); // 3100 MiB > 3072 MiB
    assert.match(aborts[0]!.reason, /sent 3100\.0 MiB, more than 3 x memory \(3072\.0 MiB\)/);
  });

  it('a trip whose remainder fits the ceiling jumps to the ceiling instead of aborting; aborts if it stops fitting', () => {
    const policy = abortPolicy({ initialDowntimeMs: 50, maxDowntimeMs: 500 });
    // 100 MB/s: 500 ms fits 50 MB. At round 30 the remainder is 40 MB.
    const decisions = run(
      initialControllerState(policy, GiB),
      perSecond(0, 35, (t) => ({ round: t + 1, remainingBytes: t < 33 ? 40 * MB : 90 * MB, dirtyRateBytesPerSec: t < 33 ? 50 * MB : 150 * MB })),
    );
    const acts = actionsOf(decisions);
    assert.deepEqual(
      acts.map((a) => [a.kind, a.at]),
      [
        ['set-downtime', 29],
        ['abort', 33],
      ],
    );
    assert.equal((acts[0] as { ms: number }).ms, 500);
    assert.equal(decisions[29]!.verdict, 'converging');
    assert.notEqual(decisions[33]!.verdict, 'converging'); // the rate window still remembers the calm
    assert.equal(decisions[35]!.verdict, 'diverging');
  });

  it('does not steer outside the active phase (pre-switchover, device, completed)', () => {
    const policy = abortPolicy({ completionTimeoutSecPerGiB: 10 });
    const decisions = run(initialControllerState(policy, GiB), perSecond(0, 30, (t) => ({ status: t < 5 ? 'active' : 'pre-switchover' })));
    assert.deepEqual(actionsOf(decisions), []);
  });
});

describe('onStall policies', () => {
  /**
   * A closed loop over a 100 MB/s link: the sample's throttle is what the controller last asked
   * for, and the remainder (capped by a writable working set of `wwsBytes`) grows or shrinks by
   * the difference between the effective dirty rate and the link each second.
   */
  function closedLoop(policy: ConvergencePolicy, seconds: number, opts: { dirtyFactor?: number; memoryBytes?: number; wwsBytes?: number } = {}): Decision[] {
    const { dirtyFactor = 200, memoryBytes = GiB, wwsBytes = 400 * MiB } = opts;
    const bw = 100 * MB;
    let state = initialControllerState(policy, memoryBytes);
    let remaining = wwsBytes;
    const out: Decision[] = [];
    for (let t = 0; t <= seconds; t++) {
      const eff = dirtyFactor * bw * (1 - state.throttlePct / 100);
      remaining = Math.min(wwsBytes, Math.max(0, remaining + eff - bw));
      const d = decide(
        state,
        sample({ elapsedMs: t * 1000, round: t + 1, totalBytes: memoryBytes, remainingBytes: remaining, dirtyRateBytesPerSec: dirtyFactor * bw, throttlePct: state.throttlePct }),
      );
      out.push(d);
      state = d.state;
    }
    return out;
  }

  it("'abort' (converge-or-abort): one abort, then nothing", () => {
    const decisions = closedLoop(resolvePolicy('converge-or-abort'), 60);
    assert.deepEqual(actionsOf(decisions).map((a) => [a.kind, a.at]), [['abort', 29]]);
    assert.ok(decisions.slice(29).every((d) => d.state.final?.kind === 'abort'));
  });

  it("'switchover' (suspend-if-needed): one forced switchover", () => {
    // 2 GiB left at 100 MB/s is about 21 s of downtime: more than even the 10 s ceiling
    const decisions = closedLoop(resolvePolicy('suspend-if-needed'), 60, { memoryBytes: 4 * GiB, wwsBytes: 2 * GiB });
    const acts = actionsOf(decisions).filter((a) => a.kind !== 'set-downtime');
    assert.deepEqual(acts.map((a) => [a.kind, a.at]), [['switchover', 29]]);
    assert.match(acts[0]!.reason, /round 30 reached the limit/);
  });

  it("'switchover' with approveSwitchover waits for the operator, who then approves it", () => {
    const policy = resolvePolicy('suspend-if-needed', { approveSwitchover: true });
    assert.deepEqual(initialMigrationParams(policy), { downtimeLimitMs: 300, autoSwitchover: false, hold: true });
    const decisions = closedLoop(policy, 40, { memoryBytes: 4 * GiB, wwsBytes: 2 * GiB });
    assert.deepEqual(actionsOf(decisions, 'switchover'), []);
    const last = decisions.at(-1)!;
    assert.match(last.awaitingApproval!, /switchover needs operator approval: round 30 reached the limit/);
    const approved = applyOperatorChange(last.state, { approveSwitchover: true });
    assert.equal(approved.actions.length, 1);
    assert.equal(approved.actions[0]!.kind, 'switchover');
    assert.equal(approved.state.final!.kind, 'switchover');
  });

  it('under hold, a remainder that fits is reported as ready for the operator', () => {
    const policy = resolvePolicy('default', { approveSwitchover: true });
    const [d] = run(initialControllerState(policy, GiB), [sample({ remainingBytes: 2 * MB })]);
    assert.match(d!.awaitingApproval!, /ready for switchover: 1\.9 MiB remaining fits the 50 ms downtime limit/);
    assert.deepEqual(d!.actions, []);
  });

  it("'auto-converge' (minimal-downtime): 20 %, +10 % per throttleStepSec up to 99 %, then onThrottleExhausted 'abort'", () => {
    const policy = resolvePolicy('minimal-downtime');
    assert.equal(policy.throttleStepSec, 5);
    const decisions = closedLoop(policy, 120);
    const acts = actionsOf(decisions).filter((a) => a.kind !== 'set-downtime');
    assert.deepEqual(
      acts.map((a) => [a.kind, a.kind === 'throttle' ? a.pct : null, a.at]),
      [
        ['throttle', 20, 29],
        ['throttle', 30, 34],
        ['throttle', 40, 39],
        ['throttle', 50, 44],
        ['throttle', 60, 49],
        ['throttle', 70, 54],
        ['throttle', 80, 59],
        ['throttle', 90, 64],
        ['throttle', 99, 69],
        ['abort', null, 74],
      ],
    );
    assert.match(acts.at(-1)!.reason, /auto-converge exhausted: throttle at 99% for 5 s and still diverging/);
  });

  it("'auto-converge' with onThrottleExhausted 'switchover' ends in a forced switchover", () => {
    const decisions = closedLoop(resolvePolicy('default', { onThrottleExhausted: 'switchover' }), 120);
    assert.equal(actionsOf(decisions, 'abort').length, 0);
    assert.deepEqual(actionsOf(decisions, 'switchover').map((a) => a.at), [74]);
  });

  it("'auto-converge' stops raising the throttle once the migration converges", () => {
    // 1.5 x the link: 20 % -> 1.2x, 30 % -> 1.05x (still diverging), 40 % -> 0.9x converging
    const decisions = closedLoop(resolvePolicy('minimal-downtime'), 120, { dirtyFactor: 1.5 });
    const throttles = actionsOf(decisions, 'throttle').map((a) => (a as { pct: number }).pct);
    assert.deepEqual(throttles, [20, 30, 40]);
    assert.equal(actionsOf(decisions, 'abort').length, 0);
    assert.equal(decisions.at(-1)!.verdict, 'converging');
  });
});

describe('progress', () => {
  it('percent never decreases over a noisy sample sequence, stays below 100 until completed', () => {
    let seed = 12345;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const policy = resolvePolicy('default');
    let state = initialControllerState(policy, 4 * GiB);
    let transferred = 0;
    let last = 0;
    const seen: number[] = [];
    for (let t = 0; t < 400; t++) {
      const rate = (50 + rand() * 100) * MB;
      transferred += rate * (0.5 + rand());
      const firstPass = transferred < 4 * GiB;
      const remaining = firstPass ? 4 * GiB - transferred : (20 + rand() * 600) * MiB; // jumps up and down
      const d = decide(state, {
        status: t === 399 ? 'completed' : 'active',
        round: firstPass ? 1 : 2 + Math.floor(t / 10),
        transferredBytes: transferred,
        remainingBytes: remaining,
        totalBytes: 4 * GiB,
        dirtyRateBytesPerSec: rand() * 150 * MB,
        transferRateBytesPerSec: rate,
        expectedDowntimeMs: rand() * 3000,
        throttlePct: 0,
        elapsedMs: t * 1000,
      });
      assert.ok(d.progress.percent >= last, `t=${t}: ${d.progress.percent} < ${last}`);
      if (t < 399) assert.ok(d.progress.percent < 100, `t=${t}: ${d.progress.percent}`);
      last = d.progress.percent;
      seen.push(last);
      state = d.state;
    }
    assert.equal(last, 100);
    assert.ok(seen[5]! > 0 && seen[5]! < 90, 'the first pass moves the bar');
  });

  it('reports ETA from the geometric series, none while diverging, and the expected downtime', () => {
    const policy = resolvePolicy('default');
    const [conv] = run(initialControllerState(policy, GiB), [sample({ remainingBytes: 500 * MB, expectedDowntimeMs: 0 })]);
    assert.equal(conv!.progress.etaSec, 10); // 500 MB / (100 - 50) MB/s
    assert.equal(conv!.progress.expectedDowntimeMs, 5000); // computed when the hypervisor gives 0
    const [div] = run(initialControllerState(policy, GiB), [sample({ dirtyRateBytesPerSec: 120 * MB, expectedDowntimeMs: 4200 })]);
    assert.equal(div!.verdict, 'diverging');
    assert.equal(div!.progress.etaSec, null);
    assert.equal(div!.progress.expectedDowntimeMs, 4200);
  });

  it('the driver MigrationStats plus elapsedMs is a sample, and state stays plain JSON', () => {
    const stats: MigrationStats = {
      status: 'active',
      round: 1,
      transferredBytes: 100 * MiB,
      remainingBytes: 924 * MiB,
      totalBytes: GiB,
      dirtyRateBytesPerSec: 0,
      transferRateBytesPerSec: 100 * MB,
      expectedDowntimeMs: 0,
      throttlePct: 0,
    };
    const s: ControllerSample = { ...stats, elapsedMs: 1000 };
    const d = decide(initialControllerState(resolvePolicy('default'), GiB), s);
    assert.deepEqual(JSON.parse(JSON.stringify(d)), d);
  });

  it('refuses a bad sample naming the field, and time running backwards', () => {
    const state = decide(initialControllerState(resolvePolicy('default'), GiB), sample({ elapsedMs: 5000 })).state;
    assert.throws(() => decide(state, sample({ remainingBytes: Number.NaN, elapsedMs: 6000 })), /sample\.remainingBytes must be a non-negative finite number, got NaN/);
    assert.throws(() => decide(state, sample({ elapsedMs: 4000 })), /sample\.elapsedMs went backwards: 4000 after 5000/);
    assert.throws(() => initialControllerState(resolvePolicy('default'), 0), /memoryBytes must be a positive number/);
  });
});

describe('policies', () => {
  it('every named policy validates and has the documented character', () => {
    for (const name of POLICY_NAMES) assert.equal(resolvePolicy(name).name, name);
    assert.deepEqual(POLICY_NAMES, ['default', 'minimal-downtime', 'converge-or-abort', 'suspend-if-needed']);
    assert.equal(POLICIES['minimal-downtime'].maxDowntimeMs, 500);
    assert.equal(POLICIES['minimal-downtime'].onStall, 'auto-converge');
    assert.ok(POLICIES['minimal-downtime'].initialDowntimeMs < POLICIES.default.initialDowntimeMs);
    assert.equal(POLICIES['converge-or-abort'].onStall, 'abort');
    assert.equal(POLICIES['suspend-if-needed'].onStall, 'switchover');
    assert.ok(POLICIES['suspend-if-needed'].maxDowntimeMs > POLICIES.default.maxDowntimeMs);
    assert.equal(resolvePolicy(undefined).name, 'default');
  });

  it('a request overrides any knob, including approveSwitchover and maxBandwidthBytesPerSec', () => {
    const p = resolvePolicy('converge-or-abort', { approveSwitchover: true, maxBandwidthBytesPerSec: 50 * MB, maxDowntimeMs: 800, progressTimeoutSec: undefined });
    assert.equal(p.approveSwitchover, true);
    assert.equal(p.maxBandwidthBytesPerSec, 50 * MB);
    assert.equal(p.maxDowntimeMs, 800);
    assert.equal(p.progressTimeoutSec, POLICIES['converge-or-abort'].progressTimeoutSec);
    assert.equal(initialMigrationParams(p).maxBandwidthBytesPerSec, 50 * MB);
    assert.equal(POLICIES['converge-or-abort'].maxDowntimeMs, 500, 'the named policy is not modified');
  });

  const bad: Array<[string, unknown]> = [
    ['initialDowntimeMs', 0],
    ['maxDowntimeMs', 'lots'],
    ['downtimeSteps', 2.5],
    ['downtimeSteps', 0],
    ['downtimeStepDelaySecPerGiB', -1],
    ['completionTimeoutSecPerGiB', Number.POSITIVE_INFINITY],
    ['progressTimeoutSec', -5],
    ['stallWindowSec', 0],
    ['maxRounds', 0],
    ['maxSentFactor', 0.5],
    ['onStall', 'pray'],
    ['throttleInitialPct', 100],
    ['throttleIncrementPct', 0],
    ['throttleMaxPct', 120],
    ['throttleStepSec', 0],
    ['onThrottleExhausted', 'auto-converge'],
    ['approveSwitchover', 'yes'],
    ['maxBandwidthBytesPerSec', 0],
  ];
  for (const [field, value] of bad) {
    it(`refuses ${field} = ${JSON.stringify(value) ?? String(value)}, naming the field`, () => {
      assert.throws(
        () => resolvePolicy('default', { [field]: value }),
        (e: unknown) => e instanceof PolicyError && e.field === field && e.message.startsWith(`policy.${field} `),
      );
    });
  }

  it('refuses relations, unknown knobs and unknown policies, naming them', () => {
    assert.throws(() => resolvePolicy('default', { initialDowntimeMs: 900, maxDowntimeMs: 800 }), /policy\.maxDowntimeMs \(800\) must be at least initialDowntimeMs \(900\)/);
    assert.throws(() => resolvePolicy('default', { throttleInitialPct: 50, throttleMaxPct: 40 }), /policy\.throttleMaxPct/);
    assert.throws(() => resolvePolicy('default', { maxDowntime: 800 }), (e: unknown) => e instanceof PolicyError && e.field === 'maxDowntime');
    assert.throws(() => resolvePolicy('default', { name: 'x' }), (e: unknown) => e instanceof PolicyError && e.field === 'name');
    assert.throws(() => resolvePolicy('fastest'), /policy "fastest" is not one of default, minimal-downtime, converge-or-abort, suspend-if-needed/);
  });
});
