// Input checks shared by the simulator's topology API and its driver. Every error names the
// field and the value, and is raised before anything is written.
import { assertSafeName, DriverError } from '../hypervisor.js';

export const invalid = (msg: string) => new DriverError(msg, 'INVALID_ARGUMENT', true);
export const notFound = (msg: string) => new DriverError(msg, 'NOT_FOUND', true);
export const invalidState = (msg: string, permanent = false) => new DriverError(msg, 'INVALID_STATE', permanent);

export function safeName(field: string, v: unknown): string {
  if (typeof v !== 'string') throw invalid(`${field} must be a string, got ${typeof v}`);
  assertSafeName(field, v);
  return v;
}

export function nonEmptyString(field: string, v: unknown): string {
  if (typeof v !== 'string' || v.trim().length === 0) throw invalid(`${field} must be a non-empty string`);
  return v;
}

export function positiveInt(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw invalid(`${field} must be a positive integer, got ${String(v)}`);
  return v;
}

export function nonNegativeInt(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid(`${field} must be a non-negative integer, got ${String(v)}`);
  return v;
}

export function positiveNumber(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw invalid(`${field} must be a positive number, got ${String(v)}`);
  return v;
}

export function nonNegativeNumber(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw invalid(`${field} must be a non-negative number, got ${String(v)}`);
  return v;
}

export function stringArray(field: string, v: unknown): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x.length === 0)) {
    throw invalid(`${field} must be an array of non-empty strings`);
  }
  return v as string[];
}

/** JSON with sorted keys, so two equal specs compare equal whatever their key order. */
export function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) => {
    if (val && typeof val === 'object' && !Array.isArray(val)) {
      return Object.fromEntries(Object.entries(val as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return val;
  });
}
