// The planner's working copy of the cluster while a plan is built move by move (domain/planner.ts,
// domain/rebalance.ts, domain/planner-check.ts). Two views:
//  - `reserve`: the hosts as placement sees them during the plan. A move adds its VM to the target
//    and never releases the source, because moves of one plan run in parallel in any overlap and
//    an in-flight VM holds both ends. Capacity and disk room are checked against this view.
//  - `finalUse` / `home`: where everything is once the plan is done (loads, affinity, rules).
// Anti-affinity is checked against `occupants`: the VMs on a host, or bound for it, at any moment
// of the plan (a VM that leaves a host still counts there until the plan ends).
import { checkMigrationTarget, hostCapacity, type MigratingVm, type RejectedHost } from './placement.js';
import type { ClusterSnapshot, MoveKind, PlanHost, PlanVm } from './plan-types.js';
import { byId } from './planner-validate.js';

/** One VM's move as the working copy records it. */
export interface Leg {
  vm: PlanVm;
  from: string;
  to: string;
  kind: MoveKind;
  copyDisks: boolean;
  targetDatastoreId: string | null;
}

/** Does `vm` carry `tag` (as a plain tag, or as its own anti-affinity / affinity tag)? */
export function carriesTag(vm: PlanVm, tag: string): boolean {
  return vm.tags.includes(tag) || vm.antiAffinityTag === tag || vm.affinityTag === tag;
}

/** Anti-affinity is symmetric: either VM's anti-affinity tag carried by the other. */
export function antiAffine(x: PlanVm, y: PlanVm): boolean {
  if (x.id === y.id) return false;
  return (x.antiAffinityTag !== undefined && carriesTag(y, x.antiAffinityTag)) || (y.antiAffinityTag !== undefined && carriesTag(x, y.antiAffinityTag));
}

function cloneHost(h: PlanHost): PlanHost {
  return { ...h, datastores: h.datastores.map((d) => ({ ...d })), vmTags: h.vmTags.map((t) => [...t]) };
}

function asMigrating(vm: PlanVm, kind: MoveKind): MigratingVm {
  // a cold move restarts the guest on the target: no CPU-feature match needed
  return {
    id: vm.id,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    cpuFeatures: kind === 'live' ? vm.cpuFeatures : [],
    diskGiB: vm.diskGiB,
    datastoreIds: vm.datastoreIds,
    ...(vm.network !== undefined ? { network: vm.network } : {}),
  };
}

function consume(h: PlanHost, vm: PlanVm, copyDisks: boolean, datastoreId: string | null): void {
  h.usedCpus += vm.cpus;
  h.usedMemoryMiB += vm.memoryMiB;
  h.vmTags.push([...vm.tags]);
  if (copyDisks && datastoreId !== null) {
    const ds = h.datastores.find((d) => d.id === datastoreId);
    if (ds) ds.freeGiB -= vm.diskGiB;
  }
}

export interface UnitCheck {
  hostId: string;
  reasons: string[];
  /** one per member, in the unit's order, when reasons is empty */
  legs: Leg[];
  /** spread weight: free memory ratio, then free cpu ratio, after the unit lands */
  memFree: number;
  cpuFree: number;
}

export class Fleet {
  readonly reserve = new Map<string, PlanHost>();
  readonly finalUse = new Map<string, { cpus: number; memoryMiB: number }>();
  readonly occupants = new Map<string, PlanVm[]>();
  readonly home = new Map<string, string>();
  readonly vms = new Map<string, PlanVm>();
  readonly legs: Leg[] = [];
  readonly hostIds: string[];

  constructor(readonly snapshot: ClusterSnapshot) {
    for (const h of snapshot.hosts) {
      this.reserve.set(h.id, cloneHost(h));
      this.finalUse.set(h.id, { cpus: h.usedCpus, memoryMiB: h.usedMemoryMiB });
      this.occupants.set(h.id, []);
    }
    this.hostIds = [...this.reserve.keys()].sort(byId);
    for (const vm of [...snapshot.vms].sort((a, b) => byId(a.id, b.id))) {
      this.vms.set(vm.id, vm);
      this.home.set(vm.id, vm.hostId);
      this.occupants.get(vm.hostId)!.push(vm);
    }
  }

  /** A working copy with `legs` applied, in order. */
  static with(snapshot: ClusterSnapshot, legs: Leg[]): Fleet {
    const f = new Fleet(snapshot);
    for (const l of legs) f.apply(l);
    return f;
  }

  host(id: string): PlanHost {
    return this.reserve.get(id)!;
  }

  apply(leg: Leg): void {
    consume(this.host(leg.to), leg.vm, leg.copyDisks, leg.targetDatastoreId);
    const src = this.finalUse.get(leg.from)!;
    src.cpus -= leg.vm.cpus;
    src.memoryMiB -= leg.vm.memoryMiB;
    const dst = this.finalUse.get(leg.to)!;
    dst.cpus += leg.vm.cpus;
    dst.memoryMiB += leg.vm.memoryMiB;
    this.occupants.get(leg.to)!.push(leg.vm);
    this.home.set(leg.vm.id, leg.to);
    this.legs.push(leg);
  }

  /** VMs whose home at the end of the plan is `hostId`, by id. */
  finalResidents(hostId: string): PlanVm[] {
    return [...this.vms.values()].filter((vm) => this.home.get(vm.id) === hostId);
  }

  /**
   * Hosts that, at the end of the plan, carry a VM of affinity group `tag` other than the unit's
   * members and other than VMs staying on `ignoreHostId` (an evacuated host's stragglers).
   * Empty: the group has no home yet and the unit may go anywhere (placement.ts semantics).
   */
  affinityHomes(tag: string, unit: PlanVm[], ignoreHostId?: string): Set<string> {
    const inUnit = new Set(unit.map((v) => v.id));
    const homes = new Set<string>();
    for (const vm of this.vms.values()) {
      if (inUnit.has(vm.id) || !carriesTag(vm, tag)) continue;
      const h = this.home.get(vm.id)!;
      if (h !== ignoreHostId) homes.add(h);
    }
    return homes;
  }

  /** Every reason `targetId` refuses the whole unit (each member with its kind), or its legs. */
  check(unit: PlanVm[], kinds: MoveKind[], targetId: string, affinityHomes: Set<string> | null): UnitCheck {
    // a unit of several VMs is checked member by member on a copy that takes each one in turn
    const single = unit.length === 1;
    const scratch = single ? this.host(targetId) : cloneHost(this.host(targetId));
    const reasons: string[] = [];
    const legs: Leg[] = [];
    unit.forEach((vm, i) => {
      const kind = kinds[i]!;
      const c = checkMigrationTarget(asMigrating(vm, kind), this.host(vm.hostId), scratch);
      const prefix = unit.length > 1 ? `${vm.id}: ` : '';
      for (const r of c.reasons) reasons.push(prefix + r);
      if (!c.ok) return;
      if (!single) consume(scratch, vm, c.copyDisks, c.targetDatastoreId);
      legs.push({ vm, from: vm.hostId, to: targetId, kind, copyDisks: c.copyDisks, targetDatastoreId: c.targetDatastoreId });
    });
    const around = single ? this.occupants.get(targetId)! : [...this.occupants.get(targetId)!, ...unit];
    for (const vm of unit) {
      const clash = around.filter((o) => antiAffine(vm, o)).map((o) => o.id);
      if (clash.length > 0) {
        reasons.push(`anti-affinity: ${vm.id} may not share a host with ${[...new Set(clash)].sort(byId).join(', ')} (on or bound for ${targetId} during the plan)`);
      }
    }
    const tag = unit[0]!.affinityTag;
    if (tag !== undefined && affinityHomes !== null && affinityHomes.size > 0 && !affinityHomes.has(targetId)) {
      reasons.push(`affinity: no VM of group ${tag} on this host (the group is on ${[...affinityHomes].sort(byId).join(', ')})`);
    }
    const cap = hostCapacity(scratch);
    const [cpus, mem] = single ? [unit[0]!.cpus, unit[0]!.memoryMiB] : [0, 0]; // a copy has taken them already
    return { hostId: targetId, reasons, legs: reasons.length ? [] : legs, memFree: (cap.memFree - mem) / cap.memCap, cpuFree: (cap.cpuFree - cpus) / cap.cpuCap };
  }

  /**
   * The best target for a unit ("spread": most free memory ratio after the unit lands, then cpu,
   * then host id) among `candidates`. Hosts are ranked on the cheap necessary conditions (up, not
   * in maintenance, not a member's host, cpu and memory room) and fully checked in rank order: the
   * first that passes is the best. Only when none does is every host checked, so that `rejected`
   * then holds every refusal (with a best, `rejected` is partial).
   */
  place(unit: PlanVm[], kinds: MoveKind[], candidates: string[], ignoreHostId?: string): { best?: UnitCheck; rejected: RejectedHost[] } {
    const tag = unit[0]!.affinityTag;
    const homes = tag === undefined ? null : this.affinityHomes(tag, unit, ignoreHostId);
    const cpus = unit.reduce((a, v) => a + v.cpus, 0);
    const mem = unit.reduce((a, v) => a + v.memoryMiB, 0);
    const ranked = candidates
      .map((id) => ({ id, h: this.host(id) }))
      .filter(({ id, h }) => h.state === 'up' && !h.maintenance && !unit.some((v) => v.hostId === id))
      .map(({ id, h }) => ({ id, cap: hostCapacity(h) }))
      .filter(({ cap }) => cap.cpuFree >= cpus && cap.memFree >= mem)
      .map(({ id, cap }) => ({ id, mem: (cap.memFree - mem) / cap.memCap, cpu: (cap.cpuFree - cpus) / cap.cpuCap }))
      .sort((a, b) => b.mem - a.mem || b.cpu - a.cpu || byId(a.id, b.id));
    const rejected: RejectedHost[] = [];
    for (const { id } of ranked) {
      const c = this.check(unit, kinds, id, homes);
      if (c.reasons.length === 0) return { best: c, rejected };
      rejected.push({ hostId: id, reasons: c.reasons });
    }
    return { rejected: candidates.map((id) => ({ hostId: id, reasons: this.check(unit, kinds, id, homes).reasons })) };
  }
}

/** Groups VMs into units that move together: one per affinity tag, singles for the rest; by first id. */
export function affinityUnits(vms: PlanVm[]): PlanVm[][] {
  const groups = new Map<string, PlanVm[]>();
  const units: PlanVm[][] = [];
  for (const vm of [...vms].sort((a, b) => byId(a.id, b.id))) {
    if (vm.affinityTag === undefined) {
      units.push([vm]);
      continue;
    }
    const g = groups.get(vm.affinityTag);
    if (g) g.push(vm);
    else {
      const fresh = [vm];
      groups.set(vm.affinityTag, fresh);
      units.push(fresh);
    }
  }
  return units;
}
