// Typed loader for better-sqlite3 (11.10.0, installed with @mikro-orm/better-sqlite).
// The package ships no TypeScript types and @types/better-sqlite3 is not a dependency, so this
// file declares the small part of its API the simulator uses and loads it through createRequire
// (a CommonJS package). If @types/better-sqlite3 is added later this file can become
// `import Database from 'better-sqlite3'` without touching the rest of drivers/sim.
import { createRequire } from 'node:module';

export interface RunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

export interface Statement<Row = Record<string, unknown>> {
  run(...params: unknown[]): RunResult;
  get(...params: unknown[]): Row | undefined;
  all(...params: unknown[]): Row[];
}

export interface Transaction<F extends (...args: never[]) => unknown> {
  (...args: Parameters<F>): ReturnType<F>;
  deferred(...args: Parameters<F>): ReturnType<F>;
  immediate(...args: Parameters<F>): ReturnType<F>;
  exclusive(...args: Parameters<F>): ReturnType<F>;
}

export interface Database {
  readonly open: boolean;
  readonly inTransaction: boolean;
  prepare<Row = Record<string, unknown>>(sql: string): Statement<Row>;
  exec(sql: string): Database;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: never[]) => unknown>(fn: F): Transaction<F>;
  close(): Database;
}

export interface DatabaseOptions {
  readonly?: boolean;
  fileMustExist?: boolean;
  timeout?: number;
}

type DatabaseConstructor = new (filename: string, options?: DatabaseOptions) => Database;

const require = createRequire(import.meta.url);
const DatabaseCtor = require('better-sqlite3') as DatabaseConstructor;

export function openDatabase(filename: string, options?: DatabaseOptions): Database {
  return new DatabaseCtor(filename, options);
}
