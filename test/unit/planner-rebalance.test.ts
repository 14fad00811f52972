// Rebalance plans (domain/rebalance.ts), and what a plan meets before and while it runs:
// revalidatePlan, snapshotDigest, reestimate (domain/planner-check.ts, planner-digest.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyPlan, imbalance, normalizedLoads, planEvacuation, planRebalance, reestimate, revalidatePlan, snapshotDigest } from '../../domain/planner.js';
import type { ClusterSnapshot, RebalanceRequest } from '../../domain/plan-types.js';
import { assertAntiAffinityAtEveryInstant, assertLimitsHold, cluster, host, rng, SETTINGS, vm } from './planner-fixtures.js';

const rebalance = (over: Partial<RebalanceRequest> = {}): RebalanceRequest => ({ level: 5, maxMoves: 12, maxParallel: 3, cooldownMs: 0, ...over });

/** Eight hosts; h0 and h1 carry ten guests each, the others one or none. */
function skewed(seed = 1): ClusterSnapshot {
  const r = rng(seed);
  const hosts = Array.from({ length: 8 }, (_, i) => host(`h${i}`));
  const vms = [];
  for (let i = 0; i < 24; i++) {
    const on = i < 10 ? 'h0' : i < 20 ? 'h1' : `h${i - 18}`;
    vms.push(vm(`v${String(i).padStart(2, '0')}`, on, { cpus: 1 + Math.floor(r() * 3), memoryMiB: 1024 * (2 + Math.floor(r() * 5)) }));
  }
  return cluster(hosts, vms);
}

describe('normalizedLoads and imbalance', () => {
  it('normalizes by capacity x overcommit, skips hosts down or in maintenance, sigma over the rest', () => {
    const snap = cluster(
      [host('a', { cpuOvercommit: 2 }), host('b'), host('c', { maintenance: true }), host('d', { state: 'down' })],
      [vm('v1', 'a', { cpus: 16, memoryMiB: 32768 }), vm('v2', 'c')],
    );
    assert.deepEqual(normalizedLoads(snap), [
      { hostId: 'a', cpu: 0.25, memory: 0.5, load: 0.375 },
      { hostId: 'b', cpu: 0, memory: 0, load: 0 },
    ]);
    assert.equal(imbalance(snap), 0.1875);
  });
});

describe('planRebalance', () => {
  it('halves the imbalance of a skewed cluster within maxMoves; stopping by itself, a second run proposes nothing', () => {
    for (const [seed, level] of [1, 2, 3, 4, 5].flatMap((seed) => [[seed, 3], [seed, 5]] as const)) {
      const snap = skewed(seed);
      const req = rebalance({ level, maxMoves: level === 3 ? 12 : 30 });
      const plan = planRebalance(snap, req, SETTINGS);
      assert.equal(plan.kind, 'rebalance');
      assert.ok(plan.moves.length > 0 && plan.moves.length < req.maxMoves, `seed ${seed} level ${level}: ${plan.moves.length} moves`);
      assert.equal(plan.imbalanceBefore, imbalance(snap));
      assert.ok(plan.imbalanceAfter! <= plan.imbalanceBefore! / 2, `seed ${seed}: ${plan.imbalanceBefore} -> ${plan.imbalanceAfter}`);
      const after = applyPlan(snap, plan);
      assert.ok(Math.abs(imbalance(after) - plan.imbalanceAfter!) < 1e-12);
      assert.equal(new Set(plan.moves.map((m) => m.vmId)).size, plan.moves.length, 'a VM moved twice');
      assertLimitsHold(plan.moves, snap.hosts, 3);
      assert.deepEqual(plan.left, []);
      assert.deepEqual(planRebalance(after, req, SETTINGS).moves, [], `seed ${seed} level ${level}: the second run moved again`);
    }
  });

  it('orders moves longest first and is deterministic', () => {
    const snap = skewed(9);
    const plan = planRebalance(snap, rebalance(), SETTINGS);
    for (let i = 1; i < plan.moves.length; i++) assert.ok(plan.moves[i - 1]!.predictedMs >= plan.moves[i]!.predictedMs);
    assert.deepEqual(planRebalance(structuredClone(snap), rebalance(), SETTINGS), plan);
    assert.deepEqual(planRebalance({ ...snap, vms: [...snap.vms].reverse(), hosts: [...snap.hosts].reverse() }, rebalance(), SETTINGS), plan);
  });

  it('higher levels move at least as much; level 1 moves nothing on a cluster that breaks no rule', () => {
    const snap = skewed(2);
    const counts = ([1, 2, 3, 4, 5] as const).map((level) => planRebalance(snap, rebalance({ level }), SETTINGS).moves.length);
    assert.equal(counts[0], 0);
    for (let i = 1; i < 5; i++) assert.ok(counts[i]! >= counts[i - 1]!, `levels: ${counts.join(', ')}`);
  });

  it('respects the cool-down, never moves to or from maintenance / down hosts, and only running VMs', () => {
    const base = skewed(3);
    const now = base.takenAtMs;
    const vms = base.vms.map((v) => (v.hostId === 'h0' ? { ...v, lastMovedAtMs: now - 60_000 } : v.id === 'v10' ? { ...v, state: 'paused' as const } : v));
    const hosts = base.hosts.map((h) => (h.id === 'h2' ? { ...h, maintenance: true } : h.id === 'h3' ? { ...h, state: 'down' as const } : h));
    const snap: ClusterSnapshot = { ...base, vms, hosts };
    const plan = planRebalance(snap, rebalance({ cooldownMs: 15 * 60_000 }), SETTINGS);
    assert.ok(plan.moves.length > 0);
    for (const m of plan.moves) {
      assert.notEqual(m.from, 'h0', `${m.vmId} moved within its cool-down`);
      assert.ok(!['h2', 'h3'].includes(m.from) && !['h2', 'h3'].includes(m.to), `${m.vmId}: ${m.from} -> ${m.to}`);
      assert.notEqual(m.vmId, 'v10');
    }
    assert.ok(planRebalance(snap, rebalance({ cooldownMs: 30_000 }), SETTINGS).moves.some((m) => m.from === 'h0'));
  });

  it('level 1 fixes a host over capacity and an anti-affine pair; what it cannot fix is left, with why', () => {
    const hosts = [host('a', { memoryMiB: 16384 }), host('b'), host('c')];
    const over = cluster(hosts, [vm('v1', 'a', { memoryMiB: 12288 }), vm('v2', 'a', { memoryMiB: 8192 }), vm('w1', 'b', { antiAffinityTag: 'web' }), vm('w2', 'b', { antiAffinityTag: 'web' })]);
    const plan = planRebalance(over, rebalance({ level: 1 }), SETTINGS);
    assert.equal(plan.moves.length, 2);
    assert.equal(plan.moves.filter((m) => m.from === 'a').length, 1);
    assert.equal(plan.moves.filter((m) => m.from === 'b' && m.to !== 'a').length, 1);
    assert.ok(plan.moves.every((m) => m.reason.startsWith('rebalance: fixes ')));
    const fixed = applyPlan(over, plan);
    assert.deepEqual(planRebalance(fixed, rebalance({ level: 1 }), SETTINGS).moves, []);
    // no room anywhere else: the overload stays, each VM on the host says why
    const full = cluster([host('a', { memoryMiB: 16384 }), host('b', { memoryMiB: 4096, baseMemoryMiB: 4096 })], [vm('v1', 'a', { memoryMiB: 12288 }), vm('v2', 'a', { memoryMiB: 8192 })]);
    const stuck = planRebalance(full, rebalance({ level: 1 }), SETTINGS);
    assert.deepEqual(stuck.moves, []);
    assert.deepEqual(stuck.left.map((l) => l.vmId), ['v1', 'v2']);
    assert.match(stuck.left[0]!.reason, /^host a is over capacity \(cpu 4 of 32, memory 20480 of 16384 MiB\); not fixed: no host takes it live/);
    assert.match(stuck.left[0]!.rejected[0]!.reasons.join(' '), /memory: needs 12288 MiB, free 0 MiB/);
  });

  it('never breaks anti-affinity and keeps affinity groups whole', () => {
    const hosts = Array.from({ length: 4 }, (_, i) => host(`h${i}`));
    const vms = [
      ...Array.from({ length: 6 }, (_, i) => vm(`w${i}`, 'h0', { antiAffinityTag: `web${i % 3}`, memoryMiB: 6144 })),
      ...['g1', 'g2'].map((id) => vm(id, 'h0', { affinityTag: 'db', memoryMiB: 8192 })),
      vm('w9', 'h1', { tags: ['web0'] }),
    ];
    // w0/w3, w1/w4, w2/w5 share tags on h0: level 1 must split them
    const snap = cluster(hosts, vms);
    const plan = planRebalance(snap, rebalance(), SETTINGS);
    assertAntiAffinityAtEveryInstant(snap, plan);
    const after = applyPlan(snap, plan);
    assert.deepEqual(planRebalance(after, rebalance({ level: 1 }), SETTINGS).moves, []);
    const home = new Map(after.vms.map((v) => [v.id, v.hostId]));
    assert.equal(home.get('g1'), home.get('g2'));
    assert.notEqual(home.get('w0'), 'h1');
    assert.notEqual(home.get('w3'), 'h1');
  });

  it('rejects a level outside 1..5 and negative numbers', () => {
    const snap = skewed();
    assert.throws(() => planRebalance(snap, rebalance({ level: 6 as 5 }), SETTINGS), /request\.level must be 1, 2, 3, 4 or 5, got 6/);
    assert.throws(() => planRebalance(snap, rebalance({ maxMoves: -1 }), SETTINGS), /request\.maxMoves must not be negative/);
    assert.throws(() => planRebalance(snap, rebalance({ cooldownMs: -1 }), SETTINGS), /request\.cooldownMs must not be negative/);
  });
});

describe('revalidatePlan and snapshotDigest', () => {
  const snap = cluster([host('a'), host('b', { memoryMiB: 16384 }), host('c', { memoryMiB: 16384 })], [vm('v1', 'a', { memoryMiB: 8192 }), vm('v2', 'a', { memoryMiB: 8192 })]);
  const plan = planEvacuation(snap, { hostId: 'a', maxParallel: 2, allowCold: false, includeStopped: false }, SETTINGS);
  const target = plan.moves[0]!.to;
  const withHost = (id: string, over: object): ClusterSnapshot => ({ ...snap, hosts: snap.hosts.map((h) => (h.id === id ? { ...h, ...over } : h)) });

  it('an unchanged cluster: no problem, the same digest', () => {
    assert.deepEqual(revalidatePlan(plan, structuredClone(snap)), []);
    assert.equal(plan.snapshotDigest, snapshotDigest(structuredClone(snap), plan));
    assert.match(plan.snapshotDigest, /^[0-9a-f]{8}$/);
  });

  it('finds a capacity change, a maintenance change and a VM that moved', () => {
    const fuller = withHost(target, { usedMemoryMiB: 12288 });
    assert.match(revalidatePlan(plan, fuller).join('\n'), new RegExp(`-> ${target}\\): memory: needs 8192 MiB, free 4096 MiB`));
    assert.notEqual(snapshotDigest(fuller, plan), plan.snapshotDigest);
    const maint = withHost(target, { maintenance: true });
    assert.match(revalidatePlan(plan, maint).join('\n'), new RegExp(`maintenance: target ${target} is in maintenance`));
    assert.notEqual(snapshotDigest(maint, plan), plan.snapshotDigest);
    const moved = { ...snap, vms: snap.vms.map((v) => (v.id === plan.moves[1]!.vmId ? { ...v, hostId: 'c' } : v)) };
    assert.deepEqual(revalidatePlan(plan, moved), [`move 1 (${plan.moves[1]!.vmId} a -> ${plan.moves[1]!.to}): the VM is now on c`]);
    const gone = { ...snap, vms: snap.vms.slice(1) };
    assert.match(revalidatePlan(plan, gone).join('\n'), /the VM no longer exists/);
  });

  it('holds the capacity of the plan\'s earlier moves when re-checking later ones', () => {
    // both guests fit b alone only if the first one does not count
    const squeezed: ClusterSnapshot = { ...snap, hosts: snap.hosts.map((h) => (h.id === 'c' ? { ...h, maintenance: true } : h.id === 'b' ? { ...h, memoryMiB: 12000 } : h)) };
    const redirected = { ...plan, moves: plan.moves.map((m) => ({ ...m, to: 'b' })) };
    const problems = revalidatePlan(redirected, squeezed);
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^move 1 .*memory: needs 8192 MiB, free 3808 MiB/);
  });
});

describe('reestimate', () => {
  const hosts = [host('a', { maxOutgoing: 2 }), host('b'), host('c')];
  const snap = cluster(hosts, ['v1', 'v2', 'v3', 'v4'].map((id, i) => vm(id, 'a', { memoryMiB: 2048 * (i + 1) })));
  const plan = planEvacuation(snap, { hostId: 'a', maxParallel: 2, allowCold: false, includeStopped: false }, SETTINGS);

  it('with nothing done, from time 0: the planned makespan, factor 1', () => {
    assert.deepEqual(reestimate(plan, [], {}, 0, undefined, snap.hosts), { etaMs: plan.makespanMs, factor: 1 });
  });

  it('scales the rest by actual / predicted of the finished moves; running moves keep their start', () => {
    const [m0, m1, m2, m3] = plan.moves;
    const now = 2 * m0!.predictedMs;
    const est = reestimate(plan, [{ vmId: m0!.vmId, actualMs: now }], { [m1!.vmId]: m1!.startAtMs }, now, [m2!.vmId, m3!.vmId], snap.hosts);
    assert.equal(est.factor, 2);
    const m1End = Math.max(now, m1!.startAtMs + 2 * m1!.predictedMs);
    // one slot is free at `now` (a sends two at a time): m2 starts now, m3 when the first of m1 / m2 ends
    const m2End = now + 2 * m2!.predictedMs;
    const m3End = Math.min(m1End, m2End) + 2 * m3!.predictedMs;
    assert.equal(est.etaMs, Math.max(m1End, m2End, m3End));
  });

  it('rejects a finished move that is not in the plan', () => {
    assert.throws(() => reestimate(plan, [{ vmId: 'zz', actualMs: 1 }], {}, 0), /finished\[0\]\.vmId is not a move of the plan/);
  });
});
