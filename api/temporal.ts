// The API's only ways into Temporal: start a workflow (business-key id, so a duplicate request
// is refused with 409 instead of running twice), query/update/signal a running one, and the
// Web UI link every 202 answer carries.
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { SearchAttributePair } from '@temporalio/common';
import { SA } from '../workflows/definitions.js';
import { conflict } from './errors.js';

export interface TemporalDeps {
  temporal: Client;
  namespace: string;
  webUiBaseUrl: string;
  taskQueue: string;
  /** finds the audit record of a running workflow (for the 409's operation id) */
  runningOperationId: (workflowId: string) => Promise<string | undefined>;
}

export interface Started {
  workflowId: string;
  runId: string;
  /** the audit record's id: the run id (the workflow records its Operation under it) */
  operationId: string;
  webUiUrl: string;
}

export function webUiUrl(d: Pick<TemporalDeps, 'webUiBaseUrl' | 'namespace'>, workflowId: string, runId?: string): string {
  const base = d.webUiBaseUrl.replace(/\/+$/, '');
  const path = `${base}/namespaces/${encodeURIComponent(d.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${path}/${encodeURIComponent(runId)}` : path;
}

/**
 * Starts `workflowType` with id `workflowId`. A workflow with that id still running becomes a 409
 * naming it (and its operation record when one exists): IDs are business keys, so this is how
 * "one migration per VM" and "one provision per name" hold across API replicas.
 */
export async function startWorkflow(
  d: TemporalDeps,
  opts: {
    workflowType: string;
    workflowId: string;
    args: unknown[];
    searchAttributes?: SearchAttributePair[];
    /** the workflow memo; `principal` is added from the input's principal (who started it) */
    memo?: Record<string, unknown>;
    /** the Web UI's one line for the workflow (domain/summaries.ts) */
    staticSummary?: string;
    /** the Web UI's details: the inputs as a markdown table (domain/summaries.ts inputsTable) */
    staticDetails?: string;
  },
): Promise<Started> {
  // the summary is a search attribute too, so the workflow list can show it as a column
  const searchAttributes = [...(opts.searchAttributes ?? []), ...(opts.staticSummary ? [{ key: SA.OperationSummary, value: opts.staticSummary }] : [])];
  try {
    const handle = await d.temporal.workflow.start(opts.workflowType, {
      workflowId: opts.workflowId,
      taskQueue: d.taskQueue,
      args: opts.args,
      ...memoOf(opts),
      ...(searchAttributes.length ? { typedSearchAttributes: searchAttributes } : {}),
      ...(opts.staticSummary ? { staticSummary: opts.staticSummary } : {}),
      ...(opts.staticDetails ? { staticDetails: opts.staticDetails } : {}),
    });
    const runId = handle.firstExecutionRunId;
    // The link names the workflow (the UI opens its latest run, which this one is).
    return { workflowId: opts.workflowId, runId, operationId: runId, webUiUrl: webUiUrl(d, opts.workflowId) };
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) throw await alreadyRunning(d, opts.workflowId);
    throw e;
  }
}

/** `{ memo }` naming the principal of the input (args[0].principal) next to any memo given; `{}` when empty. */
export function memoOf(opts: { args: unknown[]; memo?: Record<string, unknown> }): { memo?: Record<string, unknown> } {
  const principal = (opts.args[0] as { principal?: unknown } | undefined)?.principal;
  const memo = { ...opts.memo, ...(typeof principal === 'string' ? { principal } : {}) };
  return Object.keys(memo).length ? { memo } : {};
}

export async function alreadyRunning(d: TemporalDeps, workflowId: string, what = 'operation') {
  const operationId = (await d.runningOperationId(workflowId).catch(() => undefined)) ?? workflowId;
  return conflict(`${what} ${workflowId} is already running`, { workflowId, operationId, webUiUrl: webUiUrl(d, workflowId) });
}

/** Races a Temporal call against a deadline (a query with no worker polling would hang). */
export async function withTimeout<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
