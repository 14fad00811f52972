// The fleet planner's benchmarks (domain/planner.ts), pure CPU, no server. `npx tsx bench/fleet.ts`
// runs them alone; `npm run bench` runs them as benchmark 5. Goals are reported, never asserted.
//   a. evacuation makespan vs the lower bound max(Σt/k, max t), LPT order vs the VMs' id order
//   b. rebalance: the greedy plan's imbalance vs the exact optimum (all move sets up to the cap)
//   c. planning time on 1,000 hosts / 10,000 VMs: one placeVm decision, one 50-VM evacuation
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { placeVm } from '../domain/placement.js';
import type { ClusterSnapshot, PlanHost, PlanVm, PredictionSettings } from '../domain/plan-types.js';
import { imbalance, planEvacuation, planRebalance, scheduleMoves } from '../domain/planner.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const SETTINGS: PredictionSettings = { downtimeLimitMs: 300, timeScale: 1, perMoveOverheadMs: 2000, coldCopyBytesPerSec: 200 * MiB };

/** mulberry32: seeded PRNG in [0, 1) (the planner tests use it too). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pad = (s: string | number, n: number) => String(s).padStart(n);
const verdict = (ratio: number, op: '<=' | '<', bound: number) => `(goal ${op} ${bound}) ${(op === '<=' ? ratio <= bound : ratio < bound) ? 'met' : 'NOT met'}`;

function planHost(id: string, over: Partial<PlanHost> = {}): PlanHost {
  const datastores = [{ id: 'shared-1', shared: true, freeGiB: 1_000_000 }, { id: `local-${id}`, shared: false, freeGiB: 4000 }];
  const capacity = { cpus: 64, memoryMiB: 262144, cpuOvercommit: 1, memoryOvercommit: 1, usedCpus: 0, usedMemoryMiB: 0 };
  const identity = { id, maintenance: false, state: 'up' as const, cpuModel: 'EPYC', cpuFeatures: ['sse4_2', 'avx', 'avx2'], tags: [] };
  return { ...identity, ...capacity, datastores, networks: ['prod'], vmTags: [], maxOutgoing: 3, maxIncoming: 2, ...over };
}

function planVm(id: string, hostId: string, r: () => number, over: Partial<PlanVm> = {}): PlanVm {
  const local = r() < 0.2;
  return {
    id,
    name: id,
    hostId,
    state: 'running',
    cpus: 1 + Math.floor(r() * 8),
    memoryMiB: 1024 * 2 ** Math.floor(r() * 6), // 1 .. 32 GiB
    diskGiB: local ? 20 + Math.floor(r() * 80) : 20,
    cpuFeatures: ['avx'],
    datastoreIds: [local ? `local-${hostId}` : 'shared-1'],
    tags: [],
    dirtyRateBytesPerSec: Math.floor(r() * 300) * MiB,
    writableWorkingSetBytes: Math.floor(r() * 2048) * MiB,
    ...over,
  };
}

/** Hosts' used figures and vmTags from the VMs on them. */
function snapshotOf(hosts: PlanHost[], vms: PlanVm[]): ClusterSnapshot {
  const byHost = new Map<string, PlanVm[]>(hosts.map((h) => [h.id, []]));
  for (const v of vms) byHost.get(v.hostId)!.push(v);
  return {
    takenAtMs: 0,
    hosts: hosts.map((h) => {
      const mine = byHost.get(h.id)!;
      return { ...h, usedCpus: mine.reduce((a, v) => a + v.cpus, 0), usedMemoryMiB: mine.reduce((a, v) => a + v.memoryMiB, 0), vmTags: mine.map((v) => [...v.tags]) };
    }),
    vms,
    links: [],
    defaultLinkBandwidthBytesPerSec: 1.25e9, // 10 GbE
  };
}

function benchEvacuation(log: (l: string) => void): void {
  const k = 3;
  log(`a. evacuation of one host, k = ${k} moves at once (source sends ${k}, each target takes 2), 60 targets, 10 GbE, mixed seeded guests 1-32 GiB, 20 % local disks`);
  log(`${pad('VMs', 5)} ${pad('moves', 6)} ${pad('Σt s', 9)} ${pad('max t s', 8)} ${pad('bound s', 9)} ${pad('LPT s', 9)} ${pad('LPT/LB', 7)} ${pad('id order s', 11)} ${pad('id/LB', 6)}`);
  const ratios: number[] = [];
  for (const n of [10, 50, 200]) {
    const r = mulberry32(1000 + n);
    const hosts = [planHost('src'), ...Array.from({ length: 60 }, (_, i) => planHost(`t${String(i).padStart(2, '0')}`))];
    const vms = Array.from({ length: n }, (_, i) => planVm(`vm-${String(i).padStart(3, '0')}`, 'src', r));
    const snap = snapshotOf(hosts, vms);
    snap.hosts[0] = { ...snap.hosts[0]!, cpus: 4096, memoryMiB: 1 << 24 }; // the source holds them all
    const plan = planEvacuation(snap, { hostId: 'src', maxParallel: k, allowCold: false, includeStopped: false }, SETTINGS);
    const byId = [...plan.moves].sort((a, b) => (a.vmId < b.vmId ? -1 : 1));
    const idOrder = Math.max(...scheduleMoves(byId, snap.hosts, k).map((s) => s.endAtMs));
    const sum = plan.moves.reduce((a, m) => a + m.predictedMs, 0);
    const max = Math.max(...plan.moves.map((m) => m.predictedMs));
    const ratio = plan.makespanMs / plan.lowerBoundMs;
    ratios.push(ratio);
    const s = (ms: number) => (ms / 1000).toFixed(1);
    log(
      `${pad(n, 5)} ${pad(plan.moves.length, 6)} ${pad(s(sum), 9)} ${pad(s(max), 8)} ${pad(s(plan.lowerBoundMs), 9)} ${pad(s(plan.makespanMs), 9)} ${pad(ratio.toFixed(3), 7)} ${pad(s(idOrder), 11)} ${pad((idOrder / plan.lowerBoundMs).toFixed(3), 6)}${plan.left.length ? `  (${plan.left.length} left)` : ''}`,
    );
  }
  log(`worst LPT makespan / lower bound = ${Math.max(...ratios).toFixed(3)} ${verdict(Math.max(...ratios), '<=', 1.2)}`);
}

/** The lowest imbalance any set of at most `cap` moves (distinct VMs, room held at both ends) reaches. */
function bruteForceOptimum(snap: ClusterSnapshot, cap: number): number {
  const hosts = snap.hosts;
  const idx = new Map(hosts.map((h, i) => [h.id, i]));
  const cpuCap = hosts.map((h) => h.cpus * h.cpuOvercommit);
  const memCap = hosts.map((h) => h.memoryMiB * h.memoryOvercommit);
  const finCpu = hosts.map((h) => h.usedCpus);
  const finMem = hosts.map((h) => h.usedMemoryMiB);
  const resCpu = [...finCpu];
  const resMem = [...finMem];
  const vms = snap.vms.filter((v) => v.state === 'running').map((v) => ({ c: v.cpus, m: v.memoryMiB, s: idx.get(v.hostId)! }));
  const sigma = () => {
    const loads = hosts.map((_, i) => (finCpu[i]! / cpuCap[i]! + finMem[i]! / memCap[i]!) / 2);
    const mean = loads.reduce((a, b) => a + b, 0) / loads.length;
    return Math.sqrt(loads.reduce((a, l) => a + (l - mean) ** 2, 0) / loads.length);
  };
  let best = sigma();
  const dfs = (from: number, depth: number) => {
    if (depth === cap) return;
    for (let j = from; j < vms.length; j++) {
      const v = vms[j]!;
      for (let t = 0; t < hosts.length; t++) {
        if (t === v.s || resCpu[t]! + v.c > cpuCap[t]! || resMem[t]! + v.m > memCap[t]!) continue;
        resCpu[t]! += v.c;
        resMem[t]! += v.m;
        finCpu[t]! += v.c;
        finMem[t]! += v.m;
        finCpu[v.s]! -= v.c;
        finMem[v.s]! -= v.m;
        best = Math.min(best, sigma());
        dfs(j + 1, depth + 1);
        resCpu[t]! -= v.c;
        resMem[t]! -= v.m;
        finCpu[t]! -= v.c;
        finMem[t]! -= v.m;
        finCpu[v.s]! += v.c;
        finMem[v.s]! += v.m;
      }
    }
  };
  dfs(0, 0);
  return best;
}

function benchRebalance(log: (l: string) => void): void {
  log('');
  log('b. rebalance (level 5) vs the exact optimum: every set of at most maxMoves moves, brute force; seeded skewed clusters');
  log(`${pad('case', 4)} ${pad('hosts', 5)} ${pad('VMs', 4)} ${pad('cap', 3)} ${pad('before', 8)} ${pad('greedy', 8)} ${pad('optimum', 8)} ${pad('greedy/opt', 10)} ${pad('moves', 5)} ${pad('brute ms', 9)}`);
  const ratios: number[] = [];
  for (let c = 0; c < 8; c++) {
    const r = mulberry32(77 + c);
    const nHosts = 6 + (c % 3);
    const nVms = 20 + Math.floor(r() * 11);
    const cap = nVms <= 24 ? 3 : 2;
    const hosts = Array.from({ length: nHosts }, (_, i) => planHost(`h${i}`, { cpus: 32, memoryMiB: 65536 * (1 + (i % 2)) }));
    const room = new Map(hosts.map((h) => [h.id, { c: h.cpus, m: h.memoryMiB }]));
    const vms: PlanVm[] = [];
    for (let i = 0; vms.length < nVms && i < 10 * nVms; i++) {
      const on = `h${Math.floor(r() * r() * nHosts)}`; // skewed towards the first hosts
      const v = planVm(`v${String(i).padStart(2, '0')}`, on, r, { datastoreIds: ['shared-1'], memoryMiB: 1024 * (1 + Math.floor(r() * 12)), cpus: 1 + Math.floor(r() * 4) });
      const left = room.get(on)!;
      if (left.c < v.cpus || left.m < v.memoryMiB) continue;
      left.c -= v.cpus;
      left.m -= v.memoryMiB;
      vms.push(v);
    }
    const snap = snapshotOf(hosts, vms);
    const plan = planRebalance(snap, { level: 5, maxMoves: cap, maxParallel: 3, cooldownMs: 0 }, SETTINGS);
    const t0 = performance.now();
    const opt = bruteForceOptimum(snap, cap);
    const ms = performance.now() - t0;
    const ratio = opt === 0 ? (plan.imbalanceAfter === 0 ? 1 : Infinity) : plan.imbalanceAfter! / opt;
    ratios.push(ratio);
    log(
      `${pad(c + 1, 4)} ${pad(nHosts, 5)} ${pad(vms.length, 4)} ${pad(cap, 3)} ${pad(imbalance(snap).toFixed(4), 8)} ${pad(plan.imbalanceAfter!.toFixed(4), 8)} ${pad(opt.toFixed(4), 8)} ${pad(ratio.toFixed(3), 10)} ${pad(plan.moves.length, 5)} ${pad(ms.toFixed(0), 9)}`,
    );
  }
  log(`worst greedy / optimum = ${Math.max(...ratios).toFixed(3)} ${verdict(Math.max(...ratios), '<=', 1.1)}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function benchScale(log: (l: string) => void): void {
  log('');
  const r = mulberry32(4242);
  const hosts = Array.from({ length: 1000 }, (_, i) => planHost(`host-${String(i).padStart(4, '0')}`, { cpus: 128, memoryMiB: 1 << 20 }));
  const vms: PlanVm[] = [];
  for (let i = 0; i < 50; i++) vms.push(planVm(`vm-${String(i).padStart(5, '0')}`, hosts[0]!.id, r, { tags: i % 5 === 0 ? ['web'] : [] }));
  for (let i = 50; i < 10_000; i++) {
    const h = hosts[1 + Math.floor(r() * 999)]!;
    vms.push(planVm(`vm-${String(i).padStart(5, '0')}`, h.id, r, { tags: i % 5 === 0 ? ['web'] : [], antiAffinityTag: i % 97 === 0 ? 'web' : undefined }));
  }
  const snap = snapshotOf(hosts, vms);
  log(`c. planning time, ${snap.hosts.length} hosts, ${snap.vms.length} VMs (host-0000 holds 50)`);
  const req = { cpus: 4, memoryMiB: 8192, diskGiB: 40, antiAffinityTag: 'web', requiredCpuFeatures: ['avx'] };
  placeVm(req, snap.hosts); // warm-up
  const placeMs = Array.from({ length: 20 }, () => {
    const t0 = performance.now();
    placeVm(req, snap.hosts);
    return performance.now() - t0;
  });
  const evac = { hostId: hosts[0]!.id, maxParallel: 3, allowCold: false, includeStopped: false };
  const first = planEvacuation(snap, evac, SETTINGS);
  const planMs = Array.from({ length: 5 }, () => {
    const t0 = performance.now();
    planEvacuation(snap, evac, SETTINGS);
    return performance.now() - t0;
  });
  const p = median(placeMs);
  log(`one placement decision (placeVm, anti-affinity + cpu features), median of 20: ${p.toFixed(2)} ms ${verdict(p, '<', 50)}`);
  log(`one evacuation plan of 50 VMs (${first.moves.length} moves, ${first.left.length} left), median of 5: ${median(planMs).toFixed(1)} ms (${(median(planMs) / 50).toFixed(2)} ms per VM)`);
}

/** Runs the three fleet benchmarks; logs and returns the lines. */
export function benchFleet(opts: { log?: (line: string) => void } = {}): string[] {
  const lines: string[] = [];
  const log = (l: string) => {
    lines.push(l);
    opts.log?.(l);
  };
  benchEvacuation(log);
  benchRebalance(log);
  benchScale(log);
  return lines;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchFleet({ log: (l) => console.log(l) });
}
