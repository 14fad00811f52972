// Load balancing now (POST /v1/rebalance: dry run = the stored plan; else the Rebalance workflow
// under `rebalance-<cluster>`) and on a schedule: Temporal Schedules named `rebalance` and
// `reconcile`, overlap policy skip (a run still going when the next is due is skipped, never
// doubled), visible on the Web UI's Schedules page. FERRY_REBALANCE_CRON / FERRY_RECONCILE_CRON
// create them idempotently at start (ensureConfiguredSchedules).
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, type Client, type ScheduleSpec } from '@temporalio/client';
import { Operation } from '../../db/entities.js';
import { DEFAULT_CLUSTER, fleetIds, type RebalanceInput } from '../../workflows/definitions.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page, pageQuery } from '../pagination.js';
import { AnyList, AnyObject, ErrorSchema } from '../schemas/index.js';
import { startWorkflow } from '../temporal.js';
import { inputsTable, rebalanceSummary } from '../../domain/summaries.js';
import { fleetDto, liveProgress, locate, planAnswer, runPlan } from './fleet.js';

const level = z.union([z.literal(1), z.literal(2), z.literal(3), z.literal(4), z.literal(5)]);
export const RebalanceBody = z
  .strictObject({
    dryRun: z.boolean().optional(),
    level: level.optional(),
    maxMoves: z.number().int().min(1).max(1000).optional(),
    maxParallel: z.number().int().min(1).max(100).optional(),
    cooldownMinutes: z.number().min(0).max(7 * 24 * 60).optional(),
  })
  .nullish();

export const SCHEDULE_NAMES = ['rebalance', 'reconcile'] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];
const ScheduleParams = z.object({ name: z.enum(SCHEDULE_NAMES) });
export const ScheduleBody = z.strictObject({
  /** a cron expression (5 fields) or `@every <n>s|m|h` */
  cron: z.string().min(1).max(128),
  paused: z.boolean().optional(),
  level: level.optional(),
  maxMoves: z.number().int().min(1).max(1000).optional(),
  dryRun: z.boolean().optional(),
});
export type ScheduleBody = z.infer<typeof ScheduleBody>;

const EVERY = /^@every\s+(\d+)(s|m|h)$/;
const CRON_FIELD = /^[\d*/,\-A-Za-z?]+$/;

/** The Temporal spec for a cron body field; a malformed one is a 400 naming `cron`. */
export function scheduleSpec(cron: string): ScheduleSpec {
  const every = EVERY.exec(cron.trim());
  if (every) {
    const n = Number(every[1]);
    if (n < 1) throw invalid('cron', 'an @every interval must be at least 1', 400);
    return { intervals: [{ every: `${n}${every[2]}` as `${number}s` }] };
  }
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5 || !fields.every((f) => CRON_FIELD.test(f))) {
    throw invalid('cron', `must be a 5-field cron expression (minute hour day month weekday) or "@every <n>s|m|h", got ${JSON.stringify(cron)}`, 400);
  }
  return { cronExpressions: [fields.join(' ')] };
}

function actionOf(name: ScheduleName, body: ScheduleBody, prefix: string, taskQueue: string) {
  const args: unknown[] =
    name === 'rebalance'
      ? [{ cluster: DEFAULT_CLUSTER, level: body.level, maxMoves: body.maxMoves, dryRun: body.dryRun, principal: 'schedule' } satisfies RebalanceInput]
      : [{ cluster: DEFAULT_CLUSTER }];
  return {
    type: 'startWorkflow' as const,
    workflowType: name,
    // Temporal appends the scheduled time to this id; overlap SKIP keeps it one at a time
    workflowId: `${prefix}${name === 'rebalance' ? fleetIds.rebalance(DEFAULT_CLUSTER) : fleetIds.reconcile(DEFAULT_CLUSTER)}`,
    taskQueue,
    args,
    // Temporal answers a cron spec back as structured calendars; the expression as the operator
    // wrote it travels in the started workflows' memo (a schedule's own memo cannot be updated)
    memo: { scheduleCron: body.cron },
  };
}

export const scheduleId = (prefix: string, name: ScheduleName) => `${prefix}ferry-${name}`;

/** Creates or updates schedule `name` (idempotent: the same body twice changes nothing). */
export async function putSchedule(client: Client, prefix: string, taskQueue: string, name: ScheduleName, body: ScheduleBody): Promise<{ created: boolean }> {
  const spec = scheduleSpec(body.cron);
  const action = actionOf(name, body, prefix, taskQueue);
  try {
    await client.schedule.create({
      scheduleId: scheduleId(prefix, name),
      spec,
      action,
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' },
      state: { paused: Boolean(body.paused), note: body.paused ? 'paused through the API' : undefined },
    });
    return { created: true };
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
  }
  const handle = client.schedule.getHandle(scheduleId(prefix, name));
  await handle.update((prev) => ({ ...prev, spec, action, policies: { ...prev.policies, overlap: ScheduleOverlapPolicy.SKIP }, state: { ...prev.state, paused: Boolean(body.paused) } }));
  return { created: false };
}

export async function describeSchedule(client: Client, prefix: string, name: ScheduleName) {
  try {
    const d = await client.schedule.getHandle(scheduleId(prefix, name)).describe();
    const spec = d.spec as { cronExpressions?: string[]; intervals?: Array<{ every: number | string }> };
    const action = d.action as { args?: Array<Record<string, unknown>>; memo?: Record<string, unknown> };
    const args = action.args?.[0] ?? {};
    const written = typeof action.memo?.scheduleCron === 'string' ? action.memo.scheduleCron : undefined;
    return {
      name,
      scheduleId: d.scheduleId,
      cron: written ?? spec.cronExpressions?.[0] ?? (spec.intervals?.[0] ? `@every ${Math.round(Number(spec.intervals[0].every) / 1000)}s` : null),
      paused: d.state.paused,
      level: args.level ?? null,
      maxMoves: args.maxMoves ?? null,
      dryRun: args.dryRun ?? false,
      nextActionTimes: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
      recentActions: d.info.recentActions.slice(-5).map((a) => ({ at: a.takenAt.toISOString(), workflowId: a.action.workflow.workflowId })),
      numActionsTaken: d.info.numActionsTaken,
      numActionsSkippedOverlap: d.info.numActionsSkippedOverlap,
    };
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) return null;
    throw e;
  }
}

/** FERRY_REBALANCE_CRON / FERRY_RECONCILE_CRON: create or update the schedules at start. */
export async function ensureConfiguredSchedules(ctx: ApiContext, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const done: string[] = [];
  for (const [name, key] of [
    ['rebalance', 'FERRY_REBALANCE_CRON'],
    ['reconcile', 'FERRY_RECONCILE_CRON'],
  ] as const) {
    const cron = env[key]?.trim();
    if (!cron) continue;
    await putSchedule(ctx.temporal, ctx.prefix, ctx.t.taskQueue, name, { cron });
    done.push(`${name} (${cron})`);
  }
  return done;
}

export function rebalanceRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema };

  r.post(
    '/v1/rebalance',
    { config: { idempotent: true }, schema: { tags: ['fleet'], summary: 'Balance load across hosts now (dryRun: the plan with imbalance before/after, stored for approval)', body: RebalanceBody, response: { 200: AnyObject, 202: AnyObject, ...errors } } },
    async (req, reply) => {
      const b = req.body ?? {};
      const input: RebalanceInput = {
        cluster: DEFAULT_CLUSTER,
        principal: principalOf(req),
        level: b.level,
        maxMoves: b.maxMoves,
        maxParallel: b.maxParallel,
        cooldownMs: b.cooldownMinutes !== undefined ? Math.round(b.cooldownMinutes * 60_000) : undefined,
      };
      if (b.dryRun) {
        const planId = `plan-${randomBytes(6).toString('hex')}`;
        const progress = await runPlan(ctx, fleetIds.plan(planId), 'rebalance', { ...input, dryRun: true, planId });
        return reply.code(200).send(planAnswer(planId, progress));
      }
      const started = await startWorkflow(ctx.t, {
        workflowType: 'rebalance',
        workflowId: `${ctx.prefix}${fleetIds.rebalance(DEFAULT_CLUSTER)}`,
        args: [input],
        staticSummary: rebalanceSummary(input),
        staticDetails: inputsTable('rebalance inputs', { ...input }),
      });
      return reply.code(202).send({ rebalanceId: started.workflowId, ...started });
    },
  );

  r.get('/v1/rebalances', { schema: { tags: ['fleet'], summary: 'Rebalance runs, newest first', querystring: z.object(pageQuery), response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const limit = req.query.limit ?? DEFAULT_LIMIT;
    const rows = await ctx.db.em().find(Operation, { kind: 'rebalance', ...afterKey('startedAt', decodeCursor(req.query.cursor, true), true) }, { orderBy: { startedAt: 'desc', id: 'desc' }, limit: limit + 1 });
    const p = page(rows, limit, (o) => o.startedAt);
    return { items: p.rows.map((o) => fleetDto(o, null)), nextCursor: p.nextCursor };
  });

  r.get('/v1/rebalances/:id', { schema: { tags: ['fleet'], summary: 'A rebalance run with its moves', params: z.object({ id: z.string().min(1).max(256) }), response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const { op, workflowId } = await locate(ctx, req.params.id, 'rebalance');
    const dto = fleetDto(op, await liveProgress(ctx, workflowId, op));
    const d = (op?.details ?? {}) as Record<string, unknown>;
    return { ...dto, imbalanceBefore: d.imbalanceBefore ?? null, imbalanceAfter: d.imbalanceAfter ?? null };
  });

  r.get('/v1/schedules', { schema: { tags: ['schedules'], summary: 'The rebalance and reconcile schedules', response: { 200: AnyList } } }, async () => {
    const items = (await Promise.all(SCHEDULE_NAMES.map((n) => describeSchedule(ctx.temporal, ctx.prefix, n)))).filter((x) => x !== null);
    return { items, nextCursor: null };
  });

  r.get('/v1/schedules/:name', { schema: { tags: ['schedules'], summary: 'A schedule', params: ScheduleParams, response: { 200: AnyObject, 400: ErrorSchema, 404: ErrorSchema } } }, async (req) => {
    const d = await describeSchedule(ctx.temporal, ctx.prefix, req.params.name);
    if (!d) throw notFound('schedule', req.params.name);
    return d;
  });

  r.put(
    '/v1/schedules/:name',
    { schema: { tags: ['schedules'], summary: 'Create or update a schedule (overlap policy skip)', params: ScheduleParams, body: ScheduleBody, response: { 200: AnyObject, 201: AnyObject, ...errors } } },
    async (req, reply) => {
      if (req.params.name === 'reconcile' && (req.body.level !== undefined || req.body.maxMoves !== undefined || req.body.dryRun !== undefined)) {
        throw invalid(req.body.level !== undefined ? 'level' : req.body.maxMoves !== undefined ? 'maxMoves' : 'dryRun', 'applies to the rebalance schedule only', 400);
      }
      const { created } = await putSchedule(ctx.temporal, ctx.prefix, ctx.t.taskQueue, req.params.name, req.body);
      return reply.code(created ? 201 : 200).send((await describeSchedule(ctx.temporal, ctx.prefix, req.params.name)) ?? { name: req.params.name });
    },
  );

  r.delete('/v1/schedules/:name', { schema: { tags: ['schedules'], summary: 'Delete a schedule (running workflows it started go on)', params: ScheduleParams, response: { 204: z.null(), 400: ErrorSchema, 404: ErrorSchema } } }, async (req, reply) => {
    try {
      await ctx.temporal.schedule.getHandle(scheduleId(ctx.prefix, req.params.name)).delete();
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) throw notFound('schedule', req.params.name);
      throw e;
    }
    return reply.code(204).send(null);
  });
}
