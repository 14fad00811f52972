// Rebalance (ARCHITECTURE.md section 3; like DRS and Watcher): measure normalized host load,
// plan a bounded set of moves whose benefit passes the level's threshold (domain/rebalance.ts:
// cool-down against ping-pong, never a migrating VM, never to or from maintenance, affinity
// kept), then dry-run (store the plan) or execute the moves as child migrations with the same
// executor and parallelism rules as an evacuation. Business key `rebalance-<cluster>`; a
// Temporal Schedule (overlap policy skip) starts it periodically.
import { CancellationScope, isCancellation, upsertSearchAttributes } from '@temporalio/workflow';
import type { FleetPlan, RebalanceRequest } from '../domain/plan-types.js';
import { imbalance, planRebalance } from '../domain/planner.js';
import { describeFailure } from '../domain/failures.js';
import { SA, type FleetProgress, type RebalanceInput } from './definitions.js';
import { workflowContext } from './context.js';
import { activitySummary } from '../domain/summaries.js';
import { approveStoredPlan, assertParallel, fleetActivities, installFleetHandlers, newFleetProgress, predictionSettings, publishFleet, recount, runMoves, takeSnapshot, updateEta, type MoveControl } from './fleet-moves.js';

export const REBALANCE_DEFAULTS = { level: 3, maxMoves: 5, maxParallel: 3, cooldownMs: 15 * 60_000 } as const;

export async function rebalance(input: RebalanceInput): Promise<FleetProgress> {
  const phase = `rebalance ${input.cluster}`;
  const { info, ctl, ctlComp } = workflowContext((where, type) => activitySummary(phase, where, type));
  const fleet = fleetActivities(phase);
  const operationId = info.runId;
  const req: RebalanceRequest = {
    level: input.level ?? REBALANCE_DEFAULTS.level,
    maxMoves: input.maxMoves ?? REBALANCE_DEFAULTS.maxMoves,
    maxParallel: input.maxParallel ?? REBALANCE_DEFAULTS.maxParallel,
    cooldownMs: input.cooldownMs ?? REBALANCE_DEFAULTS.cooldownMs,
  };
  assertParallel(req.maxParallel);
  const control: MoveControl = { paused: false };
  const progress = newFleetProgress({ operationId, kind: 'rebalance', subject: input.cluster, planId: input.planId, dryRun: input.dryRun, maxParallel: req.maxParallel });
  installFleetHandlers(progress, control);
  upsertSearchAttributes([{ key: SA.MigrationKind, value: 'rebalance' }]);
  await ctl.beginOperation({
    id: operationId,
    workflowId: info.workflowId,
    runId: info.runId,
    kind: 'rebalance',
    subkind: input.dryRun ? 'dry-run' : undefined,
    details: { request: { ...req, dryRun: input.dryRun, planId: input.planId }, ...(input.principal ? { principal: input.principal } : {}) },
    ...(input.principal ? { principal: input.principal } : {}),
  });

  try {
    const prediction = await predictionSettings(input.policy, phase);
    const snap = await takeSnapshot('all', phase);
    let plan: FleetPlan;
    if (input.planId && !input.dryRun) {
      plan = await approveStoredPlan({
        fleet,
        planId: input.planId,
        snap,
        progress,
        workflowId: info.workflowId,
        mismatch: (p) => (p.kind !== 'rebalance' ? `plan ${input.planId} is an ${p.kind} plan, not a rebalance` : undefined),
      });
    } else {
      plan = planRebalance(snap, req, prediction);
    }
    const home = new Map(snap.vms.map((v) => [v.id, v.hostId]));
    progress.vms = [
      ...plan.moves.map((m) => ({ vmId: m.vmId, vmName: m.vmName, from: m.from, to: m.to, kind: m.kind, state: 'waiting' as const, attempts: 0, failedTargets: [], predictedMs: m.predictedMs, reason: m.reason })),
      ...plan.left.map((l) => ({ vmId: l.vmId, vmName: l.vmName, from: home.get(l.vmId) ?? '', state: 'left' as const, attempts: 0, failedTargets: [], reason: l.reason })),
    ];
    progress.predictedMakespanMs = plan.makespanMs;
    progress.lowerBoundMs = plan.lowerBoundMs;
    progress.imbalanceBefore = plan.imbalanceBefore;
    progress.imbalanceAfter = plan.imbalanceAfter;
    recount(progress);
    publishFleet(progress);
    if (input.dryRun) {
      if (input.planId) await fleet.storePlan({ id: input.planId, kind: 'rebalance', subject: input.cluster, request: { ...req, policy: input.policy }, plan });
      progress.state = 'planned';
      progress.endedAtMs = Date.now();
      publishFleet(progress);
      await ctl.finishOperation({ id: operationId, state: 'completed', details: { plan, imbalanceBefore: plan.imbalanceBefore, imbalanceAfter: plan.imbalanceAfter } });
      return progress;
    }
    await ctl.updateOperation({ id: operationId, stage: 'running', details: { plan, prediction, imbalanceBefore: plan.imbalanceBefore } });
    progress.state = 'running';
    publishFleet(progress);
    const startedPlanAt = Date.now();
    await runMoves({
      progress,
      queue: plan.moves.map((m) => ({ vmId: m.vmId, to: m.to, kind: m.kind, predictedMs: m.predictedMs })),
      control,
      policy: input.policy,
      principal: input.principal,
      onChange: async () => {
        updateEta(progress, plan, startedPlanAt);
        await ctl.updateOperation({ id: operationId, stage: progress.state, details: { counts: progress.counts, maxInFlightSeen: progress.maxInFlightSeen } });
      },
    });
    // what the cluster looks like now, measured, not assumed from the plan
    progress.imbalanceAfter = imbalance(await takeSnapshot([], phase));
    progress.state = control.cancel ? 'cancelled' : 'completed';
    progress.endedAtMs = Date.now();
    publishFleet(progress);
    const failed = progress.vms.filter((v) => v.state === 'failed');
    await ctl.finishOperation({
      id: operationId,
      state: control.cancel ? 'cancelled' : failed.length ? 'failed' : 'completed',
      error: failed.length ? `${failed.length} move(s) failed: ${failed.map((v) => `${v.vmName} (${v.reason})`).join('; ')}` : undefined,
      details: { report: progress.vms, counts: progress.counts, imbalanceBefore: progress.imbalanceBefore, imbalanceAfter: progress.imbalanceAfter },
    });
    return progress;
  } catch (err) {
    if (progress.state !== 'refused') progress.state = isCancellation(err) ? 'cancelled' : 'failed';
    progress.error ??= describeFailure(err);
    progress.endedAtMs = Date.now();
    publishFleet(progress);
    await CancellationScope.nonCancellable(() => ctlComp.finishOperation({ id: operationId, state: isCancellation(err) ? 'cancelled' : 'failed', error: progress.error, details: { report: progress.vms } }));
    throw err;
  }
}
