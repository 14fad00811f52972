// Fleet operations: host evacuations (dry run, execute, steer), stored plans and their approval.
// A dry run is a short workflow that only plans (it reads host agents' link speeds, which the
// API cannot) and stores the plan; the API waits for its answer. Everything else starts or
// signals the EvacuateHost workflow under its business key `evacuate-<hostId>`, so a second
// evacuation of the same host while one runs is a 409.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { Host, Operation, Plan } from '../../db/entities.js';
import {
  cancelFleetSignal,
  fleetIds,
  fleetProgressQuery,
  pauseFleetSignal,
  resumeFleetSignal,
  SA,
  workflowIds,
  type EvacuateInput,
  type FleetProgress,
} from '../../workflows/definitions.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { conflict, invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page, pageQuery } from '../pagination.js';
import { findOperation } from '../queries.js';
import { POLICY_NAMES } from '../../domain/policies.js';
import { AnyList, AnyObject, ErrorSchema, idParams } from '../schemas/index.js';
import { steered } from '../steering.js';
import { startWorkflow, webUiUrl, withTimeout } from '../temporal.js';
import { evacuateSummary, inputsTable, rebalanceSummary } from '../../domain/summaries.js';

/** a dry run plans in well under a second; more means no control worker is polling */
const PLAN_TIMEOUT_MS = 30_000;
const QUERY_TIMEOUT_MS = 5_000;
/** an approval answers once the workflow has re-checked the plan (or refused it) */
const APPROVAL_CHECK_MS = 15_000;

export const EvacuateBody = z
  .strictObject({
    dryRun: z.boolean().optional(),
    maxParallel: z.number().int().min(1).max(100).optional(),
    allowCold: z.boolean().optional(),
    includeStopped: z.boolean().optional(),
    policy: z.enum(POLICY_NAMES as [string, ...string[]]).optional(),
  })
  .nullish();

const FleetCancelBody = z.strictObject({ reason: z.string().max(512).optional(), abortRunning: z.boolean().optional() }).nullish();
const EvacuationListQuery = z.object({ ...pageQuery, hostId: z.string().min(1).max(128).optional() });

export function fleetRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema };
  const wid = (id: string) => `${ctx.prefix}${id}`;

  r.post(
    '/v1/hosts/:id/evacuate',
    {
      config: { idempotent: true },
      schema: {
        tags: ['fleet'],
        summary: 'Evacuate a host for maintenance (dryRun: the plan with predicted durations, stored for approval)',
        params: idParams,
        body: EvacuateBody,
        response: { 200: AnyObject, 202: AnyObject, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      const host = await ctx.db.em().findOne(Host, { id: req.params.id });
      if (!host) throw notFound('host', req.params.id);
      const input: EvacuateInput = { hostId: host.id, maxParallel: b.maxParallel, allowCold: b.allowCold, includeStopped: b.includeStopped, policy: b.policy, principal: principalOf(req) };
      if (b.dryRun) {
        const planId = `plan-${randomBytes(6).toString('hex')}`;
        const progress = await runPlan(ctx, fleetIds.plan(planId), 'evacuateHost', { ...input, dryRun: true, planId });
        return reply.code(200).send(planAnswer(planId, progress));
      }
      const started = await startWorkflow(ctx.t, {
        workflowType: 'evacuateHost',
        workflowId: wid(workflowIds.evacuate(host.id)),
        args: [input],
        staticSummary: evacuateSummary(input),
        staticDetails: inputsTable('evacuation inputs', { ...input }),
        searchAttributes: [{ key: SA.HostId, value: host.id }],
      });
      return reply.code(202).send({ evacuationId: started.workflowId, ...started });
    },
  );

  r.get('/v1/evacuations', { schema: { tags: ['fleet'], summary: 'Evacuations, newest first', querystring: EvacuationListQuery, response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const limit = req.query.limit ?? DEFAULT_LIMIT;
    const where: Record<string, unknown> = { kind: 'evacuation', ...afterKey('startedAt', decodeCursor(req.query.cursor, true), true) };
    if (req.query.hostId) where.sourceHostId = req.query.hostId;
    const rows = await ctx.db.em().find(Operation, where, { orderBy: { startedAt: 'desc', id: 'desc' }, limit: limit + 1 });
    const p = page(rows, limit, (o) => o.startedAt);
    return { items: p.rows.map((o) => fleetDto(o, null)), nextCursor: p.nextCursor };
  });

  r.get('/v1/evacuations/:id', { schema: { tags: ['fleet'], summary: 'An evacuation with its per-VM report (live while it runs)', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const { op, workflowId } = await locate(ctx, req.params.id, 'evacuation');
    return fleetDto(op, await liveProgress(ctx, workflowId, op));
  });

  for (const action of ['pause', 'resume', 'cancel'] as const) {
    r.post(
      `/v1/evacuations/:id/${action}`,
      {
        schema: {
          tags: ['fleet'],
          summary: action === 'pause' ? 'No new moves start; running ones finish' : action === 'resume' ? 'Start moves again' : 'No new moves; abortRunning also rolls back moves before their commitment',
          params: idParams,
          ...(action === 'cancel' ? { body: FleetCancelBody } : {}),
          response: { 202: AnyObject, ...errors },
        },
      },
      async (req, reply) => {
        const { op, workflowId } = await locate(ctx, req.params.id, 'evacuation');
        const handle = ctx.temporal.workflow.getHandle(workflowId, op?.runId ?? undefined);
        const status = await handle.describe().then(
          (d) => d.status.name,
          (e: unknown) => {
            if (e instanceof WorkflowNotFoundError) throw notFound('evacuation', req.params.id);
            throw e;
          },
        );
        if (status !== 'RUNNING') throw conflict(`evacuation ${workflowId} is not running (${status.toLowerCase()})`, { workflowId, status: status.toLowerCase() });
        if (action === 'pause') await handle.signal(pauseFleetSignal);
        else if (action === 'resume') await handle.signal(resumeFleetSignal);
        else {
          const body = (req.body ?? {}) as { reason?: string; abortRunning?: boolean };
          await handle.signal(cancelFleetSignal, { reason: body.reason, abortRunning: body.abortRunning });
        }
        await steered(ctx, op, req, action);
        return reply.code(202).send({ evacuationId: workflowId, action, webUiUrl: webUiUrl(ctx.t, workflowId) });
      },
    );
  }

  r.get('/v1/plans', { schema: { tags: ['fleet'], summary: 'Stored dry-run plans, newest first', querystring: z.object(pageQuery), response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const limit = req.query.limit ?? DEFAULT_LIMIT;
    const rows = await ctx.db.em().find(Plan, afterKey('createdAt', decodeCursor(req.query.cursor, true), true), { orderBy: { createdAt: 'desc', id: 'desc' }, limit: limit + 1 });
    const p = page(rows, limit, (x) => x.createdAt);
    return { items: p.rows.map(planDto), nextCursor: p.nextCursor };
  });

  r.get('/v1/plans/:id', { schema: { tags: ['fleet'], summary: 'A stored plan', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const p = await ctx.db.em().findOne(Plan, { id: req.params.id });
    if (!p) throw notFound('plan', req.params.id);
    return planDto(p);
  });

  r.post(
    '/v1/plans/:id/approve',
    { config: { idempotent: true }, schema: { tags: ['fleet'], summary: 'Execute exactly a stored plan, after re-checking it against the inventory (stale: 409, nothing done)', params: idParams, response: { 202: AnyObject, ...errors } } },
    async (req, reply) => {
      const plan = await ctx.db.em().findOne(Plan, { id: req.params.id });
      if (!plan) throw notFound('plan', req.params.id);
      if (plan.state !== 'proposed') throw conflict(`plan ${plan.id} was already ${plan.state}${plan.refusal ? `: ${plan.refusal}` : ''}`, { planId: plan.id, state: plan.state });
      const request = plan.request as Record<string, unknown>;
      const [workflowType, workflowId, args] =
        plan.kind === 'evacuation'
          ? ['evacuateHost', wid(workflowIds.evacuate(plan.subject)), { ...request, hostId: plan.subject, planId: plan.id, dryRun: false, principal: principalOf(req) }]
          : ['rebalance', wid(fleetIds.rebalance(plan.subject)), { ...request, cluster: plan.subject, planId: plan.id, dryRun: false, principal: principalOf(req) }];
      const a = request as { maxParallel?: number; level?: number; maxMoves?: number };
      const staticSummary = plan.kind === 'evacuation' ? evacuateSummary({ ...a, hostId: plan.subject, planId: plan.id }) : rebalanceSummary({ ...a, cluster: plan.subject, planId: plan.id });
      const staticDetails = inputsTable(`approved ${plan.kind} plan`, { ...args });
      const started = await startWorkflow(ctx.t, { workflowType, workflowId, args: [args], staticSummary, staticDetails });
      // answer once the workflow has re-checked the plan: refused plans are a 409 with the reason
      const handle = ctx.temporal.workflow.getHandle(workflowId, started.runId);
      const deadline = Date.now() + APPROVAL_CHECK_MS;
      for (;;) {
        const state = await handle.query(fleetProgressQuery).then(
          (p) => p.state,
          () => undefined,
        );
        if (state && state !== 'validating') break;
        const desc = await handle.describe();
        if (desc.status.name !== 'RUNNING') {
          const why = await handle.result().then(
            () => undefined,
            (e: unknown) => (e instanceof WorkflowFailedError ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e)),
          );
          if (why) throw conflict(why, { planId: plan.id, workflowId });
          break;
        }
        if (Date.now() > deadline) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      return reply.code(202).send({ planId: plan.id, kind: plan.kind, ...started });
    },
  );
}

/** Runs a planning-only workflow and returns its progress (the plan). Input errors become 4xx. */
export async function runPlan(ctx: ApiContext, workflowId: string, workflowType: string, input: unknown): Promise<FleetProgress> {
  try {
    return await withTimeout(PLAN_TIMEOUT_MS, 'the planning workflow', ctx.temporal.workflow.execute<(i: unknown) => Promise<FleetProgress>>(workflowType, { workflowId: `${ctx.prefix}${workflowId}`, taskQueue: ctx.t.taskQueue, args: [input] }));
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      const cause = e.cause as (Error & { type?: string }) | undefined;
      const message = cause?.message ?? e.message;
      if (cause?.type === 'NotFound') throw notFound('resource', message);
      throw invalid('request', message);
    }
    throw e;
  }
}

export function planAnswer(planId: string, p: FleetProgress) {
  return {
    planId,
    subject: p.subject,
    kind: p.kind,
    makespanMs: p.predictedMakespanMs ?? 0,
    lowerBoundMs: p.lowerBoundMs ?? 0,
    imbalanceBefore: p.imbalanceBefore,
    imbalanceAfter: p.imbalanceAfter,
    moves: p.vms.filter((v) => v.state === 'waiting').map((v) => ({ vmId: v.vmId, vmName: v.vmName, from: v.from, to: v.to, kind: v.kind, predictedMs: v.predictedMs, reason: v.reason })),
    left: p.vms.filter((v) => v.state === 'left').map((v) => ({ vmId: v.vmId, vmName: v.vmName, from: v.from, reason: v.reason })),
    approveUrl: `/v1/plans/${planId}/approve`,
  };
}

function planDto(p: Plan) {
  return {
    id: p.id,
    kind: p.kind,
    subject: p.subject,
    state: p.state,
    request: p.request,
    plan: p.plan,
    workflowId: p.workflowId ?? null,
    refusal: p.refusal ?? null,
    createdAt: new Date(p.createdAt).toISOString(),
    decidedAt: p.decidedAt ? new Date(p.decidedAt).toISOString() : null,
  };
}

export async function locate(ctx: ApiContext, ref: string, kind: 'evacuation' | 'rebalance'): Promise<{ op: Operation | null; workflowId: string }> {
  const op = await findOperation(ctx.db.em(), ref, kind);
  if (op) return { op, workflowId: op.workflowId };
  const prefix = kind === 'evacuation' ? workflowIds.evacuate('') : fleetIds.rebalance('');
  if (ref.startsWith(`${ctx.prefix}${prefix}`)) return { op: null, workflowId: ref };
  throw notFound(kind, ref);
}

export async function liveProgress(ctx: ApiContext, workflowId: string, op: Operation | null): Promise<FleetProgress | null> {
  if (op && op.state !== 'running') return null;
  const handle = ctx.temporal.workflow.getHandle(workflowId, op?.runId ?? undefined);
  return withTimeout(QUERY_TIMEOUT_MS, 'the fleet workflow', handle.query(fleetProgressQuery)).catch(() => null);
}

/** The operation record, overlaid with the running workflow's own progress when it answers. */
export function fleetDto(op: Operation | null, live: FleetProgress | null) {
  const d = (op?.details ?? {}) as Record<string, unknown>;
  return {
    id: op?.id ?? live?.operationId ?? null,
    workflowId: op?.workflowId ?? null,
    kind: op?.kind ?? live?.kind,
    subject: op?.sourceHostId ?? live?.subject ?? null,
    state: live?.state ?? op?.state ?? 'running',
    counts: live?.counts ?? d.counts ?? null,
    vms: live?.vms ?? d.report ?? [],
    maxInFlightSeen: live?.maxInFlightSeen ?? d.maxInFlightSeen ?? null,
    predictedMakespanMs: live?.predictedMakespanMs ?? (d.plan as { makespanMs?: number } | undefined)?.makespanMs ?? null,
    etaMs: live?.etaMs ?? d.etaMs ?? null,
    startedAt: op?.startedAt ? new Date(op.startedAt).toISOString() : null,
    endedAt: op?.endedAt ? new Date(op.endedAt).toISOString() : null,
    error: op?.error ?? live?.error ?? null,
  };
}
