/**
 * Audit records: one Operation per provision / migration / evacuation / lifecycle / template /
 * rebalance run, written by the workflow through activities.
 *
 * - `createOperation` is idempotent by id (default: the workflowId): a retried activity, or two
 *   racing ones, end with one row. Workflow ids are business keys (`provision-<name>`) that a
 *   LATER run may reuse; when the caller passes runId and the stored record belongs to another
 *   run, that record is archived as `<id>.run-<oldRunId>` and the new run starts a fresh one.
 * - `updateOperation` deep-merges `details` (arrays and scalars replace) under the optimistic
 *   lock, retrying on a concurrent writer, so two activities adding different keys both land.
 */
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Operation, OPERATION_KINDS, OPERATION_STATES, type OperationKind, type OperationState } from '../entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { assertNonEmpty, assertOneOf, decodeCursor, isUniqueViolation, mergeJson, pageLimit, retryTransient, toPage, type Page, type PageRequest } from './util.js';

export interface NewOperation {
  /** Default: workflowId. */
  id?: string;
  workflowId: string;
  runId?: string;
  kind: OperationKind;
  subkind?: string;
  vmId?: string;
  stage?: string;
  sourceHostId?: string;
  targetHostId?: string;
  details?: Record<string, unknown>;
  /** who started it (the API principal's name, `schedule`, …) */
  principal?: string;
}

export async function createOperation(x: Db | Em, input: NewOperation): Promise<Operation> {
  assertNonEmpty('workflowId', input.workflowId);
  const id = input.id ?? input.workflowId;
  assertNonEmpty('id', id);
  assertOneOf('kind', input.kind, OPERATION_KINDS);
  const base = emOf(x);
  const same = (op: Operation): Operation => {
    if (op.workflowId !== input.workflowId) {
      throw new ConflictError(`operation ${id} already exists for workflow ${op.workflowId}`, 'operation', 'id', id);
    }
    return op;
  };
  for (let attempt = 1; ; attempt++) {
    const existing = await base.fork().findOne(Operation, { id });
    if (existing && !(input.runId && existing.runId && existing.runId !== input.runId)) return same(existing);
    const em = base.fork();
    try {
      return await em.transactional(async (tx) => {
        if (existing) {
          // A later run of the same workflow id (business keys are reused after a run ends): the
          // earlier run's record moves to `<id>.run-<runId>` and this run gets the canonical id.
          // A record still 'running' belongs to a run that ended without recording its outcome.
          same(existing);
          const archived = `${id}.run-${existing.runId}`;
          const moved = await tx.nativeUpdate(
            Operation,
            { id, runId: existing.runId },
            existing.state === 'running'
              ? { id: archived, state: 'failed', error: `superseded by run ${input.runId}: the run ended without recording its outcome`, endedAt: new Date() }
              : { id: archived },
          );
          if (moved === 0) throw new ConflictError(`operation ${id} changed while being archived`, 'operation', 'id', id);
        }
        return tx.create(Operation, {
          id,
          workflowId: input.workflowId,
          runId: input.runId ?? null,
          kind: input.kind,
          subkind: input.subkind ?? null,
          vmId: input.vmId ?? null,
          state: 'running',
          stage: input.stage ?? null,
          sourceHostId: input.sourceHostId ?? null,
          targetHostId: input.targetHostId ?? null,
          details: input.details ?? {},
          principal: input.principal ?? null,
          error: null,
          endedAt: null,
        });
      });
    } catch (e) {
      // a concurrent attempt created (or archived) it first: look again
      if (!(isUniqueViolation(e) || e instanceof ConflictError) || attempt >= 3) throw e;
    }
  }
}

export async function getOperation(x: Db | Em, id: string): Promise<Operation> {
  const op = await emOf(x).findOne(Operation, { id });
  if (!op) throw new NotFoundError('operation', id);
  return op;
}

export interface OperationPatch {
  stage?: string | null;
  subkind?: string | null;
  vmId?: string | null;
  sourceHostId?: string | null;
  targetHostId?: string | null;
  /** Deep-merged into the stored details. */
  details?: Record<string, unknown>;
}

/** Merges a patch into the operation; `undefined` fields are left alone. Null if no such operation. */
export async function updateOperation(x: Db | Em, id: string, patch: OperationPatch): Promise<Operation | null> {
  assertNonEmpty('id', id);
  const base = emOf(x);
  return retryTransient(async () => {
    const em = base.fork();
    const op = await em.findOne(Operation, { id });
    if (!op) return null;
    if (patch.stage !== undefined) op.stage = patch.stage;
    if (patch.subkind !== undefined) op.subkind = patch.subkind;
    if (patch.vmId !== undefined) op.vmId = patch.vmId;
    if (patch.sourceHostId !== undefined) op.sourceHostId = patch.sourceHostId;
    if (patch.targetHostId !== undefined) op.targetHostId = patch.targetHostId;
    if (patch.details) op.details = mergeJson(op.details, patch.details);
    await em.flush(); // optimistic lock: a concurrent update makes us re-read and merge again
    return op;
  }, { attempts: 10 });
}

export interface FinishInput {
  state: OperationState;
  error?: string;
  details?: Record<string, unknown>;
}

/**
 * Ends the operation (endedAt is set once). Idempotent: finishing again in the same state only
 * merges details; a different terminal state after the first one is a ConflictError.
 * Null if no such operation.
 */
export async function finishOperation(x: Db | Em, id: string, end: FinishInput): Promise<Operation | null> {
  assertNonEmpty('id', id);
  assertOneOf('state', end.state, OPERATION_STATES);
  if (end.state === 'running') throw new ValidationError('state', 'finishing an operation needs a terminal state');
  const base = emOf(x);
  return retryTransient(async () => {
    const em = base.fork();
    const op = await em.findOne(Operation, { id });
    if (!op) return null;
    if (op.state !== 'running' && op.state !== end.state) {
      throw new ConflictError(`operation ${id} already ended ${op.state}, cannot end it ${end.state}`, 'operation', 'state', op.state);
    }
    op.state = end.state;
    if (end.error !== undefined) op.error = end.error.slice(0, 8000);
    if (end.details) op.details = mergeJson(op.details, end.details);
    op.endedAt ??= new Date();
    await em.flush();
    return op;
  }, { attempts: 10 });
}

export interface OperationFilter extends PageRequest {
  kind?: OperationKind;
  state?: OperationState;
  vmId?: string;
  workflowId?: string;
  principal?: string;
}

/** Newest first, keyset-paginated on (startedAt, id). */
export async function listOperations(x: Db | Em, filter: OperationFilter = {}): Promise<Page<Operation>> {
  const limit = pageLimit(filter.limit);
  const where: Record<string, unknown> = {};
  if (filter.kind) where.kind = filter.kind;
  if (filter.state) where.state = filter.state;
  if (filter.vmId) where.vmId = filter.vmId;
  if (filter.workflowId) where.workflowId = filter.workflowId;
  if (filter.principal) where.principal = filter.principal;
  if (filter.cursor) {
    const [ms, id] = decodeCursor(filter.cursor, 2) as [number, string];
    if (typeof ms !== 'number' || typeof id !== 'string') throw new ValidationError('cursor', 'is not a cursor returned by this list');
    const at = new Date(ms);
    where.$or = [{ startedAt: { $lt: at } }, { startedAt: at, id: { $lt: id } }];
  }
  const rows = await emOf(x).find(Operation, where, { orderBy: { startedAt: 'desc', id: 'desc' }, limit: limit + 1 });
  return toPage(rows, limit, (op) => [op.startedAt.getTime(), op.id]);
}

/** The running operation of a workflow id or on a VM (for "409 with the running operation's id"). */
export async function findRunningOperation(x: Db | Em, where: { workflowId?: string; vmId?: string; kind?: OperationKind }): Promise<Operation | null> {
  if (!where.workflowId && !where.vmId) throw new ValidationError('workflowId', 'give workflowId or vmId');
  const filter: Record<string, unknown> = { state: 'running' };
  if (where.workflowId) filter.workflowId = where.workflowId;
  if (where.vmId) filter.vmId = where.vmId;
  if (where.kind) filter.kind = where.kind;
  return emOf(x).findOne(Operation, filter, { orderBy: { startedAt: 'desc', id: 'desc' } });
}

export interface SteeringEntry {
  principal: string;
  /** e.g. cancel, switchover, params, pause, resume */
  action: string;
  /** ISO time */
  at: string;
  [k: string]: unknown;
}

/**
 * Appends to `details.steeredBy` (who cancelled, paused, changed parameters…) under the optimistic
 * lock, so steering from two API replicas at once keeps both entries. Null if no such operation.
 */
export async function appendSteering(x: Db | Em, id: string, entry: SteeringEntry): Promise<Operation | null> {
  assertNonEmpty('id', id);
  const base = emOf(x);
  return retryTransient(async () => {
    const em = base.fork();
    const op = await em.findOne(Operation, { id });
    if (!op) return null;
    const prior = Array.isArray(op.details.steeredBy) ? (op.details.steeredBy as SteeringEntry[]) : [];
    op.details = { ...op.details, steeredBy: [...prior, entry] };
    await em.flush();
    return op;
  }, { attempts: 10 });
}
