// Who steered a running operation: after Temporal accepted a signal or an update (cancel,
// switchover, params, pause, resume), the API appends {principal, action, at} to the operation's
// `details.steeredBy`. Written route-side rather than passed to the workflow: the workflow does
// not need to know who asked, and the entry is written only once the steer was accepted, so it
// is truthful. A steer of a workflow that has not recorded its Operation yet leaves no entry
// (logged); a failed write never turns an accepted steer into an error.
import type { FastifyRequest } from 'fastify';
import type { Operation } from '../db/entities.js';
import { appendSteering } from '../db/repositories/operations.js';
import { principalOf } from './auth.js';
import type { ApiContext } from './context.js';

export async function steered(ctx: ApiContext, op: Operation | null, req: FastifyRequest, action: string, extra: Record<string, unknown> = {}): Promise<void> {
  const entry = { principal: principalOf(req), action, at: new Date().toISOString(), ...extra };
  if (!op) {
    req.log.warn({ action, principal: entry.principal }, 'steered a workflow without an Operation record: not recorded');
    return;
  }
  await appendSteering(ctx.db, op.id, entry).catch((err: unknown) => req.log.error({ err, operationId: op.id, action }, 'could not record who steered the operation'));
}
