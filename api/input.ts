// Input guards every route gets, before its own schema: a NUL character (U+0000) in a path
// parameter, query value or body string is a 400 naming the field. No ferry value may hold one
// (ids, names, paths, tags, reasons) and neither database can store one: PostgreSQL refuses it
// in text and jsonb, and SQLite through MikroORM ends the statement at it ("unrecognized token"),
// which a per-schema check on each string would eventually miss on some new route.
import type { FastifyInstance } from 'fastify';
import { HttpError, validationBody } from './errors.js';

/** The first string holding U+0000 inside `v` (depth-first), as a dotted path from `at`. */
export function nulField(v: unknown, at: string, depth = 0): string | undefined {
  if (typeof v === 'string') return v.includes('\u0000') ? at : undefined;
  if (v === null || typeof v !== 'object' || depth > 64) return undefined;
  for (const [k, x] of Object.entries(v)) {
    const here = at ? `${at}.${k}` : k;
    if (k.includes('\u0000')) return here;
    const found = nulField(x, here, depth + 1);
    if (found) return found;
  }
  return undefined;
}

export function installInputGuards(app: FastifyInstance): void {
  app.addHook('preValidation', async (req) => {
    for (const [part, value] of [
      ['params', req.params],
      ['querystring', req.query],
      ['body', req.body],
    ] as const) {
      const field = nulField(value, '');
      if (field !== undefined) {
        throw new HttpError(400, validationBody([{ field: field || part, problem: 'must not contain NUL characters (U+0000)' }], part));
      }
    }
  });
}
