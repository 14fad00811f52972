// Drift (Reconcile's findings): list and read them, resolve one (adopt an unknown VM, forget a
// missing one, fix a state or host), and start a Reconcile now. Resolving writes inventory only
// (db/repositories/drift.ts) in one transaction with the Drift's resolution and an Operation
// record (kind drift, subkind = action); the API never touches a hypervisor.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { Drift, DRIFT_KINDS, DRIFT_STATES } from '../../db/entities.js';
import { DRIFT_ACTIONS, resolveDrift } from '../../db/repositories/drift.js';
import type { ReconcileInput } from '../../domain/drift.js';
import { DEFAULT_CLUSTER, fleetIds } from '../../workflows/definitions.js';
import type { ApiContext } from '../context.js';
import { notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page, pageQuery } from '../pagination.js';
import { vmDto } from '../queries.js';
import { AnyList, AnyObject, ErrorSchema, idParams } from '../schemas/index.js';
import { startWorkflow } from '../temporal.js';

const DriftListQuery = z.object({
  ...pageQuery,
  state: z.enum(DRIFT_STATES).optional(),
  kind: z.enum(DRIFT_KINDS).optional(),
  vmId: z.string().min(1).max(128).optional(),
  hostId: z.string().min(1).max(128).optional(),
});
const ResolveBody = z.strictObject({ action: z.enum(DRIFT_ACTIONS).describe('adopt (unknown-vm), forget (missing-vm), fix-state (wrong-state, stuck-paused, wrong-host)') });
const ReconcileBody = z
  .strictObject({ agentTimeoutMs: z.number().int().min(1000).max(300_000).optional().describe('how long a host agent may take to pick up its report (default 10000)') })
  .nullish();

const iso = (d: Date | null | undefined) => (d ? new Date(d).toISOString() : null);

export function driftDto(d: Drift) {
  return {
    id: d.id,
    kind: d.kind,
    vmId: d.vmId,
    hostId: d.hostId,
    state: d.state,
    expected: d.expected,
    observed: d.observed,
    operationId: d.operationId ?? null,
    resolution: d.resolution ?? null,
    resolvedBy: d.resolvedBy ?? null,
    detectedAt: iso(d.detectedAt),
    lastSeenAt: iso(d.lastSeenAt),
    resolvedAt: iso(d.resolvedAt),
  };
}

/** Who is asking, as recorded on operations: the token's name when tokens are named, else its role. */
export function principalOf(req: FastifyRequest): string {
  const named = (req as FastifyRequest & { principal?: string }).principal;
  return named ?? `${req.role ?? 'unknown'}-token`;
}

export function driftRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();

  r.get('/v1/drift', { schema: { tags: ['drift'], summary: 'Drift found by Reconcile, newest first', querystring: DriftListQuery, response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const q = req.query;
    const limit = q.limit ?? DEFAULT_LIMIT;
    const where: Record<string, unknown> = { ...afterKey('detectedAt', decodeCursor(q.cursor, true), true) };
    for (const k of ['state', 'kind', 'vmId', 'hostId'] as const) if (q[k] !== undefined) where[k] = q[k];
    const rows = await ctx.db.em().find(Drift, where, { orderBy: { detectedAt: 'desc', id: 'desc' }, limit: limit + 1 });
    const p = page(rows, limit, (d) => d.detectedAt);
    return { items: p.rows.map(driftDto), nextCursor: p.nextCursor };
  });

  r.get('/v1/drift/:id', { schema: { tags: ['drift'], summary: 'One drift record', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const d = await ctx.db.em().findOne(Drift, { id: req.params.id });
    if (!d) throw notFound('drift', req.params.id);
    return driftDto(d);
  });

  r.post(
    '/v1/drift/:id/resolve',
    {
      schema: {
        tags: ['drift'],
        summary: 'Resolve an open drift in inventory (never on the hypervisor); 409 when the action does not fit the kind or it is resolved',
        params: idParams,
        body: ResolveBody,
        response: { 200: AnyObject, 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema },
      },
    },
    async (req) => {
      // db errors map onto 404 (unknown id), 409 (kind/action mismatch, already resolved) and 400 (no usable name)
      const res = await resolveDrift(ctx.db, { id: req.params.id, action: req.body.action, principal: principalOf(req) });
      return { drift: driftDto(res.drift), vm: vmDto(res.vm), operationId: res.operationId };
    },
  );

  r.post(
    '/v1/reconcile',
    { schema: { tags: ['drift'], summary: 'Run Reconcile now (409 while one runs)', body: ReconcileBody, response: { 202: AnyObject, 400: ErrorSchema, 409: ErrorSchema } } },
    async (req, reply) => {
      const input: ReconcileInput = { principal: principalOf(req), ...(req.body?.agentTimeoutMs !== undefined ? { agentTimeoutMs: req.body.agentTimeoutMs } : {}) };
      const started = await startWorkflow(ctx.t, { workflowType: 'reconcile', workflowId: `${ctx.prefix}${fleetIds.reconcile(DEFAULT_CLUSTER)}`, args: [input] });
      return reply.code(202).send({ reconcileId: started.workflowId, ...started });
    },
  );
}
