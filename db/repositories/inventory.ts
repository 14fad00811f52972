/**
 * Inventory: hosts (with computed usage), datastores, templates, networks + IP pools, VMs.
 *
 * Every function takes the Db (a fresh fork per call) or the caller's EntityManager. Creates
 * validate input (ValidationError naming the field, nothing written) and turn a taken id or name
 * into a ConflictError naming it. Updates of versioned rows (hosts, VMs) take an optional
 * `expectedVersion`: given, a stale version is a ConflictError (the caller decided on old data);
 * omitted, a concurrent writer only makes the update re-read and re-apply its own fields.
 */
import { OptimisticLockError, type EntityName } from '@mikro-orm/core';
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import {
  Datastore,
  Host,
  HOST_DRIVERS,
  HOST_STATES,
  IpPool,
  Network,
  Template,
  Vm,
  VM_STATES,
  type HostDriver,
  type HostState,
  type VmState,
  type VmWorkload,
} from '../entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { computeHostUsage, type HostUsage } from './capacity.js';
import { ipToInt, parseCidr, validatePoolRange } from './ipam.js';
import {
  assertInt,
  assertNonEmpty,
  assertOneOf,
  assertPositive,
  assertSafe,
  assertStringArray,
  decodeCursor,
  isUniqueViolation,
  newId,
  pageLimit,
  retryTransient,
  toPage,
  toPlain,
  type Jsonified,
  type Page,
  type PageRequest,
} from './util.js';

// ---- shared helpers ---------------------------------------------------------------------------

type Versioned = { id: string; version: number };

/** Read-modify-write of one row under its optimistic lock (see the file comment). */
async function updateRow<T extends Versioned>(
  x: Db | Em,
  entity: EntityName<T>,
  label: string,
  id: string,
  apply: (row: T) => void,
  expectedVersion?: number,
): Promise<T> {
  const base = emOf(x);
  return retryTransient(async () => {
    const em = base.fork();
    const row = (await em.findOne(entity, { id } as never)) as T | null;
    if (!row) throw new NotFoundError(label, id);
    if (expectedVersion !== undefined && row.version !== expectedVersion) {
      throw new ConflictError(`${label} ${id} changed: version is ${row.version}, expected ${expectedVersion}`, label, 'version', row.version);
    }
    apply(row);
    try {
      await em.flush();
    } catch (e) {
      if (e instanceof OptimisticLockError && expectedVersion !== undefined) {
        throw new ConflictError(`${label} ${id} changed concurrently (expected version ${expectedVersion})`, label, 'version', expectedVersion, { cause: e });
      }
      throw e; // without expectedVersion: retried on a fresh fork
    }
    return row;
  }, { attempts: 10 });
}

function keysetById<T extends { id: string }>(req: PageRequest, where: Record<string, unknown>): { where: Record<string, unknown>; limit: number } {
  const limit = pageLimit(req.limit);
  if (req.cursor) {
    const [id] = decodeCursor(req.cursor, 1);
    if (typeof id !== 'string') throw new ValidationError('cursor', 'is not a cursor returned by this list');
    where.id = { $gt: id };
  }
  return { where, limit };
}

async function listById<T extends { id: string }>(x: Db | Em, entity: EntityName<T>, req: PageRequest, filter: Record<string, unknown>): Promise<Page<T>> {
  const { where, limit } = keysetById(req, filter);
  const rows = (await emOf(x).find(entity, where as never, { orderBy: { id: 'asc' } as never, limit: limit + 1 })) as T[];
  return toPage(rows, limit, (r) => [r.id]);
}

async function mustGet<T extends object>(x: Db | Em, entity: EntityName<T>, label: string, id: string): Promise<T> {
  const row = (await emOf(x).findOne(entity, { id } as never)) as T | null;
  if (!row) throw new NotFoundError(label, id);
  return row;
}

function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

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

// ---- templates --------------------------------------------------------------------------------

export interface TemplateInput {
  /** Default: `tpl-<uuid>`. */
  id?: string;
  name: string;
  os: string;
  imagePath: string;
  datastoreIds: string[];
  diskGiB: number;
  minMemoryMiB: number;
  requiredCpuFeatures?: string[];
  owner?: string | null;
  department?: string | null;
  tags?: string[];
  sourceVmId?: string | null;
}

export type TemplatePatch = Partial<Omit<TemplateInput, 'id'>>;

function validateTemplate(t: TemplatePatch & { id?: string }, creating: boolean): void {
  if (creating && t.id !== undefined) assertSafe('id', t.id);
  if (creating || t.name !== undefined) assertSafe('name', t.name);
  if (creating || t.os !== undefined) assertNonEmpty('os', t.os);
  if (creating || t.imagePath !== undefined) assertNonEmpty('imagePath', t.imagePath);
  if (creating || t.datastoreIds !== undefined) assertStringArray('datastoreIds', t.datastoreIds);
  if (creating || t.diskGiB !== undefined) assertInt('diskGiB', t.diskGiB, 1);
  if (creating || t.minMemoryMiB !== undefined) assertInt('minMemoryMiB', t.minMemoryMiB, 0);
  if (t.requiredCpuFeatures !== undefined) assertStringArray('requiredCpuFeatures', t.requiredCpuFeatures);
  if (t.tags !== undefined) assertStringArray('tags', t.tags);
}

function templateNameTaken(name: string, cause?: unknown): ConflictError {
  return new ConflictError(`template name "${name}" is taken`, 'template', 'name', name, cause ? { cause } : undefined);
}

export async function createTemplate(x: Db | Em, input: TemplateInput): Promise<Template> {
  validateTemplate(input, true);
  const id = input.id ?? newId('tpl');
  const em = emOf(x).fork();
  const byName = await em.findOne(Template, { name: input.name });
  if (byName) {
    if (byName.id === id) return byName; // a retried create
    throw templateNameTaken(input.name);
  }
  if (await em.findOne(Template, { id })) throw new ConflictError(`template ${id} already exists`, 'template', 'id', id);
  const t = em.create(Template, {
    ...input,
    id,
    requiredCpuFeatures: input.requiredCpuFeatures ?? [],
    owner: input.owner ?? null,
    department: input.department ?? null,
    tags: input.tags ?? [],
    sourceVmId: input.sourceVmId ?? null,
  });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) throw templateNameTaken(input.name, e);
    throw e;
  }
  return t;
}

export const getTemplate = (x: Db | Em, id: string): Promise<Template> => mustGet(x, Template, 'template', id);

export async function getTemplateByName(x: Db | Em, name: string): Promise<Template> {
  const t = await emOf(x).findOne(Template, { name });
  if (!t) throw new NotFoundError('template', name);
  return t;
}

export interface TemplateFilter extends PageRequest {
  owner?: string;
  department?: string;
}

export async function listTemplates(x: Db | Em, filter: TemplateFilter = {}): Promise<Page<Template>> {
  return listById(x, Template, filter, definedOnly({ owner: filter.owner, department: filter.department }));
}

export async function updateTemplate(x: Db | Em, id: string, patch: TemplatePatch): Promise<Template> {
  validateTemplate(patch, false);
  const em = emOf(x).fork();
  const t = await getTemplate(em, id);
  if (patch.name !== undefined && patch.name !== t.name && (await em.findOne(Template, { name: patch.name }))) throw templateNameTaken(patch.name);
  Object.assign(t, definedOnly(patch));
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e) && patch.name) throw templateNameTaken(patch.name, e);
    throw e;
  }
  return t;
}

/** Idempotent: answers whether a row was deleted. */
export async function deleteTemplate(x: Db | Em, id: string): Promise<boolean> {
  return (await emOf(x).nativeDelete(Template, { id })) > 0;
}

// ---- networks and pools -----------------------------------------------------------------------

export interface NetworkInput {
  /** Default: `net-<name>`. */
  id?: string;
  name: string;
  vlan?: number | null;
  cidr: string;
  gateway: string;
  dns?: string[];
  hostIds?: string[];
}

export type NetworkPatch = Partial<Omit<NetworkInput, 'id' | 'cidr'>>;

function validateNetwork(n: NetworkPatch & { id?: string; cidr?: string }, creating: boolean, cidr?: string): void {
  if (creating && n.id !== undefined) assertSafe('id', n.id);
  if (creating || n.name !== undefined) assertSafe('name', n.name);
  if (n.vlan != null) assertInt('vlan', n.vlan, 1);
  if (n.vlan != null && n.vlan > 4094) throw new ValidationError('vlan', `must be 1..4094 (got ${n.vlan})`);
  const cidrText = (creating ? n.cidr : cidr) ?? '';
  const c = parseCidr(cidrText, 'cidr');
  if (creating || n.gateway !== undefined) {
    let gw: number;
    try {
      gw = ipToInt(n.gateway ?? '');
    } catch {
      throw new ValidationError('gateway', `"${n.gateway}" is not an IPv4 address`);
    }
    if (gw < c.first || gw > c.last) throw new ValidationError('gateway', `${n.gateway} is outside ${cidrText}`);
  }
  if (n.dns !== undefined) assertStringArray('dns', n.dns);
  if (n.hostIds !== undefined) assertStringArray('hostIds', n.hostIds);
}

function networkNameTaken(name: string, cause?: unknown): ConflictError {
  return new ConflictError(`network name "${name}" is taken`, 'network', 'name', name, cause ? { cause } : undefined);
}

export async function createNetwork(x: Db | Em, input: NetworkInput): Promise<Network> {
  validateNetwork(input, true);
  const id = input.id ?? `net-${input.name}`.slice(0, 63);
  const em = emOf(x).fork();
  if (await em.findOne(Network, { name: input.name })) throw networkNameTaken(input.name);
  if (await em.findOne(Network, { id })) throw new ConflictError(`network ${id} already exists`, 'network', 'id', id);
  const n = em.create(Network, { ...input, id, vlan: input.vlan ?? null, dns: input.dns ?? [], hostIds: input.hostIds ?? [] });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) throw networkNameTaken(input.name, e);
    throw e;
  }
  return n;
}

export const getNetwork = (x: Db | Em, id: string): Promise<Network> => mustGet(x, Network, 'network', id);

export async function getNetworkByName(x: Db | Em, name: string): Promise<Network> {
  const n = await emOf(x).findOne(Network, { name });
  if (!n) throw new NotFoundError('network', name);
  return n;
}

export async function listNetworks(x: Db | Em, filter: PageRequest = {}): Promise<Page<Network>> {
  return listById(x, Network, filter, {});
}

export async function updateNetwork(x: Db | Em, id: string, patch: NetworkPatch): Promise<Network> {
  const em = emOf(x).fork();
  const n = await getNetwork(em, id);
  validateNetwork(patch, false, n.cidr);
  if (patch.name !== undefined && patch.name !== n.name && (await em.findOne(Network, { name: patch.name }))) throw networkNameTaken(patch.name);
  Object.assign(n, definedOnly(patch));
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e) && patch.name) throw networkNameTaken(patch.name, e);
    throw e;
  }
  return n;
}

export interface IpPoolInput {
  id?: string;
  networkId: string;
  rangeStart: string;
  rangeEnd: string;
}

/** Adds an address range to a network: inside its CIDR, not overlapping another pool. */
export async function createIpPool(x: Db | Em, input: IpPoolInput): Promise<IpPool> {
  assertNonEmpty('networkId', input.networkId);
  if (input.id !== undefined) assertSafe('id', input.id);
  const em = emOf(x).fork();
  const network = await getNetwork(em, input.networkId);
  const { start, end } = validatePoolRange(network, input.rangeStart, input.rangeEnd);
  for (const p of await em.find(IpPool, { networkId: network.id })) {
    if (p.id === input.id) return p; // a retried create
    if (start <= ipToInt(p.rangeEnd) && ipToInt(p.rangeStart) <= end) {
      throw new ConflictError(`pool ${input.rangeStart}-${input.rangeEnd} overlaps pool ${p.id} (${p.rangeStart}-${p.rangeEnd}) of network ${network.name}`, 'ipPool', 'rangeStart', input.rangeStart);
    }
  }
  const pool = em.create(IpPool, { id: input.id ?? newId('pool'), networkId: network.id, rangeStart: input.rangeStart, rangeEnd: input.rangeEnd });
  await em.flush();
  return pool;
}

export async function listIpPools(x: Db | Em, networkId: string): Promise<IpPool[]> {
  return emOf(x).find(IpPool, { networkId }, { orderBy: { rangeStart: 'asc', id: 'asc' } });
}

/** Idempotent; addresses already handed out stay allocated. */
export async function deleteIpPool(x: Db | Em, id: string): Promise<boolean> {
  return (await emOf(x).nativeDelete(IpPool, { id })) > 0;
}

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
