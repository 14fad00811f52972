// Keyset pagination: `{items, nextCursor}` where the cursor is an opaque base64url of the last
// row's sort key and id. Stable under inserts (no offsets) and cheap on an index.
import { z } from 'zod';
import { invalid } from './errors.js';

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 500;

export const pageQuery = {
  limit: z.coerce.number().int().min(1).max(MAX_LIMIT).optional().describe(`page size (default ${DEFAULT_LIMIT}, at most ${MAX_LIMIT})`),
  cursor: z.string().max(512).optional().describe('nextCursor of the previous page'),
};

interface CursorKey {
  /** sort value (ISO time for time-ordered lists, absent for id-ordered ones) */
  t?: string;
  id: string;
}

export function encodeCursor(key: CursorKey): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const isIsoTime = (t: unknown): t is string => typeof t === 'string' && ISO_TIME.test(t) && !Number.isNaN(Date.parse(t)) && new Date(t).toISOString() === t;

export function decodeCursor(cursor: string | undefined, timeOrdered: boolean): CursorKey | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  try {
    const key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as CursorKey;
    // exactly what page() hands out: an id (never holding NUL, which no database column can take)
    // and, for time-ordered lists only, the ISO time of toISOString(); anything else would reach
    // the query as NaN, an out-of-range date or a broken statement
    if (typeof key?.id !== 'string' || key.id.includes('\u0000')) throw new Error('no id');
    if (timeOrdered ? !isIsoTime(key.t) : key.t !== undefined) throw new Error('wrong time');
    return key;
  } catch {
    throw invalid('cursor', 'is not a cursor this API handed out', 400);
  }
}

/** Filter for rows after `key` in (field, id) order; `desc` for newest-first lists. */
export function afterKey(field: string, key: CursorKey | undefined, desc: boolean): Record<string, unknown> {
  if (!key) return {};
  const op = desc ? '$lt' : '$gt';
  if (key.t === undefined) return { id: { [op]: key.id } };
  const t = new Date(key.t);
  return { $or: [{ [field]: { [op]: t } }, { [field]: t, id: { [op]: key.id } }] };
}

/** Fetches limit+1 rows to know whether a next page exists. */
export function page<T extends { id: string }>(rows: T[], limit: number, timeOf?: (row: T) => Date): { rows: T[]; nextCursor: string | null } {
  if (rows.length <= limit) return { rows, nextCursor: null };
  const kept = rows.slice(0, limit);
  const last = kept[kept.length - 1]!;
  return { rows: kept, nextCursor: encodeCursor({ id: last.id, ...(timeOf ? { t: timeOf(last).toISOString() } : {}) }) };
}
