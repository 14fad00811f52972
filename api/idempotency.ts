// Idempotency-Key on operation-starting routes (routes opt in with `config: { idempotent: true }`).
//
// A client that lost the answer to a POST can send it again with the same `Idempotency-Key`
// header and get the FIRST answer back (status and body, header `idempotent-replayed: true`)
// without anything being started twice. The key is scoped to the principal: two tokens never
// see each other's answers. Stored per (principal, key): method, path (with the query string) and
// the sha256 of the canonical JSON body; a repeat that differs in any of them is a 422 naming the
// header (the key was reused for another request: a client bug, never silently answered).
//
// Decisions:
// - Only answers that settle the request are kept: 2xx and 4xx (a 409 "already running" or a 422
//   is the answer, and so is a repeat's). A 5xx or a 429 deletes the record: nothing was started
//   (startWorkflow threw), and the retry the client makes should run again.
// - Concurrent duplicates: the first INSERT wins (UNIQUE principal+key); the second gets 409 with
//   `retry-after: 1` while the first is still being answered (status NULL), and the stored answer
//   once it is. Waiting instead would hold a connection for as long as a start takes.
// - A record left in progress by a process that died mid-request is taken over after 5 minutes;
//   answers are kept 24 hours, after which the key may be used again.
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { IdempotencyRecord } from '../db/entities.js';
import type { Db } from '../db/orm.js';
import { isUniqueViolation } from '../db/repositories/util.js';
import { conflict, HttpError } from './errors.js';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
const KEY = /^[\x20-\x7e]{1,128}$/;
const IN_PROGRESS_STALE_MS = 5 * 60_000;
const KEEP_MS = 24 * 3600_000;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the route starts an operation: an Idempotency-Key header makes a repeat answer the first answer */
    idempotent?: boolean;
  }
  interface FastifyRequest {
    idempotencyRecordId?: string;
  }
}

/** JSON with sorted object keys, so `{a,b}` and `{b,a}` hash alike. */
function canonical(v: unknown): string {
  if (v === undefined) return '';
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonical(x))).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
}

const problem = (status: 400 | 422, message: string) =>
  new HttpError(status, { error: 'validation', message: `Idempotency-Key: ${message}`, fields: [{ field: 'Idempotency-Key', problem: message }] });

export function installIdempotency(app: FastifyInstance, db: Db): void {
  app.decorateRequest('idempotencyRecordId', undefined);

  app.addHook('preHandler', async (req, reply) => {
    if (!req.routeOptions.config?.idempotent) return;
    const raw = req.headers[IDEMPOTENCY_HEADER];
    if (raw === undefined) return;
    if (Array.isArray(raw)) throw problem(400, 'give the header once');
    if (!KEY.test(raw)) throw problem(400, 'must be 1 to 128 printable ASCII characters');
    const principal = req.principal?.id ?? 'anonymous';
    const fields = { principal, key: raw, method: req.method, path: req.url, bodyHash: createHash('sha256').update(canonical(req.body)).digest('hex') };

    for (let attempt = 0; attempt < 3; attempt++) {
      const id = `idem-${randomBytes(8).toString('hex')}`;
      try {
        const em = db.em();
        em.create(IdempotencyRecord, { id, ...fields, status: null, response: null });
        await em.flush();
        req.idempotencyRecordId = id; // first of its key: run the route, keep its answer (onSend)
        return;
      } catch (e) {
        if (!isUniqueViolation(e)) throw e;
      }
      const prior = await db.em().findOne(IdempotencyRecord, { principal, key: raw });
      if (!prior) continue; // deleted meanwhile (a 5xx answer): try to be first again
      const age = Date.now() - new Date(prior.createdAt).getTime();
      if ((prior.status === null && age > IN_PROGRESS_STALE_MS) || age > KEEP_MS) {
        await db.em().nativeDelete(IdempotencyRecord, { id: prior.id });
        continue;
      }
      if (prior.method !== fields.method || prior.path !== fields.path || prior.bodyHash !== fields.bodyHash) {
        throw problem(422, `this key was used for another request (${prior.method} ${prior.path}${prior.bodyHash !== fields.bodyHash ? ', another body' : ''}); use a new key per request`);
      }
      if (prior.status === null) {
        reply.header('retry-after', '1');
        throw conflict('Idempotency-Key: the first request with this key is still being answered; retry shortly', { field: 'Idempotency-Key' });
      }
      return replay(reply, prior);
    }
    throw conflict('Idempotency-Key: the key is contended; retry', { field: 'Idempotency-Key' });
  });

  app.addHook('onSend', async (req, reply, payload) => {
    const id = req.idempotencyRecordId;
    if (!id) return payload;
    req.idempotencyRecordId = undefined;
    const status = reply.statusCode;
    if (status >= 500 || status === 429) {
      await db.em().nativeDelete(IdempotencyRecord, { id });
      return payload;
    }
    await db.em().nativeUpdate(IdempotencyRecord, { id }, { status, response: parseBody(payload) });
    return payload;
  });
}

function parseBody(payload: unknown): unknown {
  if (typeof payload !== 'string' || payload === '') return null;
  try {
    return JSON.parse(payload);
  } catch {
    return { body: payload };
  }
}

function replay(reply: FastifyReply, prior: IdempotencyRecord): FastifyReply {
  reply.header('idempotent-replayed', 'true');
  reply.code(prior.status!);
  return prior.response === null ? reply.send() : reply.send(prior.response);
}
