// Migrations: start (LiveMigrate workflow), list/get (Operation records merged with the running
// workflow's `progress` query), and steering a running one (cancel signal, switchover and
// setParams updates).
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { Datastore, Host, Network, Operation } from '../../db/entities.js';
import {
  cancelMigrationSignal,
  migrationProgressQuery,
  migrationStartAttributes,
  setMigrationParamsUpdate,
  switchoverUpdate,
  workflowIds,
  type AutoChoice,
  type LiveMigrateInput,
  type MigrationProgress,
  type SetMigrationParamsInput,
} from '../../workflows/definitions.js';
import { PolicyError, POLICIES, resolvePolicy, type PolicyName, type PolicyOverrides } from '../../domain/policies.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { conflict, HttpError, invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page } from '../pagination.js';
import { findOperation } from '../queries.js';
import { AnyList, AnyObject, CancelBody, ErrorSchema, idParams, KNOB_FIELDS, MigrationAccepted, MigrationCreate, MigrationListQuery, MigrationPatch } from '../schemas/index.js';
import { steered } from '../steering.js';
import { startWorkflow, webUiUrl, withTimeout } from '../temporal.js';
import { findVm } from './vms.js';
import { startColdMigration } from './cold-migrations.js';
import { chooseAuto, startStorageMigration } from './storage-migrations.js';
import { inputsTable, liveMigrateSummary } from '../../domain/summaries.js';

const MiB = 1024 * 1024;
/** a query answers from the worker's cache; more than this means no worker is polling */
const QUERY_TIMEOUT_MS = 5_000;
const UPDATE_TIMEOUT_MS = 30_000;

type Progress = MigrationProgress['progress'];
const EMPTY_PROGRESS: Pick<Progress, 'round' | 'transferredBytes' | 'remainingBytes' | 'dirtyRateBytesPerSec' | 'expectedDowntimeMs'> = {
  round: 0,
  transferredBytes: 0,
  remainingBytes: 0,
  dirtyRateBytesPerSec: 0,
  expectedDowntimeMs: 0,
};

const numOr = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** The section-4 migration shape from the audit record, overlaid with live progress when given. */
export function migrationDto(op: Operation | null, live: MigrationProgress | null, workflowId: string, liveError?: string) {
  const d = (op?.details ?? {}) as Record<string, unknown>;
  const recorded = (d.progress && typeof d.progress === 'object' ? d.progress : {}) as Partial<Progress>;
  const startedAt = op?.startedAt ? new Date(op.startedAt) : undefined;
  const endedAt = op?.endedAt ? new Date(op.endedAt) : undefined;
  // A finished record is the truth; a running one is overlaid with the workflow's own answer.
  const useLive = live !== null && (!op || op.state === 'running');
  const state = useLive ? live.state : (op?.state ?? 'running');
  const durationMs =
    (useLive ? live.durationMs : undefined) ??
    numOr(d.durationMs) ??
    (startedAt && endedAt ? endedAt.getTime() - startedAt.getTime() : startedAt ? Date.now() - startedAt.getTime() : null);
  return {
    id: op?.id ?? workflowId,
    workflowId,
    runId: op?.runId ?? null,
    vmId: (useLive ? live.vmId : op?.vmId) ?? null,
    kind: op?.subkind ?? (useLive ? live.kind : (d.kind as string | undefined)) ?? 'live',
    state,
    stage: (useLive ? live.stage : op?.stage) ?? null,
    sourceHostId: (useLive ? live.sourceHostId : op?.sourceHostId) ?? null,
    targetHostId: (useLive ? live.targetHostId : op?.targetHostId) ?? null,
    policy: (useLive ? live.policy : (d.policy as string | undefined)) ?? null,
    awaitingApproval: useLive ? live.awaitingApproval : false,
    queue: useLive ? (live.queue ?? null) : null,
    progress: useLive ? live.progress : { ...EMPTY_PROGRESS, ...recorded },
    downtimeMs: (useLive ? live.downtimeMs : undefined) ?? numOr(d.downtimeMs) ?? null,
    durationMs,
    decisions: useLive ? live.decisions : Array.isArray(d.decisions) ? d.decisions : [],
    stageTimingsMs: useLive ? live.stageTimingsMs : (d.stageTimingsMs ?? {}),
    compensations: useLive ? live.compensations : Array.isArray(d.compensations) ? d.compensations : [],
    startedAt: startedAt?.toISOString() ?? null,
    endedAt: endedAt?.toISOString() ?? null,
    ...((useLive ? live.error : undefined) ?? op?.error ? { error: ((useLive ? live.error : undefined) ?? op?.error)! } : {}),
    ...(liveError ? { progressUnavailable: liveError } : {}),
  };
}

export function migrationRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema };

  r.post(
    '/v1/vms/:id/migrations',
    {
      config: { idempotent: true },
      schema: {
        tags: ['migrations'],
        summary: 'Migrate a VM: live (shared storage or disk copy), cold, storage (another datastore of its host) or auto',
        description: `Policy knobs may be overridden per request: maxDowntimeMs, maxBandwidthMiBps, approveSwitchover, ${KNOB_FIELDS.join(', ')}.`,
        params: idParams,
        body: MigrationCreate,
        response: { 202: MigrationAccepted, ...errors },
      },
    },
    async (req, reply) => {
      let b = req.body;
      let auto: AutoChoice | undefined;
      if (b.kind !== 'auto' && b.allowCold !== undefined) throw invalid('allowCold', 'allowCold applies to kind auto', 400);
      if (b.kind === 'auto') ({ auto, body: b } = await chooseAuto(ctx, await findVm(ctx.db.em(), req.params.id), b));
      if (b.kind === 'cold') return startColdMigration(ctx, await findVm(ctx.db.em(), req.params.id), b, reply, principalOf(req), auto);
      if (b.kind === 'storage') return startStorageMigration(ctx, await findVm(ctx.db.em(), req.params.id), b, reply, principalOf(req));
      if (b.targetDatastoreId !== undefined) throw invalid('targetDatastoreId', 'applies to kinds storage and cold, not live (a live migration without shared storage picks the target\'s datastore)');
      const overrides = policyOverrides(b);

      const em = ctx.db.em();
      const vm = await findVm(em, req.params.id);
      const workflowId = workflowIds.migrate(vm.id);
      if (vm.state === 'migrating') {
        const op = await em.findOne(Operation, { workflowId, state: 'running' }, { orderBy: { startedAt: 'desc' } });
        throw conflict(`vm ${vm.id} is already migrating`, { vmId: vm.id, state: vm.state, workflowId, operationId: op?.id ?? workflowId, webUiUrl: webUiUrl(ctx.t, workflowId) });
      }
      if (vm.state !== 'running') {
        throw conflict(`vm ${vm.id} is ${vm.state}; a live migration needs it running`, { vmId: vm.id, state: vm.state, field: 'state' });
      }
      if (!vm.hostId) throw conflict(`vm ${vm.id} has no host recorded`, { vmId: vm.id, field: 'hostId' });

      if (b.targetHostId !== undefined) {
        const target = await em.findOne(Host, { id: b.targetHostId });
        if (!target) throw invalid('targetHostId', `host ${b.targetHostId} does not exist`);
        if (target.id === vm.hostId) throw invalid('targetHostId', `vm ${vm.id} already runs on ${target.id}`);
        if (target.maintenance) throw invalid('targetHostId', `host ${target.id} is in maintenance and takes no VMs`);
        if (target.state !== 'up') throw invalid('targetHostId', `host ${target.id} is ${target.state}`);
        const missing = (vm.cpuFeatures ?? []).filter((f) => !(target.cpuFeatures ?? []).includes(f));
        if (missing.length > 0) {
          throw new HttpError(422, {
            error: 'validation',
            message: `targetHostId: host ${target.id} lacks CPU features the guest uses: ${missing.join(', ')}`,
            fields: [{ field: 'targetHostId', problem: `missing CPU features: ${missing.join(', ')}` }],
            missingCpuFeatures: missing,
          });
        }
        if (vm.networkId) {
          const net = await em.findOne(Network, { id: vm.networkId });
          if (net && net.hostIds.length > 0 && !net.hostIds.includes(target.id)) {
            throw invalid('targetHostId', `network ${net.name} is not available on host ${target.id}`);
          }
        }
        // a target that does not reach the VM's datastore gets the disks copied (copyDisks)
      }

      const input: LiveMigrateInput = {
        vmId: vm.id,
        principal: principalOf(req),
        ...(b.targetHostId !== undefined ? { targetHostId: b.targetHostId } : {}),
        ...(b.policy !== undefined ? { policy: b.policy } : {}),
        ...(auto ? { auto } : {}),
        ...(Object.keys(overrides).length ? { overrides } : {}),
      };
      const started = await startWorkflow(ctx.t, {
        workflowType: 'liveMigrate',
        workflowId,
        args: [input],
        // the source is known here; a target the planner picks is named in the current details
        staticSummary: liveMigrateSummary({ vmId: vm.id, vmName: vm.name, sourceHostId: vm.hostId, targetHostId: b.targetHostId, policy: b.policy }),
        staticDetails: inputsTable('live migration inputs', { ...input, vmName: vm.name, sourceHostId: vm.hostId, overrides: input.overrides }),
        searchAttributes: migrationStartAttributes({ vmId: vm.id, kind: 'live', sourceHostId: vm.hostId, ...(b.targetHostId !== undefined ? { targetHostId: b.targetHostId } : {}) }),
      });
      return reply.code(202).send({ migrationId: started.workflowId, vmId: vm.id, kind: 'live', ...(auto ? { auto } : {}), ...started });
    },
  );

  r.get(
    '/v1/migrations',
    { schema: { tags: ['migrations'], summary: 'List migrations (newest first)', querystring: MigrationListQuery, response: { 200: AnyList, 400: ErrorSchema } } },
    async (req) => {
      const q = req.query;
      const limit = q.limit ?? DEFAULT_LIMIT;
      const key = decodeCursor(q.cursor, true);
      const where: Record<string, unknown> = { kind: 'migration', ...afterKey('startedAt', key, true) };
      if (q.state) where.state = q.state;
      if (q.vmId) where.vmId = q.vmId;
      const rows = await ctx.db.em().find(Operation, where, { orderBy: { startedAt: 'desc', id: 'desc' }, limit: limit + 1 });
      const p = page(rows, limit, (o) => o.startedAt);
      return { items: p.rows.map((o) => migrationDto(o, null, o.workflowId)), nextCursor: p.nextCursor };
    },
  );

  r.get(
    '/v1/migrations/:id',
    { schema: { tags: ['migrations'], summary: 'A migration: live progress while running, the audit record once finished', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } },
    async (req) => {
      const { op, workflowId } = await locate(ctx, req.params.id);
      if (op && op.state !== 'running') return migrationDto(op, null, workflowId);
      try {
        const live = await withTimeout(QUERY_TIMEOUT_MS, 'the progress query', handleOf(ctx, workflowId, op).query(migrationProgressQuery));
        return migrationDto(op, live, workflowId);
      } catch (e) {
        if (e instanceof WorkflowNotFoundError && !op) throw notFound('migration', req.params.id);
        if (!op) throw e;
        req.log.warn({ err: e, workflowId }, 'progress query failed; answering from the audit record');
        return migrationDto(op, null, workflowId, e instanceof Error ? e.message : String(e));
      }
    },
  );

  r.post(
    '/v1/migrations/:id/cancel',
    { schema: { tags: ['migrations'], summary: 'Cancel (roll back) a running migration; refused after commitment', params: idParams, body: CancelBody, response: { 202: z.object({}).loose(), ...errors } } },
    async (req, reply) => {
      const { op, workflowId } = await locate(ctx, req.params.id);
      const handle = handleOf(ctx, workflowId, op);
      await assertRunning(handle, workflowId);
      await handle.signal(cancelMigrationSignal, { reason: req.body?.reason ?? `cancelled through the API by ${principalOf(req)}` });
      await steered(ctx, op, req, 'cancel', req.body?.reason ? { reason: req.body.reason } : {});
      return reply.code(202).send({ migrationId: workflowId, workflowId, operationId: op?.id ?? workflowId, webUiUrl: webUiUrl(ctx.t, workflowId), cancelRequested: true });
    },
  );

  r.post(
    '/v1/migrations/:id/switchover',
    { schema: { tags: ['migrations'], summary: 'Force the switchover now, or approve a held one', params: idParams, response: { 200: AnyObject, ...errors } } },
    async (req) => {
      const { op, workflowId } = await locate(ctx, req.params.id);
      const handle = handleOf(ctx, workflowId, op);
      await assertRunning(handle, workflowId);
      const live = await steer(workflowId, () => handle.executeUpdate(switchoverUpdate));
      await steered(ctx, op, req, 'switchover');
      return migrationDto(op, live, workflowId);
    },
  );

  r.patch(
    '/v1/migrations/:id',
    { schema: { tags: ['migrations'], summary: 'Change bandwidth cap / max downtime of a running migration', params: idParams, body: MigrationPatch, response: { 200: AnyObject, ...errors } } },
    async (req) => {
      const { op, workflowId } = await locate(ctx, req.params.id);
      const handle = handleOf(ctx, workflowId, op);
      await assertRunning(handle, workflowId);
      const params: SetMigrationParamsInput = {
        ...(req.body.maxBandwidthMiBps !== undefined ? { maxBandwidthBytesPerSec: Math.round(req.body.maxBandwidthMiBps * MiB) } : {}),
        ...(req.body.maxDowntimeMs !== undefined ? { maxDowntimeMs: req.body.maxDowntimeMs } : {}),
      };
      const live = await steer(workflowId, () => handle.executeUpdate(setMigrationParamsUpdate, { args: [params] }));
      await steered(ctx, op, req, 'params', { params: req.body });
      return migrationDto(op, live, workflowId);
    },
  );
}

/** Overrides from the request's top-level knobs, validated against the named policy (400 naming the knob). */
function policyOverrides(b: MigrationCreate): PolicyOverrides {
  const o: Record<string, unknown> = {};
  for (const k of KNOB_FIELDS) if (b[k] !== undefined) o[k] = b[k];
  if (b.maxDowntimeMs !== undefined) {
    o.maxDowntimeMs = b.maxDowntimeMs;
    // A ceiling below the policy's starting limit means "start there too" rather than an error.
    const base = POLICIES[(b.policy ?? 'default') as PolicyName];
    if (o.initialDowntimeMs === undefined && base && b.maxDowntimeMs < base.initialDowntimeMs) o.initialDowntimeMs = b.maxDowntimeMs;
  }
  if (b.maxBandwidthMiBps !== undefined) o.maxBandwidthBytesPerSec = Math.round(b.maxBandwidthMiBps * MiB);
  if (b.approveSwitchover !== undefined) o.approveSwitchover = b.approveSwitchover;
  try {
    resolvePolicy(b.policy, o);
  } catch (e) {
    if (e instanceof PolicyError) {
      const field = e.field === 'maxBandwidthBytesPerSec' ? 'maxBandwidthMiBps' : e.field;
      throw invalid(field, e.message, 400);
    }
    throw e;
  }
  return o as PolicyOverrides;
}

/** The migration's audit record (by operation id, run id or workflow id) and its workflow id. */
async function locate(ctx: ApiContext, ref: string): Promise<{ op: Operation | null; workflowId: string }> {
  const op = await findOperation(ctx.db.em(), ref, 'migration');
  if (op) return { op, workflowId: op.workflowId };
  // Not recorded (yet): a migration workflow id is still good while the workflow runs.
  if (ref.startsWith(workflowIds.migrate(''))) return { op: null, workflowId: ref };
  throw notFound('migration', ref);
}

function handleOf(ctx: ApiContext, workflowId: string, op: Operation | null): WorkflowHandle {
  // Bind to the recorded run so an old record never steers a newer migration of the same VM.
  return ctx.temporal.workflow.getHandle(workflowId, op?.runId ?? undefined);
}

async function assertRunning(handle: WorkflowHandle, workflowId: string): Promise<void> {
  let status: string;
  try {
    status = (await handle.describe()).status.name;
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw notFound('migration', workflowId);
    throw e;
  }
  if (status !== 'RUNNING') throw conflict(`migration ${workflowId} is not running (${status.toLowerCase()})`, { workflowId, status: status.toLowerCase() });
}

/** Runs an update; the workflow refusing it (wrong stage, past commitment) is a 409 with its reason. */
async function steer(workflowId: string, fn: () => Promise<MigrationProgress>): Promise<MigrationProgress> {
  try {
    return await withTimeout(UPDATE_TIMEOUT_MS, 'the migration workflow', fn());
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) {
      const cause = (e.cause as Error | undefined)?.message ?? e.message;
      throw conflict(`migration ${workflowId} refused: ${cause}`, { workflowId });
    }
    if (e instanceof WorkflowNotFoundError) throw conflict(`migration ${workflowId} is not running`, { workflowId });
    throw e;
  }
}
