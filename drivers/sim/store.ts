// The simulator's persisted state: one SQLite file (or :memory:) shared by every process that
// opens it. WAL + busy_timeout let a host agent, the API (fault injection) and a restarted
// worker use it at once; every mutation runs in an IMMEDIATE transaction so a read-modify-write
// never interleaves with another process's.
import { openDatabase, type Database } from './sqlite.js';
import type { ClockEpoch } from './clock.js';

const SCHEMA_VERSION = '1';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clock (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch_wall_ms REAL NOT NULL, epoch_virtual_ms REAL NOT NULL, time_scale REAL NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (
  id TEXT PRIMARY KEY, cpu_model TEXT NOT NULL, cpu_features TEXT NOT NULL, cpus INTEGER NOT NULL,
  memory_bytes INTEGER NOT NULL, migration_address TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (host_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (host_id, name));
CREATE TABLE IF NOT EXISTS datastores (
  id TEXT PRIMARY KEY, shared INTEGER NOT NULL, capacity_bytes INTEGER NOT NULL, throughput_bytes_per_sec REAL NOT NULL);
CREATE TABLE IF NOT EXISTS datastore_hosts (datastore_id TEXT NOT NULL, host_id TEXT NOT NULL, PRIMARY KEY (datastore_id, host_id));
CREATE TABLE IF NOT EXISTS links (a TEXT NOT NULL, b TEXT NOT NULL, bandwidth_bytes_per_sec REAL NOT NULL, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS images (path TEXT PRIMARY KEY, datastore_id TEXT NOT NULL, size_bytes INTEGER NOT NULL, format TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS disks (
  path TEXT PRIMARY KEY, name TEXT NOT NULL, datastore_id TEXT NOT NULL, kind TEXT NOT NULL,
  format TEXT NOT NULL, virtual_size_bytes INTEGER NOT NULL, actual_size_bytes INTEGER NOT NULL,
  backing_path TEXT, spec TEXT NOT NULL, bytes_to_write INTEGER NOT NULL,
  start_v REAL NOT NULL, end_v REAL NOT NULL, token TEXT NOT NULL, content TEXT,
  host_id TEXT, src_datastores TEXT NOT NULL DEFAULT '[]', base_rate REAL NOT NULL DEFAULT 0, rate REAL NOT NULL DEFAULT 0,
  ckpt_v REAL NOT NULL DEFAULT 0, ckpt_bytes REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS vms (
  host_id TEXT NOT NULL, vm_id TEXT NOT NULL, state TEXT NOT NULL, spec TEXT NOT NULL,
  generation INTEGER NOT NULL DEFAULT 0, updated_v REAL NOT NULL, PRIMARY KEY (host_id, vm_id));
CREATE TABLE IF NOT EXISTS migrations (
  id INTEGER PRIMARY KEY AUTOINCREMENT, vm_id TEXT NOT NULL, source_host TEXT NOT NULL, target_host TEXT NOT NULL,
  uri TEXT NOT NULL, start_v REAL NOT NULL, memory_bytes INTEGER NOT NULL, link_bw REAL NOT NULL,
  dirty_rate REAL NOT NULL, wws INTEGER NOT NULL, device_bytes INTEGER NOT NULL, source_prev_state TEXT NOT NULL,
  disk_bytes INTEGER NOT NULL DEFAULT 0, disk_plan TEXT NOT NULL DEFAULT '[]',
  continue_at_v REAL, abort_at_v REAL, abort_status TEXT, abort_error TEXT,
  fail_round1 TEXT, fail_pause TEXT, fail_continue TEXT, bound_faults TEXT NOT NULL DEFAULT '{}',
  finalized INTEGER NOT NULL DEFAULT 0, final_json TEXT);
CREATE INDEX IF NOT EXISTS migrations_vm ON migrations (vm_id);
CREATE INDEX IF NOT EXISTS migrations_open ON migrations (finalized);
CREATE TABLE IF NOT EXISTS migration_params (
  id INTEGER PRIMARY KEY AUTOINCREMENT, migration_id INTEGER NOT NULL, at_v REAL NOT NULL, params TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS migration_params_m ON migration_params (migration_id);
CREATE TABLE IF NOT EXISTS faults (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
  host_id TEXT, peer_host_id TEXT, datastore_id TEXT, vm_id TEXT, stage INTEGER, step TEXT,
  count INTEGER NOT NULL, remaining INTEGER NOT NULL, value REAL,
  created_v REAL NOT NULL, fired_at_v REAL, fired_count INTEGER NOT NULL DEFAULT 0);
`;

export interface HostRow {
  id: string;
  cpu_model: string;
  cpu_features: string;
  cpus: number;
  memory_bytes: number;
  migration_address: string;
}
export interface DatastoreRow {
  id: string;
  shared: number;
  capacity_bytes: number;
  throughput_bytes_per_sec: number;
}
export interface ImageRow {
  path: string;
  datastore_id: string;
  size_bytes: number;
  format: string;
}
export interface DiskRow {
  path: string;
  name: string;
  datastore_id: string;
  kind: 'disk' | 'seed';
  format: string;
  virtual_size_bytes: number;
  actual_size_bytes: number;
  backing_path: string | null;
  spec: string;
  bytes_to_write: number;
  start_v: number;
  end_v: number;
  /** identifies one creation attempt (an abort removes only the disk it created or waited for) */
  token: string;
  content: string | null;
  /** host that writes it (slow-disk faults by host) */
  host_id: string | null;
  /** JSON string[]: datastores read from */
  src_datastores: string;
  /** bytes/s without slow-disk faults, and the current rate; progress is piecewise linear from the checkpoint */
  base_rate: number;
  rate: number;
  ckpt_v: number;
  ckpt_bytes: number;
}
export interface VmRow {
  host_id: string;
  vm_id: string;
  state: string;
  spec: string;
  generation: number;
  updated_v: number;
}
export interface MigrationRow {
  id: number;
  vm_id: string;
  source_host: string;
  target_host: string;
  uri: string;
  start_v: number;
  memory_bytes: number;
  link_bw: number;
  dirty_rate: number;
  wws: number;
  device_bytes: number;
  source_prev_state: string;
  /** bytes of disks mirrored before the RAM pre-copy (copyDisks) */
  disk_bytes: number;
  /** JSON DiskCopyPlan[]: disks created on the destination when the migration completes */
  disk_plan: string;
  continue_at_v: number | null;
  abort_at_v: number | null;
  abort_status: string | null;
  abort_error: string | null;
  fail_round1: string | null;
  fail_pause: string | null;
  fail_continue: string | null;
  bound_faults: string;
  finalized: number;
  final_json: string | null;
}
export interface MigrationParamRow {
  id: number;
  migration_id: number;
  at_v: number;
  params: string;
}
export interface FaultRow {
  seq: number;
  id: string;
  kind: string;
  host_id: string | null;
  peer_host_id: string | null;
  datastore_id: string | null;
  vm_id: string | null;
  stage: number | null;
  step: string | null;
  count: number;
  remaining: number;
  value: number | null;
  created_v: number;
  fired_at_v: number | null;
  fired_count: number;
}

export class Store {
  readonly db: Database;

  constructor(readonly path: string, busyTimeoutMs = 10_000) {
    this.db = openDatabase(path, { timeout: busyTimeoutMs });
    if (path !== ':memory:') this.db.pragma('journal_mode = WAL');
    this.db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`);
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = OFF');
    this.tx(() => {
      this.db.exec(SCHEMA);
      this.db.prepare(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)`).run(SCHEMA_VERSION);
      const v = this.db.prepare<{ value: string }>(`SELECT value FROM meta WHERE key = 'schema_version'`).get()!.value;
      if (v !== SCHEMA_VERSION) throw new Error(`simulator state ${path} has schema version ${v}, this code expects ${SCHEMA_VERSION}`);
    });
  }

  /** Runs fn in one IMMEDIATE transaction (nested calls join the outer one). */
  tx<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    return this.db.transaction(fn).immediate();
  }

  get<Row>(sql: string, ...params: unknown[]): Row | undefined {
    return this.db.prepare<Row>(sql).get(...params);
  }

  all<Row>(sql: string, ...params: unknown[]): Row[] {
    return this.db.prepare<Row>(sql).all(...params);
  }

  run(sql: string, ...params: unknown[]): number {
    return this.db.prepare(sql).run(...params).changes;
  }

  readClock(): ClockEpoch | undefined {
    const r = this.get<{ epoch_wall_ms: number; epoch_virtual_ms: number; time_scale: number }>(
      'SELECT epoch_wall_ms, epoch_virtual_ms, time_scale FROM clock WHERE id = 1',
    );
    return r && { epochWallMs: r.epoch_wall_ms, epochVirtualMs: r.epoch_virtual_ms, timeScale: r.time_scale };
  }

  writeClock(c: ClockEpoch): void {
    this.run(
      `INSERT INTO clock (id, epoch_wall_ms, epoch_virtual_ms, time_scale) VALUES (1, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET epoch_wall_ms = excluded.epoch_wall_ms,
         epoch_virtual_ms = excluded.epoch_virtual_ms, time_scale = excluded.time_scale`,
      c.epochWallMs,
      c.epochVirtualMs,
      c.timeScale,
    );
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/**
 * Thrown inside a transaction when the error must reach the caller but the writes made so far
 * (a spent fault, a crashed destination) must be committed: SimCluster.tx unwraps it after commit.
 */
export class CommitThenThrow {
  constructor(readonly error: Error) {}
}

/** Throws `e` out of the current SimCluster.tx, committing what the transaction wrote first. */
export function commitThenThrow(e: Error): never {
  throw new CommitThenThrow(e);
}
