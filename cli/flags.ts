// Flag values as parsed, and the checks of them every command shares (each a UsageError naming
// the flag).
import { UsageError } from './errors.js';

export type Values = Record<string, string | boolean | string[] | undefined>;

export function nonEmpty(flag: string, v: string): string {
  if (v.trim() === '') throw new UsageError(`flag --${flag} must not be empty`);
  return v;
}

export function positiveInt(flag: string, v: string | undefined): number {
  if (v === undefined) throw new UsageError(`flag --${flag} is required`);
  if (!/^[0-9]+$/.test(v) || Number(v) < 1) throw new UsageError(`flag --${flag} must be a positive whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

export function positive(flag: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`flag --${flag} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

/** A whole number from `min` to `max`, or undefined when the flag was not given. */
export function intInRange(flag: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`flag --${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** One of `values`, or undefined when the flag was not given. */
export function oneOf<T extends string>(flag: string, v: string | undefined, values: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw new UsageError(`flag --${flag} must be one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}
