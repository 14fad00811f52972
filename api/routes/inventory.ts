// Inventory records: hosts (with capacity and usage), datastores, templates, networks with IP
// pools. Registering a record is a plain database write (no workflow): nothing outside the
// database changes until a workflow uses the record.
import { randomBytes } from 'node:crypto';
import { setMaintenance } from '../../db/repositories/maintenance.js';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { Datastore, Host, IpPool, Network, Template, Vm } from '../../db/entities.js';
import type { ApiContext } from '../context.js';
import { conflict, invalid, notFound } from '../errors.js';
import { afterKey, decodeCursor, DEFAULT_LIMIT, page, pageQuery } from '../pagination.js';
import { byIdOrName, datastoreDto, hostDto, networkDto, templateDto, usageByHost } from '../queries.js';
import { AnyList, AnyObject, ErrorSchema, HostCreate, HostListQuery, idParams, ipToInt, MaintenanceBody, NetworkCreate, TemplateCreate, TemplateListQuery, TemplatePatch } from '../schemas/index.js';

const rid = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`;

export function inventoryRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const errors = { 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema };

  // ------------------------------------------------------------------ hosts
  r.get('/v1/hosts', { schema: { tags: ['hosts'], summary: 'List hosts with capacity and usage', querystring: HostListQuery, response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const q = req.query;
    const limit = q.limit ?? DEFAULT_LIMIT;
    const where: Record<string, unknown> = { ...afterKey('id', decodeCursor(q.cursor, false), false) };
    if (q.maintenance) where.maintenance = q.maintenance === 'true';
    const em = ctx.db.em();
    const rows = await em.find(Host, where, { orderBy: { id: 'asc' }, limit: limit + 1 });
    const p = page(rows, limit);
    const usage = await usageByHost(em, p.rows.map((h) => h.id));
    return { items: p.rows.map((h) => hostDto(h, usage.get(h.id))), nextCursor: p.nextCursor };
  });

  r.get('/v1/hosts/:id', { schema: { tags: ['hosts'], summary: 'A host with capacity and usage', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const em = ctx.db.em();
    const h = await em.findOne(Host, { id: req.params.id });
    if (!h) throw notFound('host', req.params.id);
    return hostDto(h, (await usageByHost(em, [h.id])).get(h.id));
  });

  r.post(
    '/v1/hosts',
    { config: { role: 'admin' }, schema: { tags: ['hosts'], summary: 'Register a host record (admin)', body: HostCreate, response: { 201: AnyObject, ...errors } } },
    async (req, reply) => {
      const b = req.body;
      const em = ctx.db.em();
      if (await em.findOne(Host, { id: b.id })) throw conflict(`host ${b.id} already exists`, { field: 'id' });
      const h = em.create(Host, {
        id: b.id,
        name: b.name ?? b.id,
        rack: b.rack ?? null,
        cpuModel: b.cpuModel,
        cpuFeatures: b.cpuFeatures,
        cpus: b.cpus,
        memoryMiB: b.memoryMiB,
        ...(b.cpuOvercommit !== undefined ? { cpuOvercommit: b.cpuOvercommit } : {}),
        ...(b.memoryOvercommit !== undefined ? { memoryOvercommit: b.memoryOvercommit } : {}),
        ...(b.driver !== undefined ? { driver: b.driver } : {}),
        migrationAddress: b.migrationAddress ?? null,
        tags: b.tags,
        maxOutgoingMigrations: b.maxOutgoingMigrations ?? ctx.config.maxOutgoingMigrations,
        maxIncomingMigrations: b.maxIncomingMigrations ?? ctx.config.maxIncomingMigrations,
      });
      await flushOr409(em, `host ${b.id} already exists`, 'id');
      return reply.code(201).send(hostDto(h, undefined));
    },
  );

  r.post(
    '/v1/hosts/:id/maintenance',
    {
      config: { role: 'admin' },
      schema: { tags: ['hosts'], summary: 'Enter or leave maintenance (no new placements while enabled) (admin)', params: idParams, body: MaintenanceBody, response: { 200: AnyObject, ...errors } },
    },
    async (req) => {
      const em = ctx.db.em();
      if (!(await em.findOne(Host, { id: req.params.id }))) throw notFound('host', req.params.id);
      // the change and its Operation record (kind maintenance, enter | leave) in one transaction
      const { host } = await setMaintenance(ctx.db, {
        hostId: req.params.id,
        enabled: req.body.enabled,
        key: rid('api'),
        workflowId: 'api',
        reason: req.body.enabled ? 'entered through the API' : 'left through the API',
      });
      return hostDto(host, (await usageByHost(em, [host.id])).get(host.id));
    },
  );

  // ------------------------------------------------------------------ datastores
  r.get('/v1/datastores', { schema: { tags: ['datastores'], summary: 'List datastores with usage', querystring: z.object(pageQuery), response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const limit = req.query.limit ?? DEFAULT_LIMIT;
    const em = ctx.db.em();
    const rows = await em.find(Datastore, afterKey('id', decodeCursor(req.query.cursor, false), false), { orderBy: { id: 'asc' }, limit: limit + 1 });
    const p = page(rows, limit);
    return { items: await Promise.all(p.rows.map((d) => datastoreDto(em, d))), nextCursor: p.nextCursor };
  });

  r.get('/v1/datastores/:id', { schema: { tags: ['datastores'], summary: 'A datastore with usage', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const em = ctx.db.em();
    const d = await byIdOrName(em, Datastore, req.params.id);
    if (!d) throw notFound('datastore', req.params.id);
    return datastoreDto(em, d);
  });

  // ------------------------------------------------------------------ templates
  r.get('/v1/templates', { schema: { tags: ['templates'], summary: 'List templates', querystring: TemplateListQuery, response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const q = req.query;
    const limit = q.limit ?? DEFAULT_LIMIT;
    const where: Record<string, unknown> = { ...afterKey('id', decodeCursor(q.cursor, false), false) };
    if (q.owner) where.owner = q.owner;
    if (q.department) where.department = q.department;
    const em = ctx.db.em();
    // Tag filtering happens in memory (tags are a JSON column); fetch pages until full.
    const items: Template[] = [];
    let more = true;
    let cursorWhere = where;
    while (items.length <= limit && more) {
      const rows = await em.find(Template, cursorWhere, { orderBy: { id: 'asc' }, limit: limit + 1 });
      more = rows.length === limit + 1;
      for (const t of rows) if (!q.tag || (t.tags ?? []).includes(q.tag)) items.push(t);
      if (rows.length) cursorWhere = { ...where, id: { $gt: rows[rows.length - 1]!.id } };
      if (!q.tag) break;
    }
    const p = page(items, limit);
    return { items: p.rows.map(templateDto), nextCursor: p.nextCursor };
  });

  r.get('/v1/templates/:id', { schema: { tags: ['templates'], summary: 'A template by id or name', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const t = await byIdOrName(ctx.db.em(), Template, req.params.id);
    if (!t) throw notFound('template', req.params.id);
    return templateDto(t);
  });

  r.post('/v1/templates', { schema: { tags: ['templates'], summary: 'Register a template image', body: TemplateCreate, response: { 201: AnyObject, ...errors } } }, async (req, reply) => {
    const b = req.body;
    const em = ctx.db.em();
    const known = new Set((await em.find(Datastore, { id: { $in: b.datastoreIds } })).map((d) => d.id));
    const unknown = b.datastoreIds.filter((d) => !known.has(d));
    if (unknown.length) throw invalid('datastoreIds', `unknown datastore(s): ${unknown.join(', ')}`);
    if (await em.findOne(Template, { name: b.name })) throw conflict(`template name ${b.name} is already in use`, { field: 'name' });
    const id = b.id ?? rid('tpl');
    if (await em.findOne(Template, { id })) throw conflict(`template ${id} already exists`, { field: 'id' });
    const t = em.create(Template, {
      id,
      name: b.name,
      os: b.os,
      imagePath: b.imagePath,
      datastoreIds: b.datastoreIds,
      diskGiB: b.diskGiB,
      minMemoryMiB: b.minMemoryMiB,
      requiredCpuFeatures: b.requiredCpuFeatures,
      owner: b.owner ?? null,
      department: b.department ?? null,
      tags: b.tags,
      sourceVmId: null,
    });
    await flushOr409(em, `template ${b.name} already exists`, 'name');
    return reply.code(201).send(templateDto(t));
  });

  r.patch(
    '/v1/templates/:id',
    { schema: { tags: ['templates'], summary: 'Change owner, department, tags, requirements of a template', params: idParams, body: TemplatePatch, response: { 200: AnyObject, ...errors } } },
    async (req) => {
      const em = ctx.db.em();
      const t = await byIdOrName(em, Template, req.params.id);
      if (!t) throw notFound('template', req.params.id);
      const b = req.body;
      if (b.datastoreIds) {
        const known = new Set((await em.find(Datastore, { id: { $in: b.datastoreIds } })).map((d) => d.id));
        const unknown = b.datastoreIds.filter((d) => !known.has(d));
        if (unknown.length) throw invalid('datastoreIds', `unknown datastore(s): ${unknown.join(', ')}`);
        t.datastoreIds = b.datastoreIds;
      }
      if (b.os !== undefined) t.os = b.os;
      if (b.minMemoryMiB !== undefined) t.minMemoryMiB = b.minMemoryMiB;
      if (b.requiredCpuFeatures !== undefined) t.requiredCpuFeatures = b.requiredCpuFeatures;
      if (b.owner !== undefined) t.owner = b.owner;
      if (b.department !== undefined) t.department = b.department;
      if (b.tags !== undefined) t.tags = b.tags;
      await em.flush();
      return templateDto(t);
    },
  );

  r.delete('/v1/templates/:id', { schema: { tags: ['templates'], summary: 'Delete a template record (refused while a VM is a linked clone of it)', params: idParams, response: { 204: z.null(), ...errors } } }, async (req, reply) => {
    const em = ctx.db.em();
    const t = await byIdOrName(em, Template, req.params.id);
    if (!t) throw notFound('template', req.params.id);
    const users = await em.find(Vm, { templateId: t.id, state: { $ne: 'deleted' } }, { fields: ['id'], limit: 5 });
    if (users.length) throw conflict(`template ${t.name} is used by VM(s) ${users.map((v) => v.id).join(', ')}`, { vmIds: users.map((v) => v.id) });
    await em.nativeDelete(Template, { id: t.id });
    return reply.code(204).send(null);
  });

  // ------------------------------------------------------------------ networks
  r.get('/v1/networks', { schema: { tags: ['networks'], summary: 'List networks with their IP pools', querystring: z.object(pageQuery), response: { 200: AnyList, 400: ErrorSchema } } }, async (req) => {
    const limit = req.query.limit ?? DEFAULT_LIMIT;
    const em = ctx.db.em();
    const rows = await em.find(Network, afterKey('id', decodeCursor(req.query.cursor, false), false), { orderBy: { id: 'asc' }, limit: limit + 1 });
    const p = page(rows, limit);
    return { items: await Promise.all(p.rows.map((n) => networkDto(em, n, false))), nextCursor: p.nextCursor };
  });

  r.get('/v1/networks/:id', { schema: { tags: ['networks'], summary: 'A network with pool usage', params: idParams, response: { 200: AnyObject, 404: ErrorSchema } } }, async (req) => {
    const em = ctx.db.em();
    const n = await byIdOrName(em, Network, req.params.id);
    if (!n) throw notFound('network', req.params.id);
    return networkDto(em, n, true);
  });

  r.post('/v1/networks', { schema: { tags: ['networks'], summary: 'Create a network with IP pools', body: NetworkCreate, response: { 201: AnyObject, ...errors } } }, async (req, reply) => {
    const b = req.body;
    const em = ctx.db.em();
    const reserved = new Set([ipToInt(b.gateway)]);
    for (const [i, p] of b.pools.entries()) {
      for (const [j, q] of b.pools.entries()) {
        if (j > i && ipToInt(p.start) <= ipToInt(q.end) && ipToInt(q.start) <= ipToInt(p.end)) {
          throw invalid(`pools.${j}`, `overlaps pools.${i}`, 400);
        }
      }
      if (reserved.has(ipToInt(p.start)) && ipToInt(p.start) === ipToInt(p.end)) throw invalid(`pools.${i}`, 'holds only the gateway address', 400);
    }
    if (b.hostIds.length) {
      const known = new Set((await em.find(Host, { id: { $in: b.hostIds } })).map((h) => h.id));
      const unknown = b.hostIds.filter((h) => !known.has(h));
      if (unknown.length) throw invalid('hostIds', `unknown host(s): ${unknown.join(', ')}`);
    }
    if (await em.findOne(Network, { name: b.name })) throw conflict(`network name ${b.name} is already in use`, { field: 'name' });
    const id = b.id ?? rid('net');
    if (await em.findOne(Network, { id })) throw conflict(`network ${id} already exists`, { field: 'id' });
    const n = em.create(Network, { id, name: b.name, vlan: b.vlan ?? null, cidr: b.cidr, gateway: b.gateway, dns: b.dns, hostIds: b.hostIds });
    b.pools.forEach((p, i) => em.create(IpPool, { id: `${id}-pool-${i}`, networkId: id, rangeStart: p.start, rangeEnd: p.end }));
    await flushOr409(em, `network ${b.name} already exists`, 'name'); // one transaction: network and pools together
    return reply.code(201).send(await networkDto(ctx.db.em(), n, true));
  });
}

async function flushOr409(em: ReturnType<ApiContext['db']['em']>, message: string, field: string): Promise<void> {
  try {
    await em.flush();
  } catch (e) {
    if (e instanceof UniqueConstraintViolationException) throw conflict(message, { field });
    throw e;
  }
}
