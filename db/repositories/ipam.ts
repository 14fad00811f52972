/**
 * IP address management (IPv4). The database forbids a double allocation with
 * UNIQUE (networkId, address), so allocators in different processes race on INSERT and the loser
 * moves on to the next free address; nothing is locked. UNIQUE (networkId, vmId) makes
 * `allocateIp` idempotent per VM: a retried activity gets its own address back.
 */
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { IpAllocation, IpPool, Network } from '../entities.js';
import { CapacityError, NotFoundError, ValidationError } from '../errors.js';
import { assertNonEmpty, isUniqueViolation, newId } from './util.js';

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  const nums = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  if (nums.length !== 4 || nums.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`"${ip}" is not an IPv4 address`);
  return ((nums[0]! << 24) >>> 0) + (nums[1]! << 16) + (nums[2]! << 8) + nums[3]!;
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr {
  network: number;
  prefixLength: number;
  /** First and last address of the block (network and broadcast for prefixes < 31). */
  first: number;
  last: number;
}

/** Parses `a.b.c.d/n`; throws ValidationError naming `field`. */
export function parseCidr(cidr: string, field = 'cidr'): Cidr {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr ?? '');
  if (!m) throw new ValidationError(field, `"${cidr}" is not an IPv4 CIDR (a.b.c.d/n)`);
  let base: number;
  try {
    base = ipToInt(m[1]!);
  } catch {
    throw new ValidationError(field, `"${cidr}" is not an IPv4 CIDR (a.b.c.d/n)`);
  }
  const prefixLength = Number(m[2]);
  if (prefixLength > 32) throw new ValidationError(field, `prefix length ${prefixLength} is over 32`);
  const size = 2 ** (32 - prefixLength);
  const first = base - (base % size);
  if (first !== base) throw new ValidationError(field, `"${cidr}" has host bits set (network is ${intToIp(first)}/${prefixLength})`);
  return { network: first, prefixLength, first, last: first + size - 1 };
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ip >= c.first && ip <= c.last;
}

/** Addresses a pool may hand out: inside the CIDR, not its network/broadcast address, not the gateway. */
function usable(c: Cidr, gateway: number, ip: number): boolean {
  if (!cidrContains(c, ip) || ip === gateway) return false;
  if (c.prefixLength < 31 && (ip === c.first || ip === c.last)) return false;
  return true;
}

/** Checks a pool range against its network; throws ValidationError naming the field. */
export function validatePoolRange(network: { cidr: string; gateway: string }, rangeStart: string, rangeEnd: string): { start: number; end: number } {
  const c = parseCidr(network.cidr);
  let start: number, end: number;
  try {
    start = ipToInt(rangeStart);
  } catch {
    throw new ValidationError('rangeStart', `"${rangeStart}" is not an IPv4 address`);
  }
  try {
    end = ipToInt(rangeEnd);
  } catch {
    throw new ValidationError('rangeEnd', `"${rangeEnd}" is not an IPv4 address`);
  }
  if (!cidrContains(c, start)) throw new ValidationError('rangeStart', `${rangeStart} is outside ${network.cidr}`);
  if (!cidrContains(c, end)) throw new ValidationError('rangeEnd', `${rangeEnd} is outside ${network.cidr}`);
  if (end < start) throw new ValidationError('rangeEnd', `${rangeEnd} is below rangeStart ${rangeStart}`);
  return { start, end };
}

export interface AllocateIpInput {
  networkId: string;
  vmId: string;
}

/**
 * Gives the VM the lowest free address of the network's pools (skipping the gateway and the
 * network/broadcast addresses). Idempotent per (networkId, vmId). Throws CapacityError
 * (resource 'ip') naming the network when its pools are exhausted, NotFoundError for an unknown
 * network.
 */
export async function allocateIp(x: Db | Em, input: AllocateIpInput): Promise<IpAllocation> {
  assertNonEmpty('networkId', input.networkId);
  assertNonEmpty('vmId', input.vmId);
  const base = emOf(x);
  const network = await base.fork().findOne(Network, { id: input.networkId });
  if (!network) throw new NotFoundError('network', input.networkId);
  const cidr = parseCidr(network.cidr);
  const gateway = ipToInt(network.gateway);
  const pools = await base.fork().find(IpPool, { networkId: network.id }, { orderBy: { rangeStart: 'asc', id: 'asc' } });
  const ranges = pools.map((p) => ({ start: ipToInt(p.rangeStart), end: ipToInt(p.rangeEnd) })).sort((a, b) => a.start - b.start);
  let size = 0;
  for (const r of ranges) for (let n = r.start; n <= r.end; n++) if (usable(cidr, gateway, n)) size++;

  // Every failed INSERT means another allocator took that address (or this VM got one
  // concurrently); each round re-reads, so the loop ends within size + a few rounds.
  for (let round = 0; round <= size + 5; round++) {
    const em = base.fork();
    const mine = await em.findOne(IpAllocation, { networkId: network.id, vmId: input.vmId });
    if (mine) return mine;
    const taken = new Set((await em.find(IpAllocation, { networkId: network.id }, { fields: ['address'] })).map((a) => a.address));
    let candidate: string | undefined;
    outer: for (const r of ranges) {
      for (let n = r.start; n <= r.end; n++) {
        if (!usable(cidr, gateway, n)) continue;
        const ip = intToIp(n);
        if (!taken.has(ip)) {
          candidate = ip;
          break outer;
        }
      }
    }
    if (!candidate) {
      throw new CapacityError(
        `ip: network ${network.name} (${network.id}) has no free address: ${taken.size} allocated, ${size} in its pools${ranges.length === 0 ? ' (it has no pool)' : ''}`,
        'ip',
        { networkId: network.id, free: 0, capacity: size },
      );
    }
    const row = em.create(IpAllocation, { id: newId('ip'), networkId: network.id, address: candidate, vmId: input.vmId });
    try {
      await em.flush();
      return row;
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
    }
  }
  throw new CapacityError(`ip: network ${network.name} (${network.id}): gave up after ${size + 6} collisions`, 'ip', { networkId: network.id });
}

/** Idempotent; answers the number of addresses released. Joins the caller's transaction. */
export async function releaseIp(x: Db | Em, input: { vmId: string; networkId?: string }): Promise<number> {
  assertNonEmpty('vmId', input.vmId);
  const em = emOf(x);
  return em.nativeDelete(IpAllocation, input.networkId ? { vmId: input.vmId, networkId: input.networkId } : { vmId: input.vmId });
}

export async function listIpAllocations(x: Db | Em, filter: { networkId?: string; vmId?: string } = {}): Promise<IpAllocation[]> {
  const where: Record<string, string> = {};
  if (filter.networkId) where.networkId = filter.networkId;
  if (filter.vmId) where.vmId = filter.vmId;
  return emOf(x).find(IpAllocation, where, { orderBy: { networkId: 'asc', address: 'asc' } });
}
