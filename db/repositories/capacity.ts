/**
 * Capacity: allocations held by VMs and by pending reservations, and the migration commit.
 *
 * Concurrency design (several control workers and API replicas share one database):
 * - `reserve` runs in a transaction whose FIRST statement bumps the host's optimistic-lock
 *   version (`update host set version = version + 1 where id = ?`). That statement takes the
 *   host's row lock on PostgreSQL and the database write lock on SQLite, so reservations on one
 *   host are serialised across processes; the capacity re-check that follows reads committed
 *   allocations that cannot change until we commit. The version bump also makes any writer that
 *   holds an older copy of the host (an operator's update) fail with OptimisticLockError rather
 *   than overwrite a capacity picture it never saw. Disk space lives on datastores shared by
 *   several hosts, so a reservation with a datastore claims the datastore row the same way (always
 *   host first, then datastore: one lock order, no deadlock). Deadlocks, serialization failures,
 *   SQLite busy and optimistic-lock conflicts are retried with backoff on a fresh fork.
 * - Idempotency key of `reserve` is (operationId, hostId, vmId), also a UNIQUE index: an activity
 *   retried after a crash gets its earlier allocation back instead of a second one.
 * - `commitMigration` is the migration's point of no return: ONE transaction moves the VM's home,
 *   turns the reservation into the VM's allocation, drops the source allocation and records
 *   `committedAt` in the operation. `readCommit` reads that record back when the commit
 *   activity's outcome is unknown (timed out), so the workflow never guesses.
 */
import type { Em, Db } from '../orm.js';
import { emOf } from '../orm.js';
import { Allocation, Datastore, Host, Operation, Vm, ALLOCATION_KINDS, type AllocationKind } from '../entities.js';
import { CapacityError, ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { assertInt, assertNonEmpty, assertOneOf, assertSafe, mergeJson, newId, retryTransient } from './util.js';
import { markRolledBack, operationRolledBack } from './rollback-fence.js';

export { operationRolledBack };

// ---- usage ------------------------------------------------------------------------------------

export interface DatastoreUsage {
  datastoreId: string;
  capacityGiB: number;
  usedGiB: number;
  freeGiB: number;
}

export interface HostUsage {
  hostId: string;
  /** Sum over all allocations (VMs + reservations). */
  usedCpus: number;
  usedMemoryMiB: number;
  /** The part of `used*` held by pending reservations. */
  reservedCpus: number;
  reservedMemoryMiB: number;
  /** Physical size times overcommit ratio. */
  capacityCpus: number;
  capacityMemoryMiB: number;
  freeCpus: number;
  freeMemoryMiB: number;
  vmAllocations: number;
  reservations: number;
  /** Datastores this host reaches; usage counts allocations of every host on the datastore. */
  datastores: DatastoreUsage[];
}

interface UsageRow {
  host_id: string;
  kind: AllocationKind;
  cpus: number | string | null;
  memory_mib: number | string | null;
  n: number | string;
}

async function allocationSums(em: Em, hostIds: string[]): Promise<Map<string, UsageRow[]>> {
  const out = new Map<string, UsageRow[]>();
  if (hostIds.length === 0) return out;
  const knex = em.getKnex();
  const qb = knex('allocation')
    .select('host_id', 'kind')
    .sum({ cpus: 'cpus', memory_mib: 'memory_mib' })
    .count({ n: '*' })
    .whereIn('host_id', hostIds)
    .groupBy('host_id', 'kind');
  const rows = (await em.execute(qb)) as UsageRow[];
  for (const r of rows) {
    const list = out.get(r.host_id) ?? [];
    list.push(r);
    out.set(r.host_id, list);
  }
  return out;
}

async function datastoreUsedGiB(em: Em, datastoreIds: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (datastoreIds.length === 0) return out;
  const qb = em
    .getKnex()('allocation')
    .select('datastore_id')
    .sum({ used: 'disk_gib' })
    .whereIn('datastore_id', datastoreIds)
    .groupBy('datastore_id');
  const rows = (await em.execute(qb)) as { datastore_id: string; used: number | string | null }[];
  for (const r of rows) out.set(r.datastore_id, Number(r.used ?? 0));
  return out;
}

/** Usage of several hosts in two queries (used by inventory lists and placement). */
export async function computeHostUsage(x: Db | Em, hosts: Host[]): Promise<Map<string, HostUsage>> {
  const em = emOf(x);
  const sums = await allocationSums(
    em,
    hosts.map((h) => h.id),
  );
  const datastores = hosts.length ? await em.find(Datastore, {}, { orderBy: { id: 'asc' } }) : [];
  const dsUsed = await datastoreUsedGiB(
    em,
    datastores.map((d) => d.id),
  );
  const out = new Map<string, HostUsage>();
  for (const h of hosts) {
    let usedCpus = 0, usedMem = 0, resCpus = 0, resMem = 0, vms = 0, res = 0;
    for (const r of sums.get(h.id) ?? []) {
      const c = Number(r.cpus ?? 0), m = Number(r.memory_mib ?? 0), n = Number(r.n);
      usedCpus += c;
      usedMem += m;
      if (r.kind === 'reservation') {
        resCpus += c;
        resMem += m;
        res += n;
      } else vms += n;
    }
    const capacityCpus = h.cpus * h.cpuOvercommit;
    const capacityMemoryMiB = h.memoryMiB * h.memoryOvercommit;
    out.set(h.id, {
      hostId: h.id,
      usedCpus,
      usedMemoryMiB: usedMem,
      reservedCpus: resCpus,
      reservedMemoryMiB: resMem,
      capacityCpus,
      capacityMemoryMiB,
      freeCpus: capacityCpus - usedCpus,
      freeMemoryMiB: capacityMemoryMiB - usedMem,
      vmAllocations: vms,
      reservations: res,
      datastores: datastores
        .filter((d) => d.hostIds.includes(h.id))
        .map((d) => {
          const used = dsUsed.get(d.id) ?? 0;
          return { datastoreId: d.id, capacityGiB: d.capacityGiB, usedGiB: used, freeGiB: d.capacityGiB - used };
        }),
    });
  }
  return out;
}

export async function getHostUsage(x: Db | Em, hostId: string): Promise<HostUsage> {
  const em = emOf(x);
  const host = await em.findOne(Host, { id: hostId });
  if (!host) throw new NotFoundError('host', hostId);
  return (await computeHostUsage(em, [host])).get(hostId)!;
}

// ---- reserve / release ------------------------------------------------------------------------

export interface ReserveInput {
  hostId: string;
  vmId: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** Datastore whose space the disk takes (omit when the disk does not move, e.g. shared storage). */
  datastoreId?: string | null;
  /** Workflow / operation id: the idempotency key together with hostId and vmId. */
  operationId: string;
  /** 'reservation' for a pending placement (default), 'vm' to record a running VM directly. */
  kind?: AllocationKind;
}

function validateReserve(input: ReserveInput): void {
  assertSafe('hostId', input.hostId);
  assertSafe('vmId', input.vmId);
  assertNonEmpty('operationId', input.operationId);
  assertInt('cpus', input.cpus, 0);
  assertInt('memoryMiB', input.memoryMiB, 0);
  assertInt('diskGiB', input.diskGiB, 0);
  if (input.datastoreId != null) assertSafe('datastoreId', input.datastoreId);
  if (input.kind !== undefined) assertOneOf('kind', input.kind, ALLOCATION_KINDS);
}

/**
 * A rollback's compensation: releases the operation's reservations and marks it (one
 * transaction), so a reservation for it that arrives later is refused. Idempotent.
 */
export async function releaseForRollback(x: Db | Em, operationId: string): Promise<number> {
  assertNonEmpty('operationId', operationId);
  const base = emOf(x);
  return retryTransient(
    () =>
      base.fork().transactional(async (tx) => {
        if (!(await operationRolledBack(tx, operationId))) await markRolledBack(tx, operationId);
        return release(tx, { operationId });
      }),
    { attempts: 10 },
  );
}

/** Claims a row for this transaction: bumps its optimistic-lock version (and so locks it). */
async function claim(em: Em, table: 'host' | 'datastore', id: string): Promise<boolean> {
  const res = (await em.execute(em.getKnex()(table).where({ id }).increment('version', 1), [], 'run')) as { affectedRows?: number } | number;
  const n = typeof res === 'number' ? res : (res.affectedRows ?? 0);
  return n > 0;
}

/**
 * Atomically reserves capacity on a host (and space on a datastore). Idempotent by
 * (operationId, hostId, vmId). Throws CapacityError (resource 'cpu' | 'memory' | 'disk' | 'host')
 * when it does not fit, NotFoundError for an unknown host/datastore, ValidationError for bad input.
 */
export async function reserve(x: Db | Em, input: ReserveInput): Promise<Allocation> {
  validateReserve(input);
  const base = emOf(x);
  const key = { operationId: input.operationId, hostId: input.hostId, vmId: input.vmId };
  // Fast path for a retried activity: no lock, no version bump.
  const earlier = await base.fork().findOne(Allocation, key);
  if (earlier) return earlier;

  return retryTransient(async () => {
    const em = base.fork();
    return em.transactional(async (tx) => {
      if (!(await claim(tx, 'host', input.hostId))) throw new NotFoundError('host', input.hostId);
      const again = await tx.findOne(Allocation, key);
      if (again) return again; // a concurrent attempt with the same key won the lock first
      if (await operationRolledBack(tx, input.operationId)) {
        throw new ConflictError(`operation ${input.operationId} was rolled back and gave its reservations back: no new reservation for it (a late run of its step)`, 'operation', 'state', 'rolled-back');
      }

      // One pending reservation per operation and VM: an earlier one on another host is a lost
      // attempt of this same step (a local activity whose workflow task timed out, so its result
      // never reached history; the retry planned again and picked another host: chaos seed 196)
      // and gives way to this one.
      if ((input.kind ?? 'reservation') === 'reservation') {
        for (const lost of await tx.find(Allocation, { operationId: input.operationId, vmId: input.vmId, kind: 'reservation', hostId: { $ne: input.hostId } })) tx.remove(lost);
      }

      const host = await tx.findOneOrFail(Host, { id: input.hostId }, { refresh: true });
      if (host.maintenance) throw new CapacityError(`host ${host.id} is in maintenance and takes no new placements`, 'host', { hostId: host.id });
      if (host.state !== 'up') throw new CapacityError(`host ${host.id} is ${host.state}`, 'host', { hostId: host.id });

      const usage = (await computeHostUsage(tx, [host])).get(host.id)!;
      if (usage.usedCpus + input.cpus > usage.capacityCpus) {
        throw new CapacityError(
          `host ${host.id} has not enough cpu: requested ${input.cpus} vCPUs, free ${fmt(usage.freeCpus)} of ${fmt(usage.capacityCpus)} (${host.cpus} x ${host.cpuOvercommit} overcommit)`,
          'cpu',
          { hostId: host.id, requested: input.cpus, free: usage.freeCpus, capacity: usage.capacityCpus },
        );
      }
      if (usage.usedMemoryMiB + input.memoryMiB > usage.capacityMemoryMiB) {
        throw new CapacityError(
          `host ${host.id} has not enough memory: requested ${input.memoryMiB} MiB, free ${fmt(usage.freeMemoryMiB)} MiB of ${fmt(usage.capacityMemoryMiB)} MiB (${host.memoryMiB} MiB x ${host.memoryOvercommit} overcommit)`,
          'memory',
          { hostId: host.id, requested: input.memoryMiB, free: usage.freeMemoryMiB, capacity: usage.capacityMemoryMiB },
        );
      }
      if (input.datastoreId != null && input.diskGiB > 0) {
        if (!(await claim(tx, 'datastore', input.datastoreId))) throw new NotFoundError('datastore', input.datastoreId);
        const ds = await tx.findOneOrFail(Datastore, { id: input.datastoreId }, { refresh: true });
        if (!ds.hostIds.includes(host.id)) throw new ValidationError('datastoreId', `datastore ${ds.id} is not reachable from host ${host.id}`);
        const used = (await datastoreUsedGiB(tx, [ds.id])).get(ds.id) ?? 0;
        if (used + input.diskGiB > ds.capacityGiB) {
          throw new CapacityError(
            `datastore ${ds.id} has not enough disk: requested ${input.diskGiB} GiB, free ${ds.capacityGiB - used} GiB of ${ds.capacityGiB} GiB`,
            'disk',
            { hostId: host.id, datastoreId: ds.id, requested: input.diskGiB, free: ds.capacityGiB - used, capacity: ds.capacityGiB },
          );
        }
      }
      const alloc = tx.create(Allocation, {
        id: newId('alloc'),
        hostId: input.hostId,
        vmId: input.vmId,
        kind: input.kind ?? 'reservation',
        cpus: input.cpus,
        memoryMiB: input.memoryMiB,
        diskGiB: input.diskGiB,
        datastoreId: input.datastoreId ?? null,
        operationId: input.operationId,
      });
      await tx.flush();
      return alloc;
    });
  }, { attempts: 10 });
}

/** The pending reservation an operation made (a retried placement finds its own). */
export async function findReservation(x: Db | Em, operationId: string, where: { hostId?: string; vmId?: string } = {}): Promise<Allocation | null> {
  assertNonEmpty('operationId', operationId);
  const filter: Record<string, string> = { operationId, kind: 'reservation' };
  if (where.hostId) filter.hostId = where.hostId;
  if (where.vmId) filter.vmId = where.vmId;
  return emOf(x).findOne(Allocation, filter, { orderBy: { createdAt: 'asc', id: 'asc' } });
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

export type ReleaseSelector =
  | { allocationId: string }
  /** The operation's reservations; `includeVmAllocations` also the ones already converted. */
  | { operationId: string; includeVmAllocations?: boolean }
  /** Everything the VM holds on that host (both kinds), or on every host without hostId. */
  | { vmId: string; hostId?: string };

/**
 * Idempotent: releasing what is already gone answers 0 (the number of allocations removed).
 * By operationId it releases only reservations unless asked: after a migration commit the
 * reservation IS the VM's allocation, and a late compensation must not free a running VM's
 * capacity. Runs on the given EM, so it joins the caller's transaction when given one.
 */
export async function release(x: Db | Em, sel: ReleaseSelector): Promise<number> {
  const em = emOf(x);
  if ('allocationId' in sel) {
    assertNonEmpty('allocationId', sel.allocationId);
    return em.nativeDelete(Allocation, { id: sel.allocationId });
  }
  if ('operationId' in sel) {
    assertNonEmpty('operationId', sel.operationId);
    return em.nativeDelete(Allocation, sel.includeVmAllocations ? { operationId: sel.operationId } : { operationId: sel.operationId, kind: 'reservation' });
  }
  if ('vmId' in sel) {
    assertNonEmpty('vmId', sel.vmId);
    if (sel.hostId !== undefined) assertNonEmpty('hostId', sel.hostId);
    return em.nativeDelete(Allocation, sel.hostId !== undefined ? { vmId: sel.vmId, hostId: sel.hostId } : { vmId: sel.vmId });
  }
  throw new ValidationError('selector', 'give allocationId, operationId, or vmId (with an optional hostId)');
}

/** Provisioning step 4: the reservation becomes the VM's allocation. Idempotent. */
export async function convertReservationToVm(x: Db | Em, allocationId: string): Promise<Allocation> {
  assertNonEmpty('allocationId', allocationId);
  const em = emOf(x);
  const alloc = await em.findOne(Allocation, { id: allocationId });
  if (!alloc) throw new NotFoundError('allocation', allocationId);
  if (alloc.kind !== 'vm') {
    alloc.kind = 'vm';
    await em.flush();
  }
  return alloc;
}

export interface AllocationFilter {
  hostId?: string;
  vmId?: string;
  operationId?: string;
  kind?: AllocationKind;
  datastoreId?: string;
}

export async function listAllocations(x: Db | Em, filter: AllocationFilter = {}): Promise<Allocation[]> {
  const where: Record<string, string> = {};
  for (const [k, v] of Object.entries(filter)) if (v !== undefined) where[k] = v;
  return emOf(x).find(Allocation, where, { orderBy: { createdAt: 'asc', id: 'asc' } });
}

// ---- migration commit -------------------------------------------------------------------------

export interface CommitMigrationInput {
  vmId: string;
  operationId: string;
  sourceHostId: string;
  targetHostId: string;
  /** The target reservation made in stage 1; default: the operation's reservation for this VM on the target. */
  reservationId?: string;
  /** The VM's files moved too (cold migration): its disk and seed paths on the target, in the same transaction. */
  home?: { diskPaths: string[]; seedPath?: string | null; cpuFeatures?: string[] };
}

/** What the operation's details hold under `commit` once the commit happened. */
export interface CommitRecord {
  committedAt: string;
  vmId: string;
  sourceHostId: string;
  targetHostId: string;
  allocationId: string;
  releasedSourceAllocations: number;
}

export interface CommitResult extends CommitRecord {
  /** True when this call found an earlier successful commit (a retry). */
  alreadyCommitted: boolean;
}

/**
 * Stage 4, the point of no return, in ONE transaction: vm.hostId = target, the reservation
 * becomes the VM's allocation, the source allocation is deleted, the operation records
 * `details.committedAt` and `details.commit`. A second call after success returns the same
 * record (`alreadyCommitted: true`). With shared storage the target reservation holds no disk;
 * the disk accounting of the source allocation moves onto it, so the datastore stays counted.
 */
export async function commitMigration(x: Db | Em, input: CommitMigrationInput): Promise<CommitResult> {
  for (const f of ['vmId', 'operationId', 'sourceHostId', 'targetHostId'] as const) assertNonEmpty(f, input[f]);
  if (input.reservationId !== undefined) assertNonEmpty('reservationId', input.reservationId);
  const base = emOf(x);
  return retryTransient(() =>
    base.fork().transactional(async (tx) => {
      const op = await tx.findOne(Operation, { id: input.operationId });
      if (!op) throw new NotFoundError('operation', input.operationId);
      const done = op.details.commit as CommitRecord | undefined;
      if (done) {
        if (done.vmId !== input.vmId || done.targetHostId !== input.targetHostId) {
          throw new ConflictError(`operation ${op.id} already committed vm ${done.vmId} to host ${done.targetHostId}`, 'operation', 'commit', op.id);
        }
        return { ...done, alreadyCommitted: true };
      }
      const vm = await tx.findOne(Vm, { id: input.vmId });
      if (!vm) throw new NotFoundError('vm', input.vmId);
      if (vm.hostId !== input.sourceHostId) {
        throw new ConflictError(`vm ${vm.id} is on host ${vm.hostId ?? '(none)'}, not on source host ${input.sourceHostId}`, 'vm', 'hostId', vm.hostId ?? undefined);
      }
      const res = input.reservationId
        ? await tx.findOne(Allocation, { id: input.reservationId })
        : await tx.findOne(Allocation, { operationId: op.id, vmId: vm.id, hostId: input.targetHostId, kind: 'reservation' });
      if (!res) throw new NotFoundError('reservation', input.reservationId ?? `of operation ${op.id} for vm ${vm.id} on ${input.targetHostId}`);
      if (res.vmId !== vm.id || res.hostId !== input.targetHostId) {
        throw new ConflictError(
          `allocation ${res.id} belongs to vm ${res.vmId} on host ${res.hostId}, not vm ${vm.id} on target ${input.targetHostId}`,
          'allocation',
          'id',
          res.id,
        );
      }
      // Same host (storage migration): the reservation itself stays.
      const old = (await tx.find(Allocation, { vmId: vm.id, hostId: input.sourceHostId })).filter((a) => a.id !== res.id);
      const disk = old.find((a) => a.diskGiB > 0 && a.datastoreId);
      if (disk && !res.datastoreId) {
        res.diskGiB = disk.diskGiB;
        res.datastoreId = disk.datastoreId;
      }
      res.kind = 'vm';
      for (const a of old) tx.remove(a);
      vm.hostId = input.targetHostId;
      if (res.datastoreId) vm.datastoreId = res.datastoreId;
      if (input.home) {
        vm.diskPaths = input.home.diskPaths;
        vm.seedPath = input.home.seedPath ?? null;
        if (input.home.cpuFeatures) vm.cpuFeatures = input.home.cpuFeatures;
      }
      // the rebalance cool-down counts from the commit (the guest's home changed here)
      vm.lastMigratedAt = new Date();
      const record: CommitRecord = {
        committedAt: new Date().toISOString(),
        vmId: vm.id,
        sourceHostId: input.sourceHostId,
        targetHostId: input.targetHostId,
        allocationId: res.id,
        releasedSourceAllocations: old.length,
      };
      op.details = mergeJson(op.details, { committedAt: record.committedAt, commit: record });
      op.sourceHostId ??= input.sourceHostId;
      op.targetHostId ??= input.targetHostId;
      await tx.flush(); // version checks on vm and operation: a concurrent writer makes us retry
      return { ...record, alreadyCommitted: false };
    }),
  );
}

export interface CommitState {
  committed: boolean;
  committedAt?: string;
  /** Where inventory says the VM lives now (null when it has no host or does not exist). */
  vmHostId: string | null;
  record?: CommitRecord;
}

/**
 * Reads back whether `commitMigration` happened, for a commit activity whose outcome is unknown
 * (timed out). The record is written in the commit's own transaction, so it is exact. An
 * unknown operation answers `committed: false`.
 */
export async function readCommit(x: Db | Em, input: { vmId: string; operationId: string }): Promise<CommitState> {
  assertNonEmpty('vmId', input.vmId);
  assertNonEmpty('operationId', input.operationId);
  const em = emOf(x);
  const op = await em.findOne(Operation, { id: input.operationId });
  const vm = await em.findOne(Vm, { id: input.vmId });
  const record = op?.details.commit as CommitRecord | undefined;
  const committed = record !== undefined && record.vmId === input.vmId;
  return committed ? { committed, committedAt: record.committedAt, vmHostId: vm?.hostId ?? null, record } : { committed: false, vmHostId: vm?.hostId ?? null };
}
