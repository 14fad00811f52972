// Control-worker activities of StorageMigrate (live storage migration on one host): plan (the
// checks of stage 0), reserve the disk space on the target datastore, and the commit: ONE
// transaction moves the VM's datastore, disk paths and seed and its allocation's datastore, and
// drops the reservation. Idempotent by operationId / the recorded commit.
import type { Db } from '../db/orm.js';
import { Allocation, Datastore, Operation, Vm } from '../db/entities.js';
import * as capacity from '../db/repositories/capacity.js';
import * as operations from '../db/repositories/operations.js';
import type { VmSpec } from '../domain/hypervisor.js';
import { storageTargetProblem } from '../domain/storage.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

const MiB = 1024 ** 2;

/** A stage the record shows, with the workflow's stage timings so far. */
interface Stage {
  name: string;
  stageTimingsMs: Record<string, number>;
}

export function createStorageControlActivities(deps: { db: Db }) {
  const { db } = deps;

  async function freeGiB(datastoreId: string): Promise<number | undefined> {
    const em = db.em();
    const ds = await em.findOne(Datastore, { id: datastoreId });
    if (!ds) return undefined;
    const used = (await em.find(Allocation, { datastoreId })).reduce((s, a) => s + a.diskGiB, 0);
    return ds.capacityGiB - used;
  }

  const acts = {
    /**
     * Patch 'storage-fewer-tasks': stage 0's database work in one call, the record (in stage
     * pre-migration), the plan and the hosts on the record. Idempotent (a retry finds the record).
     */
    async beginStorageMigration(input: {
      operation: { id: string; workflowId: string; runId?: string; vmId: string; details: Record<string, unknown>; principal?: string };
      plan: { vmId: string; targetDatastoreId: string; operationId: string };
    }): Promise<{ hostId: string; spec: VmSpec; sourceDatastoreId: string | null }> {
      await operations.createOperation(db, { ...input.operation, kind: 'migration', subkind: 'storage', stage: 'pre-migration' });
      const plan = await acts.planStorageMigration(input.plan);
      await operations.updateOperation(db, input.operation.id, { sourceHostId: plan.hostId, targetHostId: plan.hostId, details: { sourceDatastoreId: plan.sourceDatastoreId } });
      return plan;
    },

    /** Stage 0: every check that needs only the database; refusals name targetDatastoreId. */
    async planStorageMigration(input: { vmId: string; targetDatastoreId: string; operationId: string }): Promise<{ hostId: string; spec: VmSpec; sourceDatastoreId: string | null }> {
      const em = db.em();
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm || vm.state === 'deleted') throw failure(ErrorType.NotFound, `VM ${input.vmId} does not exist`);
      if (vm.state !== 'running' && vm.state !== 'migrating') throw failure(ErrorType.Refused, `VM ${vm.name} is ${vm.state}, not running`);
      const ds = await em.findOne(Datastore, { id: input.targetDatastoreId });
      // our own reservation (a retried stage 0) does not count against the space
      const own = await capacity.findReservation(db, input.operationId);
      const free = ds ? (await freeGiB(ds.id))! + (own?.datastoreId === ds.id ? own.diskGiB : 0) : 0;
      const problem = storageTargetProblem({ vm: { id: vm.id, hostId: vm.hostId ?? null, datastoreId: vm.datastoreId ?? null, diskGiB: vm.diskGiB, state: vm.state }, target: ds ? { id: ds.id, hostIds: ds.hostIds, freeGiB: free } : undefined });
      if (problem) throw failure(ErrorType.Refused, `targetDatastoreId: ${problem}`, [{ field: 'targetDatastoreId' }]);
      return {
        hostId: vm.hostId!,
        sourceDatastoreId: vm.datastoreId ?? null,
        spec: { vmId: vm.id, name: vm.name, cpus: vm.cpus, memoryBytes: vm.memoryMiB * MiB, disks: vm.diskPaths, seedPath: vm.seedPath ?? undefined, cpuFeatures: vm.cpuFeatures },
      };
    },

    /** Stage 1: the disk's space on the target datastore (no CPU or memory: the host stays). */
    async reserveStorageTarget(input: { operationId: string; vmId: string; hostId: string; datastoreId: string; next?: Stage }): Promise<{ allocationId: string }> {
      const em = db.em();
      const vm = await em.findOneOrFail(Vm, { id: input.vmId });
      const alloc = await capacity.reserve(db, { hostId: input.hostId, vmId: vm.id, cpus: 0, memoryMiB: 0, diskGiB: vm.diskGiB, datastoreId: input.datastoreId, operationId: input.operationId, kind: 'reservation' });
      if (vm.state === 'running') {
        vm.state = 'migrating';
        await em.flush();
      }
      // `next` (patched workflows): the record shows the stage the workflow enters next
      if (input.next) await recordStage(input.operationId, input.next);
      return { allocationId: alloc.id };
    },

    /** After the pivot: the VM's home is the new datastore, in one transaction. Idempotent. */
    async commitStorageMigration(input: { operationId: string; vmId: string; datastoreId: string; diskPaths: string[]; seedPath?: string | null; stage?: Stage & { after: string } }): Promise<void> {
      // `stage` (patched workflows): the record shows `name` while committing and `after` once committed
      if (input.stage) await recordStage(input.operationId, input.stage);
      await db.em().fork().transactional(async (tx) => {
        const op = await tx.findOne(Operation, { id: input.operationId });
        if (op?.details.commit) return;
        const vm = await tx.findOneOrFail(Vm, { id: input.vmId });
        vm.datastoreId = input.datastoreId;
        vm.diskPaths = input.diskPaths;
        vm.seedPath = input.seedPath ?? null;
        if (vm.state === 'migrating') vm.state = 'running';
        for (const a of await tx.find(Allocation, { vmId: vm.id, kind: 'vm' })) if (a.diskGiB > 0 || a.datastoreId) a.datastoreId = input.datastoreId;
        for (const r of await tx.find(Allocation, { operationId: input.operationId, kind: 'reservation' })) tx.remove(r);
        if (op) op.details = { ...op.details, committedAt: new Date().toISOString(), commit: { vmId: vm.id, datastoreId: input.datastoreId, diskPaths: input.diskPaths } };
        await tx.flush();
      });
      if (input.stage) await operations.updateOperation(db, input.operationId, { stage: input.stage.after });
    },
  };

  async function recordStage(operationId: string, stage: Stage): Promise<void> {
    await operations.updateOperation(db, operationId, { stage: stage.name, details: { stageTimingsMs: stage.stageTimingsMs } });
  }
  return withFailureMapping(acts);
}

export type StorageControlActivities = ReturnType<typeof createStorageControlActivities>;
