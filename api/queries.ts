// Thin read queries the API needs (on a per-request EntityManager fork) and the JSON shapes it
// answers with. Writes that belong to workflows (placement, reservations, IPAM) are not here:
// the API only registers inventory records and the provisional Vm row.
import type { EntityName, FilterQuery } from '@mikro-orm/core';
import type { Em } from '../db/orm.js';
import { Allocation, Datastore, Host, IpAllocation, IpPool, Network, Operation, Template, Vm } from '../db/entities.js';
import { ipToInt } from './schemas/index.js';

const iso = (d: Date | null | undefined) => (d ? new Date(d).toISOString() : null);

/** Finds a row by id, then by its unique name. */
export async function byIdOrName<T extends { id: string; name: string }>(em: Em, entity: EntityName<T>, ref: string): Promise<T | null> {
  return (
    ((await em.findOne(entity, { id: ref } as FilterQuery<T>)) as T | null) ??
    ((await em.findOne(entity, { name: ref } as FilterQuery<T>)) as T | null)
  );
}

// ---------------------------------------------------------------- VMs
export function vmDto(v: Vm) {
  return {
    id: v.id,
    name: v.name,
    state: v.state,
    hostId: v.hostId ?? null,
    datastoreId: v.datastoreId ?? null,
    networkId: v.networkId ?? null,
    ip: v.ip ?? null,
    mac: v.mac ?? null,
    cpus: v.cpus,
    memoryMiB: v.memoryMiB,
    diskGiB: v.diskGiB,
    templateId: v.templateId ?? null,
    diskPaths: v.diskPaths ?? [],
    cpuFeatures: v.cpuFeatures ?? [],
    tags: v.tags ?? [],
    error: v.error ?? null,
    createdAt: iso(v.createdAt)!,
    updatedAt: iso(v.updatedAt)!,
  };
}

// ---------------------------------------------------------------- hosts
export interface Usage {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  vms: number;
  reservations: number;
}

export async function usageByHost(em: Em, hostIds?: string[]): Promise<Map<string, Usage>> {
  const where = hostIds ? { hostId: { $in: hostIds } } : {};
  const rows = await em.find(Allocation, where, { fields: ['hostId', 'kind', 'cpus', 'memoryMiB', 'diskGiB'] });
  const out = new Map<string, Usage>();
  for (const a of rows) {
    const u = out.get(a.hostId) ?? { cpus: 0, memoryMiB: 0, diskGiB: 0, vms: 0, reservations: 0 };
    u.cpus += a.cpus;
    u.memoryMiB += a.memoryMiB;
    u.diskGiB += a.diskGiB;
    if (a.kind === 'vm') u.vms++;
    else u.reservations++;
    out.set(a.hostId, u);
  }
  return out;
}

export function allocatable(h: Host) {
  return { cpus: Math.floor(h.cpus * h.cpuOvercommit), memoryMiB: Math.floor(h.memoryMiB * h.memoryOvercommit) };
}

export function hostDto(h: Host, u: Usage | undefined) {
  const used = u ?? { cpus: 0, memoryMiB: 0, diskGiB: 0, vms: 0, reservations: 0 };
  const cap = allocatable(h);
  return {
    id: h.id,
    name: h.name,
    rack: h.rack ?? null,
    state: h.state,
    maintenance: h.maintenance,
    driver: h.driver,
    cpuModel: h.cpuModel,
    cpuFeatures: h.cpuFeatures ?? [],
    migrationAddress: h.migrationAddress ?? null,
    tags: h.tags ?? [],
    maxOutgoingMigrations: h.maxOutgoingMigrations,
    maxIncomingMigrations: h.maxIncomingMigrations,
    capacity: { cpus: h.cpus, memoryMiB: h.memoryMiB, cpuOvercommit: h.cpuOvercommit, memoryOvercommit: h.memoryOvercommit },
    allocatable: cap,
    usage: {
      cpus: used.cpus,
      memoryMiB: used.memoryMiB,
      diskGiB: used.diskGiB,
      vms: used.vms,
      reservations: used.reservations,
    },
    free: { cpus: cap.cpus - used.cpus, memoryMiB: cap.memoryMiB - used.memoryMiB },
    utilization: {
      cpu: cap.cpus > 0 ? used.cpus / cap.cpus : 0,
      memory: cap.memoryMiB > 0 ? used.memoryMiB / cap.memoryMiB : 0,
    },
    createdAt: iso(h.createdAt),
    updatedAt: iso(h.updatedAt),
  };
}

// ---------------------------------------------------------------- datastores
export async function datastoreDto(em: Em, d: Datastore) {
  const rows = await em.find(Allocation, { datastoreId: d.id }, { fields: ['diskGiB'] });
  const usedGiB = rows.reduce((a, r) => a + r.diskGiB, 0);
  return {
    id: d.id,
    name: d.name,
    shared: d.shared,
    capacityGiB: d.capacityGiB,
    usedGiB,
    freeGiB: d.capacityGiB - usedGiB,
    throughputMiBps: d.throughputMiBps,
    hostIds: d.hostIds ?? [],
    createdAt: iso(d.createdAt),
    updatedAt: iso(d.updatedAt),
  };
}

// ---------------------------------------------------------------- templates
export function templateDto(t: Template) {
  return {
    id: t.id,
    name: t.name,
    os: t.os,
    imagePath: t.imagePath,
    datastoreIds: t.datastoreIds ?? [],
    diskGiB: t.diskGiB,
    minMemoryMiB: t.minMemoryMiB,
    requiredCpuFeatures: t.requiredCpuFeatures ?? [],
    owner: t.owner ?? null,
    department: t.department ?? null,
    tags: t.tags ?? [],
    sourceVmId: t.sourceVmId ?? null,
    createdAt: iso(t.createdAt),
    updatedAt: iso(t.updatedAt),
  };
}

// ---------------------------------------------------------------- networks
export async function networkDto(em: Em, n: Network, withUsage: boolean) {
  const pools = await em.find(IpPool, { networkId: n.id }, { orderBy: { id: 'asc' } });
  const base = {
    id: n.id,
    name: n.name,
    vlan: n.vlan ?? null,
    cidr: n.cidr,
    gateway: n.gateway,
    dns: n.dns ?? [],
    hostIds: n.hostIds ?? [],
    createdAt: iso(n.createdAt),
    updatedAt: iso(n.updatedAt),
  };
  if (!withUsage) return { ...base, pools: pools.map((p) => ({ id: p.id, start: p.rangeStart, end: p.rangeEnd })) };
  const allocated = (await em.find(IpAllocation, { networkId: n.id }, { fields: ['address'] })).map((a) => ipToInt(a.address));
  let total = 0;
  let used = 0;
  const poolDtos = pools.map((p) => {
    const lo = ipToInt(p.rangeStart);
    const hi = ipToInt(p.rangeEnd);
    const size = Math.max(0, hi - lo + 1);
    const inUse = allocated.filter((a) => a >= lo && a <= hi).length;
    total += size;
    used += inUse;
    return { id: p.id, start: p.rangeStart, end: p.rangeEnd, size, used: inUse, free: size - inUse };
  });
  return { ...base, pools: poolDtos, usage: { total, used, free: total - used } };
}

// ---------------------------------------------------------------- operations
export function operationDto(o: Operation) {
  return {
    id: o.id,
    workflowId: o.workflowId,
    runId: o.runId ?? null,
    kind: o.kind,
    subkind: o.subkind ?? null,
    vmId: o.vmId ?? null,
    state: o.state,
    stage: o.stage ?? null,
    sourceHostId: o.sourceHostId ?? null,
    targetHostId: o.targetHostId ?? null,
    details: o.details ?? {},
    principal: o.principal ?? null,
    error: o.error ?? null,
    startedAt: iso(o.startedAt),
    endedAt: iso(o.endedAt),
    updatedAt: iso(o.updatedAt),
  };
}

/** An operation by its id, its run id, or (latest run of) its workflow id. */
export async function findOperation(em: Em, ref: string, kind?: Operation['kind']): Promise<Operation | null> {
  const k = kind ? { kind } : {};
  return (
    (await em.findOne(Operation, { id: ref, ...k })) ??
    (await em.findOne(Operation, { runId: ref, ...k })) ??
    (await em.findOne(Operation, { workflowId: ref, ...k }, { orderBy: { startedAt: 'desc', id: 'desc' } }))
  );
}

/** The audit record of a running workflow, for a 409's operation id. */
export async function runningOperation(em: Em, workflowId: string): Promise<Operation | null> {
  return em.findOne(Operation, { workflowId, state: 'running' }, { orderBy: { startedAt: 'desc' } });
}

/** Running operations on a VM (lifecycle actions refuse to overlap them). */
export async function runningOperationsOfVm(em: Em, vmId: string): Promise<Operation[]> {
  return em.find(Operation, { vmId, state: 'running' }, { orderBy: { startedAt: 'desc' } });
}
