// Control-worker activities: inventory, placement, reservations, IPAM, audit records. They touch
// only the database (never a hypervisor). Each one forks its own EntityManager and is idempotent
// by an explicit key (operationId, vmId), so a retry after a crash finds its own earlier effect.
import type { Db } from '../db/orm.js';
import { Allocation, Network, Template, Vm, type OperationKind, type OperationState } from '../db/entities.js';
import * as capacity from '../db/repositories/capacity.js';
import { ConflictError } from '../db/errors.js';
import { retryTransient } from '../db/repositories/util.js';
import * as ipam from '../db/repositories/ipam.js';
import * as operations from '../db/repositories/operations.js';
import { retireVm } from '../db/repositories/vms.js';
import { acquireMigrationSlots, hostCandidates, releaseMigrationSlots, vmSpecOf } from './queries.js';
import type { DiskSource, VmSpec } from '../domain/hypervisor.js';
import type { CreateTemplateInput, LifecycleAction, ProvisionInput } from '../workflows/definitions.js';
import { checkMigrationTarget, placeVm, type HostCandidate, type RejectedHost } from '../domain/placement.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

const MiB = 1024 ** 2;

/** Test/simulator hook: lets a fault fire inside a control step (after its effect). */
export interface FaultHook {
  check(step: string, scope: { vmId?: string; hostId?: string }): void | Promise<void>;
}

export interface ControlActivityDeps {
  db: Db;
  faults?: FaultHook;
}

export function createControlActivities(deps: ControlActivityDeps) {
  const { db } = deps;
  const fault = async (step: string, scope: { vmId?: string; hostId?: string }) => {
    await deps.faults?.check(step, scope);
  };

  async function candidates(): Promise<HostCandidate[]> {
    return hostCandidates(db);
  }

  const acts = {
    // ---------------------------------------------------------------- audit
    async beginOperation(input: {
      id: string;
      workflowId: string;
      runId?: string;
      kind: OperationKind;
      subkind?: string;
      vmId?: string;
      sourceHostId?: string;
      targetHostId?: string;
      details?: Record<string, unknown>;
      /** who started it (the API principal from the workflow input) */
      principal?: string;
    }): Promise<void> {
      await operations.createOperation(db, input);
    },

    async updateOperation(input: { id: string; stage?: string; sourceHostId?: string; targetHostId?: string; details?: Record<string, unknown> }): Promise<void> {
      await operations.updateOperation(db, input.id, { stage: input.stage, sourceHostId: input.sourceHostId, targetHostId: input.targetHostId, details: input.details });
    },

    async finishOperation(input: { id: string; state: OperationState; error?: string; details?: Record<string, unknown> }): Promise<void> {
      await operations.finishOperation(db, input.id, { state: input.state, error: input.error, details: input.details });
    },

    // ---------------------------------------------------------------- provisioning step 1
    /**
     * Placement + atomic reservation. Tries the ranked hosts in order; a host that another
     * provision filled meanwhile is skipped (the reservation re-checks capacity under an
     * optimistic lock). Idempotent by operationId: a retry returns the existing reservation.
     */
    async placeAndReserve(input: { operationId: string; input: ProvisionInput }): Promise<{
      hostId: string;
      datastoreId: string;
      allocationId: string;
      rejected: RejectedHost[];
      cpuFeatures: string[];
      diskSource: DiskSource;
    }> {
      const req = input.input;
      const em = db.em();
      let templateDatastoreIds: string[] | undefined;
      let requiredCpuFeatures: string[] = [];
      let diskSource: DiskSource;
      switch (req.source.kind) {
        case 'template': {
          const t = await em.findOne(Template, { id: req.source.templateId });
          if (!t) throw failure(ErrorType.NotFound, `template ${req.source.templateId} does not exist`);
          if (req.memoryMiB < t.minMemoryMiB) throw failure(ErrorType.InvalidArgument, `memoryMiB ${req.memoryMiB} is below template ${t.name}'s minimum ${t.minMemoryMiB}`);
          templateDatastoreIds = t.datastoreIds;
          requiredCpuFeatures = t.requiredCpuFeatures;
          diskSource = { kind: 'template', imagePath: t.imagePath, linked: req.source.linked ?? true };
          break;
        }
        case 'clone': {
          const src = await em.findOne(Vm, { id: req.source.sourceVmId });
          if (!src || src.state === 'deleted' || src.diskPaths.length === 0) throw failure(ErrorType.NotFound, `VM ${req.source.sourceVmId} to clone does not exist or has no disk`);
          // the clone reads the source disk, so it must land where that disk is reachable
          templateDatastoreIds = src.datastoreId ? [src.datastoreId] : undefined;
          requiredCpuFeatures = src.cpuFeatures;
          diskSource = { kind: 'clone', sourcePath: src.diskPaths[0] };
          break;
        }
        case 'import':
          diskSource = { kind: 'import', sourcePath: req.source.path, format: req.source.format };
          break;
        case 'iso':
          diskSource = { kind: 'blank' };
          break;
      }
      const existing = await capacity.findReservation(db, input.operationId);
      const hosts = await candidates();
      const network = await em.findOne(Network, { id: req.networkId });
      if (!network) throw failure(ErrorType.NotFound, `network ${req.networkId} does not exist`);
      const extraGiB = (req.extraVolumesGiB ?? []).reduce((a, b) => a + b, 0);
      const placement = placeVm(
        {
          cpus: req.cpus,
          memoryMiB: req.memoryMiB,
          diskGiB: req.diskGiB + extraGiB,
          hostId: req.hostId,
          requiredCpuFeatures,
          templateDatastoreIds,
          network: network.name,
          antiAffinityTag: req.antiAffinityTag,
          affinityTag: req.affinityTag,
        },
        // our own earlier reservation (a retry) must not make its host look full
        existing ? hosts.map((h) => (h.id === existing.hostId ? { ...h, usedCpus: h.usedCpus - existing.cpus, usedMemoryMiB: h.usedMemoryMiB - existing.memoryMiB } : h)) : hosts,
        { weigher: req.weigher },
      );
      const rejected = [...placement.rejected];
      for (const choice of placement.ranked) {
        try {
          const alloc = await capacity.reserve(db, {
            hostId: choice.hostId,
            vmId: req.vmId,
            cpus: req.cpus,
            memoryMiB: req.memoryMiB,
            diskGiB: req.diskGiB + extraGiB,
            datastoreId: choice.datastoreId,
            operationId: input.operationId,
            kind: 'reservation',
          });
          const host = hosts.find((h) => h.id === choice.hostId)!;
          await operations.updateOperation(db, input.operationId, {
            details: { placement: { chosen: choice.hostId, datastoreId: choice.datastoreId, ranked: placement.ranked, rejected } },
          });
          await fault('reserveCapacity', { vmId: req.vmId, hostId: choice.hostId });
          // the guest sees the template's required features plus what the host offers of them
          const cpuFeatures = requiredCpuFeatures.length ? requiredCpuFeatures : host.cpuFeatures;
          return { hostId: choice.hostId, datastoreId: alloc.datastoreId ?? choice.datastoreId, allocationId: alloc.id, rejected, cpuFeatures, diskSource };
        } catch (err) {
          if ((err as Error).name !== 'CapacityError') throw err;
          rejected.push({ hostId: choice.hostId, reasons: [`lost a race: ${(err as Error).message}`] });
        }
      }
      await operations.updateOperation(db, input.operationId, { details: { placement: { chosen: null, rejected } } });
      const summary = rejected.map((r) => `${r.hostId}: ${r.reasons.join('; ')}`).join(' | ');
      throw failure(ErrorType.Capacity, `no host can take ${req.name} (${req.cpus} vCPU, ${req.memoryMiB} MiB, ${req.diskGiB} GiB): ${summary || 'no hosts'}`, { rejected });
    },

    /** Compensation: the reservations go back, and none is made for this operation afterwards. */
    async releaseReservation(input: { operationId: string }): Promise<void> {
      await capacity.releaseForRollback(db, input.operationId);
    },

    // ---------------------------------------------------------------- provisioning step 3
    async allocateIp(input: { vmId: string; networkId: string }): Promise<{
      address: string;
      prefixLength: number;
      gateway: string;
      dns: string[];
      vlan: number | null;
      mac: string;
      networkName: string;
    }> {
      const alloc = await ipam.allocateIp(db, { networkId: input.networkId, vmId: input.vmId });
      await fault('allocateIp', { vmId: input.vmId });
      const net = await db.em().findOneOrFail(Network, { id: input.networkId });
      const prefixLength = Number(net.cidr.split('/')[1] ?? 24);
      return { address: alloc.address, prefixLength, gateway: net.gateway, dns: net.dns, vlan: net.vlan ?? null, mac: macFor(input.vmId), networkName: net.name };
    },

    async releaseIp(input: { vmId: string; networkId: string }): Promise<void> {
      await ipam.releaseIp(db, { vmId: input.vmId, networkId: input.networkId });
    },

    // ---------------------------------------------------------------- provisioning step 4
    async recordVmRunning(input: {
      operationId: string;
      vmId: string;
      hostId: string;
      datastoreId: string;
      ip: string;
      mac: string;
      networkId: string;
      diskPaths: string[];
      seedPath: string;
      cpuFeatures: string[];
    }): Promise<void> {
      const em = db.em();
      await em.transactional(async (tx) => {
        const vm = await tx.findOneOrFail(Vm, { id: input.vmId });
        Object.assign(vm, {
          state: 'running',
          hostId: input.hostId,
          datastoreId: input.datastoreId,
          ip: input.ip,
          mac: input.mac,
          networkId: input.networkId,
          diskPaths: input.diskPaths,
          seedPath: input.seedPath,
          cpuFeatures: input.cpuFeatures,
          error: null,
        });
        // the reservation becomes the VM's own allocation
        const alloc = await tx.findOne(Allocation, { operationId: input.operationId, vmId: input.vmId });
        if (alloc) alloc.kind = 'vm';
      });
    },

    async markVmError(input: { vmId: string; error: string }): Promise<void> {
      const em = db.em();
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm) return;
      vm.state = 'error';
      vm.error = input.error.slice(0, 4000);
      vm.hostId = null;
      vm.ip = null;
      await em.flush();
    },

    // ---------------------------------------------------------------- lifecycle
    async getVmForLifecycle(input: { vmId: string; action: LifecycleAction | 'template' }): Promise<{
      state: string;
      hostId: string | null;
      datastoreId: string | null;
      diskPaths: string[];
      seedPath: string | null;
      diskGiB: number;
      memoryMiB: number;
    }> {
      const vm = await db.em().findOne(Vm, { id: input.vmId });
      if (!vm || vm.state === 'deleted') throw failure(ErrorType.NotFound, `VM ${input.vmId} does not exist`);
      const allowed: Record<string, string[]> = {
        start: ['stopped', 'running'],
        stop: ['running', 'paused', 'stopped'],
        reboot: ['running'],
        delete: ['running', 'stopped', 'paused', 'error'],
        template: ['stopped', 'running'],
      };
      if (!allowed[input.action].includes(vm.state)) {
        throw failure(ErrorType.Conflict, `cannot ${input.action} VM ${vm.name}: it is ${vm.state}`);
      }
      return { state: vm.state, hostId: vm.hostId ?? null, datastoreId: vm.datastoreId ?? null, diskPaths: vm.diskPaths, seedPath: vm.seedPath ?? null, diskGiB: vm.diskGiB, memoryMiB: vm.memoryMiB };
    },

    async recordLifecycle(input: { vmId: string; action: LifecycleAction; state: string }): Promise<void> {
      const em = db.em();
      await em.transactional(async (tx) => {
        const vm = await tx.findOneOrFail(Vm, { id: input.vmId });
        if (input.action === 'delete') {
          await retireVm(tx, vm);
        } else {
          vm.state = input.state as typeof vm.state;
        }
      });
    },

    async recordTemplate(input: CreateTemplateInput & { imagePath: string; datastoreId: string; diskGiB: number; minMemoryMiB: number }): Promise<void> {
      const em = db.em();
      if (await em.findOne(Template, { id: input.templateId })) return; // idempotent
      em.create(Template, {
        id: input.templateId,
        name: input.name,
        os: input.os ?? 'unknown',
        imagePath: input.imagePath,
        datastoreIds: [input.datastoreId],
        diskGiB: input.diskGiB,
        // a template asks for no more memory than its source VM had; 64 MiB is the floor of
        // what ferry's smallest guests boot with, so small VMs can still be made from it
        minMemoryMiB: Math.min(input.minMemoryMiB, 64),
        requiredCpuFeatures: input.requiredCpuFeatures ?? [],
        owner: input.owner ?? null,
        department: input.department ?? null,
        tags: input.tags ?? [],
        sourceVmId: input.vmId,
      });
      await em.flush();
    },

    // ---------------------------------------------------------------- live migration
    /** Stage 0: every check that needs only the database, with all refusal reasons. */
    async planLiveMigration(input: { vmId: string; targetHostId?: string; operationId: string }): Promise<{
      sourceHostId: string;
      targetHostId: string;
      copyDisks: boolean;
      /** copyDisks: the target's datastore for the copies */
      targetDatastoreId: string | null;
      memoryBytes: number;
      spec: VmSpec;
      rejected: RejectedHost[];
    }> {
      const em = db.em();
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm || vm.state === 'deleted') throw failure(ErrorType.NotFound, `VM ${input.vmId} does not exist`);
      if (vm.state !== 'running' && vm.state !== 'migrating') throw failure(ErrorType.Refused, `VM ${vm.name} is ${vm.state}, not running`);
      if (!vm.hostId) throw failure(ErrorType.Refused, `VM ${vm.name} has no host`);
      const hosts = await candidates();
      const source = hosts.find((h) => h.id === vm.hostId);
      if (!source) throw failure(ErrorType.NotFound, `source host ${vm.hostId} of ${vm.name} does not exist`);
      const net = vm.networkId ? await em.findOne(Network, { id: vm.networkId }) : null;
      const migrating = {
        id: vm.id,
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        cpuFeatures: vm.cpuFeatures,
        diskGiB: vm.diskGiB,
        datastoreIds: vm.datastoreId ? [vm.datastoreId] : [],
        network: net?.name,
      };
      // our own reservation (a retry of a later stage) must not count against the target
      const own = await capacity.findReservation(db, input.operationId);
      const adjusted = own ? hosts.map((h) => (h.id === own.hostId ? { ...h, usedCpus: h.usedCpus - own.cpus, usedMemoryMiB: h.usedMemoryMiB - own.memoryMiB } : h)) : hosts;
      let targetId = input.targetHostId;
      const rejected: RejectedHost[] = [];
      if (targetId) {
        const target = adjusted.find((h) => h.id === targetId);
        if (!target) throw failure(ErrorType.NotFound, `target host ${targetId} does not exist`);
        const check = checkMigrationTarget(migrating, source, target);
        if (!check.ok) throw failure(ErrorType.Refused, `cannot live-migrate ${vm.name} to ${targetId}: ${check.reasons.join('; ')}`, { reasons: check.reasons });
        return plan(target.id, check.copyDisks, check.targetDatastoreId);
      }
      for (const h of adjusted) {
        if (h.id === source.id) continue;
        const check = checkMigrationTarget(migrating, source, h);
        if (!check.ok) rejected.push({ hostId: h.id, reasons: check.reasons });
      }
      const placement = placeVm(
        { cpus: vm.cpus, memoryMiB: vm.memoryMiB, diskGiB: 0, excludeHostIds: [source.id], requiredCpuFeatures: vm.cpuFeatures, network: net?.name },
        adjusted.filter((h) => !rejected.some((r) => r.hostId === h.id)),
      );
      const best = placement.ranked[0];
      if (!best) {
        const all = [...rejected, ...placement.rejected.filter((r) => r.hostId !== source.id)];
        throw failure(ErrorType.Refused, `no host can take ${vm.name}: ${all.map((r) => `${r.hostId}: ${r.reasons.join('; ')}`).join(' | ')}`);
      }
      targetId = best.hostId;
      const check = checkMigrationTarget(migrating, source, adjusted.find((h) => h.id === targetId)!);
      return plan(targetId, check.copyDisks, check.targetDatastoreId);

      function plan(targetHostId: string, copyDisks: boolean, targetDatastoreId: string | null) {
        const v = vm!;
        return {
          sourceHostId: v.hostId!,
          targetHostId,
          copyDisks,
          targetDatastoreId: copyDisks ? targetDatastoreId : null,
          memoryBytes: v.memoryMiB * MiB,
          rejected,
          spec: vmSpecOf(v, net?.name),
        };
      }
    },

    /** Per-host limits on concurrent outgoing/incoming migrations; extra ones queue. */
    async acquireMigrationSlots(input: { operationId: string; sourceHostId: string; targetHostId: string }): Promise<{ granted: boolean; reason?: string }> {
      return acquireMigrationSlots(db, input);
    },

    async releaseMigrationSlots(input: { operationId: string }): Promise<void> {
      await releaseMigrationSlots(db, input);
    },

    /** Stage 1: capacity on B, VM marked migrating. Idempotent by operationId. */
    async reserveMigrationTarget(input: { operationId: string; vmId: string; targetHostId: string; targetDatastoreId?: string | null }): Promise<{ allocationId: string }> {
      const em = db.em();
      const vm = await em.findOneOrFail(Vm, { id: input.vmId });
      const alloc = await capacity.reserve(db, {
        hostId: input.targetHostId,
        vmId: vm.id,
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        // shared storage: the disk does not move, so no disk on B is reserved; copyDisks (or a
        // storage migration) reserves the disk's space on the datastore the copies go to
        diskGiB: input.targetDatastoreId ? vm.diskGiB : 0,
        ...(input.targetDatastoreId ? { datastoreId: input.targetDatastoreId } : {}),
        operationId: input.operationId,
        kind: 'reservation',
      });
      await fault('reserveMigrationTarget', { vmId: vm.id, hostId: input.targetHostId });
      // marked migrating only while the operation has not rolled back: a late run of this step
      // (after release-reservation and restore-inventory) must not leave the VM 'migrating'
      await retryTransient(() =>
        db.em().fork().transactional(async (tx) => {
          if (await capacity.operationRolledBack(tx, input.operationId)) {
            throw new ConflictError(`operation ${input.operationId} was rolled back: ${vm.id} stays as its rollback left it (a late run of its step)`, 'operation', 'state', 'rolled-back');
          }
          const current = await tx.findOneOrFail(Vm, { id: input.vmId });
          if (current.state === 'running') current.state = 'migrating';
        }),
      );
      return { allocationId: alloc.id };
    },

    /** Compensation: the VM is running on its source again. */
    async restoreVmAfterRollback(input: { vmId: string; hostId: string }): Promise<void> {
      const em = db.em();
      const vm = await em.findOne(Vm, { id: input.vmId });
      if (!vm) return;
      if (vm.hostId === input.hostId && vm.state === 'migrating') {
        vm.state = 'running';
        await em.flush();
      }
    },

    /** Stage 4: the point of no return, one transaction. Idempotent. */
    async commitMigration(input: {
      operationId: string;
      vmId: string;
      sourceHostId: string;
      targetHostId: string;
      home?: { diskPaths: string[]; seedPath?: string | null };
      /** patched workflows: the record shows `name` while committing and `after` once committed */
      stage?: { name: string; after: string; stageTimingsMs: Record<string, number> };
    }): Promise<void> {
      const { stage, ...commit } = input;
      if (stage) await operations.updateOperation(db, input.operationId, { stage: stage.name, details: { stageTimingsMs: stage.stageTimingsMs } });
      await fault('commitMigration', { vmId: input.vmId });
      await capacity.commitMigration(db, commit);
      if (stage) await operations.updateOperation(db, input.operationId, { stage: stage.after });
    },

    async readCommit(input: { vmId: string; operationId: string }): Promise<{ committed: boolean }> {
      return capacity.readCommit(db, input);
    },

    async recordMigrationActivated(input: { operationId: string; vmId: string; hostId: string }): Promise<void> {
      const em = db.em();
      const vm = await em.findOneOrFail(Vm, { id: input.vmId });
      if (vm.hostId !== input.hostId) throw failure(ErrorType.InvalidState, `VM ${vm.name} is recorded on ${vm.hostId}, not ${input.hostId}`, undefined, true);
      vm.state = 'running';
      await em.flush();
    },
  };

  // ---------------------------------------------------------------- live migration, folded steps
  // (patch 'live-folded-steps'): the steps above, several per local activity, so a migration makes
  // fewer database round trips and writes fewer history markers
  const folded = {
    /** Stage 0's database work: the record (in stage pre-migration), the plan, the plan on the record. */
    async beginLiveMigration(input: {
      operation: Parameters<typeof acts.beginOperation>[0];
      plan: Parameters<typeof acts.planLiveMigration>[0];
    }): Promise<Awaited<ReturnType<typeof acts.planLiveMigration>>> {
      await operations.createOperation(db, { ...input.operation, stage: 'pre-migration' });
      const plan = await acts.planLiveMigration(input.plan);
      await operations.updateOperation(db, input.operation.id, { sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, details: { plan: { copyDisks: plan.copyDisks, rejected: plan.rejected } } });
      return plan;
    },

    /**
     * The migration slots on both hosts (a grant moves the record to stage reservation) and, only
     * when granted, stage 1's reservation on B. Not granted: nothing reserved (the workflow queues
     * and asks again). Idempotent by operationId, like each step it folds.
     */
    async slotAndReserveLiveTarget(input: {
      slots: Parameters<typeof acts.acquireMigrationSlots>[0];
      reservation: Parameters<typeof acts.reserveMigrationTarget>[0];
    }): Promise<{ granted: boolean; reason?: string }> {
      const slot = await acts.acquireMigrationSlots(input.slots);
      if (slot.granted) await acts.reserveMigrationTarget(input.reservation);
      return slot;
    },
  };
  return withFailureMapping({ ...acts, ...folded });
}

/** Locally administered, stable MAC derived from the VM id (52:54:00 is QEMU's prefix). */
export function macFor(vmId: string): string {
  let h = 2166136261;
  for (const c of vmId) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  const b = [(h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return ['52', '54', '00', ...b.map((x) => x.toString(16).padStart(2, '0'))].join(':');
}

export type ControlActivities = ReturnType<typeof createControlActivities>;
