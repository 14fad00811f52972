// EvacuateHost (ARCHITECTURE.md section 3): API-triggered maintenance. Enter maintenance (no new
// placements, no incoming migrations), snapshot the inventory, plan a target for every VM
// (domain/planner.ts), run the moves as child LiveMigrate workflows with bounded parallelism, and
// report EVERY VM: where it went and how long it took, or why it stayed. Pause, resume and cancel
// by signal; a progress query; the host stays in maintenance (leaving it is its own call).
//
// dryRun: plan and store the plan, touch nothing. planId without dryRun: execute exactly that
// stored plan after re-checking it against the inventory of now; a stale plan is refused before
// anything changes (not even maintenance), never half applied.
import { CancellationScope, continueAsNew, isCancellation, upsertSearchAttributes } from '@temporalio/workflow';
import type { FleetPlan } from '../domain/plan-types.js';
import { planEvacuation } from '../domain/planner.js';
import { describeFailure } from '../domain/failures.js';
import { SA, type EvacuateInput, type FleetProgress, type VmMoveReport } from './definitions.js';
import { workflowContext } from './context.js';
import { activitySummary } from '../domain/summaries.js';
import { approveStoredPlan, assertParallel, fleetActivities, installFleetHandlers, newFleetProgress, predictionSettings, publishFleet, recount, runMoves, takeSnapshot, updateEta, type MoveControl, type QueuedMove } from './fleet-moves.js';

export const DEFAULT_MAX_PARALLEL = 3;

export async function evacuateHost(input: EvacuateInput): Promise<FleetProgress> {
  const phase = `evacuate ${input.hostId}`;
  const { info, ctl, ctlComp } = workflowContext((where, type) => activitySummary(phase, where, type));
  const fleet = fleetActivities(phase);
  const operationId = input.carry?.progress.operationId ?? info.runId;
  const maxParallel = input.maxParallel ?? DEFAULT_MAX_PARALLEL;
  assertParallel(maxParallel);
  const control: MoveControl = { paused: false };
  const progress: FleetProgress =
    input.carry?.progress ?? newFleetProgress({ operationId, kind: 'evacuation', subject: input.hostId, planId: input.planId, dryRun: input.dryRun, maxParallel });
  installFleetHandlers(progress, control);

  upsertSearchAttributes([
    { key: SA.HostId, value: input.hostId },
    { key: SA.SourceHost, value: input.hostId },
    { key: SA.MigrationKind, value: 'evacuation' },
  ]);
  if (!input.carry) {
    await ctl.beginOperation({
      id: operationId,
      workflowId: info.workflowId,
      runId: info.runId,
      kind: 'evacuation',
      subkind: input.dryRun ? 'dry-run' : undefined,
      sourceHostId: input.hostId,
      details: { request: requestOf(input), ...(input.principal ? { principal: input.principal } : {}) },
      ...(input.principal ? { principal: input.principal } : {}),
    });
  }

  const prediction = await predictionSettings(input.policy, phase);
  const snapshot = () => takeSnapshot([input.hostId], phase);
  const request = { hostId: input.hostId, maxParallel, allowCold: Boolean(input.allowCold), includeStopped: Boolean(input.includeStopped) };

  const audit = (details: Record<string, unknown> = {}) =>
    ctl.updateOperation({ id: operationId, stage: progress.state, details: { counts: progress.counts, maxInFlightSeen: progress.maxInFlightSeen, etaMs: progress.etaMs, ...details } });

  try {
    let queue: QueuedMove[];
    let plan: FleetPlan | undefined;
    if (input.carry) {
      queue = input.carry.queue;
    } else {
      const snap = await snapshot();
      if (input.planId && !input.dryRun) {
        plan = await approveStoredPlan({
          fleet,
          planId: input.planId,
          snap,
          progress,
          workflowId: info.workflowId,
          mismatch: (p) => (p.kind !== 'evacuation' || p.subject !== input.hostId ? `plan ${input.planId} is a ${p.kind} plan for ${p.subject}, not an evacuation of ${input.hostId}` : undefined),
        });
      } else {
        plan = planEvacuation(snap, request, prediction);
      }
      const made = plan;
      progress.vms = reportOf(made);
      progress.predictedMakespanMs = made.makespanMs;
      progress.lowerBoundMs = made.lowerBoundMs;
      queue = made.moves.map((m) => ({ vmId: m.vmId, to: m.to, kind: m.kind, predictedMs: m.predictedMs }));
      recount(progress);
      publishFleet(progress);
      if (input.dryRun) {
        if (input.planId) await fleet.storePlan({ id: input.planId, kind: 'evacuation', subject: input.hostId, request, plan: made });
        progress.state = 'planned';
        progress.endedAtMs = Date.now();
        publishFleet(progress);
        await ctl.finishOperation({ id: operationId, state: 'completed', details: { plan } });
        return progress;
      }
      // ---- enter maintenance: from here on nothing new lands on the host
      await fleet.setHostMaintenance({ hostId: input.hostId, enabled: true, key: operationId, workflowId: info.workflowId, reason: `evacuation ${info.workflowId}`, principal: input.principal });
      await audit({ plan, prediction });
    }

    progress.state = control.paused ? 'paused' : control.cancel ? 'cancelling' : 'running';
    publishFleet(progress);
    const startedPlanAt = progress.vms.find((v) => v.startedAtMs !== undefined)?.startedAtMs ?? Date.now();
    const outcome = await runMoves({
      progress,
      queue,
      control,
      policy: input.policy,
      principal: input.principal,
      retarget: async (vm: VmMoveReport) => {
        // one retry elsewhere: a fresh snapshot, the failed targets treated as unavailable
        const snap = await snapshot();
        const hosts = snap.hosts.map((h) => (vm.failedTargets.includes(h.id) ? { ...h, maintenance: true } : h));
        const again = planEvacuation({ ...snap, hosts, vms: snap.vms.filter((v) => v.id === vm.vmId) }, { ...request, maxParallel: 1 }, prediction);
        const m = again.moves[0];
        return m ? { vmId: m.vmId, to: m.to, kind: m.kind, predictedMs: m.predictedMs } : { reason: again.left[0]?.reason ?? 'no target' };
      },
      onChange: async () => {
        updateEta(progress, plan, startedPlanAt);
        await audit();
      },
    });
    if (outcome === 'continue-as-new') {
      const left = progress.vms.filter((v) => v.state === 'waiting').map((v) => v.vmId);
      return await continueAsNew<typeof evacuateHost>({ ...input, carry: { progress, queue: queue.filter((q) => left.includes(q.vmId)) } });
    }
    // the report reads where each VM really is now (inventory), not what the children said
    const homes = await fleet.vmHomes({ vmIds: progress.vms.map((v) => v.vmId) });
    for (const v of progress.vms) {
      const home = homes[v.vmId];
      if (v.state === 'moved' && home && home.hostId === v.from) {
        v.state = 'failed';
        v.reason = `the migration reported success but inventory still places the VM on ${v.from}`;
      }
    }
    recount(progress);
    progress.state = control.cancel ? 'cancelled' : 'completed';
    progress.endedAtMs = Date.now();
    publishFleet(progress);
    const stayed = progress.vms.filter((v) => v.state !== 'moved');
    await ctl.finishOperation({
      id: operationId,
      state: control.cancel ? 'cancelled' : stayed.length > 0 ? 'failed' : 'completed',
      error: stayed.length > 0 ? `${stayed.length} of ${progress.vms.length} VM(s) stayed on ${input.hostId}: ${stayed.map((v) => `${v.vmName} (${v.reason ?? v.state})`).join('; ')}` : undefined,
      details: { report: progress.vms, counts: progress.counts, maxInFlightSeen: progress.maxInFlightSeen },
    });
    return progress;
  } catch (err) {
    if (progress.state !== 'refused') progress.state = isCancellation(err) ? 'cancelled' : 'failed';
    progress.error ??= describeFailure(err);
    progress.endedAtMs = Date.now();
    publishFleet(progress);
    await CancellationScope.nonCancellable(() =>
      ctlComp.finishOperation({ id: operationId, state: isCancellation(err) ? 'cancelled' : 'failed', error: progress.error, details: { report: progress.vms } }),
    );
    throw err;
  }
}

function requestOf(input: EvacuateInput) {
  return { maxParallel: input.maxParallel, allowCold: input.allowCold, includeStopped: input.includeStopped, dryRun: input.dryRun, planId: input.planId, policy: input.policy };
}

/** Every VM of the plan, moved or not, as one report row. */
export function reportOf(plan: FleetPlan): VmMoveReport[] {
  return [
    ...plan.moves.map((m) => ({ vmId: m.vmId, vmName: m.vmName, from: m.from, to: m.to, kind: m.kind, state: 'waiting' as const, attempts: 0, failedTargets: [], predictedMs: m.predictedMs, reason: m.reason })),
    ...plan.left.map((l) => ({ vmId: l.vmId, vmName: l.vmName, from: plan.hostId ?? '', state: 'left' as const, attempts: 0, failedTargets: [], reason: l.reason })),
  ];
}
