/** Small helpers shared by the repositories: ids, validation, pagination, retries. */
import { randomUUID } from 'node:crypto';
import {
  DeadlockException,
  LockWaitTimeoutException,
  OptimisticLockError,
  UniqueConstraintViolationException,
} from '@mikro-orm/core';
import { ValidationError } from '../errors.js';

/** Same rule as drivers/hypervisor.ts SAFE_NAME: ids and names may reach file systems and argv. */
export const SAFE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function newId(prefix: string): string {
  return `${prefix}-${randomUUID()}`;
}

export function assertSafe(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || !SAFE_NAME.test(value)) {
    throw new ValidationError(field, `"${String(value)}" is not a valid name (lowercase letters, digits and '-', 1-63 chars, no leading/trailing '-')`);
  }
}

export function assertNonEmpty(field: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.trim() === '') throw new ValidationError(field, 'must be a non-empty string');
}

export function assertInt(field: string, value: unknown, min = 0): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ValidationError(field, `must be an integer >= ${min} (got ${String(value)})`);
  }
}

export function assertPositive(field: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ValidationError(field, `must be a number > 0 (got ${String(value)})`);
  }
}

export function assertStringArray(field: string, value: unknown): asserts value is string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new ValidationError(field, 'must be an array of strings');
}

export function assertOneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): asserts value is T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ValidationError(field, `must be one of ${allowed.join(', ')} (got ${String(value)})`);
  }
}

// ---- pagination -------------------------------------------------------------------------------

/** Every list answers `{ items, nextCursor }`; nextCursor is null on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PageRequest {
  /** Opaque cursor from a previous page's nextCursor. */
  cursor?: string | null;
  /** 1..500, default 50. */
  limit?: number;
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new ValidationError('limit', `must be an integer 1..500 (got ${limit})`);
  return limit;
}

export function encodeCursor(key: unknown[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

export function decodeCursor(cursor: string, arity: number): unknown[] {
  try {
    const key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(key) && key.length === arity) return key;
  } catch {
    // fall through
  }
  throw new ValidationError('cursor', 'is not a cursor returned by this list');
}

/** Cuts a `limit + 1` result into a page. */
export function toPage<T>(rows: T[], limit: number, keyOf: (row: T) => unknown[]): Page<T> {
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  return { items, nextCursor: more ? encodeCursor(keyOf(items[items.length - 1]!)) : null };
}

// ---- errors and retries -----------------------------------------------------------------------

export function isUniqueViolation(e: unknown): boolean {
  return e instanceof UniqueConstraintViolationException;
}

/**
 * Conflicts that a fresh attempt resolves: an optimistic-lock version moved, PostgreSQL
 * deadlock / serialization failure (40P01 / 40001), SQLite "database is locked" (another process
 * holds the write lock longer than busy_timeout, or our read snapshot went stale under WAL).
 */
export function isTransient(e: unknown): boolean {
  if (e instanceof OptimisticLockError || e instanceof DeadlockException || e instanceof LockWaitTimeoutException) return true;
  const code = (e as { code?: unknown } | null)?.code;
  return code === '40001' || code === '40P01' || code === '55P03' || code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT';
}

export interface RetryOptions {
  attempts?: number;
  baseDelayMs?: number;
}

/** Runs `fn` again (fresh fork inside `fn`) on transient conflicts, with jittered backoff. */
export async function retryTransient<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 8;
  const base = opts.baseDelayMs ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (!isTransient(e) || attempt >= attempts) throw e;
      const delay = base * 2 ** Math.min(attempt - 1, 6) * (0.5 + Math.random());
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

// ---- JSON -------------------------------------------------------------------------------------

/** Entity -> the plain JSON shape that crosses the workflow boundary (Dates become ISO strings). */
export type Jsonified<T> = T extends Date
  ? string
  : T extends (infer U)[]
    ? Jsonified<U>[]
    : T extends object
      ? { [K in keyof T as T[K] extends (...args: never[]) => unknown ? never : K]: Jsonified<T[K]> }
      : T;

export function toPlain<T extends object>(entity: T): Jsonified<T> {
  return JSON.parse(JSON.stringify(entity)) as Jsonified<T>;
}

/** Deep merge of plain objects; arrays and scalars in `patch` replace; `undefined` is skipped. */
export function mergeJson(base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    const cur = out[k];
    if (isPlainObject(cur) && isPlainObject(v)) out[k] = mergeJson(cur, v);
    else out[k] = v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}
