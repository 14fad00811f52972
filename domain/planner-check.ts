// Before and while a plan runs: is it still executable as planned (revalidatePlan), when will it
// end given what has finished so far (reestimate), and what the cluster looks like after it
// (applyPlan, for previews and tests).
import type { ClusterSnapshot, FleetPlan, PlannedMove } from './plan-types.js';
import { scheduleAfter, type BusyMove, type HostLimits } from './planner-predict.js';
import { Fleet } from './planner-state.js';
import { needNumber, planError, validateSnapshot } from './planner-validate.js';

const MOVABLE: Record<PlannedMove['kind'], readonly string[]> = { live: ['running', 'paused'], cold: ['running', 'paused', 'stopped'] };

/**
 * Re-checks every move, in plan order, against the current `snapshot`, holding the capacity of the
 * plan's earlier moves: the VM exists, is still on `from` and in a state the move's kind handles;
 * the target exists and still takes it (placement.ts checkMigrationTarget: up, not in
 * maintenance, cpu / memory room, cpu features for a live move, the planned datastore's room);
 * the shared-storage verdict (copyDisks) is unchanged; anti-affinity holds with the VMs on or
 * bound for the target. Affinity is not re-checked (a plan moves a group whole, to one host).
 * Returns one sentence per problem; empty = still executable exactly as planned.
 */
export function revalidatePlan(plan: FleetPlan, snapshot: ClusterSnapshot): string[] {
  validateSnapshot(snapshot);
  const fleet = new Fleet(snapshot);
  const problems: string[] = [];
  for (const m of [...plan.moves].sort((a, b) => a.order - b.order)) {
    const at = `move ${m.order} (${m.vmId} ${m.from} -> ${m.to})`;
    const vm = fleet.vms.get(m.vmId);
    if (!vm) {
      problems.push(`${at}: the VM no longer exists`);
      continue;
    }
    if (vm.hostId !== m.from) {
      problems.push(`${at}: the VM is now on ${vm.hostId}`);
      continue;
    }
    if (!MOVABLE[m.kind].includes(vm.state)) problems.push(`${at}: the VM is ${vm.state}, a ${m.kind} move needs ${MOVABLE[m.kind].join(' or ')}`);
    if (!fleet.reserve.has(m.to)) {
      problems.push(`${at}: target ${m.to} is no longer in the inventory`);
      continue;
    }
    const c = fleet.check([vm], [m.kind], m.to, null);
    for (const r of c.reasons) problems.push(`${at}: ${r}`);
    const leg = c.legs[0];
    if (leg && leg.copyDisks !== m.copyDisks) {
      problems.push(`${at}: storage changed: the plan has copyDisks ${m.copyDisks}, the hosts now need ${leg.copyDisks}`);
    }
    if (m.targetDatastoreId !== null && c.reasons.length === 0) {
      const ds = fleet.host(m.to).datastores.find((d) => d.id === m.targetDatastoreId);
      if (!ds) problems.push(`${at}: datastore ${m.targetDatastoreId} is no longer reachable from ${m.to}`);
      else if (ds.freeGiB < vm.diskGiB) problems.push(`${at}: datastore ${ds.id} has ${ds.freeGiB} GiB free, the disks need ${vm.diskGiB} GiB`);
    }
    // the move stays in the accounting either way: later moves are checked against the plan's intent
    fleet.apply({ vm, from: m.from, to: m.to, kind: m.kind, copyDisks: m.copyDisks, targetDatastoreId: m.targetDatastoreId });
  }
  return problems;
}

export interface Reestimate {
  /** absolute time (ms, the clock of nowMs) at which the last move is expected to end */
  etaMs: number;
  /** Σ actual / Σ predicted over the finished moves (1 when none finished) */
  factor: number;
}

/**
 * ETA from progress. `finished`: moves done and how long each took; `runningSinceMs`: vmId ->
 * start of each move in flight; `nowMs`: the same clock (any origin: absolute, or ms since the
 * plan started); `waitingVmIds`: the moves still to start (default: every move neither finished
 * nor running; a move in none of the three lists, e.g. abandoned, is not counted); `hosts`: for
 * their maxOutgoing / maxIncoming (default: only the plan's maxParallel limits).
 * Unfinished predictions are scaled by `factor`; a running move keeps its start and is expected
 * to end at max(now, start + scaled prediction); the waiting moves are list-scheduled in plan
 * order from nowMs around them (scheduleMoves' rules).
 */
export function reestimate(
  plan: FleetPlan,
  finished: Array<{ vmId: string; actualMs: number }>,
  runningSinceMs: Record<string, number>,
  nowMs: number,
  waitingVmIds?: string[],
  hosts?: HostLimits[],
): Reestimate {
  needNumber('nowMs', nowMs, 'non-negative');
  const byVm = new Map(plan.moves.map((m) => [m.vmId, m]));
  const done = new Set<string>();
  let actual = 0;
  let predicted = 0;
  finished.forEach((f, i) => {
    const m = byVm.get(f.vmId) ?? planError(`finished[${i}].vmId`, 'is not a move of the plan', f.vmId);
    if (done.has(f.vmId)) planError(`finished[${i}].vmId`, 'is listed twice', f.vmId);
    needNumber(`finished[${i}].actualMs`, f.actualMs, 'non-negative');
    done.add(f.vmId);
    actual += f.actualMs;
    predicted += m.predictedMs;
  });
  const factor = predicted > 0 ? actual / predicted : 1;
  const busy: BusyMove[] = [];
  for (const [vmId, start] of Object.entries(runningSinceMs).sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const m = byVm.get(vmId) ?? planError(`runningSinceMs.${vmId}`, 'is not a move of the plan', vmId);
    needNumber(`runningSinceMs.${vmId}`, start, 'non-negative');
    if (done.has(vmId)) planError(`runningSinceMs.${vmId}`, 'is also listed as finished', vmId);
    busy.push({ from: m.from, to: m.to, startAtMs: start, endAtMs: Math.max(nowMs, start + Math.round(m.predictedMs * factor)) });
  }
  const waiting = waitingVmIds ? new Set(waitingVmIds) : undefined;
  const rest = [...plan.moves]
    .sort((a, b) => a.order - b.order)
    .filter((m) => (waiting ? waiting.has(m.vmId) : true) && !done.has(m.vmId) && !(m.vmId in runningSinceMs))
    .map((m) => ({ vmId: m.vmId, from: m.from, to: m.to, predictedMs: Math.round(m.predictedMs * factor) }));
  const limits = hosts ?? unlimitedHosts(plan.moves, plan.maxParallel);
  const slots = scheduleAfter(rest, limits, plan.maxParallel, busy, nowMs);
  const etaMs = Math.max(nowMs, ...busy.map((b) => b.endAtMs), ...slots.map((x) => x.endAtMs));
  return { etaMs, factor };
}

/** Host stand-ins whose own limits never bind (maxParallel does). */
function unlimitedHosts(moves: PlannedMove[], maxParallel: number): HostLimits[] {
  const ids = [...new Set(moves.flatMap((m) => [m.from, m.to]))];
  return ids.map((id) => ({ id, maxOutgoing: maxParallel, maxIncoming: maxParallel }));
}

/**
 * The snapshot as it will be once every move of `plan` is done: each VM on its target, the used
 * figures and VM tags moved, copied disks on the target datastore (the source's space is freed
 * later by cleanup, so it is left as it is). `movedAtMs`, when given, becomes the VMs'
 * lastMovedAtMs (for the cool-down).
 */
export function applyPlan(snapshot: ClusterSnapshot, plan: Pick<FleetPlan, 'moves'>, movedAtMs?: number): ClusterSnapshot {
  const next: ClusterSnapshot = structuredCloneJson(snapshot);
  const hosts = new Map(next.hosts.map((h) => [h.id, h]));
  for (const m of [...plan.moves].sort((a, b) => a.order - b.order)) {
    const vm = next.vms.find((v) => v.id === m.vmId) ?? planError('plan.moves.vmId', 'is not a VM of the snapshot', m.vmId);
    const from = hosts.get(m.from) ?? planError('plan.moves.from', 'is not a host of the snapshot', m.from);
    const to = hosts.get(m.to) ?? planError('plan.moves.to', 'is not a host of the snapshot', m.to);
    from.usedCpus -= vm.cpus;
    from.usedMemoryMiB -= vm.memoryMiB;
    const i = from.vmTags.findIndex((t) => t.length === vm.tags.length && t.every((x, j) => x === vm.tags[j]));
    if (i >= 0) from.vmTags.splice(i, 1);
    to.usedCpus += vm.cpus;
    to.usedMemoryMiB += vm.memoryMiB;
    to.vmTags.push([...vm.tags]);
    if (m.targetDatastoreId !== null && (m.copyDisks || m.kind === 'cold')) {
      const ds = to.datastores.find((d) => d.id === m.targetDatastoreId);
      if (ds) ds.freeGiB -= vm.diskGiB;
      vm.datastoreIds = [m.targetDatastoreId];
    }
    vm.hostId = m.to;
    if (movedAtMs !== undefined) vm.lastMovedAtMs = movedAtMs;
  }
  return next;
}

/** A deep copy of plain JSON (no structuredClone: domain/ uses no runtime globals beyond the language). */
function structuredCloneJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
