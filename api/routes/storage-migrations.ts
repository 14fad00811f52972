// POST /v1/vms/:id/migrations with kind storage (StorageMigrate: the disks move to another
// datastore of the VM's own host, live) and kind auto (live when the VM runs and a compatible
// host exists, with shared storage or a disk copy; else cold when allowCold; the 202 answer and
// the Operation record say which and why).
import type { FastifyReply } from 'fastify';
import { Allocation, Datastore, Host, Network, Operation, type Vm } from '../../db/entities.js';
import { storageTargetProblem } from '../../domain/storage.js';
import { SA, workflowIds, type AutoChoice, type StorageMigrateInput } from '../../workflows/definitions.js';
import type { ApiContext } from '../context.js';
import { conflict, invalid } from '../errors.js';
import { KNOB_FIELDS, type MigrationCreate } from '../schemas/index.js';
import { startWorkflow, webUiUrl } from '../temporal.js';
import { storageMigrateSummary } from '../../domain/summaries.js';

const MiB = 1024 * 1024;
const NOT_FOR_STORAGE = ['policy', 'maxDowntimeMs', 'approveSwitchover', 'force', 'start', 'flatten', 'shutdownTimeoutMs', 'allowCold', ...KNOB_FIELDS] as const;

async function refuseBusy(ctx: ApiContext, vm: Vm): Promise<void> {
  const workflowId = workflowIds.migrate(vm.id);
  if (vm.state === 'migrating') {
    const op = await ctx.db.em().findOne(Operation, { workflowId, state: 'running' }, { orderBy: { startedAt: 'desc' } });
    throw conflict(`vm ${vm.id} is already migrating`, { vmId: vm.id, state: vm.state, workflowId, operationId: op?.id ?? workflowId, webUiUrl: webUiUrl(ctx.t, workflowId) });
  }
}

export async function startStorageMigration(ctx: ApiContext, vm: Vm, b: MigrationCreate, reply: FastifyReply, principal: string) {
  for (const k of NOT_FOR_STORAGE) if ((b as Record<string, unknown>)[k] !== undefined) throw invalid(k, `${k} does not apply to kind storage`, 400);
  if (b.targetDatastoreId === undefined) throw invalid('targetDatastoreId', 'kind storage needs targetDatastoreId (a datastore of the VM\'s host)');
  await refuseBusy(ctx, vm);
  if (vm.state !== 'running') throw conflict(`vm ${vm.id} is ${vm.state}; a live storage migration needs it running`, { vmId: vm.id, state: vm.state, field: 'state' });
  if (b.targetHostId !== undefined && b.targetHostId !== vm.hostId) throw invalid('targetHostId', `a storage migration keeps vm ${vm.id} on its host ${vm.hostId}; use kind live or cold to change hosts`);
  const em = ctx.db.em();
  const ds = await em.findOne(Datastore, { id: b.targetDatastoreId });
  const used = ds ? (await em.find(Allocation, { datastoreId: ds.id })).reduce((s, a) => s + a.diskGiB, 0) : 0;
  const problem = storageTargetProblem({
    vm: { id: vm.id, hostId: vm.hostId ?? null, datastoreId: vm.datastoreId ?? null, diskGiB: vm.diskGiB, state: vm.state },
    target: ds ? { id: ds.id, hostIds: ds.hostIds, freeGiB: ds.capacityGiB - used } : undefined,
  });
  if (problem) throw invalid('targetDatastoreId', problem === 'unknown datastore' ? `datastore ${b.targetDatastoreId} does not exist` : problem);
  const input: StorageMigrateInput = {
    vmId: vm.id,
    principal,
    targetDatastoreId: b.targetDatastoreId,
    ...(b.maxBandwidthMiBps !== undefined ? { maxBandwidthBytesPerSec: Math.round(b.maxBandwidthMiBps * MiB) } : {}),
  };
  const started = await startWorkflow(ctx.t, {
    workflowType: 'storageMigrate',
    workflowId: workflowIds.migrate(vm.id),
    args: [input],
    staticSummary: storageMigrateSummary({ vmId: vm.id, vmName: vm.name, hostId: vm.hostId ?? undefined, targetDatastoreId: b.targetDatastoreId }),
    searchAttributes: [
      { key: SA.VmId, value: vm.id },
      { key: SA.SourceHost, value: vm.hostId! },
      { key: SA.TargetHost, value: vm.hostId! },
      { key: SA.MigrationKind, value: 'storage' },
    ],
  });
  return reply.code(202).send({ migrationId: started.workflowId, vmId: vm.id, kind: 'storage', targetDatastoreId: b.targetDatastoreId, ...started });
}

/**
 * kind auto: live when the VM runs and a target (the given one, else any) is compatible (up, not
 * in maintenance, offers the guest's CPU features and network); with shared storage when the
 * target reaches the VM's datastore, else with a disk copy. Otherwise cold when allowCold, else a
 * 422 naming why. Returns the choice and the request rewritten to the chosen kind.
 */
export async function chooseAuto(ctx: ApiContext, vm: Vm, b: MigrationCreate): Promise<{ auto: AutoChoice; body: MigrationCreate }> {
  const em = ctx.db.em();
  const { allowCold, ...rest } = b;
  const cold = (reason: string): { auto: AutoChoice; body: MigrationCreate } => {
    if (!allowCold) throw invalid('kind', `auto: ${reason}; a cold migration would be possible but allowCold is not set`);
    const body = { ...rest, kind: 'cold' as const };
    for (const k of ['policy', 'maxDowntimeMs', 'approveSwitchover', ...KNOB_FIELDS] as const) delete (body as Record<string, unknown>)[k];
    return { auto: { requested: 'auto', chose: 'cold', reason: `${reason}: cold (allowCold)` }, body };
  };
  if (vm.state !== 'running') return cold(`vm ${vm.id} is ${vm.state}, a live migration needs it running`);
  const hosts = b.targetHostId !== undefined ? await em.find(Host, { id: b.targetHostId }) : await em.find(Host, {}, { orderBy: { id: 'asc' } });
  if (b.targetHostId !== undefined && hosts.length === 0) throw invalid('targetHostId', `host ${b.targetHostId} does not exist`);
  const net = vm.networkId ? await em.findOne(Network, { id: vm.networkId }) : null;
  const ds = vm.datastoreId ? await em.findOne(Datastore, { id: vm.datastoreId }) : null;
  const rejected: string[] = [];
  for (const h of hosts) {
    if (h.id === vm.hostId) {
      if (b.targetHostId !== undefined) throw invalid('targetHostId', `vm ${vm.id} already runs on ${h.id}`);
      continue;
    }
    const why: string[] = [];
    if (h.state !== 'up') why.push(`${h.state}`);
    if (h.maintenance) why.push('in maintenance');
    const missing = (vm.cpuFeatures ?? []).filter((f) => !(h.cpuFeatures ?? []).includes(f));
    if (missing.length) why.push(`CPU-incompatible (lacks ${missing.join(', ')})`);
    if (net && net.hostIds.length > 0 && !net.hostIds.includes(h.id)) why.push(`network ${net.name} not present`);
    if (why.length) {
      rejected.push(`${h.id}: ${why.join(', ')}`);
      continue;
    }
    const shared = ds !== null && ds.shared && ds.hostIds.includes(h.id);
    const reason = `vm ${vm.id} runs and host ${h.id} is compatible: live ${shared ? `with shared storage (${ds!.id})` : 'with disk copy (no datastore of the VM reachable from the target)'}`;
    return { auto: { requested: 'auto', chose: 'live', reason }, body: { ...rest, kind: 'live', targetHostId: h.id } };
  }
  return cold(`no host can take vm ${vm.id} live${rejected.length ? ` (${rejected.join('; ')})` : ''}`);
}
