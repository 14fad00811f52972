// The fleet planner (domain/planner.ts): predictions, the list schedule, evacuation plans and
// their invariants at every instant of the schedule, validation. Rebalance, revalidation, the
// digest and re-estimation: test/unit/planner-rebalance.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { simulatePrecopy } from '../../domain/precopy-model.js';
import { linkBandwidth, planEvacuation, predictMove, scheduleMoves } from '../../domain/planner.js';
import type { EvacuationRequest } from '../../domain/plan-types.js';
import { assertAntiAffinityAtEveryInstant, assertLimitsHold, cluster, host, rng, SETTINGS, vm, MiB, GiB } from './planner-fixtures.js';

const evac = (hostId: string, over: Partial<EvacuationRequest> = {}): EvacuationRequest => ({ hostId, maxParallel: 3, allowCold: false, includeStopped: false, ...over });

describe('predictMove and linkBandwidth', () => {
  const snap = cluster([host('a'), host('b'), host('c')], [], { links: [{ a: 'b', b: 'a', bandwidthBytesPerSec: 500 * MiB }] });
  const guest = vm('v1', 'a', { memoryMiB: 4096, diskGiB: 10, dirtyRateBytesPerSec: 100 * MiB, writableWorkingSetBytes: 512 * MiB });

  it('reads links undirected and falls back to the snapshot default', () => {
    assert.equal(linkBandwidth(snap, 'a', 'b'), 500 * MiB);
    assert.equal(linkBandwidth(snap, 'b', 'a'), 500 * MiB);
    assert.equal(linkBandwidth(snap, 'a', 'c'), snap.defaultLinkBandwidthBytesPerSec);
  });

  it('live: simulatePrecopy over min(link, cap), disks first when copied, / timeScale + overhead', () => {
    const model = simulatePrecopy({ memoryBytes: 4096 * MiB, bandwidthBytesPerSec: 500 * MiB, dirtyRateBytesPerSec: 100 * MiB, writableWorkingSetBytes: 512 * MiB, downtimeLimitMs: 300 });
    assert.deepEqual(predictMove(guest, 'a', 'b', 'live', false, snap, SETTINGS), {
      predictedMs: Math.round(model.totalMs + SETTINGS.perMoveOverheadMs),
      predictedDowntimeMs: Math.round(model.downtimeMs),
      converges: true,
    });
    const scaled = { ...SETTINGS, timeScale: 10, maxBandwidthBytesPerSec: 250 * MiB };
    const capped = simulatePrecopy({ memoryBytes: 4096 * MiB, bandwidthBytesPerSec: 250 * MiB, dirtyRateBytesPerSec: 100 * MiB, writableWorkingSetBytes: 512 * MiB, downtimeLimitMs: 300 });
    const diskMs = (10 * GiB * 1000) / (250 * MiB);
    assert.deepEqual(predictMove(guest, 'a', 'b', 'live', true, snap, scaled), {
      predictedMs: Math.round((diskMs + capped.totalMs) / 10 + SETTINGS.perMoveOverheadMs),
      predictedDowntimeMs: Math.round(capped.downtimeMs / 10),
      converges: true,
    });
  });

  it('live: a guest dirtying faster than the link does not converge', () => {
    const hot = { ...guest, dirtyRateBytesPerSec: 2 * GiB, writableWorkingSetBytes: 4 * GiB };
    assert.equal(predictMove(hot, 'a', 'b', 'live', false, snap, SETTINGS).converges, false);
  });

  it('cold: disk bytes at min(link, datastore throughput); downtime is the whole move', () => {
    const p = predictMove(guest, 'a', 'c', 'cold', true, snap, SETTINGS);
    const ms = Math.round((10 * GiB * 1000) / Math.min(snap.defaultLinkBandwidthBytesPerSec, SETTINGS.coldCopyBytesPerSec) + SETTINGS.perMoveOverheadMs);
    assert.deepEqual(p, { predictedMs: ms, predictedDowntimeMs: ms, converges: true });
    assert.equal(predictMove(guest, 'a', 'c', 'cold', false, snap, SETTINGS).predictedMs, SETTINGS.perMoveOverheadMs);
  });

  it('rejects bad settings with the field named', () => {
    assert.throws(() => predictMove(guest, 'a', 'b', 'live', false, snap, { ...SETTINGS, timeScale: 0 }), /settings\.timeScale must be positive/);
    assert.throws(() => predictMove(guest, 'a', 'b', 'live', false, snap, { ...SETTINGS, perMoveOverheadMs: -1 }), /settings\.perMoveOverheadMs must not be negative/);
  });
});

describe('scheduleMoves', () => {
  const hosts = [host('a', { maxOutgoing: 2 }), host('b', { maxIncoming: 1 }), host('c', { maxIncoming: 0 }), host('d')];

  it('starts each move as soon as the global, source and target slots allow, never overtaking', () => {
    const s = scheduleMoves(
      [
        { vmId: 'v1', from: 'a', to: 'b', predictedMs: 100 },
        { vmId: 'v2', from: 'a', to: 'b', predictedMs: 50 }, // b takes one at a time
        { vmId: 'v3', from: 'a', to: 'd', predictedMs: 10 }, // a sends two at a time; may not overtake v2
        { vmId: 'v4', from: 'd', to: 'c', predictedMs: 10 }, // c has limit 0: counts as 1
        { vmId: 'v5', from: 'd', to: 'c', predictedMs: 10 },
      ],
      hosts,
      3,
    );
    assert.deepEqual(s, [
      { vmId: 'v1', startAtMs: 0, endAtMs: 100 },
      { vmId: 'v2', startAtMs: 100, endAtMs: 150 },
      { vmId: 'v3', startAtMs: 100, endAtMs: 110 },
      { vmId: 'v4', startAtMs: 100, endAtMs: 110 },
      { vmId: 'v5', startAtMs: 110, endAtMs: 120 },
    ]);
  });

  it('never exceeds maxParallel or a host limit at any instant (random cases)', () => {
    const r = rng(7);
    const hs = ['a', 'b', 'c', 'd', 'e'].map((id) => host(id, { maxOutgoing: Math.floor(r() * 3), maxIncoming: Math.floor(r() * 3) }));
    for (let round = 0; round < 20; round++) {
      const moves = Array.from({ length: 40 }, (_, i) => {
        const from = hs[Math.floor(r() * 5)]!.id;
        const to = hs.filter((h) => h.id !== from)[Math.floor(r() * 4)]!.id;
        return { vmId: `v${i}`, from, to, predictedMs: Math.floor(r() * 1000) };
      });
      const k = 1 + Math.floor(r() * 4);
      const s = scheduleMoves(moves, hs, k);
      for (let i = 1; i < s.length; i++) assert.ok(s[i]!.startAtMs >= s[i - 1]!.startAtMs, 'a move overtook an earlier one');
      assertLimitsHold(moves.map((m, i) => ({ ...m, ...s[i]! })), hs, k);
    }
  });

  it('rejects maxParallel < 1 and unknown hosts', () => {
    assert.throws(() => scheduleMoves([], hosts, 0), /maxParallel must be an integer >= 1/);
    assert.throws(() => scheduleMoves([{ vmId: 'v', from: 'a', to: 'zz', predictedMs: 1 }], hosts, 1), /moves\[0\]\.to is not one of the hosts/);
  });
});

describe('planEvacuation', () => {
  it('accounts the capacity taken by earlier moves of the same plan', () => {
    // b and c have room for two 4 GiB guests each (16 GiB, 8 used); five guests leave a
    const snap = cluster(
      [host('a'), host('b', { memoryMiB: 16384, baseMemoryMiB: 8192 }), host('c', { memoryMiB: 16384, baseMemoryMiB: 8192 })],
      ['v1', 'v2', 'v3', 'v4', 'v5'].map((id) => vm(id, 'a', { memoryMiB: 4096 })),
    );
    const plan = planEvacuation(snap, evac('a'), SETTINGS);
    assert.equal(plan.moves.length, 4);
    for (const t of ['b', 'c']) assert.equal(plan.moves.filter((m) => m.to === t).length, 2);
    assert.deepEqual(plan.left.map((l) => l.vmId), ['v5']);
    assert.match(plan.left[0]!.reason, /no host takes it live \(allowCold not set\); refused for memory \(2 hosts\), source host \(1 host\)/);
    assert.deepEqual(plan.left[0]!.rejected.find((r) => r.hostId === 'b')!.reasons, ['memory: needs 4096 MiB, free 0 MiB of 16384 MiB (overcommit 1.0)']);
    assert.ok(plan.moves.every((m) => m.reason === 'evacuating a'));
  });

  it('never puts two anti-affine VMs on one host at any instant, counting in-flight VMs on both ends', () => {
    const hosts = ['a', 'b', 'c', 'd', 'e'].map((id) => host(id, { maxIncoming: 1 }));
    const web = (id: string, on: string) => vm(id, on, { antiAffinityTag: 'web', tags: ['web'] });
    const snap = cluster(hosts, [web('w1', 'a'), web('w2', 'b'), vm('x', 'a', { tags: ['web'] }), web('w3', 'a'), vm('plain', 'a')]);
    const plan = planEvacuation(snap, evac('a'), SETTINGS);
    assertAntiAffinityAtEveryInstant(snap, plan);
    // w1, w3 and x (tagged web) need three web-free hosts: c, d, e; b has w2
    assert.deepEqual(plan.moves.filter((m) => m.vmId !== 'plain').map((m) => m.to).sort(), ['c', 'd', 'e']);
    assert.deepEqual(plan.left, []);
  });

  it('leaves an anti-affine VM behind when every host already has one, saying so', () => {
    const web = (id: string, on: string) => vm(id, on, { antiAffinityTag: 'web' });
    const snap = cluster([host('a'), host('b'), host('c')], [web('w1', 'a'), web('w2', 'a'), web('w3', 'b')]);
    const plan = planEvacuation(snap, evac('a'), SETTINGS);
    assert.deepEqual(plan.moves.map((m) => [m.vmId, m.to]), [['w1', 'c']]);
    assert.equal(plan.left[0]!.vmId, 'w2');
    assert.match(plan.left[0]!.rejected.find((r) => r.hostId === 'c')!.reasons[0]!, /anti-affinity: w2 may not share a host with w1 \(on or bound for c during the plan\)/);
    assertAntiAffinityAtEveryInstant(snap, plan);
  });

  it('moves an affinity group to one host, or leaves every member when none fits the group', () => {
    const group = ['g1', 'g2', 'g3'].map((id) => vm(id, 'a', { affinityTag: 'db', memoryMiB: 8192 }));
    const roomy = cluster([host('a'), host('b', { memoryMiB: 20000 }), host('c', { memoryMiB: 30000 })], group);
    const plan = planEvacuation(roomy, evac('a'), SETTINGS);
    assert.deepEqual(plan.moves.map((m) => m.to), ['c', 'c', 'c']);
    const tight = cluster([host('a'), host('b', { memoryMiB: 20000 }), host('c', { memoryMiB: 20000 })], group);
    const none = planEvacuation(tight, evac('a'), SETTINGS);
    assert.deepEqual(none.moves, []);
    assert.deepEqual(none.left.map((l) => l.vmId), ['g1', 'g2', 'g3']);
    assert.match(none.left[0]!.reason, /^affinity group db \(g1, g2, g3\) must move together: no host takes it live/);
    // a group that already lives elsewhere pulls its members there
    const split = cluster([host('a'), host('b'), host('c')], [vm('g1', 'a', { affinityTag: 'db' }), vm('g0', 'b', { affinityTag: 'db' })]);
    assert.deepEqual(planEvacuation(split, evac('a'), SETTINGS).moves.map((m) => m.to), ['b']);
  });

  it('CPU features: no live target, a cold move when allowCold, else left with the reason', () => {
    const snap = cluster([host('a'), host('b', { cpuFeatures: ['sse4_2'], cpuModel: 'Old' })], [vm('v1', 'a', { cpuFeatures: ['avx2'] })]);
    const strict = planEvacuation(snap, evac('a'), SETTINGS);
    assert.deepEqual(strict.moves, []);
    assert.match(strict.left[0]!.reason, /no host takes it live \(allowCold not set\); refused for cpu features \(1 host\)/);
    const cold = planEvacuation(snap, evac('a', { allowCold: true }), SETTINGS);
    assert.equal(cold.moves[0]!.kind, 'cold');
    assert.equal(cold.moves[0]!.to, 'b');
    assert.match(cold.moves[0]!.reason, /^evacuating a \(cold: no live target; refused for cpu features \(1 host\)/);
    assert.equal(cold.moves[0]!.predictedDowntimeMs, cold.moves[0]!.predictedMs);
  });

  it('stopped VMs stay without includeStopped and move cold with it; migrating and error VMs stay', () => {
    const snap = cluster(
      [host('a'), host('b')],
      [vm('s1', 'a', { state: 'stopped' }), vm('m1', 'a', { state: 'migrating' }), vm('e1', 'a', { state: 'error' }), vm('p1', 'a', { state: 'paused' })],
    );
    const plan = planEvacuation(snap, evac('a'), SETTINGS);
    assert.deepEqual(plan.moves.map((m) => [m.vmId, m.kind]), [['p1', 'live']]);
    assert.deepEqual(plan.left.map((l) => [l.vmId, l.reason.split(':')[0]]), [['e1', 'error'], ['m1', 'migrating'], ['s1', 'stopped; includeStopped not set']]);
    const withStopped = planEvacuation(snap, evac('a', { includeStopped: true }), SETTINGS);
    assert.deepEqual(withStopped.moves.map((m) => [m.vmId, m.kind]).sort(), [['p1', 'live'], ['s1', 'cold']]);
  });

  it('copies disks that are not on shared storage, onto a datastore with room', () => {
    const snap = cluster([host('a'), host('b')], [vm('v1', 'a', { datastoreIds: ['local-a'], diskGiB: 50 })]);
    const m = planEvacuation(snap, evac('a'), SETTINGS).moves[0]!;
    assert.equal(m.copyDisks, true);
    assert.equal(m.targetDatastoreId, 'shared-1');
  });

  it('orders longest first (ties by id), stays within the limits, makespan >= bound and LPT within 4/3 of it', () => {
    const r = rng(42);
    for (let round = 0; round < 10; round++) {
      const hosts = [host('src', { maxOutgoing: 8 }), ...Array.from({ length: 10 }, (_, i) => host(`t${i}`, { maxIncoming: 8, memoryMiB: 1 << 20, cpus: 256 }))];
      const vms = Array.from({ length: 30 }, (_, i) => vm(`v${String(i).padStart(2, '0')}`, 'src', { memoryMiB: 1024 * (1 + Math.floor(r() * 32)) }));
      const snap = cluster(hosts, vms);
      const plan = planEvacuation(snap, evac('src'), SETTINGS);
      assert.equal(plan.moves.length, 30);
      plan.moves.forEach((m, i) => {
        assert.equal(m.order, i);
        if (i > 0) {
          const p = plan.moves[i - 1]!;
          assert.ok(p.predictedMs > m.predictedMs || (p.predictedMs === m.predictedMs && p.vmId < m.vmId), 'not LPT order');
        }
      });
      assertLimitsHold(plan.moves, hosts, 3);
      assert.equal(plan.makespanMs, Math.max(...plan.moves.map((m) => m.endAtMs)));
      const sum = plan.moves.reduce((a, m) => a + m.predictedMs, 0);
      assert.equal(plan.lowerBoundMs, Math.ceil(Math.max(sum / 3, ...plan.moves.map((m) => m.predictedMs))));
      assert.ok(plan.makespanMs >= plan.lowerBoundMs);
      assert.ok(plan.makespanMs <= (4 / 3) * plan.lowerBoundMs, `makespan ${plan.makespanMs} vs bound ${plan.lowerBoundMs}`);
    }
  });

  it('is deterministic: the same input twice, or in another order, gives the same plan', () => {
    const r = rng(3);
    const hosts = ['a', 'b', 'c', 'd'].map((id) => host(id));
    const vms = Array.from({ length: 12 }, (_, i) => vm(`v${i}`, 'a', { memoryMiB: 512 * (1 + Math.floor(r() * 6)), antiAffinityTag: i % 4 === 0 ? 'web' : undefined }));
    const snap = cluster(hosts, vms);
    const one = planEvacuation(snap, evac('a'), SETTINGS);
    assert.deepEqual(planEvacuation(structuredClone(snap), evac('a'), SETTINGS), one);
    const shuffled = { ...snap, hosts: [...snap.hosts].reverse(), vms: [...snap.vms].reverse() };
    assert.deepEqual(planEvacuation(shuffled, evac('a'), SETTINGS), one);
    assert.equal(one.moves.length + one.left.length, 12);
  });

  it('rejects bad input with the field named', () => {
    const snap = cluster([host('a'), host('b')], [vm('v1', 'a')]);
    assert.throws(() => planEvacuation(snap, evac('nope'), SETTINGS), /request\.hostId is not a host of the snapshot, got "nope"/);
    assert.throws(() => planEvacuation(snap, evac('a', { maxParallel: 0 }), SETTINGS), /request\.maxParallel must be an integer >= 1/);
    const dup = { ...snap, vms: [...snap.vms, snap.vms[0]!] };
    assert.throws(() => planEvacuation(dup, evac('a'), SETTINGS), /snapshot\.vms\[1\]\.id is a duplicate VM id/);
    const neg = { ...snap, hosts: snap.hosts.map((h, i) => (i === 1 ? { ...h, usedCpus: -1 } : h)) };
    assert.throws(() => planEvacuation(neg, evac('a'), SETTINGS), /snapshot\.hosts\[1\]\.usedCpus must not be negative/);
    const dupHost = { ...snap, hosts: [...snap.hosts, snap.hosts[0]!] };
    assert.throws(() => planEvacuation(dupHost, evac('a'), SETTINGS), /snapshot\.hosts\[2\]\.id is a duplicate host id/);
    const stray = { ...snap, vms: [vm('v9', 'zz')] };
    assert.throws(() => planEvacuation(stray, evac('a'), SETTINGS), /snapshot\.vms\[0\]\.hostId is not a host of the snapshot/);
    assert.throws(() => planEvacuation(snap, evac('a'), { ...SETTINGS, coldCopyBytesPerSec: -5 }), /settings\.coldCopyBytesPerSec must be positive/);
  });
});
