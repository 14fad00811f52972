// Operation audit records (one per workflow run) and the simulator's fault injection.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { Operation } from '../../db/entities.js';
import { DriverError } from '../../domain/hypervisor.js';
import type { ApiContext } from '../context.js';
import { HttpError, invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page } from '../pagination.js';
import { findOperation, operationDto } from '../queries.js';
import { AnyObject, AnyList, ErrorSchema, idParams, OperationListQuery, SimFault } from '../schemas/index.js';
import { webUiUrl } from '../temporal.js';

export function operationRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();

  r.get('/v1/operations', { schema: { tags: ['operations'], summary: 'List operations (newest first)', querystring: OperationListQuery, response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const q = req.query;
    const limit = q.limit ?? DEFAULT_LIMIT;
    const where: Record<string, unknown> = { ...afterKey('startedAt', decodeCursor(q.cursor, true), true) };
    if (q.kind) where.kind = q.kind;
    if (q.state) where.state = q.state;
    if (q.vmId) where.vmId = q.vmId;
    if (q.principal) where.principal = q.principal;
    const rows = await ctx.db.em().find(Operation, where, { orderBy: { startedAt: 'desc', id: 'desc' }, limit: limit + 1 });
    const p = page(rows, limit, (o) => o.startedAt);
    return { items: p.rows.map((o) => ({ ...operationDto(o), webUiUrl: webUiUrl(ctx.t, o.workflowId, o.runId ?? undefined) })), nextCursor: p.nextCursor };
  });

  r.get(
    '/v1/operations/:id',
    { schema: { tags: ['operations'], summary: 'An operation by its id, run id or workflow id (latest run)', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } },
    async (req) => {
      const o = await findOperation(ctx.db.em(), req.params.id);
      if (!o) throw notFound('operation', req.params.id);
      return { ...operationDto(o), webUiUrl: webUiUrl(ctx.t, o.workflowId, o.runId ?? undefined) };
    },
  );

  // Registered only with a simulator: without one these routes do not exist (404).
  if (!ctx.simulator) return;
  const sim = ctx.simulator;
  r.post(
    '/v1/sim/faults',
    { config: { role: 'admin' }, schema: { tags: ['simulator'], summary: 'Inject a simulator fault (admin)', body: SimFault, response: { 201: AnyObject, 400: ErrorSchema, 422: ErrorSchema } } },
    async (req, reply) => {
      try {
        const fault = await sim.injectFault(req.body);
        return reply.code(201).send((fault ?? {}) as Record<string, unknown>);
      } catch (e) {
        if (e instanceof DriverError && e.code === 'INVALID_ARGUMENT') {
          const m = /^fault\.(\w+)/.exec(e.message);
          throw invalid(m?.[1] ?? 'kind', e.message, 400);
        }
        if (e instanceof DriverError && e.code === 'NOT_FOUND') throw new HttpError(422, { error: 'validation', message: e.message, fields: [{ field: 'hostId', problem: e.message }] });
        throw e;
      }
    },
  );
  r.get('/v1/sim/faults', { schema: { tags: ['simulator'], summary: 'List simulator faults' } }, async () => ({ items: await sim.listFaults(), nextCursor: null }));
}
