/**
 * Drift records (Reconcile's findings) and their resolution by an operator.
 *
 * - `recordFindings` upserts one row per `<kind>-<vmId>` in ONE transaction: a new finding is
 *   created open, a re-detected one gets lastSeenAt (and the latest observation), a resolved one
 *   that shows up again is reopened, and an open one that this scan no longer sees is resolved
 *   `gone` — but only when the scan could have seen it (its host answered, its VM was not busy),
 *   so an agent that did not answer never closes or opens anything. Running it twice with the
 *   same findings changes nothing but lastSeenAt: a retried activity is harmless.
 * - `resolveDrift` applies an operator's action to inventory only (never a hypervisor): adopt an
 *   unknown VM (Vm row + allocation), forget a missing one (deleted, allocation and IP released),
 *   or fix-state (inventory takes the observed state / host); with the Drift's resolution and an
 *   Operation record (kind 'drift', subkind = action) in the same transaction.
 */
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Allocation, Drift, Operation, Vm, type DriftKind } from '../entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { inventoryStateOf, type DriftFinding } from '../../domain/drift.js';
import { SAFE_NAME } from '../../domain/names.js';
import { retireVm } from './vms.js';
import { newId, retryTransient } from './util.js';

const MiB = 1024 ** 2;

export interface RecordFindingsInput {
  operationId: string;
  findings: DriftFinding[];
  /** hosts whose agent answered this scan */
  answeredHostIds: string[];
  /** VMs the scan did not judge (an operation in flight) */
  skippedVmIds: string[];
}

export interface RecordFindingsResult {
  created: string[];
  reopened: string[];
  /** open drifts this scan no longer observed: resolved 'gone' */
  gone: string[];
  /** every open drift after the scan, by id */
  open: string[];
  openByKind: Record<string, number>;
}

export async function recordFindings(x: Db | Em, input: RecordFindingsInput): Promise<RecordFindingsResult> {
  const base = emOf(x);
  const answered = new Set(input.answeredHostIds);
  const skipped = new Set(input.skippedVmIds);
  return retryTransient(() =>
    base.fork().transactional(async (tx) => {
      const now = new Date();
      const ids = input.findings.map((f) => f.id);
      const existing = new Map((ids.length ? await tx.find(Drift, { id: { $in: ids } }) : []).map((d) => [d.id, d]));
      const out: RecordFindingsResult = { created: [], reopened: [], gone: [], open: [], openByKind: {} };
      for (const f of input.findings) {
        const d = existing.get(f.id);
        if (!d) {
          tx.create(Drift, { id: f.id, kind: f.kind, vmId: f.vmId, hostId: f.hostId, state: 'open', expected: f.expected, observed: f.observed, operationId: input.operationId, detectedAt: now, lastSeenAt: now });
          out.created.push(f.id);
          continue;
        }
        if (d.state === 'resolved') {
          // a new incident of the same kind: found again by this scan
          Object.assign(d, { state: 'open', resolution: null, resolvedBy: null, resolvedAt: null, detectedAt: now, operationId: input.operationId });
          out.reopened.push(f.id);
        }
        Object.assign(d, { hostId: f.hostId, expected: f.expected, observed: f.observed, lastSeenAt: now });
      }
      const found = new Set(ids);
      for (const d of await tx.find(Drift, { state: 'open' })) {
        if (found.has(d.id) || skipped.has(d.vmId) || !answered.has(d.hostId)) continue;
        Object.assign(d, { state: 'resolved', resolution: 'gone', resolvedBy: 'reconcile', resolvedAt: now });
        out.gone.push(d.id);
      }
      await tx.flush();
      for (const d of await tx.find(Drift, { state: 'open' }, { orderBy: { id: 'asc' } })) {
        out.open.push(d.id);
        out.openByKind[d.kind] = (out.openByKind[d.kind] ?? 0) + 1;
      }
      return out;
    }),
  );
}

export const DRIFT_ACTIONS = ['adopt', 'forget', 'fix-state'] as const;
export type DriftAction = (typeof DRIFT_ACTIONS)[number];

/** Which action fits which kind (anything else is a 409 naming why). */
export const ACTIONS_FOR: Record<DriftKind, DriftAction[]> = {
  'unknown-vm': ['adopt'],
  'missing-vm': ['forget'],
  'wrong-state': ['fix-state'],
  'stuck-paused': ['fix-state'],
  'wrong-host': ['fix-state'],
};

export interface ResolveInput {
  id: string;
  action: DriftAction;
  /** who resolved it (the API principal) */
  principal: string;
  /** the Operation record's id (and workflowId: no workflow runs) */
  operationId?: string;
}

export interface ResolveResult {
  drift: Drift;
  vm: Vm;
  operationId: string;
}

export async function resolveDrift(x: Db | Em, input: ResolveInput): Promise<ResolveResult> {
  const base = emOf(x);
  const operationId = input.operationId ?? newId('drift');
  return retryTransient(() =>
    base.fork().transactional(async (tx) => {
      const d = await tx.findOne(Drift, { id: input.id });
      if (!d) throw new NotFoundError('drift', input.id);
      if (d.state !== 'open') throw new ConflictError(`drift ${d.id} is already resolved (${d.resolution ?? 'resolved'}${d.resolvedBy ? ` by ${d.resolvedBy}` : ''})`, 'drift', 'state', d.state);
      if (!ACTIONS_FOR[d.kind].includes(input.action)) {
        throw new ConflictError(`action ${input.action} does not fit a ${d.kind} drift (use ${ACTIONS_FOR[d.kind].join(' or ')})`, 'drift', 'action', input.action);
      }
      const obs = d.observed as Record<string, unknown>;
      const details: Record<string, unknown> = { driftId: d.id, kind: d.kind, principal: input.principal, expected: d.expected, observed: d.observed };
      let vm: Vm;
      switch (input.action) {
        case 'adopt':
          vm = await adopt(tx, d, obs, operationId, details);
          break;
        case 'forget':
          vm = await forget(tx, d);
          break;
        case 'fix-state':
          vm = await fixState(tx, d, obs, details);
          break;
      }
      const now = new Date();
      Object.assign(d, { state: 'resolved', resolution: input.action, resolvedBy: input.principal, resolvedAt: now });
      tx.create(Operation, {
        id: operationId,
        workflowId: operationId,
        kind: 'drift',
        subkind: input.action,
        vmId: d.vmId,
        state: 'completed',
        sourceHostId: d.hostId,
        details,
        principal: input.principal,
        startedAt: now,
        endedAt: now,
      });
      await tx.flush();
      return { drift: d, vm, operationId };
    }),
  );
}

async function adopt(tx: Em, d: Drift, obs: Record<string, unknown>, operationId: string, details: Record<string, unknown>): Promise<Vm> {
  if (await tx.findOne(Vm, { id: d.vmId })) throw new ConflictError(`inventory already holds a VM record with id ${d.vmId}`, 'vm', 'id', d.vmId);
  const cpus = Number(obs.cpus);
  const memoryMiB = Math.ceil(Number(obs.memoryBytes) / MiB);
  if (!Number.isInteger(cpus) || cpus < 1 || !Number.isFinite(memoryMiB) || memoryMiB < 1) {
    throw new ConflictError(`drift ${d.id}: the host did not report the VM's cpus and memory; cannot account for it`, 'drift', 'observed');
  }
  const name = await freeName(tx, [d.vmId, obs.name]);
  if (!name) throw new ValidationError('name', `neither the VM id ${d.vmId} nor its reported name is a free valid VM name`);
  // Allocation straight onto the host (not through reserve()): the VM already runs there, so the
  // accounting records what is, even past capacity or in maintenance. The host's version bump
  // orders this write with concurrent reservations on that host (they re-check capacity after it).
  await tx.execute(tx.getKnex()('host').where({ id: d.hostId }).increment('version', 1), [], 'run');
  const vm = tx.create(Vm, {
    id: d.vmId,
    name,
    state: inventoryStateOf(String(obs.state)),
    hostId: d.hostId,
    cpus,
    memoryMiB,
    diskGiB: 0,
    diskPaths: Array.isArray(obs.disks) ? (obs.disks as string[]) : [],
    cpuFeatures: Array.isArray(obs.cpuFeatures) ? (obs.cpuFeatures as string[]) : [],
    tags: ['adopted'],
  });
  tx.create(Allocation, { id: newId('alloc'), hostId: d.hostId, vmId: d.vmId, kind: 'vm', cpus, memoryMiB, diskGiB: 0, datastoreId: null, operationId });
  Object.assign(details, { name, cpus, memoryMiB, hostId: d.hostId });
  return vm;
}

async function freeName(tx: Em, candidates: unknown[]): Promise<string | undefined> {
  for (const c of candidates) {
    if (typeof c === 'string' && SAFE_NAME.test(c) && !(await tx.findOne(Vm, { name: c }))) return c;
  }
  return undefined;
}

async function placedVm(tx: Em, d: Drift): Promise<Vm> {
  const vm = await tx.findOne(Vm, { id: d.vmId });
  if (!vm || vm.state === 'deleted') throw new ConflictError(`VM ${d.vmId} of drift ${d.id} is no longer in inventory`, 'vm', 'state', vm?.state ?? 'absent');
  return vm;
}

async function forget(tx: Em, d: Drift): Promise<Vm> {
  const vm = await placedVm(tx, d);
  await retireVm(tx, vm);
  vm.error = `lost: missing on host ${d.hostId}`;
  return vm;
}

async function fixState(tx: Em, d: Drift, obs: Record<string, unknown>, details: Record<string, unknown>): Promise<Vm> {
  const vm = await placedVm(tx, d);
  const state = inventoryStateOf(String(obs.state));
  const before = { hostId: vm.hostId, state: vm.state };
  if (d.kind === 'wrong-host') {
    const to = String(obs.hostId);
    if (obs.alsoOnHome === true) throw new ConflictError(`VM ${vm.id} also runs on its inventory host ${vm.hostId}: remove the extra copy on ${to} by hand`, 'drift', 'observed');
    // the VM's capacity moves with it
    await tx.nativeUpdate(Allocation, { vmId: vm.id, kind: 'vm' }, { hostId: to });
    vm.hostId = to;
  }
  vm.state = state;
  Object.assign(details, { before, after: { hostId: vm.hostId, state } });
  return vm;
}
