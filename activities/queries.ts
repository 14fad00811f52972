// Read models the control activities need: hosts as placement candidates (capacity, usage,
// datastores, networks, tags of their VMs) and the per-host migration slots.
import { OptimisticLockError } from '@mikro-orm/core';
import type { Db } from '../db/orm.js';
import { Allocation, Datastore, Host, Network, Operation, Vm } from '../db/entities.js';
import type { HostCandidate } from '../domain/placement.js';
import type { VmSpec } from '../domain/hypervisor.js';

/** The hypervisor's spec of an inventory VM (its disks, seed, NIC and CPU features as recorded). */
export function vmSpecOf(v: Vm, network: string | undefined, cpuFeatures: string[] = v.cpuFeatures): VmSpec {
  return {
    vmId: v.id,
    name: v.name,
    cpus: v.cpus,
    memoryBytes: v.memoryMiB * 1024 ** 2,
    disks: v.diskPaths,
    seedPath: v.seedPath ?? undefined,
    mac: v.mac ?? undefined,
    network,
    cpuFeatures,
    workload: v.workload ?? undefined,
  };
}

export async function hostCandidates(db: Db): Promise<HostCandidate[]> {
  const em = db.em();
  const [hosts, datastores, networks, allocations, vms] = await Promise.all([
    em.find(Host, {}, { orderBy: { id: 'asc' } }),
    em.find(Datastore, {}),
    em.find(Network, {}),
    em.find(Allocation, {}),
    em.find(Vm, { state: { $ne: 'deleted' } }),
  ]);
  const dsUsed = new Map<string, number>();
  for (const a of allocations) if (a.datastoreId) dsUsed.set(a.datastoreId, (dsUsed.get(a.datastoreId) ?? 0) + a.diskGiB);
  return hosts.map((h) => {
    const mine = allocations.filter((a) => a.hostId === h.id);
    return {
      id: h.id,
      rack: h.rack ?? undefined,
      maintenance: h.maintenance,
      state: h.state,
      cpus: h.cpus,
      memoryMiB: h.memoryMiB,
      cpuOvercommit: h.cpuOvercommit,
      memoryOvercommit: h.memoryOvercommit,
      usedCpus: mine.reduce((s, a) => s + a.cpus, 0),
      usedMemoryMiB: mine.reduce((s, a) => s + a.memoryMiB, 0),
      cpuModel: h.cpuModel,
      cpuFeatures: h.cpuFeatures,
      tags: h.tags,
      datastores: datastores
        .filter((d) => d.hostIds.includes(h.id))
        .map((d) => ({ id: d.id, shared: d.shared, freeGiB: d.capacityGiB - (dsUsed.get(d.id) ?? 0) })),
      networks: networks.filter((n) => n.hostIds.includes(h.id)).map((n) => n.name),
      vmTags: vms.filter((v) => v.hostId === h.id).map((v) => v.tags),
    };
  });
}

/**
 * The stages in which a migration holds its slots on its source and its target, by kind: from
 * the grant (which moves it to 'reservation') to its end. A cold migration holds them through
 * its stop, copy, verify and registration too (its heaviest part; with only the live stage names
 * it held no slot from 'stop' to 'register' and came back into 'commitment' above the limits). A
 * storage migration stays on its host, asks for no slot and holds none, though two of its stage
 * names ('reservation', 'commitment') are a live migration's too. A record without a subkind is a
 * live migration (the only kind before cold and storage existed).
 */
export const SLOT_STAGES_BY_SUBKIND: Record<'live' | 'cold', readonly string[]> = {
  live: ['reservation', 'pre-copy', 'stop-and-copy', 'commitment', 'activation'],
  cold: ['reservation', 'stop', 'copy', 'verify', 'register', 'commitment', 'cleanup', 'start'],
};
/** Every stage in which some kind of migration holds slots. */
export const SLOT_STAGES = [...new Set(Object.values(SLOT_STAGES_BY_SUBKIND).flat())];

/** The running migrations that hold slots (a filter on Operation). */
export const SLOT_HOLDERS = {
  state: 'running' as const,
  kind: 'migration' as const,
  $or: [
    { subkind: 'live', stage: { $in: [...SLOT_STAGES_BY_SUBKIND.live] } },
    { subkind: null, stage: { $in: [...SLOT_STAGES_BY_SUBKIND.live] } },
    { subkind: 'cold', stage: { $in: [...SLOT_STAGES_BY_SUBKIND.cold] } },
  ],
};

/** Whether this operation record holds slots now. */
export function holdsSlots(op: { kind: string; subkind?: string | null; state: string; stage?: string | null }): boolean {
  if (op.kind !== 'migration' || op.state !== 'running' || !op.stage) return false;
  const stages = op.subkind === 'cold' ? SLOT_STAGES_BY_SUBKIND.cold : op.subkind === 'live' || op.subkind == null ? SLOT_STAGES_BY_SUBKIND.live : [];
  return stages.includes(op.stage);
}

/**
 * Grants a migration its per-host slots (outgoing on the source, incoming on the target) when
 * both hosts are below their limits. Slots are derived from the operation records themselves
 * (a running migration in a slot stage holds one), so a finished or rolled-back migration can
 * never leak a slot. Granting moves the operation to 'reservation' in the same transaction and
 * bumps both hosts' versions, so concurrent grants serialise (optimistic lock, retried).
 */
export async function acquireMigrationSlots(db: Db, input: { operationId: string; sourceHostId: string; targetHostId: string }): Promise<{ granted: boolean; reason?: string }> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.em().transactional(async (em) => {
        const op = await em.findOneOrFail(Operation, { id: input.operationId });
        if (holdsSlots(op)) return { granted: true };
        const [source, target] = await Promise.all([em.findOneOrFail(Host, { id: input.sourceHostId }), em.findOneOrFail(Host, { id: input.targetHostId })]);
        const holding = { ...SLOT_HOLDERS, id: { $ne: input.operationId } };
        const outgoing = await em.count(Operation, { ...holding, sourceHostId: source.id });
        const incoming = await em.count(Operation, { ...holding, targetHostId: target.id });
        if (outgoing >= source.maxOutgoingMigrations) {
          return { granted: false, reason: `${source.id} already sends ${outgoing} migration(s) (limit ${source.maxOutgoingMigrations})` };
        }
        if (incoming >= target.maxIncomingMigrations) {
          return { granted: false, reason: `${target.id} already receives ${incoming} migration(s) (limit ${target.maxIncomingMigrations})` };
        }
        op.stage = 'reservation';
        // touching both hosts makes two concurrent grants conflict on their versions
        source.updatedAt = new Date();
        target.updatedAt = new Date();
        return { granted: true };
      });
    } catch (err) {
      if (err instanceof OptimisticLockError && attempt < 10) continue;
      throw err;
    }
  }
}

/** Leaves the slot stages (the operation's end frees them anyway); idempotent. */
export async function releaseMigrationSlots(db: Db, input: { operationId: string }): Promise<void> {
  const em = db.em();
  const op = await em.findOne(Operation, { id: input.operationId });
  if (op && holdsSlots(op)) {
    op.stage = 'rollback';
    await em.flush();
  }
}
