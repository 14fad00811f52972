// What every route module receives from buildApp: the dependencies, resolved once.
import type { Client } from '@temporalio/client';
import type { FerryConfig } from '../config/index.js';
import type { Db } from '../db/orm.js';
import type { TemporalDeps } from './temporal.js';

export interface SimulatorFaults {
  injectFault(f: unknown): unknown;
  listFaults(): unknown[];
}

export interface ApiContext {
  db: Db;
  temporal: Client;
  config: FerryConfig;
  /** task queue prefix (tests isolate ferry instances on one dev server) */
  prefix: string;
  simulator?: SimulatorFaults;
  t: TemporalDeps;
}

