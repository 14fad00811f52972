// V2V: POST /v1/vms/import (an OVA, an OVF folder, or a bare image with a JSON descriptor) and
// POST /v1/vms/:id/export (a stopped VM to OVA, raw, qcow2 or vhdx). The package is read by the
// agent of the host that will run the VM (the API reads no host files, ARCHITECTURE 7): the API
// runs inspectVmPackage to completion first, so a refused package answers 4xx with the reason
// before any VM row exists, and only then creates the row and starts ImportVm (ProvisionVm's
// import method). Export is one host activity; the API waits for it and answers the file's
// size and sha256.
import { randomBytes } from 'node:crypto';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError, TimeoutFailure } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { Host, Network, Vm } from '../../db/entities.js';
import type { Em } from '../../db/orm.js';
import { SA, type ImportVmInput, type ProvisionInput } from '../../workflows/definitions.js';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../context.js';
import { conflict, HttpError, invalid } from '../errors.js';
import { Accepted, ErrorSchema, hostPath, idParams, tag, VM_NAME } from '../schemas/index.js';
import { startWorkflow } from '../temporal.js';
import { inputsTable } from '../../domain/summaries.js';
import { findVm, networkOf, newVmId } from './vms.js';

const GiB = 1024 ** 3;

const ImportBody = z.strictObject({
  path: hostPath.describe('on the chosen host: an .ova, an .ovf (or its folder), or a .json descriptor next to a bare vmdk/vhdx/raw/qcow2 image'),
  name: z.string().regex(VM_NAME, 'name must be lowercase letters, digits and -, 1-63 characters').optional().describe("default: the descriptor's VM name"),
  network: z.string().min(1).max(63).optional(),
  hostId: z.string().min(1).max(63).optional().describe('the host whose agent reads the package and runs the VM (default: the first host up)'),
  start: z.boolean().optional().describe('default true; false stops the VM once it has booted'),
  tags: z.array(tag).max(64).optional(),
});
const ExportBody = z.strictObject({
  format: z.enum(['ova', 'raw', 'qcow2', 'vhdx']),
  to: hostPath.describe("absolute path of the file to write on the VM's host; must not exist"),
});
const ImportAccepted = Accepted.extend({
  vmId: z.string(),
  name: z.string(),
  hostId: z.string(),
  descriptor: z.object({ cpus: z.number(), memoryMiB: z.number(), diskGiB: z.number(), format: z.string(), nics: z.array(z.string()), packageKind: z.string(), verifiedFiles: z.number() }),
});
const ExportAnswer = z.object({ vmId: z.string(), hostId: z.string(), path: z.string(), format: z.string(), bytes: z.number(), sha256: z.string(), virtualBytes: z.number() });

interface Opened {
  descriptor: { name: string; cpus: number; memoryMiB: number; nics: string[] };
  disk: { path: string; format: 'vmdk' | 'vhdx' | 'raw' | 'qcow2'; virtualBytes: number; fileBytes: number };
  packageKind: string;
  verifiedFiles: number;
}

/** The host activity's failure as the HTTP answer it stands for (never a 500 for a bad package). */
function v2vError(e: unknown, what: string): HttpError {
  const cause = e instanceof WorkflowFailedError && e.cause instanceof ActivityFailure ? e.cause.cause : undefined;
  const app = cause instanceof ApplicationFailure ? cause : undefined;
  // a TimeoutFailure here is the host agent not picking the work up (scheduleToStartTimeout)
  const message = app?.message ?? (cause instanceof TimeoutFailure ? `the host's agent did not answer (${cause.message}); is it running?` : (e as Error).message);
  switch (app?.type) {
    case 'Refused':
      return new HttpError(422, { error: 'refused', message });
    case 'InvalidArgument':
      return new HttpError(400, { error: 'validation', message });
    case 'NotFound':
      return new HttpError(404, { error: 'not_found', message });
    case 'Conflict':
    case 'InvalidState':
      return conflict(message);
    default:
      return new HttpError(503, { error: 'unavailable', message: `${what}: ${message}` });
  }
}

async function chooseHost(em: Em, hostId: string | undefined, network: Network): Promise<Host> {
  if (hostId !== undefined) {
    const h = await em.findOne(Host, { id: hostId });
    if (!h) throw invalid('hostId', `host ${hostId} does not exist`);
    if (h.maintenance) throw invalid('hostId', `host ${h.id} is in maintenance and takes no new VMs`);
    if (h.state !== 'up') throw invalid('hostId', `host ${h.id} is ${h.state}`);
    if (network.hostIds.length > 0 && !network.hostIds.includes(h.id)) throw invalid('network', `network ${network.name} is not available on host ${h.id}`);
    return h;
  }
  const hosts = (await em.find(Host, { state: 'up', maintenance: false }, { orderBy: { id: 'asc' } })).filter((h) => network.hostIds.length === 0 || network.hostIds.includes(h.id));
  if (!hosts[0]) throw invalid('hostId', `no host is up on network ${network.name}`);
  return hosts[0];
}

export function v2vRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema, 503: ErrorSchema };

  const runShort = async <T>(type: string, workflowId: string, args: unknown[], summary: string, timeout: string): Promise<T> =>
    ctx.t.temporal.workflow.execute(type, { taskQueue: ctx.t.taskQueue, workflowId, args, workflowExecutionTimeout: timeout, staticSummary: summary });

  r.post(
    '/v1/vms/import',
    {
      // it starts an operation (ARCHITECTURE 4): a repeat with the same Idempotency-Key gets the first answer
      config: { idempotent: true },
      schema: {
        tags: ['vms'],
        summary: 'Import a VM from another platform (OVA, OVF folder, or bare image + JSON descriptor) with ProvisionVm\'s import method',
        body: ImportBody,
        response: { 202: ImportAccepted, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const em = ctx.db.em();
      const network = await networkOf(em, b.network);
      if (b.name !== undefined && (await em.findOne(Vm, { name: b.name, state: { $ne: 'deleted' } }))) throw conflict(`a VM named ${b.name} exists`, { field: 'name' });
      const host = await chooseHost(em, b.hostId, network);
      const vmId = newVmId();
      const stageId = `import-${vmId}`;

      // 1 open and check the package on that host; a refusal has already removed what it unpacked
      let opened: Opened;
      try {
        opened = await runShort<Opened>('inspectVmPackage', `inspect-${vmId}`, [{ hostId: host.id, stageId, path: b.path }], `inspect package ${b.path} on ${host.id}`, '2 hours');
      } catch (e) {
        throw v2vError(e, `package ${b.path} could not be read on ${host.id}`);
      }
      const discard = () =>
        runShort('discardVmPackage', `discard-${vmId}-${randomBytes(3).toString('hex')}`, [{ hostId: host.id, stageId, importPath: opened.disk.path }], `discard staged package of ${vmId}`, '2 minutes').catch((err) =>
          req.log.error({ err, vmId }, 'could not discard a staged package'),
        );

      // 2 the VM row from the descriptor, then ImportVm; anything refused here discards the package
      const d = opened.descriptor;
      const name = b.name ?? d.name.toLowerCase();
      const diskGiB = Math.max(1, Math.ceil(opened.disk.virtualBytes / GiB));
      try {
        if (!VM_NAME.test(name)) throw invalid('name', `the descriptor names the VM "${d.name}", not a valid ferry name: give name (lowercase letters, digits and -, 1-63 characters)`);
        if (d.cpus > Math.floor(host.cpus * host.cpuOvercommit)) throw invalid('cpus', `the descriptor asks ${d.cpus} vCPUs; host ${host.id} can allocate at most ${Math.floor(host.cpus * host.cpuOvercommit)}`);
        if (d.memoryMiB > Math.floor(host.memoryMiB * host.memoryOvercommit)) throw invalid('memoryMiB', `the descriptor asks ${d.memoryMiB} MiB; host ${host.id} can allocate at most ${Math.floor(host.memoryMiB * host.memoryOvercommit)}`);
        em.create(Vm, { id: vmId, name, state: 'provisioning', cpus: d.cpus, memoryMiB: d.memoryMiB, diskGiB, templateId: null, networkId: network.id, diskPaths: [], cpuFeatures: [], tags: b.tags ?? [], antiAffinityTag: null, affinityTag: null, workload: null });
        try {
          await em.flush();
        } catch (e) {
          if (e instanceof UniqueConstraintViolationException) throw conflict(`a VM named ${name} exists`, { field: 'name' });
          throw e;
        }
      } catch (e) {
        await discard();
        throw e;
      }
      const provision: ProvisionInput = { vmId, principal: principalOf(req), name, cpus: d.cpus, memoryMiB: d.memoryMiB, diskGiB, source: { kind: 'import', path: opened.disk.path, format: opened.disk.format }, networkId: network.id, hostId: host.id, ...(b.tags ? { tags: b.tags } : {}) };
      const input: ImportVmInput = { provision, stageId, importPath: opened.disk.path, start: b.start ?? true };
      try {
        const started = await startWorkflow(ctx.t, {
          workflowType: 'importVm',
          workflowId: `import-${vmId}`,
          args: [input],
          staticSummary: `import ${name} (${vmId}) from ${opened.packageKind} ${b.path} on ${host.id}`,
          staticDetails: inputsTable('import inputs', { path: b.path, host: host.id, cpus: d.cpus, memoryMiB: d.memoryMiB, diskGiB, format: opened.disk.format, nics: d.nics.join(', '), start: input.start }),
          searchAttributes: [{ key: SA.VmId, value: vmId }, { key: SA.HostId, value: host.id }],
        });
        return reply.code(202).send({ ...started, vmId, name, hostId: host.id, descriptor: { cpus: d.cpus, memoryMiB: d.memoryMiB, diskGiB, format: opened.disk.format, nics: d.nics, packageKind: opened.packageKind, verifiedFiles: opened.verifiedFiles } });
      } catch (e) {
        await ctx.db.em().nativeDelete(Vm, { id: vmId, state: 'provisioning' }).catch((err) => req.log.error({ err, vmId }, 'could not remove the Vm row of an import that did not start'));
        await discard();
        throw e;
      }
    },
  );

  r.post(
    '/v1/vms/:id/export',
    {
      schema: {
        tags: ['vms'],
        summary: "Export a stopped VM's disk to an OVA (OVF + streamOptimized vmdk + manifest) or a raw/qcow2/vhdx image on its host",
        params: idParams,
        body: ExportBody,
        response: { 200: ExportAnswer, ...errors },
      },
    },
    async (req) => {
      const em = ctx.db.em();
      const vm = await findVm(em, req.params.id);
      if (vm.state !== 'stopped') throw conflict(`vm ${vm.id} is ${vm.state}: stop it before exporting (a running guest's disk is not consistent)`, { vmId: vm.id, state: vm.state });
      if (!vm.hostId || !vm.diskPaths[0]) throw conflict(`vm ${vm.id} has no disk on a host to export`, { vmId: vm.id });
      const network = vm.networkId ? await em.findOne(Network, { id: vm.networkId }) : null;
      const input = { hostId: vm.hostId, export: { vmId: vm.id, name: vm.name, cpus: vm.cpus, memoryMiB: vm.memoryMiB, network: network?.name ?? 'default', diskPath: vm.diskPaths[0], format: req.body.format, to: req.body.to } };
      try {
        const out = await ctx.t.temporal.workflow.execute('exportVm', {
          taskQueue: ctx.t.taskQueue,
          workflowId: `export-${vm.id}-${randomBytes(3).toString('hex')}`,
          args: [input],
          workflowExecutionTimeout: '2 hours',
          staticSummary: `export ${vm.name} (${vm.id}) to ${req.body.format} ${req.body.to} on ${vm.hostId}`,
          typedSearchAttributes: [{ key: SA.VmId, value: vm.id }],
        });
        return { vmId: vm.id, hostId: vm.hostId, ...(out as { path: string; format: string; bytes: number; sha256: string; virtualBytes: number }) };
      } catch (e) {
        throw v2vError(e, `export of ${vm.id} on ${vm.hostId}`);
      }
    },
  );
}

