// GET /v1/vms/:id/console?tail=N: the last N lines of a VM's serial console, from the host that
// runs it now. The API does not read host files: it looks the VM's host up in the inventory and
// runs the short VmConsole workflow, whose one activity runs on that host's agent (the agent
// owns the console log on its disk; ARCHITECTURE section 7: the API talks to Temporal and the
// database only). A read is a few hundred milliseconds; `ferry vms console --follow` polls it.
import { randomBytes } from 'node:crypto';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CONSOLE_TAIL_DEFAULT, CONSOLE_TAIL_MAX, type ConsoleTail } from '../../domain/console.js';
import { SA, type ConsoleInput } from '../../workflows/definitions.js';
import type { ApiContext } from '../context.js';
import { conflict, HttpError } from '../errors.js';
import { ErrorSchema, idParams } from '../schemas/index.js';
import { findVm } from './vms.js';

const ConsoleQuery = z.object({
  tail: z.coerce.number().int().min(1).max(CONSOLE_TAIL_MAX).default(CONSOLE_TAIL_DEFAULT).describe(`lines from the end, 1..${CONSOLE_TAIL_MAX}`),
});
const ConsoleSchema = z.object({
  vmId: z.string(),
  hostId: z.string(),
  lines: z.array(z.string()),
  size: z.number().describe("bytes of this host's console log so far, as its lines joined by newlines (no carriage returns, no final newline): a follower prints the last size-growth bytes of the joined lines"),
  truncated: z.boolean(),
});

/** The activity's failure as the HTTP answer it stands for. */
function consoleError(e: unknown, vmId: string, hostId: string): HttpError {
  const cause = e instanceof WorkflowFailedError && e.cause instanceof ActivityFailure ? e.cause.cause : undefined;
  const app = cause instanceof ApplicationFailure ? cause : undefined;
  if (app?.type === 'NotFound') return new HttpError(404, { error: 'not_found', message: app.message, vmId, hostId });
  if (app?.type === 'InvalidState') return conflict(app.message, { vmId, hostId });
  return new HttpError(503, { error: 'unavailable', message: `the console of ${vmId} on ${hostId} could not be read: ${(cause as Error | undefined)?.message ?? (e as Error).message}`, vmId, hostId });
}

export function consoleRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/v1/vms/:id/console',
    {
      schema: {
        tags: ['vms'],
        summary: "The last lines of a VM's serial console, from the host that runs it now (VmConsole workflow)",
        params: idParams,
        querystring: ConsoleQuery,
        response: { 200: ConsoleSchema, 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (req): Promise<ConsoleTail> => {
      const vm = await findVm(ctx.db.em(), req.params.id);
      if (!vm.hostId) throw conflict(`vm ${vm.id} is on no host (state ${vm.state}): it has no console`, { vmId: vm.id, state: vm.state });
      const input: ConsoleInput = { vmId: vm.id, hostId: vm.hostId, tail: req.query.tail };
      try {
        return await ctx.t.temporal.workflow.execute('vmConsole', {
          taskQueue: ctx.t.taskQueue,
          workflowId: `console-${vm.id}-${randomBytes(4).toString('hex')}`,
          args: [input],
          workflowExecutionTimeout: '30 seconds',
          staticSummary: `console of ${vm.name} (${vm.id}) on ${vm.hostId}, last ${input.tail} lines`,
          typedSearchAttributes: [{ key: SA.VmId, value: vm.id }],
        });
      } catch (e) {
        throw consoleError(e, vm.id, vm.hostId);
      }
    },
  );
}
