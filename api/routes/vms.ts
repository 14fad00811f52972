// VMs: provision (ProvisionVm workflow), list/get, lifecycle actions (VmLifecycle workflow),
// template from a VM (CreateTemplateFromVm workflow).
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { Datastore, Host, Network, Template, Vm, type VmState } from '../../db/entities.js';
import type { Em } from '../../db/orm.js';
import {
  SA,
  workflowIds,
  type CreateTemplateInput,
  type LifecycleAction,
  type LifecycleInput,
  type ProvisionInput,
  type ProvisionSource,
} from '../../workflows/definitions.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { conflict, invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page } from '../pagination.js';
import { byIdOrName, runningOperationsOfVm, vmDto } from '../queries.js';
import { Accepted, ErrorSchema, idParams, StopBody, TemplateFromVm, VmCreate, VmListQuery, VmSchema } from '../schemas/index.js';
import { startWorkflow } from '../temporal.js';
import { inputsTable, lifecycleSummary, provisionSummary, templateSummary } from '../../domain/summaries.js';

export const newVmId = () => `vm-${randomBytes(6).toString('hex')}`;
export const newTemplateId = () => `tpl-${randomBytes(6).toString('hex')}`;

/**
 * States each action may start from: the control activity's table (getVmForLifecycle), minus the
 * no-ops it tolerates on a retry (start on running, stop on stopped) which a caller should hear about.
 */
const ALLOWED: Record<LifecycleAction, readonly VmState[]> = {
  start: ['stopped'],
  stop: ['running', 'paused'],
  reboot: ['running'],
  delete: ['stopped', 'running', 'paused', 'error'],
};

export async function findVm(em: Em, ref: string): Promise<Vm> {
  const vm = await byIdOrName(em, Vm, ref);
  if (!vm || vm.state === 'deleted') throw notFound('vm', ref);
  return vm;
}

/** The network a new VM joins: the one named (id or name), else the first created; 422 naming `network` otherwise. */
export async function networkOf(em: Em, ref: string | undefined): Promise<Network> {
  if (ref !== undefined) {
    const network = await byIdOrName(em, Network, ref);
    if (!network) throw invalid('network', `network ${ref} does not exist`);
    return network;
  }
  const first = (await em.find(Network, {}, { orderBy: { createdAt: 'asc', id: 'asc' }, limit: 1 }))[0];
  if (!first) throw invalid('network', 'no network exists yet; create one with POST /v1/networks');
  return first;
}

export function vmRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema };

  r.post(
    '/v1/vms',
    {
      config: { idempotent: true },
      schema: {
        tags: ['vms'],
        summary: 'Provision a VM (ProvisionVm workflow: select, load software, customize, start)',
        body: VmCreate,
        response: { 202: Accepted.extend({ vmId: z.string() }), ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const em = ctx.db.em();
      const { source, templateId, networkId } = await checkProvision(em, b);

      const vmId = newVmId();
      const row = em.create(Vm, {
        id: vmId,
        name: b.name,
        state: 'provisioning',
        cpus: b.cpus,
        memoryMiB: b.memoryMiB,
        diskGiB: b.diskGiB,
        templateId: templateId ?? null,
        networkId,
        diskPaths: [],
        cpuFeatures: [],
        tags: b.tags ?? [],
        antiAffinityTag: b.antiAffinityTag ?? null,
        affinityTag: b.affinityTag ?? null,
        workload: b.workload ?? null,
      });
      try {
        await em.flush();
      } catch (e) {
        if (e instanceof UniqueConstraintViolationException) throw await nameTaken(ctx.db.em(), b.name);
        throw e;
      }

      const input: ProvisionInput = {
        vmId,
        principal: principalOf(req),
        name: b.name,
        cpus: b.cpus,
        memoryMiB: b.memoryMiB,
        diskGiB: b.diskGiB,
        source,
        networkId,
        ...(b.hostId !== undefined ? { hostId: b.hostId } : {}),
        ...(b.hostname !== undefined ? { hostname: b.hostname } : {}),
        ...(b.sshKeys !== undefined ? { sshKeys: b.sshKeys } : {}),
        ...(b.userData !== undefined ? { userData: b.userData } : {}),
        ...(b.tags !== undefined ? { tags: b.tags } : {}),
        ...(b.extraVolumesGiB !== undefined ? { extraVolumesGiB: b.extraVolumesGiB } : {}),
        ...(b.antiAffinityTag !== undefined ? { antiAffinityTag: b.antiAffinityTag } : {}),
        ...(b.affinityTag !== undefined ? { affinityTag: b.affinityTag } : {}),
        ...(b.weigher !== undefined ? { weigher: b.weigher } : {}),
        ...(b.workload !== undefined ? { workload: b.workload } : {}),
      };
      try {
        const started = await startWorkflow(ctx.t, {
          workflowType: 'provisionVm',
          workflowId: workflowIds.provision(b.name),
          args: [input],
          staticSummary: provisionSummary({ ...input, templateName: templateId ? (await em.findOne(Template, { id: templateId }))?.name : undefined }),
          // user data and keys stay out of the Web UI: only how much of them there is
          staticDetails: inputsTable('provisioning inputs', { ...input, userData: input.userData !== undefined ? `${input.userData.length} characters` : undefined, sshKeys: input.sshKeys ? `${input.sshKeys.length} key(s)` : undefined }),
          searchAttributes: [{ key: SA.VmId, value: vmId }, ...(b.hostId ? [{ key: SA.HostId, value: b.hostId }] : [])],
        });
        return reply.code(202).send({ vmId, ...started });
      } catch (e) {
        // Nothing half done: the Vm row exists only if its workflow does.
        await ctx.db
          .em()
          .nativeDelete(Vm, { id: row.id, state: 'provisioning' })
          .catch((err) => req.log.error({ err, vmId }, 'could not remove the Vm row of a provision that did not start'));
        throw e;
      }
    },
  );

  r.get(
    '/v1/vms',
    { schema: { tags: ['vms'], summary: 'List VMs', querystring: VmListQuery, response: { 200: z.object({ items: z.array(VmSchema), nextCursor: z.string().nullable() }), 400: ErrorSchema } } },
    async (req) => {
      const q = req.query;
      const limit = q.limit ?? DEFAULT_LIMIT;
      const key = decodeCursor(q.cursor, true);
      const where: Record<string, unknown> = { ...afterKey('createdAt', key, false) };
      where.state = q.state ?? { $ne: 'deleted' };
      if (q.hostId) where.hostId = q.hostId;
      const rows = await ctx.db.em().find(Vm, where, { orderBy: { createdAt: 'asc', id: 'asc' }, limit: limit + 1 });
      const p = page(rows, limit, (v) => v.createdAt);
      return { items: p.rows.map(vmDto), nextCursor: p.nextCursor };
    },
  );

  r.get(
    '/v1/vms/:id',
    { schema: { tags: ['vms'], summary: 'Get a VM by id or name', params: idParams, response: { 200: VmSchema, 404: ErrorSchema } } },
    async (req) => vmDto(await findVm(ctx.db.em(), req.params.id)),
  );

  const lifecycle = async (vmRef: string, action: LifecycleAction, opts: { force?: boolean; timeoutMs?: number }, principal: string) => {
    const em = ctx.db.em();
    const vm = await findVm(em, vmRef);
    if (!ALLOWED[action].includes(vm.state)) {
      throw conflict(`cannot ${action} vm ${vm.id} while it is ${vm.state} (allowed from: ${ALLOWED[action].join(', ')})`, { vmId: vm.id, state: vm.state });
    }
    const running = await runningOperationsOfVm(em, vm.id);
    if (running.length > 0) {
      const op = running[0]!;
      throw conflict(`vm ${vm.id} has a ${op.kind} operation running (${op.workflowId})`, { vmId: vm.id, operationId: op.id, workflowId: op.workflowId });
    }
    const input: LifecycleInput = { vmId: vm.id, action, principal, ...(opts.force !== undefined ? { force: opts.force } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) };
    const started = await startWorkflow(ctx.t, {
      workflowType: 'vmLifecycle',
      workflowId: workflowIds.lifecycle(vm.id, action),
      args: [input],
      staticSummary: `${lifecycleSummary(input)}${vm.hostId ? ` on ${vm.hostId}` : ''}`,
      staticDetails: inputsTable(`${action} inputs`, { ...input, name: vm.name, hostId: vm.hostId ?? undefined }),
      searchAttributes: [{ key: SA.VmId, value: vm.id }],
    });
    return { vmId: vm.id, action, ...started };
  };
  const lifecycleSchema = (summary: string, extra: Record<string, unknown> = {}) => ({
    tags: ['vms'],
    summary,
    params: idParams,
    ...extra,
    response: { 202: Accepted.extend({ vmId: z.string(), action: z.string() }), 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema },
  });

  r.post('/v1/vms/:id/start', { config: { idempotent: true }, schema: lifecycleSchema('Start a stopped VM') }, async (req, reply) =>
    reply.code(202).send(await lifecycle(req.params.id, 'start', {}, principalOf(req))),
  );
  r.post('/v1/vms/:id/stop', { config: { idempotent: true }, schema: lifecycleSchema('Stop a VM (graceful, then forced if force)', { body: StopBody }) }, async (req, reply) =>
    reply.code(202).send(await lifecycle(req.params.id, 'stop', req.body ?? {}, principalOf(req))),
  );
  r.post('/v1/vms/:id/reboot', { config: { idempotent: true }, schema: lifecycleSchema('Reboot a running VM') }, async (req, reply) =>
    reply.code(202).send(await lifecycle(req.params.id, 'reboot', {}, principalOf(req))),
  );
  r.delete(
    '/v1/vms/:id',
    { config: { idempotent: true }, schema: lifecycleSchema('Delete a VM (stops it first; force = power off after the graceful timeout)', { querystring: z.object({ force: z.enum(['true', 'false']).optional() }) }) },
    async (req, reply) => {
      const force = (req.query as { force?: string }).force;
      return reply.code(202).send(await lifecycle(req.params.id, 'delete', force === undefined ? {} : { force: force === 'true' }, principalOf(req)));
    },
  );

  r.post(
    '/v1/vms/:id/templates',
    {
      config: { idempotent: true },
      schema: {
        tags: ['templates'],
        summary: 'Create a template from a VM (CreateTemplateFromVm workflow)',
        params: idParams,
        body: TemplateFromVm,
        response: { 202: Accepted.extend({ templateId: z.string(), vmId: z.string() }), ...errors },
      },
    },
    async (req, reply) => {
      const em = ctx.db.em();
      const vm = await findVm(em, req.params.id);
      if (vm.state !== 'stopped' && vm.state !== 'running') {
        throw conflict(`cannot make a template of vm ${vm.id} while it is ${vm.state} (allowed from: stopped, running)`, { vmId: vm.id, state: vm.state });
      }
      if (await em.findOne(Template, { name: req.body.name })) throw conflict(`template name ${req.body.name} is already in use`, { field: 'name' });
      const templateId = newTemplateId();
      const input: CreateTemplateInput = {
        templateId,
        name: req.body.name,
        vmId: vm.id,
        principal: principalOf(req),
        ...(req.body.os !== undefined ? { os: req.body.os } : {}),
        ...(req.body.owner !== undefined ? { owner: req.body.owner } : {}),
        ...(req.body.department !== undefined ? { department: req.body.department } : {}),
        ...(req.body.tags !== undefined ? { tags: req.body.tags } : {}),
        requiredCpuFeatures: vm.cpuFeatures ?? [],
      };
      const started = await startWorkflow(ctx.t, {
        workflowType: 'createTemplateFromVm',
        workflowId: workflowIds.template(req.body.name),
        args: [input],
        staticSummary: templateSummary(input),
        staticDetails: inputsTable('template inputs', { ...input }),
        searchAttributes: [{ key: SA.VmId, value: vm.id }],
      });
      return reply.code(202).send({ templateId, vmId: vm.id, ...started });
    },
  );
}

async function nameTaken(em: Em, name: string) {
  const other = await em.findOne(Vm, { name });
  return conflict(`vm name ${name} is already in use${other ? ` by ${other.id} (${other.state})` : ''}`, {
    field: 'name',
    ...(other ? { vmId: other.id } : {}),
  });
}

/**
 * Checks that need only the database: the source exists, the network exists, the pinned host
 * exists and takes placements, and at least one host could ever fit the VM (allocatable
 * capacity, ignoring current usage: whether there is room NOW is placement's job). Throws 422
 * naming the field, or 409 for a name already in use.
 */
async function checkProvision(em: Em, b: VmCreate): Promise<{ source: ProvisionSource; templateId?: string; networkId: string }> {
  let source: ProvisionSource;
  let template: Template | null = null;
  if (b.template !== undefined) {
    template = await byIdOrName(em, Template, b.template);
    if (!template) throw invalid('template', `template ${b.template} does not exist`);
    if (b.memoryMiB < template.minMemoryMiB) {
      throw invalid('memoryMiB', `template ${template.name} needs at least ${template.minMemoryMiB} MiB, got ${b.memoryMiB}`);
    }
    if (b.diskGiB < template.diskGiB) throw invalid('diskGiB', `template ${template.name} has a ${template.diskGiB} GiB disk; diskGiB must be at least that`);
    source = { kind: 'template', templateId: template.id, ...(b.linkedClone !== undefined ? { linked: b.linkedClone } : {}) };
  } else if (b.cloneOf !== undefined) {
    const src = await byIdOrName(em, Vm, b.cloneOf);
    if (!src || src.state === 'deleted') throw invalid('cloneOf', `vm ${b.cloneOf} does not exist`);
    if (src.state === 'provisioning' || src.state === 'migrating') {
      throw conflict(`cannot clone vm ${src.id} while it is ${src.state}`, { field: 'cloneOf', vmId: src.id, state: src.state });
    }
    if (b.diskGiB < src.diskGiB) throw invalid('diskGiB', `the clone source has a ${src.diskGiB} GiB disk; diskGiB must be at least that`);
    source = { kind: 'clone', sourceVmId: src.id };
  } else if (b.import !== undefined) {
    source = { kind: 'import', path: b.import.path, format: b.import.format };
  } else {
    source = { kind: 'iso', isoPath: b.iso! };
  }

  const network = await networkOf(em, b.network);

  const hosts = await em.find(Host, {});
  if (hosts.length === 0) throw invalid('hostId', 'no host is registered; register one with POST /v1/hosts');
  let candidates = hosts;
  if (b.hostId !== undefined) {
    const h = hosts.find((x) => x.id === b.hostId);
    if (!h) throw invalid('hostId', `host ${b.hostId} does not exist`);
    if (h.maintenance) throw invalid('hostId', `host ${h.id} is in maintenance and takes no new VMs`);
    if (h.state !== 'up') throw invalid('hostId', `host ${h.id} is ${h.state}`);
    if (network.hostIds.length > 0 && !network.hostIds.includes(h.id)) throw invalid('network', `network ${network.name} is not available on host ${h.id}`);
    candidates = [h];
  }
  const where = b.hostId !== undefined ? `host ${b.hostId}` : 'host';
  const maxCpus = Math.max(...candidates.map((h) => Math.floor(h.cpus * h.cpuOvercommit)));
  const maxMem = Math.max(...candidates.map((h) => Math.floor(h.memoryMiB * h.memoryOvercommit)));
  if (b.cpus > maxCpus) throw invalid('cpus', `no ${where} can ever fit ${b.cpus} vCPUs (largest allocatable: ${maxCpus})`);
  if (b.memoryMiB > maxMem) throw invalid('memoryMiB', `no ${where} can ever fit ${b.memoryMiB} MiB (largest allocatable: ${maxMem} MiB)`);
  if (template && template.requiredCpuFeatures.length > 0) {
    const ok = candidates.some((h) => template!.requiredCpuFeatures.every((f) => h.cpuFeatures.includes(f)));
    if (!ok) throw invalid('template', `no ${where} offers the CPU features template ${template.name} needs (${template.requiredCpuFeatures.join(', ')})`);
  }
  const datastores = await em.find(Datastore, {});
  const diskTotal = b.diskGiB + (b.extraVolumesGiB ?? []).reduce((a, x) => a + x, 0);
  if (datastores.length > 0) {
    const largest = Math.max(...datastores.map((d) => d.capacityGiB));
    if (diskTotal > largest) throw invalid('diskGiB', `no datastore can ever fit ${diskTotal} GiB (largest: ${largest} GiB)`);
  }
  // Last: a request that is wrong in itself says so even when the name is taken too.
  if (await em.findOne(Vm, { name: b.name })) throw await nameTaken(em, b.name);
  return { source, templateId: template?.id, networkId: network.id };
}
