// Hosts (with computed usage from allocations) and their datastores.
// Part of the inventory repository (see inventory.ts for the rules every function follows).
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Datastore, Host, HOST_DRIVERS, HOST_STATES, type HostDriver, type HostState } from '../entities.js';
import { ConflictError, ValidationError } from '../errors.js';
import { computeHostUsage, type HostUsage } from './capacity.js';
import { assertInt, assertNonEmpty, assertOneOf, assertPositive, assertSafe, assertStringArray, isUniqueViolation, toPlain, type Jsonified, type Page, type PageRequest } from './util.js';
import { updateRow, listById, mustGet, definedOnly } from './rows.js';

// ---- hosts ------------------------------------------------------------------------------------

export interface HostInput {
  id: string;
  name?: string;
  rack?: string | null;
  cpuModel: string;
  cpuFeatures?: string[];
  cpus: number;
  memoryMiB: number;
  cpuOvercommit?: number;
  memoryOvercommit?: number;
  maintenance?: boolean;
  state?: HostState;
  driver?: HostDriver;
  migrationAddress?: string | null;
  tags?: string[];
  maxOutgoingMigrations?: number;
  maxIncomingMigrations?: number;
}

export type HostPatch = Partial<Omit<HostInput, 'id'>>;

function validateHost(h: HostPatch & { id?: string }, creating: boolean): void {
  if (creating) assertSafe('id', h.id);
  if (h.name !== undefined) assertNonEmpty('name', h.name);
  if (creating || h.cpuModel !== undefined) assertNonEmpty('cpuModel', h.cpuModel);
  if (creating || h.cpus !== undefined) assertInt('cpus', h.cpus, 1);
  if (creating || h.memoryMiB !== undefined) assertInt('memoryMiB', h.memoryMiB, 1);
  if (h.cpuOvercommit !== undefined) assertPositive('cpuOvercommit', h.cpuOvercommit);
  if (h.memoryOvercommit !== undefined) assertPositive('memoryOvercommit', h.memoryOvercommit);
  if (h.cpuFeatures !== undefined) assertStringArray('cpuFeatures', h.cpuFeatures);
  if (h.tags !== undefined) assertStringArray('tags', h.tags);
  if (h.state !== undefined) assertOneOf('state', h.state, HOST_STATES);
  if (h.driver !== undefined) assertOneOf('driver', h.driver, HOST_DRIVERS);
  if (h.maintenance !== undefined && typeof h.maintenance !== 'boolean') throw new ValidationError('maintenance', 'must be a boolean');
  if (h.maxOutgoingMigrations !== undefined) assertInt('maxOutgoingMigrations', h.maxOutgoingMigrations, 0);
  if (h.maxIncomingMigrations !== undefined) assertInt('maxIncomingMigrations', h.maxIncomingMigrations, 0);
}

export async function createHost(x: Db | Em, input: HostInput): Promise<Host> {
  validateHost(input, true);
  const em = emOf(x).fork();
  if (await em.findOne(Host, { id: input.id })) throw new ConflictError(`host ${input.id} already exists`, 'host', 'id', input.id);
  const host = em.create(Host, {
    ...input,
    name: input.name ?? input.id,
    rack: input.rack ?? null,
    cpuFeatures: input.cpuFeatures ?? [],
    migrationAddress: input.migrationAddress ?? null,
    tags: input.tags ?? [],
  });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) throw new ConflictError(`host ${input.id} already exists`, 'host', 'id', input.id, { cause: e });
    throw e;
  }
  return host;
}

export const getHost = (x: Db | Em, id: string): Promise<Host> => mustGet(x, Host, 'host', id);

export interface HostFilter extends PageRequest {
  maintenance?: boolean;
  state?: HostState;
}

export async function listHosts(x: Db | Em, filter: HostFilter = {}): Promise<Page<Host>> {
  return listById(x, Host, filter, definedOnly({ maintenance: filter.maintenance, state: filter.state }));
}

export async function updateHost(x: Db | Em, id: string, patch: HostPatch, opts: { expectedVersion?: number } = {}): Promise<Host> {
  validateHost(patch, false);
  const clean = definedOnly(patch);
  return updateRow(x, Host, 'host', id, (h) => Object.assign(h, clean), opts.expectedVersion);
}

export async function setHostMaintenance(x: Db | Em, id: string, enabled: boolean): Promise<Host> {
  return updateHost(x, id, { maintenance: enabled });
}

/** A host as plain JSON plus its computed usage (what `GET /v1/hosts/:id` shows). */
export type HostWithUsage = Jsonified<Host> & { usage: HostUsage };

export async function getHostWithUsage(x: Db | Em, id: string): Promise<HostWithUsage> {
  const em = emOf(x);
  const host = await getHost(em, id);
  const usage = (await computeHostUsage(em, [host])).get(id)!;
  return { ...toPlain(host), usage };
}

export async function listHostsWithUsage(x: Db | Em, filter: HostFilter = {}): Promise<Page<HostWithUsage>> {
  const em = emOf(x);
  const page = await listHosts(em, filter);
  const usage = await computeHostUsage(em, page.items);
  return { items: page.items.map((h) => ({ ...toPlain(h), usage: usage.get(h.id)! })), nextCursor: page.nextCursor };
}

// ---- datastores -------------------------------------------------------------------------------

export interface DatastoreInput {
  id: string;
  name?: string;
  shared?: boolean;
  capacityGiB: number;
  throughputMiBps: number;
  hostIds: string[];
}

export type DatastorePatch = Partial<Omit<DatastoreInput, 'id'>>;

function validateDatastore(d: DatastorePatch & { id?: string }, creating: boolean): void {
  if (creating) assertSafe('id', d.id);
  if (d.name !== undefined) assertNonEmpty('name', d.name);
  if (creating || d.capacityGiB !== undefined) assertInt('capacityGiB', d.capacityGiB, 0);
  if (creating || d.throughputMiBps !== undefined) assertInt('throughputMiBps', d.throughputMiBps, 1);
  if (creating || d.hostIds !== undefined) assertStringArray('hostIds', d.hostIds);
  if (d.shared !== undefined && typeof d.shared !== 'boolean') throw new ValidationError('shared', 'must be a boolean');
}

export async function createDatastore(x: Db | Em, input: DatastoreInput): Promise<Datastore> {
  validateDatastore(input, true);
  const name = input.name ?? input.id;
  const em = emOf(x).fork();
  if (await em.findOne(Datastore, { id: input.id })) throw new ConflictError(`datastore ${input.id} already exists`, 'datastore', 'id', input.id);
  if (await em.findOne(Datastore, { name })) throw new ConflictError(`datastore name "${name}" is taken`, 'datastore', 'name', name);
  const ds = em.create(Datastore, { ...input, name, shared: input.shared ?? input.hostIds.length > 1 });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) throw new ConflictError(`datastore ${input.id} or name "${name}" is taken`, 'datastore', 'name', name, { cause: e });
    throw e;
  }
  return ds;
}

export const getDatastore = (x: Db | Em, id: string): Promise<Datastore> => mustGet(x, Datastore, 'datastore', id);

export async function listDatastores(x: Db | Em, filter: PageRequest = {}): Promise<Page<Datastore>> {
  return listById(x, Datastore, filter, {});
}

export async function updateDatastore(x: Db | Em, id: string, patch: DatastorePatch, opts: { expectedVersion?: number } = {}): Promise<Datastore> {
  validateDatastore(patch, false);
  const clean = definedOnly(patch);
  try {
    return await updateRow(x, Datastore, 'datastore', id, (d) => Object.assign(d, clean), opts.expectedVersion);
  } catch (e) {
    if (isUniqueViolation(e)) throw new ConflictError(`datastore name "${patch.name}" is taken`, 'datastore', 'name', patch.name, { cause: e });
    throw e;
  }
}
