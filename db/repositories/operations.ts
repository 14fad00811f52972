// Audit records: one Operation per provision / migration / lifecycle / template run, written by
// the workflow through activities. Idempotent by id; details are merged, never replaced.
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Operation, type OperationKind, type OperationState } from '../entities.js';

export interface NewOperation {
  id: string;
  workflowId: string;
  runId?: string;
  kind: OperationKind;
  subkind?: string;
  vmId?: string;
  sourceHostId?: string;
  targetHostId?: string;
  details?: Record<string, unknown>;
}

export async function createOperation(db: Db | Em, input: NewOperation): Promise<Operation> {
  const em = emOf(db);
  const existing = await em.findOne(Operation, { id: input.id });
  if (existing) return existing;
  const op = em.create(Operation, {
    id: input.id,
    workflowId: input.workflowId,
    runId: input.runId ?? null,
    kind: input.kind,
    subkind: input.subkind ?? null,
    vmId: input.vmId ?? null,
    state: 'running',
    stage: null,
    sourceHostId: input.sourceHostId ?? null,
    targetHostId: input.targetHostId ?? null,
    details: input.details ?? {},
    error: null,
    endedAt: null,
  });
  await em.flush();
  return op;
}

export async function updateOperation(
  db: Db | Em,
  id: string,
  patch: { stage?: string; sourceHostId?: string; targetHostId?: string; details?: Record<string, unknown> },
): Promise<void> {
  const em = emOf(db);
  const op = await em.findOne(Operation, { id });
  if (!op) return;
  if (patch.stage !== undefined) op.stage = patch.stage;
  if (patch.sourceHostId !== undefined) op.sourceHostId = patch.sourceHostId;
  if (patch.targetHostId !== undefined) op.targetHostId = patch.targetHostId;
  if (patch.details) op.details = { ...op.details, ...patch.details };
  await em.flush();
}

export async function finishOperation(db: Db | Em, id: string, end: { state: OperationState; error?: string; details?: Record<string, unknown> }): Promise<void> {
  const em = emOf(db);
  const op = await em.findOne(Operation, { id });
  if (!op) return;
  op.state = end.state;
  op.error = end.error ? end.error.slice(0, 8000) : null;
  if (end.details) op.details = { ...op.details, ...end.details };
  op.endedAt ??= new Date();
  await em.flush();
}
