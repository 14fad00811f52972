// Capacity held by VMs and reservations. reserve() re-checks free capacity inside a transaction
// and bumps the host's (and datastore's) optimistic-lock version, so two reservations racing for
// the last room on a host conflict and the loser re-checks: no host is ever overcommitted, from
// any number of processes. Everything is idempotent by (operationId, hostId, vmId).
import { OptimisticLockError, UniqueConstraintViolationException } from '@mikro-orm/core';
import { randomUUID } from 'node:crypto';
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Allocation, Datastore, Host, Operation, Vm, type AllocationKind } from '../entities.js';
import { CapacityError, NotFoundError } from '../errors.js';

export interface ReserveInput {
  hostId: string;
  vmId: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  datastoreId?: string;
  operationId: string;
  kind: AllocationKind;
}

const MAX_ATTEMPTS = 25;

async function retryOnConflict<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const conflict = err instanceof OptimisticLockError || err instanceof UniqueConstraintViolationException || /could not serialize|deadlock|SQLITE_BUSY/i.test(String((err as Error)?.message));
      if (!conflict || attempt >= MAX_ATTEMPTS) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
    }
  }
}

export async function findReservation(db: Db | Em, operationId: string): Promise<Allocation | null> {
  return emOf(db).findOne(Allocation, { operationId, kind: 'reservation' });
}

export async function reserve(db: Db, input: ReserveInput): Promise<Allocation> {
  return retryOnConflict(() =>
    db.em().transactional(async (em) => {
      const existing = await em.findOne(Allocation, { operationId: input.operationId, hostId: input.hostId, vmId: input.vmId });
      if (existing) return existing;
      const host = await em.findOne(Host, { id: input.hostId });
      if (!host) throw new NotFoundError('host', input.hostId);
      if (host.maintenance || host.state !== 'up') {
        throw new CapacityError(`host: ${host.id} takes no placements (${host.maintenance ? 'maintenance' : host.state})`, 'host', { hostId: host.id });
      }
      const held = await em.find(Allocation, { hostId: host.id });
      const usedCpus = held.reduce((s, a) => s + a.cpus, 0);
      const usedMem = held.reduce((s, a) => s + a.memoryMiB, 0);
      const cpuCap = host.cpus * host.cpuOvercommit;
      const memCap = host.memoryMiB * host.memoryOvercommit;
      if (usedMem + input.memoryMiB > memCap) {
        throw new CapacityError(`memory: ${host.id} has ${memCap - usedMem} MiB free of ${memCap} MiB, needs ${input.memoryMiB} MiB`, 'memory', {
          hostId: host.id,
          requested: input.memoryMiB,
          free: memCap - usedMem,
          capacity: memCap,
        });
      }
      if (usedCpus + input.cpus > cpuCap) {
        throw new CapacityError(`cpu: ${host.id} has ${cpuCap - usedCpus} vCPU free of ${cpuCap}, needs ${input.cpus}`, 'cpu', {
          hostId: host.id,
          requested: input.cpus,
          free: cpuCap - usedCpus,
          capacity: cpuCap,
        });
      }
      if (input.datastoreId && input.diskGiB > 0) {
        const ds = await em.findOne(Datastore, { id: input.datastoreId });
        if (!ds) throw new NotFoundError('datastore', input.datastoreId);
        const usedDisk = (await em.find(Allocation, { datastoreId: ds.id })).reduce((s, a) => s + a.diskGiB, 0);
        if (usedDisk + input.diskGiB > ds.capacityGiB) {
          throw new CapacityError(`disk: datastore ${ds.id} has ${ds.capacityGiB - usedDisk} GiB free of ${ds.capacityGiB}, needs ${input.diskGiB}`, 'disk', {
            datastoreId: ds.id,
            requested: input.diskGiB,
            free: ds.capacityGiB - usedDisk,
            capacity: ds.capacityGiB,
          });
        }
        ds.updatedAt = new Date(); // version bump: serialises disk accounting on this datastore
      }
      host.updatedAt = new Date(); // version bump: a concurrent reservation on this host conflicts
      return em.create(Allocation, {
        id: `alloc-${randomUUID()}`,
        hostId: host.id,
        vmId: input.vmId,
        kind: input.kind,
        cpus: input.cpus,
        memoryMiB: input.memoryMiB,
        diskGiB: input.diskGiB,
        datastoreId: input.datastoreId ?? null,
        operationId: input.operationId,
      });
    }),
  );
}

/** Idempotent: releasing what is gone is fine. By operation: only its pending reservations. */
export async function release(db: Db | Em, by: { operationId: string } | { allocationId: string } | { vmId: string; hostId?: string }): Promise<number> {
  const em = emOf(db);
  if ('operationId' in by) return em.nativeDelete(Allocation, { operationId: by.operationId, kind: 'reservation' });
  if ('allocationId' in by) return em.nativeDelete(Allocation, { id: by.allocationId });
  return em.nativeDelete(Allocation, by.hostId ? { vmId: by.vmId, hostId: by.hostId } : { vmId: by.vmId });
}

/**
 * Live migration stage 4, the point of no return, in ONE transaction: the VM's home moves to the
 * target, the reservation becomes its allocation (carrying the disk accounting along), the
 * source allocation goes, and the operation records `committedAt`. Idempotent.
 */
export async function commitMigration(db: Db, input: { operationId: string; vmId: string; sourceHostId: string; targetHostId: string }): Promise<{ committedAt: string }> {
  return retryOnConflict(() =>
    db.em().transactional(async (em) => {
      const op = await em.findOne(Operation, { id: input.operationId });
      if (!op) throw new NotFoundError('operation', input.operationId);
      const done = op.details.committedAt;
      if (typeof done === 'string') return { committedAt: done };
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm) throw new NotFoundError('vm', input.vmId);
      const reservation = await em.findOne(Allocation, { operationId: input.operationId, vmId: input.vmId, hostId: input.targetHostId, kind: 'reservation' });
      if (!reservation) throw new NotFoundError('reservation of operation', input.operationId);
      const old = await em.find(Allocation, { vmId: input.vmId, hostId: input.sourceHostId });
      const disk = old.find((a) => a.diskGiB > 0);
      if (disk && !reservation.datastoreId) {
        reservation.diskGiB = disk.diskGiB;
        reservation.datastoreId = disk.datastoreId;
      }
      for (const a of old) em.remove(a);
      reservation.kind = 'vm';
      vm.hostId = input.targetHostId;
      const committedAt = new Date().toISOString();
      op.details = { ...op.details, committedAt };
      return { committedAt };
    }),
  );
}

/** Reads the recorded commit decision back (when the commit activity's outcome is unknown). */
export async function readCommit(db: Db | Em, input: { vmId: string; operationId: string }): Promise<{ committed: boolean }> {
  const op = await emOf(db).findOne(Operation, { id: input.operationId });
  return { committed: typeof op?.details.committedAt === 'string' };
}
