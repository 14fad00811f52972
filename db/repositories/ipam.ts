// IP address management. The database forbids a double allocation (UNIQUE (networkId, address)),
// so allocators in different processes race on INSERT and the loser moves on to the next free
// address. Idempotent per (networkId, vmId): a retried activity gets its own address back.
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { IpAllocation, IpPool, Network } from '../entities.js';
import { CapacityError, NotFoundError } from '../errors.js';

export function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`"${ip}" is not an IPv4 address`);
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export async function allocateIp(db: Db, input: { networkId: string; vmId: string }): Promise<IpAllocation> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const em = db.em();
    const mine = await em.findOne(IpAllocation, { networkId: input.networkId, vmId: input.vmId });
    if (mine) return mine;
    const network = await em.findOne(Network, { id: input.networkId });
    if (!network) throw new NotFoundError('network', input.networkId);
    const pools = await em.find(IpPool, { networkId: input.networkId }, { orderBy: { rangeStart: 'asc' } });
    const used = new Set((await em.find(IpAllocation, { networkId: input.networkId })).map((a) => a.address));
    used.add(network.gateway);
    let candidate: string | undefined;
    let size = 0;
    for (const pool of pools) {
      const lo = ipToInt(pool.rangeStart);
      const hi = ipToInt(pool.rangeEnd);
      size += hi - lo + 1;
      for (let n = lo; n <= hi && !candidate; n++) if (!used.has(intToIp(n))) candidate = intToIp(n);
      if (candidate) break;
    }
    if (!candidate) {
      throw new CapacityError(`ip: network ${network.name} has no free address (${used.size - 1} of ${size} in its pools used)`, 'ip', { networkId: input.networkId });
    }
    try {
      em.create(IpAllocation, { id: `ip-${input.networkId}-${candidate}`, networkId: input.networkId, address: candidate, vmId: input.vmId });
      await em.flush();
      return (await db.em().findOneOrFail(IpAllocation, { networkId: input.networkId, vmId: input.vmId }));
    } catch (err) {
      // someone else took this address (or this VM already got one): look again
      if (err instanceof UniqueConstraintViolationException) continue;
      throw err;
    }
  }
  throw new CapacityError(`ip: gave up allocating on network ${input.networkId} after 1000 collisions`, 'ip', { networkId: input.networkId });
}

export async function releaseIp(db: Db | Em, input: { vmId: string; networkId?: string }): Promise<number> {
  const em = emOf(db);
  return em.nativeDelete(IpAllocation, input.networkId ? { vmId: input.vmId, networkId: input.networkId } : { vmId: input.vmId });
}
