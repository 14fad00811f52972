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
