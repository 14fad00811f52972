// The simulator's pre-copy equals the analytic model (workflows/lib/precopy-model.ts), round
// for round, byte for byte, through the real driver with an injected clock.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { simulatePrecopy, type PrecopyInput } from '../../domain/precopy-model.js';
import { evaluateMigration, type MigrationModelInput } from '../../drivers/sim/model.js';
import { GiB, MiB, openTestCluster, startTestVm } from '../../drivers/sim/fixtures.js';

interface Case {
  name: string;
  dirty: number;
  wws: number;
  downtime: number;
  maxBw?: number;
  throttlePct?: number;
  maxRounds?: number;
}

const MEM = 4 * GiB;
const CASES: Case[] = [
  { name: 'idle guest', dirty: 0, wws: MEM, downtime: 300 },
  { name: '100 MiB/s', dirty: 100 * MiB, wws: MEM, downtime: 300 },
  { name: '500 MiB/s', dirty: 500 * MiB, wws: MEM, downtime: 300 },
  { name: '900 MiB/s, tight limit', dirty: 900 * MiB, wws: MEM, downtime: 50 },
  { name: '300 MiB/s capped at 512 MiB/s', dirty: 300 * MiB, wws: MEM, downtime: 300, maxBw: 512 * MiB },
  { name: '800 MiB/s throttled 50%', dirty: 800 * MiB, wws: MEM, downtime: 100, throttlePct: 50 },
  { name: 'small working set', dirty: 2 * GiB, wws: 200 * MiB, downtime: 300 },
  // never converges: the controller forces the switchover at the round limit
  { name: '2 GiB/s, forced at round 30', dirty: 2 * GiB, wws: 1 * GiB, downtime: 300 },
  { name: '1.5 GiB/s, forced at round 5', dirty: 1.5 * GiB, wws: 2 * GiB, downtime: 10, maxRounds: 5 },
];

describe('sim pre-copy equals simulatePrecopy', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const { sim, clock, a, b } = openTestCluster();
      const { spec } = await startTestVm(a, 'vm-1', { memoryBytes: MEM, workload: { dirtyRateBytesPerSec: c.dirty, writableWorkingSetBytes: c.wws } });
      assert.equal(sim.virtualNow(), 0, 'setup took no virtual time');
      const bw = Math.min(GiB, c.maxBw ?? Infinity);
      const input: PrecopyInput = {
        memoryBytes: MEM,
        bandwidthBytesPerSec: bw,
        dirtyRateBytesPerSec: c.dirty,
        writableWorkingSetBytes: c.wws,
        downtimeLimitMs: c.downtime,
        throttle: (c.throttlePct ?? 0) / 100,
        maxRounds: c.maxRounds ?? 30,
        // the sim has no max-sent stop (the controller decides); compare on rounds alone
        maxSentFactor: Infinity,
      };
      const want = simulatePrecopy(input);
      const { uri } = await b.prepareIncoming(spec);
      await a.startMigration('vm-1', {
        uri,
        downtimeLimitMs: c.downtime,
        autoSwitchover: true,
        ...(c.maxBw ? { maxBandwidthBytesPerSec: c.maxBw } : {}),
        ...(c.throttlePct ? { throttlePct: c.throttlePct } : {}),
      });
      // end of pre-copy: the model's precopyMs
      clock.set(want.precopyMs);
      const atEnd = await a.migrationStatus('vm-1');
      assert.equal(atEnd.round, want.rounds.length, 'rounds');
      if (want.stopReason === 'converged') {
        assert.equal(atEnd.status, 'device');
      } else {
        assert.equal(atEnd.status, 'active', 'the sim keeps iterating until forced');
        assert.equal(atEnd.remainingBytes, want.rounds.at(-1)!.dirtiedBytes);
        await a.continueSwitchover('vm-1');
      }
      clock.set(want.totalMs);
      const done = await a.migrationStatus('vm-1');
      assert.equal(done.status, 'completed');
      assert.equal(done.round, want.rounds.length, 'rounds');
      assert.equal(done.transferredBytes, want.totalSentBytes, 'bytes');
      assert.equal(done.downtimeMs, want.downtimeMs, 'downtime');
      assert.equal(done.totalTimeMs, want.totalMs, 'total time');
      assert.equal((await b.vmStatus('vm-1'))?.state, 'paused');
      assert.equal((await a.vmStatus('vm-1'))?.state, 'postmigrate');
      sim.close();
    });
  }
});

describe('migration model', () => {
  const base: MigrationModelInput = {
    startV: 1000,
    memoryBytes: MEM,
    linkBandwidthBytesPerSec: GiB,
    dirtyRateBytesPerSec: 512 * MiB,
    writableWorkingSetBytes: MEM,
    segments: [{ atV: 1000, params: { downtimeLimitMs: 100 } }],
  };

  test('is a pure function of its input and the instant', () => {
    for (const t of [1000, 2500, 5000, 5999, 6000, 9000, 20000]) {
      assert.deepEqual(evaluateMigration(base, t), evaluateMigration(structuredClone(base), t));
    }
    // remaining is continuous across a round boundary (round 1 ends after 4 s)
    const before = evaluateMigration(base, 4999.999).stats.remainingBytes;
    const after = evaluateMigration(base, 5000).stats.remainingBytes;
    assert.ok(Math.abs(before - after) < 2 * MiB, `${before} vs ${after}`);
    assert.equal(evaluateMigration(base, 1000).stats.remainingBytes, MEM, 'round 1 starts with all memory');
  });

  test('a parameter change takes effect at the next round boundary', () => {
    // raise the limit in the middle of round 2: round 2 keeps its bandwidth, the check at its end uses the new limit
    const r1 = 4000;
    const r2 = (2 * GiB * 1000) / GiB; // round 2 sends the 2 GiB dirtied in round 1
    const changed: MigrationModelInput = { ...base, segments: [...base.segments, { atV: 1000 + r1 + 10, params: { downtimeLimitMs: 60_000 } }] };
    const v = evaluateMigration(changed, 1000 + r1 + r2);
    assert.equal(v.status, 'pre-switchover');
    assert.equal(v.stats.round, 2);
    assert.equal(v.pausedAtV, 1000 + r1 + r2);
    const unchanged = evaluateMigration(base, 1000 + r1 + r2);
    assert.equal(unchanged.status, 'active');
  });

  test('hold keeps rounds going; clearing it lets the next round end converge', () => {
    const held: MigrationModelInput = { ...base, dirtyRateBytesPerSec: 64 * MiB, segments: [{ atV: 1000, params: { downtimeLimitMs: 300, hold: true } }] };
    const v = evaluateMigration(held, 60_000);
    assert.equal(v.status, 'active');
    assert.ok(v.stats.round > 3);
    const released: MigrationModelInput = { ...held, segments: [...held.segments, { atV: 60_000, params: { hold: false, autoSwitchover: true } }] };
    assert.equal(evaluateMigration(released, 120_000).status, 'completed');
  });

  test('a steady non-converging migration is fast-forwarded exactly', () => {
    const steady: MigrationModelInput = { ...base, dirtyRateBytesPerSec: 4 * GiB, writableWorkingSetBytes: 256 * MiB, segments: [{ atV: 1000, params: { downtimeLimitMs: 10 } }] };
    const day = 24 * 3600 * 1000;
    const v = evaluateMigration(steady, 1000 + day);
    assert.equal(v.status, 'active');
    // round 1: 4000 ms, then 250 ms rounds of 256 MiB
    assert.equal(v.stats.round, 1 + Math.floor((day - 4000) / 250));
    assert.equal(v.stats.transferredBytes % (256 * MiB), 0);
  });

  test('cancel and crash events end it at their instant', () => {
    const cancelled = evaluateMigration({ ...base, abort: { atV: 3000, status: 'cancelled', error: 'by request' } }, 10_000);
    assert.equal(cancelled.status, 'cancelled');
    assert.equal(cancelled.endedAtV, 3000);
    assert.equal(cancelled.stats.transferredBytes, 2 * GiB);
    const round1 = evaluateMigration({ ...base, failAfterRound1: 'boom' }, 10_000);
    assert.equal(round1.status, 'failed');
    assert.equal(round1.endedAtV, 5000);
    assert.equal(round1.cause, 'round1');
  });
});
