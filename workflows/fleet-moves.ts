// The move executor shared by EvacuateHost and Rebalance: runs a plan's moves as child
// LiveMigrate workflows, strictly in plan order, at most `maxParallel` in flight (each child also
// queues for its hosts' own migration slots), and keeps the per-VM report. Pause stops new starts;
// cancel stops new starts and, with abortRunning, signals the running children to roll back
// (only possible before their commitment: a committed move always finishes).
//
// Child ids are the business key `migrate-<vmId>`: a worker that dies and replays this workflow
// finds its children by id and never starts a second migration of the same VM; an operator's own
// migration of that VM makes the start fail, and the VM is reported, not moved twice.
import {
  ApplicationFailure,
  condition,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  startChild,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { FleetActivities } from '../activities/fleet.js';
import { describeFailure } from '../domain/failures.js';
import type { ClusterSnapshot, FleetPlan, PlanLink, PredictionSettings } from '../domain/plan-types.js';
import { reestimate, revalidatePlan } from '../domain/planner.js';
import { resolvePolicy } from '../domain/policies.js';
import { summarized, workflowContext } from './context.js';
import { fleetDetails } from './lib/current-details.js';
import { activitySummary, inputsTable, liveMigrateSummary } from '../domain/summaries.js';
import { dbProfile, hostQuickProfile } from './profiles.js';
import { SA, cancelFleetSignal, cancelMigrationSignal, fleetProgressQuery, pauseFleetSignal, resumeFleetSignal, workflowIds, type FleetCarry, type FleetProgress, type MigrationResult, type VmMoveReport } from './definitions.js';
import { liveMigrate } from './live-migrate.js';
import { coldChildrenEnabled, startColdChild } from './cold-child.js';

export interface MoveControl {
  paused: boolean;
  cancel?: { reason: string; abortRunning: boolean };
}

export type QueuedMove = FleetCarry['queue'][number];

export interface MoveExecutorOptions {
  progress: FleetProgress;
  queue: QueuedMove[];
  control: MoveControl;
  policy?: string;
  /** the fleet operation's principal: each move's own audit record names it */
  principal?: string;
  /** after a failed attempt: a new target for the VM (one retry), or why there is none */
  retarget?: (vm: VmMoveReport) => Promise<QueuedMove | { reason: string }>;
  /** called after every change of the report (audit record, ETA) */
  onChange: () => Promise<void>;
  /** stop starting moves and return 'continue-as-new' once the history is this long */
  historyLimit?: number;
}

/** Histories stay far below Temporal's 50k-event limit: a move costs ~10 events here. */
export const DEFAULT_HISTORY_LIMIT = 8000;

export function recount(p: FleetProgress): void {
  const c = { moved: 0, inFlight: 0, waiting: 0, failed: 0, left: 0, cancelled: 0 };
  for (const v of p.vms) {
    if (v.state === 'in-flight') c.inFlight++;
    else if (v.state === 'moved') c.moved++;
    else if (v.state === 'waiting') c.waiting++;
    else if (v.state === 'failed') c.failed++;
    else if (v.state === 'left') c.left++;
    else c.cancelled++;
  }
  p.counts = c;
  p.maxInFlightSeen = Math.max(p.maxInFlightSeen, c.inFlight);
}

export async function runMoves(opts: MoveExecutorOptions): Promise<'done' | 'continue-as-new'> {
  const { progress, queue, control } = opts;
  const byVm = new Map(progress.vms.map((v) => [v.vmId, v]));
  const running = new Map<string, Promise<void>>();
  const limit = opts.historyLimit ?? DEFAULT_HISTORY_LIMIT;
  let changed = false;

  const finish = (vm: VmMoveReport, state: VmMoveReport['state'], reason?: string, r?: MigrationResult) => {
    vm.state = state;
    vm.endedAtMs = Date.now();
    if (vm.startedAtMs !== undefined) vm.durationMs = vm.endedAtMs - vm.startedAtMs;
    if (r?.downtimeMs !== undefined) vm.downtimeMs = r.downtimeMs;
    if (reason !== undefined) vm.reason = reason;
    changed = true;
  };

  const start = async (move: QueuedMove): Promise<void> => {
    const vm = byVm.get(move.vmId)!;
    vm.to = move.to;
    vm.kind = move.kind;
    vm.predictedMs = move.predictedMs;
    vm.attempts++;
    vm.state = 'in-flight';
    vm.startedAtMs = Date.now();
    vm.endedAtMs = vm.durationMs = undefined;
    vm.migrationId = workflowIds.migrate(move.vmId);
    changed = true;
    if (move.kind === 'cold' && !coldChildrenEnabled()) {
      // before ColdMigrate existed a cold move was reported, never faked (older histories replay this)
      finish(vm, 'left', `needs a cold migration to ${move.to}, which this ferry cannot run yet; the VM stays on ${vm.from}`);
      return;
    }
    let child: ChildWorkflowHandle<typeof liveMigrate>;
    try {
      const args = { vmId: move.vmId, targetHostId: move.to, policy: opts.policy, ...(opts.principal ? { principal: opts.principal } : {}) };
      if (move.kind === 'cold') child = await startColdChild(vm.migrationId, move.vmId, move.to, opts.principal);
      else child = await startChild(liveMigrate, {
        workflowId: vm.migrationId,
        args: [args],
        // the Web UI's line for the child: what moves where, and for which fleet operation; also
        // a search attribute (the workflow list shows those as columns); all in the start command
        staticSummary: childSummary(vm, move, opts.policy, progress),
        typedSearchAttributes: childSearchAttributes(vm, move, opts.policy, progress),
        staticDetails: inputsTable('live migration', { ...args, vmName: vm.vmName, sourceHostId: vm.from, parent: workflowInfo().workflowId, predictedMs: move.predictedMs }),
        // a migration runs to its own end (commit or rollback) even if the evacuation is
        // terminated: stopping it halfway is exactly what must never happen to a guest
        parentClosePolicy: ParentClosePolicy.ABANDON,
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        finish(vm, 'failed', `a migration of this VM is already running (${vm.migrationId}); not moved twice`);
        return;
      }
      throw err;
    }
    let outcome: { state: 'moved' | 'failed' | 'cancelled'; reason?: string; result?: MigrationResult };
    try {
      const result = await child.result();
      outcome = result.state === 'completed' ? { state: 'moved', result } : { state: result.state === 'cancelled' ? 'cancelled' : 'failed', reason: result.error ?? result.state, result };
    } catch (err) {
      const reason = describeFailure(err);
      outcome = { state: control.cancel?.abortRunning && /cancel/i.test(reason) ? 'cancelled' : 'failed', reason };
    }
    if (outcome.state === 'failed' && opts.retarget && vm.attempts < 2 && !control.cancel) {
      vm.failedTargets.push(move.to);
      const next = await opts.retarget(vm);
      if ('to' in next) {
        vm.reason = `attempt ${vm.attempts} to ${move.to} failed: ${outcome.reason}; retrying on ${next.to}`;
        return start(next);
      }
      finish(vm, 'failed', `${outcome.reason}; no other target: ${next.reason}`);
      return;
    }
    if (outcome.state === 'failed') vm.failedTargets.push(move.to);
    finish(vm, outcome.state, outcome.state === 'moved' ? vm.reason : outcome.reason, outcome.result);
  };

  const abortSent = new Set<string>();
  for (;;) {
    if (control.cancel) {
      for (const m of queue.splice(0)) finish(byVm.get(m.vmId)!, 'cancelled', `not started: ${control.cancel.reason}`);
      if (control.cancel.abortRunning) {
        for (const vmId of running.keys()) {
          if (abortSent.has(vmId)) continue;
          abortSent.add(vmId);
          // a committed migration ignores this and finishes; an earlier one rolls back
          await getExternalWorkflowHandle(workflowIds.migrate(vmId)).signal(cancelMigrationSignal, { reason: control.cancel.reason });
        }
      }
    }
    const tooLong = workflowInfo().historyLength > limit || workflowInfo().continueAsNewSuggested;
    while (!control.paused && !control.cancel && !tooLong && queue.length > 0 && running.size < progress.maxParallel) {
      const move = queue.shift()!;
      const p = start(move).finally(() => running.delete(move.vmId));
      running.set(move.vmId, p);
    }
    recount(progress);
    if (changed) {
      changed = false;
      publishFleet(progress);
      await opts.onChange();
    }
    if (running.size === 0 && (queue.length === 0 || control.cancel)) return 'done';
    if (running.size === 0 && tooLong) return 'continue-as-new';
    const before = running.size;
    const pausedBefore = control.paused;
    const cancelBefore = control.cancel;
    await condition(() => running.size < before || control.paused !== pausedBefore || control.cancel !== cancelBefore || changed);
  }
}

/** Refuses a plan input that no executor could honour (defensive: the API validated it). */
export function assertParallel(maxParallel: number): void {
  if (!Number.isInteger(maxParallel) || maxParallel < 1 || maxParallel > 100) {
    throw ApplicationFailure.create({ type: 'InvalidArgument', message: `maxParallel must be an integer 1..100, got ${maxParallel}`, nonRetryable: true, details: [{ field: 'maxParallel' }] });
  }
}

/**
 * Takes the inventory snapshot a plan is made from, with the migration links the host agents of
 * `linkHosts` report (the simulator knows its links; real drivers report none and the default
 * bandwidth applies). Shared by EvacuateHost and Rebalance.
 */
export async function takeSnapshot(linkHosts: string[] | 'all', phase = 'snapshot'): Promise<ClusterSnapshot> {
  const { onHost } = workflowContext((where, type) => activitySummary(phase, where, type));
  const fleet = fleetActivities(phase);
  const bare = await fleet.fleetSnapshot({ takenAtMs: Date.now(), links: [] });
  const ids = linkHosts === 'all' ? bare.hosts.filter((h) => h.state === 'up').map((h) => h.id) : linkHosts;
  const seen = new Set<string>();
  const links: PlanLink[] = [];
  const infos = await Promise.all(ids.map((id) => onHost(id, hostQuickProfile).hostInfo().then((hi) => ({ id, hi }), () => undefined)));
  for (const x of infos) {
    for (const l of x?.hi.links ?? []) {
      const key = [x!.id, l.peerHostId].sort().join('|');
      if (seen.has(key)) continue;
      seen.add(key);
      links.push({ a: x!.id, b: l.peerHostId, bandwidthBytesPerSec: l.bandwidthBytesPerSec });
    }
  }
  return { ...bare, links };
}

/** The prediction settings of the control worker, for a move under `policy`. */
export async function predictionSettings(policy: string | undefined, phase = 'plan'): Promise<PredictionSettings> {
  const s = await fleetActivities(phase).fleetSettings();
  return { downtimeLimitMs: resolvePolicy(policy).initialDowntimeMs, timeScale: s.timeScale, perMoveOverheadMs: s.perMoveOverheadMs, coldCopyBytesPerSec: s.coldCopyBytesPerSec, policy: resolvePolicy(policy) };
}

/** Sets the ETA of `progress` from the moves finished so far (advice: never fails the workflow). */
export function updateEta(progress: FleetProgress, plan: FleetPlan | undefined, startedPlanAt: number): void {
  if (!plan) return;
  const finished = progress.vms.filter((v) => v.state === 'moved' && v.durationMs !== undefined).map((v) => ({ vmId: v.vmId, actualMs: v.durationMs! }));
  const running: Record<string, number> = {};
  for (const v of progress.vms) if (v.state === 'in-flight' && v.startedAtMs !== undefined) running[v.vmId] = v.startedAtMs - startedPlanAt;
  try {
    const est = reestimate(plan, finished, running, Date.now() - startedPlanAt, progress.vms.filter((v) => v.state === 'waiting').map((v) => v.vmId));
    progress.etaMs = startedPlanAt + est.etaMs;
    progress.predictionFactor = est.factor;
  } catch {
    // a report that no longer fits the plan (a move retried elsewhere) keeps the last ETA
  }
}

/** The fleet activities, each call summarized for the Web UI as `<phase>: <activity>`. */
export function fleetActivities(phase: string) {
  return summarized(proxyActivities<FleetActivities>(dbProfile), (type) => activitySummary(phase, 'control', type));
}

/** The Web UI's current details of a fleet operation: counts, ETA, VMs in flight (no command). */
export function publishFleet(progress: FleetProgress): void {
  setCurrentDetails(fleetDetails(progress, Date.now()));
}

/** The progress query and the pause / resume / cancel signals of a fleet operation. */
export function installFleetHandlers(progress: FleetProgress, control: MoveControl): void {
  setHandler(fleetProgressQuery, () => progress);
  setHandler(pauseFleetSignal, () => {
    control.paused = true;
    if (progress.state === 'running') progress.state = 'paused';
    publishFleet(progress);
  });
  setHandler(resumeFleetSignal, () => {
    control.paused = false;
    if (progress.state === 'paused') progress.state = 'running';
    publishFleet(progress);
  });
  setHandler(cancelFleetSignal, ({ reason, abortRunning } = {}) => {
    control.cancel ??= { reason: reason || `${progress.kind} cancelled by operator`, abortRunning: Boolean(abortRunning) };
    if (progress.state === 'running' || progress.state === 'paused') progress.state = 'cancelling';
    publishFleet(progress);
  });
  publishFleet(progress);
}

/** The static summary of a fleet operation's child migration. */
function childSummary(vm: VmMoveReport, move: QueuedMove, policy: string | undefined, p: FleetProgress): string {
  return `${liveMigrateSummary({ vmId: move.vmId, vmName: vm.vmName, sourceHostId: vm.from, targetHostId: move.to, policy })} for ${p.kind} ${p.subject}`;
}

/** The search attributes of a child migration, known at its start (the workflow upserts them again). */
function childSearchAttributes(vm: VmMoveReport, move: QueuedMove, policy: string | undefined, p: FleetProgress) {
  return [
    { key: SA.OperationSummary, value: childSummary(vm, move, policy, p) },
    { key: SA.VmId, value: move.vmId },
    { key: SA.SourceHost, value: vm.from },
    { key: SA.TargetHost, value: move.to },
    { key: SA.MigrationKind, value: 'live' },
  ];
}

/** The empty report a fleet operation starts with. */
export function newFleetProgress(init: { operationId: string; kind: FleetProgress['kind']; subject: string; planId?: string; dryRun?: boolean; maxParallel: number }): FleetProgress {
  return {
    operationId: init.operationId,
    kind: init.kind,
    subject: init.subject,
    state: init.planId && !init.dryRun ? 'validating' : 'planning',
    planId: init.planId,
    dryRun: Boolean(init.dryRun),
    maxParallel: init.maxParallel,
    counts: { moved: 0, inFlight: 0, waiting: 0, failed: 0, left: 0, cancelled: 0 },
    vms: [],
    startedAtMs: Date.now(),
    maxInFlightSeen: 0,
  };
}

/**
 * Approval of a stored plan: exactly that plan, or nothing at all. Refuses a plan of another
 * kind or subject (`mismatch` says why) or one already decided; re-checks it against `snap` and
 * records the refusal (stale) or the approval by `workflowId`.
 */
export async function approveStoredPlan(opts: {
  fleet: ReturnType<typeof fleetActivities>;
  planId: string;
  snap: ClusterSnapshot;
  progress: FleetProgress;
  workflowId: string;
  mismatch: (stored: { kind: string; subject: string }) => string | undefined;
}): Promise<FleetPlan> {
  const { fleet, planId, progress } = opts;
  const stored = await fleet.getPlan({ id: planId });
  const wrong = opts.mismatch(stored);
  if (wrong) throw ApplicationFailure.create({ type: 'InvalidArgument', message: wrong, nonRetryable: true });
  if (stored.state !== 'proposed') throw ApplicationFailure.create({ type: 'Conflict', message: `plan ${planId} was already ${stored.state}`, nonRetryable: true });
  const stale = revalidatePlan(stored.plan, opts.snap);
  if (stale.length > 0) {
    const refusal = `plan ${planId} is stale: ${stale.join('; ')}`;
    await fleet.decidePlan({ id: planId, state: 'refused', refusal });
    progress.state = 'refused';
    progress.error = refusal;
    throw ApplicationFailure.create({ type: 'Refused', message: refusal, nonRetryable: true, details: [{ stale }] });
  }
  await fleet.decidePlan({ id: planId, state: 'approved', workflowId: opts.workflowId });
  return stored.plan;
}
