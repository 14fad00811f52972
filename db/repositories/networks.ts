// Networks and their IP pools (the allocation itself is ipam.ts).
// Part of the inventory repository (see inventory.ts for the rules every function follows).
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { IpPool, Network } from '../entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { ipToInt, parseCidr, validatePoolRange } from './ipam.js';
import { assertInt, assertNonEmpty, assertSafe, assertStringArray, isUniqueViolation, newId, type Page, type PageRequest } from './util.js';
import { listById, mustGet, definedOnly } from './rows.js';

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
