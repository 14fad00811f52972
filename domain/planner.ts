// The fleet planner (issue 10): evacuation and rebalance plans, predicted and scheduled, for the
// workflows that execute them, the activities that take the snapshot and the API's preview. Pure
// and deterministic (plain JSON in and out, ties by id); this file is the one import point.
//
// An evacuation moves every VM off one host: running / paused VMs live (cold when allowCold and no
// live target exists), stopped ones cold when includeStopped; every VM that stays is listed in
// `left` with the reason and, when placement was tried, every host's refusal. Targets follow
// placement.ts (checkMigrationTarget per VM; "spread" weigher), with the capacity taken by earlier
// moves of the same plan accounted, anti-affinity held at every instant (an in-flight VM counts on
// both hosts) and affinity groups moved together to one host.
import type { LeftBehind, MoveKind, ClusterSnapshot, EvacuationRequest, FleetPlan, PlanVm, PredictionSettings } from './plan-types.js';
import { snapshotDigest } from './planner-digest.js';
import { timeMoves, type MoveDraft } from './planner-predict.js';
import { affinityUnits, Fleet } from './planner-state.js';
import { byId, needParallel, planError, validateSettings, validateSnapshot } from './planner-validate.js';

export { linkBandwidth, predictMove, scheduleMoves, makespanLowerBound, type HostLimits, type MovePrediction, type ScheduleInput, type ScheduledMove } from './planner-predict.js';
export { snapshotDigest, fnv1a32 } from './planner-digest.js';
export { normalizedLoads, imbalance, planRebalance, REBALANCE_THRESHOLDS } from './rebalance.js';
export { revalidatePlan, reestimate, applyPlan, type Reestimate } from './planner-check.js';

/** Why a VM in this state does not move at all (null: it may move). */
function stateReason(vm: PlanVm, req: EvacuationRequest): string | null {
  switch (vm.state) {
    case 'running':
    case 'paused':
      return null;
    case 'stopped':
      return req.includeStopped ? null : 'stopped; includeStopped not set';
    case 'migrating':
      return 'migrating: a migration of this VM is already in flight; evacuate again when it ends';
    case 'provisioning':
      return 'provisioning: the VM is still being created; evacuate again when it is running or stopped';
    case 'error':
      return 'error: the VM is in error; repair or delete it before the host can be emptied';
  }
}

function validateEvacuation(snapshot: ClusterSnapshot, req: EvacuationRequest, s: PredictionSettings): void {
  validateSnapshot(snapshot);
  validateSettings(s);
  if (req === null || typeof req !== 'object') planError('request', 'must be an object', req);
  if (!snapshot.hosts.some((h) => h.id === req.hostId)) planError('request.hostId', 'is not a host of the snapshot', req.hostId);
  needParallel('request.maxParallel', req.maxParallel);
  if (typeof req.allowCold !== 'boolean') planError('request.allowCold', 'must be a boolean', req.allowCold);
  if (typeof req.includeStopped !== 'boolean') planError('request.includeStopped', 'must be a boolean', req.includeStopped);
}

function memoryOf(unit: PlanVm[]): number {
  return unit.reduce((m, v) => m + v.memoryMiB, 0);
}

/** Plans moving every VM off `req.hostId`. */
export function planEvacuation(snapshot: ClusterSnapshot, req: EvacuationRequest, s: PredictionSettings): FleetPlan {
  validateEvacuation(snapshot, req, s);
  const fleet = new Fleet(snapshot);
  const left: LeftBehind[] = [];
  const drafts: MoveDraft[] = [];
  const movable: PlanVm[] = [];
  for (const vm of snapshot.vms.filter((v) => v.hostId === req.hostId).sort((a, b) => byId(a.id, b.id))) {
    const why = stateReason(vm, req);
    if (why === null) movable.push(vm);
    else left.push({ vmId: vm.id, vmName: vm.name, reason: why, rejected: [] });
  }
  // Largest units first (first-fit decreasing packs better), each to its best target at the time.
  const units = affinityUnits(movable).sort((a, b) => memoryOf(b) - memoryOf(a) || byId(a[0]!.id, b[0]!.id));
  const candidates = fleet.hostIds;
  for (const unit of units) {
    const preferred: MoveKind[] = unit.map((vm) => (vm.state === 'stopped' ? 'cold' : 'live'));
    let found = fleet.place(unit, preferred, candidates, req.hostId);
    let note = '';
    if (!found.best && req.allowCold && preferred.includes('live')) {
      const liveRejected = found.rejected;
      found = fleet.place(unit, unit.map(() => 'cold'), candidates, req.hostId);
      if (found.best) note = ` (cold: no live target; ${summarize(liveRejected)})`;
      else {
        const cold = new Map(found.rejected.map((r) => [r.hostId, r.reasons]));
        found = { rejected: liveRejected.map((r) => ({ hostId: r.hostId, reasons: [...r.reasons, ...(cold.get(r.hostId) ?? []).map((x) => `cold: ${x}`)] })) };
      }
    }
    const best = found.best;
    if (!best) {
      const tried = preferred.includes('live') ? (req.allowCold ? 'no host takes it live or cold' : 'no host takes it live (allowCold not set)') : 'no host takes it cold';
      const group = unit.length > 1 ? `affinity group ${unit[0]!.affinityTag} (${unit.map((v) => v.id).join(', ')}) must move together: ` : '';
      for (const vm of unit) left.push({ vmId: vm.id, vmName: vm.name, reason: `${group}${tried}; ${summarize(found.rejected)}`, rejected: found.rejected });
      continue;
    }
    for (const leg of best.legs) {
      fleet.apply(leg);
      drafts.push({ ...leg, reason: `evacuating ${req.hostId}${note}` });
    }
  }
  const timed = timeMoves(drafts, snapshot, s, req.maxParallel);
  left.sort((a, b) => byId(a.vmId, b.vmId));
  return {
    kind: 'evacuation',
    hostId: req.hostId,
    moves: timed.moves,
    left,
    makespanMs: timed.makespanMs,
    lowerBoundMs: timed.lowerBoundMs,
    maxParallel: req.maxParallel,
    snapshotDigest: snapshotDigest(snapshot, { moves: timed.moves, hostId: req.hostId }),
  };
}

const CATEGORY = /(state|maintenance|cpu features|network|cpu|memory|disk|anti-affinity|affinity):|(source host)/;

/** The refusals in one line: how many hosts refused first for what, most common first. */
export function summarize(rejected: Array<{ hostId: string; reasons: string[] }>): string {
  if (rejected.length === 0) return 'no other host in the snapshot';
  const counts = new Map<string, number>();
  for (const r of rejected) {
    const m = CATEGORY.exec(r.reasons[0] ?? '');
    const head = m?.[1] ?? m?.[2] ?? 'refused';
    counts.set(head, (counts.get(head) ?? 0) + 1);
  }
  const parts = [...counts].sort((a, b) => b[1] - a[1] || byId(a[0], b[0])).map(([k, n]) => `${k} (${n} host${n === 1 ? '' : 's'})`);
  return `refused for ${parts.join(', ')}`;
}
