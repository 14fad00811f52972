// VMs: create, read, list with filters, update under the optimistic lock, state changes, delete.
// Part of the inventory repository (see inventory.ts for the rules every function follows).
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Vm, VM_STATES, type VmState, type VmWorkload } from '../entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { assertInt, assertOneOf, assertSafe, assertStringArray, isUniqueViolation, newId, type Page, type PageRequest } from './util.js';
import { updateRow, listById, mustGet, definedOnly } from './rows.js';
import { release } from './capacity.js';
import { releaseIp } from './ipam.js';

// ---- VMs --------------------------------------------------------------------------------------

export interface VmInput {
  /** Default: `vm-<uuid>`. Workflows pass a deterministic id so a retried create finds its row. */
  id?: string;
  name: string;
  state?: VmState;
  hostId?: string | null;
  datastoreId?: string | null;
  ip?: string | null;
  networkId?: string | null;
  mac?: string | null;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  templateId?: string | null;
  diskPaths?: string[];
  seedPath?: string | null;
  cpuFeatures?: string[];
  tags?: string[];
  workload?: VmWorkload | null;
  error?: string | null;
}

export type VmPatch = Partial<Omit<VmInput, 'id'>>;

function validateVm(v: VmPatch & { id?: string }, creating: boolean): void {
  if (creating && v.id !== undefined) assertSafe('id', v.id);
  if (creating || v.name !== undefined) assertSafe('name', v.name);
  if (v.state !== undefined) assertOneOf('state', v.state, VM_STATES);
  if (creating || v.cpus !== undefined) assertInt('cpus', v.cpus, 1);
  if (creating || v.memoryMiB !== undefined) assertInt('memoryMiB', v.memoryMiB, 1);
  if (creating || v.diskGiB !== undefined) assertInt('diskGiB', v.diskGiB, 0);
  if (v.diskPaths !== undefined) assertStringArray('diskPaths', v.diskPaths);
  if (v.cpuFeatures !== undefined) assertStringArray('cpuFeatures', v.cpuFeatures);
  if (v.tags !== undefined) assertStringArray('tags', v.tags);
  if (v.workload != null) {
    const w = v.workload;
    if (typeof w.dirtyRateBytesPerSec !== 'number' || w.dirtyRateBytesPerSec < 0) throw new ValidationError('workload.dirtyRateBytesPerSec', 'must be a number >= 0');
    if (typeof w.writableWorkingSetBytes !== 'number' || w.writableWorkingSetBytes < 0) throw new ValidationError('workload.writableWorkingSetBytes', 'must be a number >= 0');
  }
}

function vmNameTaken(name: string, cause?: unknown): ConflictError {
  return new ConflictError(`VM name "${name}" is taken`, 'vm', 'name', name, cause ? { cause } : undefined);
}

/** Creates a VM record. A taken name is a ConflictError naming it; the same id+name again returns the row. */
export async function createVm(x: Db | Em, input: VmInput): Promise<Vm> {
  validateVm(input, true);
  const id = input.id ?? newId('vm');
  const em = emOf(x).fork();
  const byName = await em.findOne(Vm, { name: input.name });
  if (byName) {
    if (byName.id === id) return byName;
    throw vmNameTaken(input.name);
  }
  if (await em.findOne(Vm, { id })) throw new ConflictError(`VM ${id} already exists under another name`, 'vm', 'id', id);
  const vm = em.create(Vm, {
    ...input,
    id,
    state: input.state ?? 'provisioning',
    hostId: input.hostId ?? null,
    datastoreId: input.datastoreId ?? null,
    ip: input.ip ?? null,
    networkId: input.networkId ?? null,
    mac: input.mac ?? null,
    templateId: input.templateId ?? null,
    diskPaths: input.diskPaths ?? [],
    seedPath: input.seedPath ?? null,
    cpuFeatures: input.cpuFeatures ?? [],
    tags: input.tags ?? [],
    workload: input.workload ?? null,
    error: input.error ?? null,
  });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) {
      // lost a race: the same request (same id) is fine, anything else names the conflict
      const winner = await emOf(x).fork().findOne(Vm, { name: input.name });
      if (winner?.id === id) return winner;
      throw winner ? vmNameTaken(input.name, e) : new ConflictError(`VM ${id} already exists`, 'vm', 'id', id, { cause: e });
    }
    throw e;
  }
  return vm;
}

export const getVm = (x: Db | Em, id: string): Promise<Vm> => mustGet(x, Vm, 'vm', id);

export async function getVmByName(x: Db | Em, name: string): Promise<Vm> {
  const vm = await emOf(x).findOne(Vm, { name });
  if (!vm) throw new NotFoundError('vm', name);
  return vm;
}

export interface VmFilter extends PageRequest {
  state?: VmState;
  hostId?: string;
  networkId?: string;
  /** Include state 'deleted' (default false). */
  includeDeleted?: boolean;
}

/** Keyset-paginated by id: `{ items, nextCursor }`. */
export async function listVms(x: Db | Em, filter: VmFilter = {}): Promise<Page<Vm>> {
  if (filter.state !== undefined) assertOneOf('state', filter.state, VM_STATES);
  const where: Record<string, unknown> = definedOnly({ hostId: filter.hostId, networkId: filter.networkId });
  if (filter.state) where.state = filter.state;
  else if (!filter.includeDeleted) where.state = { $ne: 'deleted' };
  return listById(x, Vm, filter, where);
}

/** Patches a VM under its optimistic lock (see the file comment for expectedVersion). */
export async function updateVm(x: Db | Em, id: string, patch: VmPatch, opts: { expectedVersion?: number } = {}): Promise<Vm> {
  validateVm(patch, false);
  const clean = definedOnly(patch);
  try {
    return await updateRow(x, Vm, 'vm', id, (vm) => Object.assign(vm, clean), opts.expectedVersion);
  } catch (e) {
    if (isUniqueViolation(e) && patch.name) throw vmNameTaken(patch.name, e);
    throw e;
  }
}

/**
 * Moves a VM to `state`. `from` guards the transition (ConflictError naming the current state);
 * `expectedVersion` makes it a compare-and-set on the whole row.
 */
export async function setVmState(
  x: Db | Em,
  id: string,
  state: VmState,
  opts: { from?: VmState[]; expectedVersion?: number; error?: string | null } = {},
): Promise<Vm> {
  assertOneOf('state', state, VM_STATES);
  return updateRow(
    x,
    Vm,
    'vm',
    id,
    (vm) => {
      if (opts.from && !opts.from.includes(vm.state)) {
        throw new ConflictError(`VM ${vm.name} is ${vm.state}, not ${opts.from.join(' or ')}`, 'vm', 'state', vm.state);
      }
      vm.state = state;
      if (opts.error !== undefined) vm.error = opts.error;
    },
    opts.expectedVersion,
  );
}

/** Removes the VM row (its allocations and IPs are released by the caller's workflow). Idempotent. */
export async function deleteVm(x: Db | Em, id: string): Promise<boolean> {
  return (await emOf(x).nativeDelete(Vm, { id })) > 0;
}

/**
 * The VM leaves the inventory (deleted, or forgotten once lost): its reservation and IP are
 * released, it is on no host, and its name is free for a new VM; the row stays, under the
 * tombstone name `<name>.deleted.<id>`, for the audit trail. In the caller's transaction.
 * Idempotent: a retry that finds the VM retired changes nothing (its name is not suffixed twice).
 */
export async function retireVm(tx: Em, vm: Vm): Promise<void> {
  if (vm.state === 'deleted') return;
  await release(tx, { vmId: vm.id });
  if (vm.networkId) await releaseIp(tx, { vmId: vm.id, networkId: vm.networkId });
  vm.state = 'deleted';
  vm.hostId = null;
  vm.ip = null;
  vm.name = `${vm.name}.deleted.${vm.id}`.slice(0, 250);
}
