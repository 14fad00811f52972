// Rebalance plans (issue 10), DRS-like and greedy. Load of a host = mean of its normalized cpu and
// memory use (used / (capacity x overcommit)); imbalance = population standard deviation of the
// load over the hosts that are up and not in maintenance (fleet-anchors.md section 3).
//
// Two phases, each move the single best one at the time ("best" = lowest imbalance after it):
//  1. at every level: moves that fix a violated rule, i.e. a VM off a host over its capacity, or
//     one VM of an anti-affine pair sharing a host; whatever cannot be fixed is listed in `left`.
//  2. levels 2..5: moves that lower the imbalance by at least the level's threshold
//     (REBALANCE_THRESHOLDS, scaled by √hosts). A VM moves at most once per plan; a later step may send a VM already
//     in the plan (phase 2) to another target instead, or back home, when that is the best step:
//     so the plan does not stop where a second run on its result would move that VM again.
// Never from or to a host down or in maintenance; only running VMs, not within the cool-down;
// targets as in evacuation (placement.ts filters, capacity held at both ends, anti-affinity at
// every instant, affinity groups on one host move together). Stops at maxMoves VMs moved.
// A second run on the cluster after the plan proposes nothing when the first stopped by itself,
// with one exception by design: room (or an anti-affinity slot) that the plan's own moves free
// on their sources is not used by the same plan, because its moves may overlap in any order.
// (Random clusters, 300 seeds, tight capacity and one anti-affinity tag: 6 second runs moved.)
import { hostCapacity, type RejectedHost } from './placement.js';
import type { ClusterSnapshot, FleetPlan, LeftBehind, PlanHost, PlanVm, PredictionSettings, RebalanceRequest } from './plan-types.js';
import { snapshotDigest } from './planner-digest.js';
import { timeMoves, type MoveDraft } from './planner-predict.js';
import { affinityUnits, antiAffine, Fleet, type Leg } from './planner-state.js';
import { byId, needNumber, needParallel, planError, validatePlanHosts, validateSettings, validateSnapshot } from './planner-validate.js';

/**
 * Minimum benefit of one improvement move, per level (level 1: none is made, only rule fixes).
 * The benefit is the drop in imbalance times √n (n = hosts balanced), i.e. the drop in the
 * Euclidean norm of the hosts' load deviations from the mean: moving a VM between two hosts
 * changes σ by about 1/√n of that, so without the factor the same level would move plenty in a
 * cluster of 8 hosts and nothing in one of 1,000 (fleet-anchors.md: "seldom or never moves").
 *   level | 1            | 2    | 3 (default in vSphere) | 4    | 5
 *   min   | fixes only   | 0.08 | 0.04                   | 0.02 | 0.005
 * E.g. on 8 hosts, level 3 takes a move only if it lowers σ by at least 0.04/√8 ≈ 0.014.
 */
export const REBALANCE_THRESHOLDS: Readonly<Record<RebalanceRequest['level'], number | null>> = { 1: null, 2: 0.08, 3: 0.04, 4: 0.02, 5: 0.005 };

function balanced(h: PlanHost): boolean {
  return h.state === 'up' && !h.maintenance;
}

function loadOf(h: PlanHost, use: { cpus: number; memoryMiB: number }): { cpu: number; memory: number; load: number } {
  const cpu = use.cpus / (h.cpus * h.cpuOvercommit);
  const memory = use.memoryMiB / (h.memoryMiB * h.memoryOvercommit);
  return { cpu, memory, load: (cpu + memory) / 2 };
}

/** Normalized cpu / memory use and load of every host up and not in maintenance, by id. */
export function normalizedLoads(snapshot: ClusterSnapshot): Array<{ hostId: string; cpu: number; memory: number; load: number }> {
  validatePlanHosts(snapshot.hosts);
  return snapshot.hosts
    .filter(balanced)
    .sort((a, b) => byId(a.id, b.id))
    .map((h) => ({ hostId: h.id, ...loadOf(h, { cpus: h.usedCpus, memoryMiB: h.usedMemoryMiB }) }));
}

function stddev(xs: number[]): number {
  if (xs.length === 0) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length);
}

/** Population standard deviation of `normalizedLoads(snapshot)`'s load (0 for no host). */
export function imbalance(snapshot: ClusterSnapshot): number {
  return stddev(normalizedLoads(snapshot).map((l) => l.load));
}

function validateRebalance(snapshot: ClusterSnapshot, req: RebalanceRequest, s: PredictionSettings): void {
  validateSnapshot(snapshot);
  validateSettings(s);
  if (req === null || typeof req !== 'object') planError('request', 'must be an object', req);
  if (![1, 2, 3, 4, 5].includes(req.level)) planError('request.level', 'must be 1, 2, 3, 4 or 5', req.level);
  needNumber('request.maxMoves', req.maxMoves, 'non-negative integer');
  needParallel('request.maxParallel', req.maxParallel);
  needNumber('request.cooldownMs', req.cooldownMs, 'non-negative');
}

/** The final loads of a working copy and the imbalance after moving `cpus`/`mem` from one host to another. */
class Loads {
  private readonly load = new Map<string, number>();
  private sum = 0;
  private sumSq = 0;
  readonly n: number;
  readonly sigma: number;

  constructor(private readonly fleet: Fleet, readonly hostIds: string[]) {
    for (const id of hostIds) {
      const l = loadOf(fleet.host(id), fleet.finalUse.get(id)!).load;
      this.load.set(id, l);
      this.sum += l;
      this.sumSq += l * l;
    }
    this.n = hostIds.length;
    this.sigma = stddev(hostIds.map((id) => this.load.get(id)!));
  }

  private shifted(id: string, cpus: number, mem: number): number {
    const use = this.fleet.finalUse.get(id)!;
    return loadOf(this.fleet.host(id), { cpus: use.cpus + cpus, memoryMiB: use.memoryMiB + mem }).load;
  }

  after(from: string, to: string, cpus: number, mem: number): number {
    const lf = this.load.get(from)!;
    const lt = this.load.get(to)!;
    const nf = this.shifted(from, -cpus, -mem);
    const nt = this.shifted(to, cpus, mem);
    const sum = this.sum - lf - lt + nf + nt;
    const sumSq = this.sumSq - lf * lf - lt * lt + nf * nf + nt * nt;
    return Math.sqrt(Math.max(0, sumSq / this.n - (sum / this.n) ** 2));
  }
}

interface Violation {
  hostId: string;
  text: string;
  vmIds: string[];
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** Hosts over capacity and anti-affine pairs sharing a host, at the end of the plan so far. */
function violations(fleet: Fleet, hostIds: string[]): Violation[] {
  const residents = new Map<string, PlanVm[]>(hostIds.map((id) => [id, []]));
  for (const vm of fleet.vms.values()) residents.get(fleet.home.get(vm.id)!)?.push(vm);
  const out: Violation[] = [];
  for (const id of hostIds) {
    const h = fleet.host(id);
    const use = fleet.finalUse.get(id)!;
    const { cpuCap, memCap } = hostCapacity(h);
    const vms = residents.get(id)!;
    if (use.cpus > cpuCap || use.memoryMiB > memCap) {
      const text = `host ${id} is over capacity (cpu ${fmt(use.cpus)} of ${fmt(cpuCap)}, memory ${fmt(use.memoryMiB)} of ${fmt(memCap)} MiB)`;
      out.push({ hostId: id, text, vmIds: vms.map((v) => v.id) });
    }
    for (let i = 0; i < vms.length; i++) {
      for (let j = i + 1; j < vms.length; j++) {
        if (!antiAffine(vms[i]!, vms[j]!)) continue;
        out.push({ hostId: id, text: `anti-affinity: ${vms[i]!.id} and ${vms[j]!.id} share host ${id}`, vmIds: [vms[i]!.id, vms[j]!.id] });
      }
    }
  }
  return out;
}

interface Unit {
  vms: PlanVm[];
  from: string;
  cpus: number;
  memoryMiB: number;
  /** null: may move; else why not */
  blocked: string | null;
}

/** Candidate step: a unit to a target (for a unit already planned: a new target, or home). */
interface Step {
  unit: Unit;
  to: string;
  sigma: number;
  /** the unit is already in the plan (phase 2): this replaces its move */
  redirect: boolean;
}

/** Plans a rebalance; see the file comment for the rules. */
export function planRebalance(snapshot: ClusterSnapshot, req: RebalanceRequest, s: PredictionSettings): FleetPlan {
  validateRebalance(snapshot, req, s);
  const hostIds = snapshot.hosts.filter(balanced).map((h) => h.id).sort(byId);
  const units = rebalanceUnits(snapshot, hostIds, req);
  const fixes: Array<{ unit: Unit; legs: Leg[]; reason: string }> = [];
  const improves = new Map<Unit, { legs: Leg[]; reason: string }>();
  const allLegs = () => [...fixes.flatMap((f) => f.legs), ...[...improves.values()].flatMap((i) => i.legs)];
  const moved = (u: Unit) => fixes.some((f) => f.unit === u) || improves.has(u);
  const count = () => allLegs().length;
  let fleet = new Fleet(snapshot);
  const sigmaBefore = new Loads(fleet, hostIds).sigma;

  // Phase 1: rule fixes.
  for (;;) {
    const open = violations(fleet, hostIds);
    if (open.length === 0) break;
    const loads = new Loads(fleet, hostIds);
    const why = new Map<string, string>();
    for (const v of open) for (const id of v.vmIds) if (!why.has(id)) why.set(id, v.text);
    const steps = units
      .filter((u) => u.blocked === null && !moved(u) && u.vms.some((vm) => why.has(vm.id)) && u.vms.length <= req.maxMoves - count())
      .flatMap((u) => hostIds.filter((t) => t !== u.from).map((to) => ({ unit: u, to, sigma: loads.after(u.from, to, u.cpus, u.memoryMiB), redirect: false })));
    const step = firstFeasible(fleet, snapshot, steps, allLegs, improves);
    if (!step) break;
    fixes.push({ unit: step.unit, legs: step.legs, reason: `rebalance: fixes ${why.get(step.unit.vms.find((vm) => why.has(vm.id))!.id)}` });
    fleet = Fleet.with(snapshot, allLegs());
  }
  const left = unresolved(fleet, hostIds, units, count() >= req.maxMoves);

  // Phase 2: improvements above the level's threshold.
  const threshold = REBALANCE_THRESHOLDS[req.level];
  while (threshold !== null) {
    const loads = new Loads(fleet, hostIds);
    const steps: Step[] = [];
    for (const u of units) {
      if (u.blocked !== null || fixes.some((f) => f.unit === u)) continue;
      const planned = improves.get(u);
      if (!planned && u.vms.length > req.maxMoves - count()) continue;
      const at = planned ? planned.legs[0]!.to : u.from;
      for (const to of hostIds) {
        if (to === at) continue;
        const sigma = loads.after(at, to, u.cpus, u.memoryMiB);
        if ((loads.sigma - sigma) * Math.sqrt(loads.n) >= threshold) steps.push({ unit: u, to, sigma, redirect: planned !== undefined });
      }
    }
    const step = firstFeasible(fleet, snapshot, steps, allLegs, improves);
    if (!step) break;
    const reason = `rebalance: imbalance ${loads.sigma.toFixed(3)} -> ${step.sigma.toFixed(3)}`;
    improves.delete(step.unit);
    if (step.to !== step.unit.from) improves.set(step.unit, { legs: step.legs, reason });
    fleet = Fleet.with(snapshot, allLegs());
  }

  const drafts: MoveDraft[] = [
    ...fixes.flatMap((f) => f.legs.map((l) => ({ ...l, reason: f.reason }))),
    ...[...improves.values()].flatMap((i) => i.legs.map((l) => ({ ...l, reason: i.reason }))),
  ];
  const timed = timeMoves(drafts, snapshot, s, req.maxParallel);
  return {
    kind: 'rebalance',
    moves: timed.moves,
    left,
    makespanMs: timed.makespanMs,
    lowerBoundMs: timed.lowerBoundMs,
    maxParallel: req.maxParallel,
    imbalanceBefore: sigmaBefore,
    imbalanceAfter: new Loads(fleet, hostIds).sigma,
    snapshotDigest: snapshotDigest(snapshot, { moves: timed.moves }),
  };
}

/**
 * The lowest-imbalance step whose target really takes the unit (ties: unit's first VM id, then
 * target id). A redirect is checked on the plan without the unit's current move; going home
 * needs only that no anti-affine VM was planned onto the home host meanwhile.
 */
function firstFeasible(
  fleet: Fleet,
  snapshot: ClusterSnapshot,
  steps: Step[],
  allLegs: () => Leg[],
  improves: Map<Unit, { legs: Leg[] }>,
): (Step & { legs: Leg[] }) | undefined {
  steps.sort((a, b) => a.sigma - b.sigma || byId(a.unit.vms[0]!.id, b.unit.vms[0]!.id) || byId(a.to, b.to));
  const without = new Map<Unit, Fleet>();
  for (const step of steps) {
    let f = fleet;
    if (step.redirect) {
      const mine = improves.get(step.unit)!.legs;
      f = without.get(step.unit) ?? Fleet.with(snapshot, allLegs().filter((l) => !mine.includes(l)));
      without.set(step.unit, f);
      if (step.to === step.unit.from) {
        const ids = new Set(step.unit.vms.map((v) => v.id));
        const clash = f.occupants.get(step.to)!.some((o) => !ids.has(o.id) && step.unit.vms.some((vm) => antiAffine(vm, o)));
        if (!clash) return { ...step, legs: [] };
        continue;
      }
    }
    const tag = step.unit.vms[0]!.affinityTag;
    const homes = tag === undefined ? null : f.affinityHomes(tag, step.unit.vms);
    const c = f.check(step.unit.vms, step.unit.vms.map(() => 'live'), step.to, homes);
    if (c.reasons.length === 0) return { ...step, legs: c.legs };
  }
  return undefined;
}

/** Every running VM on a balanced host, grouped by affinity tag per host, with why it may not move. */
function rebalanceUnits(snapshot: ClusterSnapshot, hostIds: string[], req: RebalanceRequest): Unit[] {
  const units: Unit[] = [];
  for (const hostId of hostIds) {
    for (const vms of affinityUnits(snapshot.vms.filter((v) => v.hostId === hostId))) {
      const blocks = vms.map((vm) => vmBlocked(vm, snapshot.takenAtMs, req.cooldownMs)).filter((b): b is string => b !== null);
      const blocked = blocks.length === 0 ? null : vms.length > 1 ? `affinity group ${vms[0]!.affinityTag} moves together and ${blocks.join('; ')}` : blocks[0]!;
      units.push({ vms, from: hostId, cpus: sum(vms, 'cpus'), memoryMiB: sum(vms, 'memoryMiB'), blocked });
    }
  }
  return units;
}

function sum(vms: PlanVm[], k: 'cpus' | 'memoryMiB'): number {
  return vms.reduce((a, v) => a + v[k], 0);
}

function vmBlocked(vm: PlanVm, nowMs: number, cooldownMs: number): string | null {
  if (vm.state !== 'running') return `${vm.id} is ${vm.state} (only running VMs are rebalanced)`;
  if (vm.lastMovedAtMs !== undefined && nowMs - vm.lastMovedAtMs < cooldownMs) {
    return `${vm.id} moved ${fmt(nowMs - vm.lastMovedAtMs)} ms ago (cool-down ${fmt(cooldownMs)} ms)`;
  }
  return null;
}

/** One LeftBehind per VM of a violation that is still open, saying why no move fixed it. */
function unresolved(fleet: Fleet, hostIds: string[], units: Unit[], capped: boolean): LeftBehind[] {
  const byVm = new Map<string, LeftBehind>();
  for (const v of violations(fleet, hostIds)) {
    for (const id of v.vmIds) {
      const vm = fleet.vms.get(id)!;
      if (fleet.home.get(id) !== vm.hostId) continue; // moved by this plan already
      const unit = units.find((u) => u.vms.includes(vm));
      let cause: string;
      let rejected: RejectedHost[] = [];
      if (capped) cause = 'maxMoves reached';
      else if (!unit) cause = `${id} is on a host that is not rebalanced`;
      else if (unit.blocked !== null) cause = unit.blocked;
      else {
        const tag = unit.vms[0]!.affinityTag;
        rejected = fleet.place(unit.vms, unit.vms.map(() => 'live'), hostIds.filter((h) => h !== unit.from)).rejected;
        cause = tag === undefined ? 'no host takes it live' : `affinity group ${tag} must move together and no host takes it live`;
      }
      const prev = byVm.get(id);
      if (prev) prev.reason = `${prev.reason}; ${v.text}`;
      else byVm.set(id, { vmId: id, vmName: vm.name, reason: `${v.text}; not fixed: ${cause}`, rejected });
    }
  }
  return [...byVm.values()].sort((a, b) => byId(a.vmId, b.vmId));
}
