// Row helpers shared by the inventory repositories: read-modify-write under the optimistic lock,
// keyset pagination by id, get-or-NotFound, and dropping undefined fields from a patch.
import { OptimisticLockError, type EntityName } from '@mikro-orm/core';
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { decodeCursor, pageLimit, retryTransient, toPage, type Page, type PageRequest } from './util.js';

export type Versioned = { id: string; version: number };

/** Read-modify-write of one row under its optimistic lock (see the file comment). */
export async function updateRow<T extends Versioned>(
  x: Db | Em,
  entity: EntityName<T>,
  label: string,
  id: string,
  apply: (row: T) => void,
  expectedVersion?: number,
): Promise<T> {
  const base = emOf(x);
  return retryTransient(async () => {
    const em = base.fork();
    const row = (await em.findOne(entity, { id } as never)) as T | null;
    if (!row) throw new NotFoundError(label, id);
    if (expectedVersion !== undefined && row.version !== expectedVersion) {
      throw new ConflictError(`${label} ${id} changed: version is ${row.version}, expected ${expectedVersion}`, label, 'version', row.version);
    }
    apply(row);
    try {
      await em.flush();
    } catch (e) {
      if (e instanceof OptimisticLockError && expectedVersion !== undefined) {
        throw new ConflictError(`${label} ${id} changed concurrently (expected version ${expectedVersion})`, label, 'version', expectedVersion, { cause: e });
      }
      throw e; // without expectedVersion: retried on a fresh fork
    }
    return row;
  }, { attempts: 10 });
}

export function keysetById<T extends { id: string }>(req: PageRequest, where: Record<string, unknown>): { where: Record<string, unknown>; limit: number } {
  const limit = pageLimit(req.limit);
  if (req.cursor) {
    const [id] = decodeCursor(req.cursor, 1);
    if (typeof id !== 'string') throw new ValidationError('cursor', 'is not a cursor returned by this list');
    where.id = { $gt: id };
  }
  return { where, limit };
}

export async function listById<T extends { id: string }>(x: Db | Em, entity: EntityName<T>, req: PageRequest, filter: Record<string, unknown>): Promise<Page<T>> {
  const { where, limit } = keysetById(req, filter);
  const rows = (await emOf(x).find(entity, where as never, { orderBy: { id: 'asc' } as never, limit: limit + 1 })) as T[];
  return toPage(rows, limit, (r) => [r.id]);
}

export async function mustGet<T extends object>(x: Db | Em, entity: EntityName<T>, label: string, id: string): Promise<T> {
  const row = (await emOf(x).findOne(entity, { id } as never)) as T | null;
  if (!row) throw new NotFoundError(label, id);
  return row;
}

export function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}
