// POST /v1/vms/:id/migrations with kind cold: checks what the API can know (the VM's state, the
// target host and datastore, fields that apply to live migrations only) and starts ColdMigrate
// under the same business key as a live migration (`migrate-<vmId>`: one migration per VM).
// Capacity and datastore space are checked again by the workflow before anything moves.
import type { FastifyReply } from 'fastify';
import { Datastore, Host, Operation, Vm } from '../../db/entities.js';
import { SA, workflowIds, type AutoChoice, type ColdMigrateInput } from '../../workflows/definitions.js';
import type { ApiContext } from '../context.js';
import { conflict, invalid } from '../errors.js';
import { KNOB_FIELDS, type MigrationCreate } from '../schemas/index.js';
import { startWorkflow, webUiUrl } from '../temporal.js';
import { coldMigrateSummary } from '../../domain/summaries.js';

const MiB = 1024 * 1024;
/** fields of a live migration's convergence policy: meaningless for a powered-off copy */
const LIVE_ONLY = ['policy', 'maxDowntimeMs', 'approveSwitchover', ...KNOB_FIELDS] as const;

export async function startColdMigration(ctx: ApiContext, vm: Vm, b: MigrationCreate, reply: FastifyReply, principal: string, auto?: AutoChoice) {
  for (const k of LIVE_ONLY) if ((b as Record<string, unknown>)[k] !== undefined) throw invalid(k, `${k} applies to live migrations, not kind cold`, 400);
  const em = ctx.db.em();
  const workflowId = workflowIds.migrate(vm.id);
  if (vm.state === 'migrating') {
    const op = await em.findOne(Operation, { workflowId, state: 'running' }, { orderBy: { startedAt: 'desc' } });
    throw conflict(`vm ${vm.id} is already migrating`, { vmId: vm.id, state: vm.state, workflowId, operationId: op?.id ?? workflowId, webUiUrl: webUiUrl(ctx.t, workflowId) });
  }
  if (vm.state !== 'running' && vm.state !== 'stopped') throw conflict(`vm ${vm.id} is ${vm.state}; a cold migration needs it running or stopped`, { vmId: vm.id, state: vm.state, field: 'state' });
  if (!vm.hostId) throw conflict(`vm ${vm.id} has no host recorded`, { vmId: vm.id, field: 'hostId' });
  let target: Host | null = null;
  if (b.targetHostId !== undefined) {
    target = await em.findOne(Host, { id: b.targetHostId });
    if (!target) throw invalid('targetHostId', `host ${b.targetHostId} does not exist`);
    if (target.id === vm.hostId) throw invalid('targetHostId', `vm ${vm.id} already lives on ${target.id}`);
    if (target.maintenance) throw invalid('targetHostId', `host ${target.id} is in maintenance and takes no VMs`);
    if (target.state !== 'up') throw invalid('targetHostId', `host ${target.id} is ${target.state}`);
  }
  if (b.targetDatastoreId !== undefined) {
    const ds = await em.findOne(Datastore, { id: b.targetDatastoreId });
    if (!ds) throw invalid('targetDatastoreId', `datastore ${b.targetDatastoreId} does not exist`);
    if (target && !ds.hostIds.includes(target.id)) throw invalid('targetDatastoreId', `datastore ${ds.id} is not attached to host ${target.id}`);
    if (!target && ds.hostIds.every((h) => h === vm.hostId)) throw invalid('targetDatastoreId', `datastore ${ds.id} is attached to no host but the VM's own`);
  }
  const input: ColdMigrateInput = {
    vmId: vm.id,
    principal,
    ...(auto ? { auto } : {}),
    ...(b.targetHostId !== undefined ? { targetHostId: b.targetHostId } : {}),
    ...(b.targetDatastoreId !== undefined ? { targetDatastoreId: b.targetDatastoreId } : {}),
    ...(b.force !== undefined ? { force: b.force } : {}),
    ...(b.start !== undefined ? { start: b.start } : {}),
    ...(b.flatten !== undefined ? { flatten: b.flatten } : {}),
    ...(b.maxBandwidthMiBps !== undefined ? { maxBandwidthBytesPerSec: Math.round(b.maxBandwidthMiBps * MiB) } : {}),
    ...(b.shutdownTimeoutMs !== undefined ? { shutdownTimeoutMs: b.shutdownTimeoutMs } : {}),
  };
  const started = await startWorkflow(ctx.t, {
    workflowType: 'coldMigrate',
    workflowId,
    args: [input],
    staticSummary: coldMigrateSummary({ vmId: vm.id, vmName: vm.name, sourceHostId: vm.hostId, targetHostId: b.targetHostId, targetDatastoreId: b.targetDatastoreId, auto: auto !== undefined }),
    searchAttributes: [
      { key: SA.VmId, value: vm.id },
      { key: SA.SourceHost, value: vm.hostId },
      ...(b.targetHostId !== undefined ? [{ key: SA.TargetHost, value: b.targetHostId }] : []),
      { key: SA.MigrationKind, value: 'cold' },
    ],
  });
  return reply.code(202).send({ migrationId: started.workflowId, vmId: vm.id, kind: 'cold', ...(auto ? { auto } : {}), ...started });
}
