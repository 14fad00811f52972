// Reconcile (ARCHITECTURE.md section 3): scheduled monitoring. Ask every host that is up what its
// hypervisor runs, compare with inventory in a control activity, record drift, refresh
// utilization. It NEVER deletes, starts or stops a VM: an operator resolves drift through the API
// (adopt, forget, fix-state). A host whose agent does not pick up its report task within
// agentTimeoutMs is reported as "did not answer", and its VMs are not judged (never "missing").
import { ActivityFailure, ApplicationFailure, TimeoutFailure, defineQuery, proxyActivities, setHandler, type ActivityOptions } from '@temporalio/workflow';
import type { DriftActivities } from '../activities/drift.js';
import { emptyCounts, type HostReport, type ReconcileInput, type ReconcileResult } from '../domain/drift.js';
import { describeFailure } from '../domain/failures.js';
import { hostQueue, prefixOfControlQueue } from './definitions.js';
import { summarized, workflowContext } from './context.js';
import { activitySummary } from '../domain/summaries.js';
import { dbProfile } from './profiles.js';

export const reconcileProgressQuery = defineQuery<ReconcileResult>('progress');

/** An agent that is up picks up a task in milliseconds; 10 s without a pick-up means nobody polls. */
export const DEFAULT_AGENT_TIMEOUT_MS = 10_000;

/**
 * The report call: schedule-to-start bounds how long we wait for an agent to exist (such a
 * timeout is never retried by Temporal: the next reconcile asks again); listing VMs is quick, so
 * 30 s start-to-close and two attempts cover a transient hypervisor error without holding the
 * whole scan hostage to one slow host.
 */
function reportProfile(agentTimeoutMs: number): ActivityOptions {
  return {
    scheduleToStartTimeout: agentTimeoutMs,
    startToCloseTimeout: '30 seconds',
    retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumAttempts: 2 },
  };
}

export async function reconcile(input: ReconcileInput = {}): Promise<ReconcileResult> {
  const { info, ctl, onHost } = workflowContext((where, type) => activitySummary('reconcile', where, type));
  const drift = summarized(proxyActivities<DriftActivities>(dbProfile), (type) => activitySummary('reconcile', 'control', type));
  const operationId = info.runId;
  const agentTimeoutMs = input.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS;
  let progress: ReconcileResult = {
    operationId,
    state: 'running',
    hostsAsked: [],
    hostsAnswered: [],
    hostsUnanswered: [],
    vmsSeen: 0,
    skippedVmIds: [],
    counts: emptyCounts(),
    openDriftIds: [],
    newDriftIds: [],
    reopenedDriftIds: [],
    goneDriftIds: [],
    utilization: [],
  };
  setHandler(reconcileProgressQuery, () => progress);
  await ctl.beginOperation({ id: operationId, workflowId: info.workflowId, runId: info.runId, kind: 'reconcile', details: input.principal ? { principal: input.principal } : {}, ...(input.principal ? { principal: input.principal } : {}) });
  try {
    const hosts = await drift.reconcileHosts();
    progress.hostsAsked = hosts;
    const prefix = prefixOfControlQueue(info.taskQueue);
    const answers = await Promise.all(
      hosts.map((hostId) =>
        onHost(hostId, reportProfile(agentTimeoutMs))
          .reportVms()
          .then(
            (r): { report: HostReport } => ({ report: { hostId, vms: r.vms } }),
            (err: unknown) => ({ unanswered: { hostId, message: didNotAnswer(hostId, hostQueue(hostId, prefix), agentTimeoutMs, err) } }),
          ),
      ),
    );
    const reports = answers.flatMap((a) => ('report' in a ? [a.report] : []));
    const unanswered = answers.flatMap((a) => ('unanswered' in a ? [a.unanswered] : []));
    progress.hostsAnswered = reports.map((r) => r.hostId);
    progress.hostsUnanswered = unanswered;
    progress = await drift.recordDrift({ operationId, hostsAsked: hosts, reports, unanswered });
    progress.state = 'completed';
    await ctl.finishOperation({ id: operationId, state: 'completed', details: { result: progress } });
    return progress;
  } catch (err) {
    progress.state = 'failed';
    progress.error = describeFailure(err);
    await ctl.finishOperation({ id: operationId, state: 'failed', error: progress.error });
    throw ApplicationFailure.create({ type: 'ReconcileFailed', message: `reconcile failed: ${progress.error}`, nonRetryable: true, cause: err as Error });
  }
}

function didNotAnswer(hostId: string, queue: string, timeoutMs: number, err: unknown): string {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (cause instanceof TimeoutFailure) return `host ${hostId} did not answer: no agent picked up the report within ${timeoutMs} ms (task queue ${queue})`;
  return `host ${hostId} did not answer: ${describeFailure(err)}`;
}
