// Drift (Reconcile's findings): list and read them, resolve one (adopt an unknown VM, forget a
// missing one, fix a state or host), and start a Reconcile now. Resolving writes inventory only
// (db/repositories/drift.ts) in one transaction with the Drift's resolution and an Operation
// record (kind drift, subkind = action); the API never touches a hypervisor.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { Drift, DRIFT_KINDS, DRIFT_STATES } from '../../db/entities.js';
import { DRIFT_ACTIONS, resolveDrift } from '../../db/repositories/drift.js';
import type { ReconcileInput } from '../../domain/drift.js';
import { DEFAULT_CLUSTER, fleetIds } from '../../workflows/definitions.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page, pageQuery } from '../pagination.js';
import { vmDto } from '../queries.js';
import { AnyList, AnyObject, ErrorSchema, idParams } from '../schemas/index.js';
import { startWorkflow } from '../temporal.js';
import { inputsTable, reconcileSummary } from '../../domain/summaries.js';

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

/** The answer shape of a drift record: its columns (dates as ISO strings, absent values null). */
const DTO_FIELDS = ['id', 'kind', 'vmId', 'hostId', 'state', 'expected', 'observed', 'operationId', 'resolution', 'resolvedBy', 'detectedAt', 'lastSeenAt', 'resolvedAt'] as const;

export function driftDto(d: Drift): Record<(typeof DTO_FIELDS)[number], unknown> {
  return Object.fromEntries(DTO_FIELDS.map((k) => [k, d[k] instanceof Date ? d[k].toISOString() : (d[k] ?? null)])) as Record<(typeof DTO_FIELDS)[number], unknown>;
}

/** One page of drift, newest first, with the list filters applied. */
async function listDrift(ctx: ApiContext, q: z.infer<typeof DriftListQuery>) {
  const filters = Object.fromEntries((['state', 'kind', 'vmId', 'hostId'] as const).filter((k) => q[k] !== undefined).map((k) => [k, q[k]]));
  const limit = q.limit ?? DEFAULT_LIMIT;
  const found = await ctx.db.em().find(Drift, { ...filters, ...afterKey('detectedAt', decodeCursor(q.cursor, true), true) }, { orderBy: { detectedAt: 'desc', id: 'desc' }, limit: limit + 1 });
  const { rows, nextCursor } = page(found, limit, (d) => d.detectedAt);
  return { items: rows.map(driftDto), nextCursor };
}

export function driftRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const listSchema = { tags: ['drift'], summary: 'Drift found by Reconcile, newest first', querystring: DriftListQuery, response: { 200: AnyList, 400: ErrorSchema } };
  typed.get('/v1/drift', { schema: listSchema }, (req) => listDrift(ctx, req.query));

  typed.get('/v1/drift/:id', { schema: { tags: ['drift'], summary: 'One drift record', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const found = await ctx.db.em().findOne(Drift, { id: req.params.id });
    if (found) return driftDto(found);
    throw notFound('drift', req.params.id);
  });

  typed.post(
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

  typed.post(
    '/v1/reconcile',
    { config: { idempotent: true }, schema: { tags: ['drift'], summary: 'Run Reconcile now (409 while one runs)', body: ReconcileBody, response: { 202: AnyObject, 400: ErrorSchema, 409: ErrorSchema } } },
    async (req, reply) => {
      const input: ReconcileInput = { principal: principalOf(req), ...(req.body?.agentTimeoutMs !== undefined ? { agentTimeoutMs: req.body.agentTimeoutMs } : {}) };
      const started = await startWorkflow(ctx.t, {
        workflowType: 'reconcile',
        workflowId: `${ctx.prefix}${fleetIds.reconcile(DEFAULT_CLUSTER)}`,
        args: [input],
        staticSummary: reconcileSummary(DEFAULT_CLUSTER),
        staticDetails: inputsTable('reconcile inputs', { cluster: DEFAULT_CLUSTER, ...input }),
      });
      return reply.code(202).send({ reconcileId: started.workflowId, ...started });
    },
  );
}
