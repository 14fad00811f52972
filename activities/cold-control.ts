// Control-worker activities of ColdMigrate: the pre-checks (capacity and target datastore space;
// no CPU or shared-storage check: the guest is powered off), the target reservation (with the
// disk space on the target datastore when the files move), the commit (commitMigration's ONE
// transaction, which here also moves the disk and seed paths) and the VM's state afterwards.
// Since patch 'cold-fewer-tasks' the workflow runs them as local activities, several steps per
// call (beginColdMigration, slotAndReserveColdTarget, commitColdMigration with its stage,
// finishColdMigration): each call is a hop between the workflow and the worker, ~20-70 ms on a
// loaded 2-core machine, and the steps of one call touch the database one after the other anyway.
import type { Db } from '../db/orm.js';
import { Network, Template, Vm } from '../db/entities.js';
import * as capacity from '../db/repositories/capacity.js';
import type { VmSpec } from '../domain/hypervisor.js';
import { placeVm, type RejectedHost } from '../domain/placement.js';
import * as operations from '../db/repositories/operations.js';
import { acquireMigrationSlots, hostCandidates, vmSpecOf } from './queries.js';
import type { FaultHook } from './control.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

const MiB = 1024 ** 2;

export interface ColdPlan {
  sourceHostId: string;
  targetHostId: string;
  /** where the files go; equal to the VM's datastore when the target reaches it (nothing copied) */
  targetDatastoreId: string;
  copyFiles: boolean;
  flatten: boolean;
  /** why the disks are flattened or keep their backing chain */
  backingDecision: string;
  wasRunning: boolean;
  diskGiB: number;
  spec: VmSpec;
  rejected: RejectedHost[];
}

const refuse = (field: string, message: string) => failure(ErrorType.Refused, message, { field });

export function createColdControlActivities(deps: { db: Db; faults?: FaultHook }) {
  const { db } = deps;

  const acts = {
    /**
     * The operation's record (in stage pre-migration), the plan, and the plan's hosts and decisions
     * on the record: one call. Idempotent (the record by run id, the plan reads only). A refusal
     * still leaves the record, which the workflow then closes as failed.
     */
    async beginColdMigration(input: {
      operation: { id: string; workflowId: string; runId?: string; vmId: string; details: Record<string, unknown>; principal?: string };
      plan: { vmId: string; operationId: string; targetHostId?: string; targetDatastoreId?: string; flatten?: boolean };
    }): Promise<ColdPlan> {
      await operations.createOperation(db, { ...input.operation, kind: 'migration', subkind: 'cold', stage: 'pre-migration' });
      const plan = await acts.planColdMigration(input.plan);
      await operations.updateOperation(db, input.operation.id, {
        sourceHostId: plan.sourceHostId,
        targetHostId: plan.targetHostId,
        details: { plan: { targetDatastoreId: plan.targetDatastoreId, copyFiles: plan.copyFiles, flatten: plan.flatten, backingDecision: plan.backingDecision, rejected: plan.rejected } },
      });
      return plan;
    },

    /**
     * Migration slots on both hosts, then (only when granted) the target reservation, after which
     * the record shows `nextStage` (the stage the workflow enters next): one call. Not granted:
     * nothing reserved, the workflow waits in stage queued and asks again. Idempotent by operationId.
     */
    async slotAndReserveColdTarget(input: { operationId: string; vmId: string; sourceHostId: string; targetHostId: string; targetDatastoreId: string; copyFiles: boolean; nextStage: string; stageTimingsMs: Record<string, number> }): Promise<{ granted: boolean; reason?: string; allocationId?: string }> {
      const slot = await acquireMigrationSlots(db, { operationId: input.operationId, sourceHostId: input.sourceHostId, targetHostId: input.targetHostId });
      if (!slot.granted) return slot;
      const { allocationId } = await acts.reserveColdTarget(input);
      await operations.updateOperation(db, input.operationId, { stage: input.nextStage, details: { stageTimingsMs: input.stageTimingsMs } });
      return { granted: true, allocationId };
    },

    /** The VM's state after the commit and the record closed as completed: one call. Idempotent. */
    async finishColdMigration(input: { vmId: string; hostId: string; state: 'running' | 'stopped'; operation: { id: string; details: Record<string, unknown> } }): Promise<void> {
      await acts.recordColdMigrated(input);
      await operations.finishOperation(db, input.operation.id, { state: 'completed', details: input.operation.details });
    },

    async planColdMigration(input: { vmId: string; operationId: string; targetHostId?: string; targetDatastoreId?: string; flatten?: boolean }): Promise<ColdPlan> {
      const em = db.em();
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm || vm.state === 'deleted') throw failure(ErrorType.NotFound, `VM ${input.vmId} does not exist`);
      if (!['running', 'stopped', 'migrating'].includes(vm.state)) throw refuse('state', `VM ${vm.name} is ${vm.state}; a cold migration needs it running or stopped`);
      if (!vm.hostId) throw refuse('hostId', `VM ${vm.name} has no host`);
      const own = await capacity.findReservation(db, input.operationId);
      const hosts = (await hostCandidates(db)).map((h) => (own && h.id === own.hostId ? { ...h, usedCpus: h.usedCpus - own.cpus, usedMemoryMiB: h.usedMemoryMiB - own.memoryMiB } : h));
      const source = hosts.find((h) => h.id === vm.hostId);
      if (!source) throw failure(ErrorType.NotFound, `source host ${vm.hostId} of ${vm.name} does not exist`);
      if (input.targetHostId === source.id) throw refuse('targetHostId', `VM ${vm.name} already lives on ${source.id}`);
      const net = vm.networkId ? await em.findOne(Network, { id: vm.networkId }) : null;
      const reaches = (hostId: string, dsId: string | null | undefined) => dsId != null && hosts.find((h) => h.id === hostId)?.datastores.some((d) => d.id === dsId);
      // capacity (CPU, memory, network) by placement; never CPU features: the guest boots afresh
      const placement = placeVm({ cpus: vm.cpus, memoryMiB: vm.memoryMiB, diskGiB: 0, hostId: input.targetHostId, excludeHostIds: [source.id], network: net?.name }, hosts);
      const best = placement.ranked[0];
      if (!best) {
        const why = placement.rejected.filter((r) => r.hostId !== source.id).map((r) => `${r.hostId}: ${r.reasons.join('; ')}`).join(' | ');
        throw refuse(input.targetHostId ? 'targetHostId' : 'vmId', `no host can take ${vm.name}: ${why || 'no other host'}`);
      }
      const target = hosts.find((h) => h.id === best.hostId)!;
      // the datastore: asked for, else the VM's own when the target reaches it, else the roomiest local one
      let dsId = input.targetDatastoreId;
      if (dsId !== undefined && !target.datastores.some((d) => d.id === dsId)) throw refuse('targetDatastoreId', `datastore ${dsId} is not attached to host ${target.id}`);
      dsId ??= reaches(target.id, vm.datastoreId) ? vm.datastoreId! : [...target.datastores].sort((a, b) => b.freeGiB - a.freeGiB)[0]?.id;
      if (!dsId) throw refuse('targetDatastoreId', `host ${target.id} has no datastore`);
      const copyFiles = dsId !== vm.datastoreId;
      const ds = target.datastores.find((d) => d.id === dsId)!;
      if (copyFiles && ds.freeGiB < vm.diskGiB) throw failure(ErrorType.Capacity, `datastore ${dsId} on ${target.id} has ${ds.freeGiB} GiB free, ${vm.name} needs ${vm.diskGiB} GiB`, { field: 'targetDatastoreId', resource: 'disk' });
      const flatten = copyFiles && input.flatten === true;
      const backingDecision = copyFiles ? (flatten ? 'flatten requested' : 'decided once the disks are listed') : `datastore ${dsId} is shared with ${target.id}: the files stay where they are`;
      return {
        sourceHostId: source.id,
        targetHostId: target.id,
        targetDatastoreId: dsId,
        copyFiles,
        flatten,
        backingDecision,
        wasRunning: vm.state === 'running' || vm.state === 'migrating',
        diskGiB: vm.diskGiB,
        rejected: placement.rejected.filter((r) => r.hostId !== source.id),
        // powered off, the guest boots on the target's CPU: it sees what the target offers
        spec: vmSpecOf(vm, net?.name, vm.cpuFeatures.filter((f) => target.cpuFeatures.includes(f))),
      };
    },

    /**
     * After the source listed its disks: a linked clone keeps its backing chain when its base (a
     * template image) is reachable from the target, else it is flattened; `flatten: false` with an
     * unreachable base is refused naming the field.
     */
    async decideColdBacking(input: { targetHostId: string; backingPaths: string[]; flatten?: boolean; stage?: { operationId: string; name: string; stageTimingsMs: Record<string, number> } }): Promise<{ flatten: boolean; backingDecision: string }> {
      // `stage` (patched workflows): the record's next stage, written by this same call
      if (input.stage) await operations.updateOperation(db, input.stage.operationId, { stage: input.stage.name, details: { stageTimingsMs: input.stage.stageTimingsMs } });
      if (input.backingPaths.length === 0) return { flatten: false, backingDecision: 'no linked clones' };
      if (input.flatten === true) return { flatten: true, backingDecision: 'flatten requested' };
      const target = (await hostCandidates(db)).find((h) => h.id === input.targetHostId);
      const reach = new Set(target?.datastores.map((d) => d.id) ?? []);
      const templates = await db.em().find(Template, {});
      const unreachable = input.backingPaths.filter((b) => {
        const sim = /^sim:\/\/([^/]+)\//.exec(b);
        if (sim) return !reach.has(sim[1]!);
        const t = templates.find((x) => x.imagePath === b);
        return !t || !t.datastoreIds.some((d) => reach.has(d));
      });
      if (unreachable.length === 0) return { flatten: false, backingDecision: `the base of every linked clone (${[...new Set(input.backingPaths)].join(', ')}) is reachable from ${input.targetHostId}: the backing chain is kept` };
      if (input.flatten === false) throw refuse('flatten', `flatten=false needs the base images on a datastore of ${input.targetHostId}; not reachable there: ${unreachable.join(', ')}`);
      return { flatten: true, backingDecision: `base ${unreachable.join(', ')} is not reachable from ${input.targetHostId}: disks are flattened` };
    },

    /** Stage reservation: CPU and memory on the target, and the disk's space when the files move. Idempotent. */
    async reserveColdTarget(input: { operationId: string; vmId: string; targetHostId: string; targetDatastoreId: string; copyFiles: boolean }): Promise<{ allocationId: string }> {
      const em = db.em();
      const vm = await em.findOneOrFail(Vm, { id: input.vmId });
      const alloc = await capacity.reserve(db, {
        hostId: input.targetHostId,
        vmId: vm.id,
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        diskGiB: input.copyFiles ? vm.diskGiB : 0,
        datastoreId: input.copyFiles ? input.targetDatastoreId : null,
        operationId: input.operationId,
        kind: 'reservation',
      });
      await deps.faults?.check('reserveMigrationTarget', { vmId: vm.id, hostId: input.targetHostId });
      if (vm.state === 'running') {
        vm.state = 'migrating';
        await em.flush();
      }
      return { allocationId: alloc.id };
    },

    /**
     * The point of no return: commitMigration's one transaction, with the VM's new file paths.
     * `stage` (patched workflows): the record's stage is written first, in the same call.
     * Idempotent.
     */
    async commitColdMigration(input: { operationId: string; vmId: string; sourceHostId: string; targetHostId: string; diskPaths: string[]; seedPath?: string; cpuFeatures: string[]; stage?: { name: string; after: string; stageTimingsMs: Record<string, number> } }): Promise<void> {
      // `stage` (patched workflows): the record shows `name` while committing and `after` once committed
      if (input.stage) await operations.updateOperation(db, input.operationId, { stage: input.stage.name, details: { stageTimingsMs: input.stage.stageTimingsMs } });
      await deps.faults?.check('commitMigration', { vmId: input.vmId });
      const { stage, ...commit } = input;
      await capacity.commitMigration(db, { ...commit, home: { diskPaths: input.diskPaths, seedPath: input.seedPath ?? null, cpuFeatures: input.cpuFeatures } });
      if (stage) await operations.updateOperation(db, input.operationId, { stage: stage.after });
    },

    /** After commit: running (started on the target) or stopped. */
    async recordColdMigrated(input: { vmId: string; hostId: string; state: 'running' | 'stopped' }): Promise<void> {
      const em = db.em();
      const vm = await em.findOneOrFail(Vm, { id: input.vmId });
      if (vm.hostId !== input.hostId) throw failure(ErrorType.InvalidState, `VM ${vm.name} is recorded on ${vm.hostId}, not ${input.hostId}`, undefined, true);
      vm.state = input.state;
      await em.flush();
    },
  };
  return withFailureMapping(acts);
}

export type ColdControlActivities = ReturnType<typeof createColdControlActivities>;
