// The chaos campaign's cluster of real processes: a Temporal dev server on a database file, the
// control worker, the host agents and the API, each its own OS process so a SIGKILL is a real
// crash, plus the harness's own handles on the same inventory database, simulator file and
// Temporal. A run kills what its schedule says; restoreAll() restarts only what is gone.
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode } from '@temporalio/worker';
import Database from 'better-sqlite3';
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import { Simulator } from '../../drivers/sim/index.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { freePort, startDevServer, type DevServer } from '../../workers/dev-server.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { WORKFLOWS_PATH } from '../../workers/create-worker.js';

export const PROCESS_KINDS = ['control', 'agents', 'api'] as const;
export type ProcessKind = (typeof PROCESS_KINDS)[number];

const SPAWN_LIMIT_MS = 300_000;
const TOKEN = 'chaos-admin-token-0123456789abcdef';

interface Proc {
  child: ResultPromise;
  out: string;
}

export interface RigOptions {
  cluster: ClusterSpec;
  timeScale: number;
  /** FERRY_CHAOS_PLANT for the control worker (a planted bug the checker must catch) */
  plant?: string;
  log?: (line: string) => void;
}

/** Bundles the workflows once into a file every control worker restart loads (FERRY_CHAOS_BUNDLE). */
export async function writeWorkflowBundle(path: string): Promise<void> {
  const bundle = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => console.error(m) } });
  writeFileSync(path, bundle.code);
}

export class Rig {
  readonly dir = mkdtempSync(join(tmpdir(), 'ferry-chaos-'));
  readonly databaseUrl = join(this.dir, 'ferry.sqlite');
  db!: Db;
  sim!: Simulator;
  client!: Client;
  apiBase = '';
  restarts: Record<string, number> = { control: 0, agents: 0, api: 0, temporal: 0 };
  /** wall time spent (re)starting each kind of process, ms */
  restartMs: Record<string, number> = { control: 0, agents: 0, api: 0, temporal: 0 };
  private temporal: DevServer | undefined;
  private temporalPort = 0;
  private apiPort = 0;
  private bundlePath = join(this.dir, 'workflows.js');
  private procs = new Map<ProcessKind, Proc>();
  private standbys = new Map<ProcessKind, Proc>();
  private closing = false;
  private conn: Connection | undefined;
  private lock: { db: Database.Database; timer: NodeJS.Timeout; endsAt: number } | undefined;

  constructor(private readonly opts: RigOptions) {}

  get address(): string {
    return `127.0.0.1:${this.temporalPort}`;
  }

  async start(): Promise<void> {
    this.temporalPort = await freePort();
    this.apiPort = await freePort();
    this.apiBase = `http://127.0.0.1:${this.apiPort}`;
    await writeWorkflowBundle(this.bundlePath);
    this.db = await createDb({ databaseUrl: this.databaseUrl, dataDir: this.dir });
    await migrateUp(this.db);
    this.sim = Simulator.open({ path: join(this.dir, 'sim.sqlite'), timeScale: this.opts.timeScale });
    await seedCluster(this.db, this.sim, this.opts.cluster);
    for (const k of PROCESS_KINDS) this.standbys.set(k, this.standby(k));
    await this.startTemporal();
    this.conn = await Connection.connect({ address: this.address });
    this.client = new Client({ connection: this.conn, namespace: 'default' });
    for (const k of PROCESS_KINDS) await this.spawn(k);
    await this.standbysReady();
  }

  private async startTemporal(): Promise<void> {
    this.temporal = await startDevServer({ dbFile: join(this.dir, 'temporal.sqlite'), port: this.temporalPort, headless: true, log: () => undefined });
  }

  private env(kind: ProcessKind): Record<string, string> {
    return {
      FERRY_DATA_DIR: this.dir,
      DATABASE_URL: this.databaseUrl,
      TEMPORAL_ADDRESS: this.address,
      FERRY_TASK_QUEUE_PREFIX: '',
      FERRY_SIM_TIME_SCALE: String(this.opts.timeScale),
      FERRY_WORKER_METRICS: 'off',
      FERRY_ROLE: kind,
      FERRY_API_TOKEN: TOKEN,
      FERRY_API_PORT: String(this.apiPort),
      FERRY_API_HOST: '127.0.0.1',
      FERRY_API_RATE_LIMIT: '100000',
      FERRY_CHAOS_BUNDLE: this.bundlePath,
      ...(this.opts.plant ? { FERRY_CHAOS_PLANT: this.opts.plant } : {}),
    };
  }

  /** A process of this kind that has loaded its modules and waits for its start (standby.ts). */
  private standby(kind: ProcessKind): Proc {
    const entry = kind === 'control' ? 'bench/chaos/control-worker.ts' : 'workers/main.ts';
    const child = execa(process.execPath, ['--import', 'tsx', 'bench/chaos/standby.ts', entry], { cwd: PROJECT_ROOT, reject: false, stdio: ['pipe', 'pipe', 'pipe'], env: this.env(kind) });
    const p: Proc = { child, out: '' };
    child.stdout?.on('data', (d: Buffer) => (p.out = (p.out + d.toString()).slice(-4000)));
    child.stderr?.on('data', (d: Buffer) => (p.out = (p.out + d.toString()).slice(-4000)));
    return p;
  }

  /**
   * Starts a process of this kind: the standby loaded ahead of time (a fresh one if there is
   * none or it died), then a new standby for the next restart, loading while the run goes on.
   */
  private async spawn(kind: ProcessKind): Promise<void> {
    let p = this.standbys.get(kind);
    this.standbys.delete(kind);
    if (!p || p.child.exitCode !== null || p.child.signalCode !== null) {
      p?.child.kill('SIGKILL');
      p = this.standby(kind);
    }
    const { child } = p;
    child.stdin?.write('go\n');
    if (!this.closing) this.standbys.set(kind, this.standby(kind));
    // generous: on 2 shared cores a tsx process can take minutes to load
    const deadline = Date.now() + SPAWN_LIMIT_MS;
    while (!/running/.test(p.out)) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`${kind} process did not start (exit ${child.exitCode ?? '-'}, signal ${child.signalCode ?? '-'}, ${Math.round((Date.now() - deadline + SPAWN_LIMIT_MS) / 1000)} s): ${p.out}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    this.procs.set(kind, p);
  }

  /**
   * Waits until every standby has loaded its modules (at most SPAWN_LIMIT_MS), so a run starts
   * on a quiet rig: the loading of the next restart's process does not compete with the run.
   */
  async standbysReady(): Promise<void> {
    const deadline = Date.now() + SPAWN_LIMIT_MS;
    for (const p of this.standbys.values()) {
      while (!/standby: loaded/.test(p.out) && p.child.exitCode === null && p.child.signalCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    }
  }

  alive(kind: ProcessKind): boolean {
    const p = this.procs.get(kind);
    return !!p && p.child.exitCode === null && p.child.signalCode === null;
  }

  /** SIGKILL of one ferry process (no shutdown of any kind). */
  async kill(kind: ProcessKind): Promise<void> {
    const p = this.procs.get(kind);
    if (!p || !this.alive(kind)) return;
    p.child.kill('SIGKILL');
    await p.child;
  }

  temporalUp(): boolean {
    return !!this.temporal;
  }

  /** SIGKILL of the Temporal dev server; restoreAll() starts it again on the same database file. */
  async killTemporal(): Promise<void> {
    if (!this.temporal?.pid) return;
    const pid = this.temporal.pid;
    process.kill(pid, 'SIGKILL');
    await this.temporal.stop().catch(() => undefined);
    this.temporal = undefined;
    // the port is free once the process is gone
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * A database outage: another connection takes SQLite's exclusive lock for `ms`, so every
   * ferry writer waits (busy_timeout) or fails with SQLITE_BUSY until it is let go. An outage
   * that starts while one is on extends it instead (false: no new outage began).
   */
  dbOutage(ms: number): boolean {
    if (this.lock) {
      const left = this.lock.endsAt - Date.now();
      if (ms > left) {
        clearTimeout(this.lock.timer);
        this.lock.timer = setTimeout(() => this.endOutage(), ms);
        this.lock.endsAt = Date.now() + ms;
      }
      return false;
    }
    const db = new Database(this.databaseUrl, { timeout: 5000 });
    db.exec('BEGIN EXCLUSIVE');
    const timer = setTimeout(() => this.endOutage(), ms);
    this.lock = { db, timer, endsAt: Date.now() + ms };
    return true;
  }

  /** Resolves when no outage is on. */
  async outageOver(): Promise<void> {
    while (this.lock) await new Promise((r) => setTimeout(r, Math.max(10, this.lock ? this.lock.endsAt - Date.now() : 0)));
  }

  endOutage(): void {
    if (!this.lock) return;
    clearTimeout(this.lock.timer);
    try {
      this.lock.db.exec('COMMIT');
    } finally {
      this.lock.db.close();
      this.lock = undefined;
    }
  }

  private restoring: Promise<string[]> | undefined;

  /**
   * Restarts whatever is down (the dev server first: the workers need it). A database outage
   * runs its full length (a process restarted during one waits or fails on the lock, like in
   * production); run.ts waits for outageOver() before its final restore.
   * One at a time: two restores at once would start a process twice and lose track of one.
   */
  async restoreAll(): Promise<string[]> {
    while (this.restoring) await this.restoring.catch(() => undefined);
    this.restoring = this.restoreNow();
    try {
      return await this.restoring;
    } finally {
      this.restoring = undefined;
    }
  }

  private async restoreNow(): Promise<string[]> {
    const restarted: string[] = [];
    if (!this.temporal) {
      const t = Date.now();
      await this.startTemporal();
      this.restartMs.temporal += Date.now() - t;
      this.restarts.temporal++;
      restarted.push('temporal');
    }
    for (const k of PROCESS_KINDS) {
      if (this.alive(k)) continue;
      const t = Date.now();
      await this.spawn(k);
      this.restartMs[k] += Date.now() - t;
      this.restarts[k]++;
      restarted.push(k);
    }
    return restarted;
  }

  /** The API with the admin token; a network error (the API is down) is { status: 0 }. */
  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    try {
      const res = await fetch(this.apiBase + path, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(15_000),
      });
      return { status: res.status, body: (await res.json().catch(() => null)) as any };
    } catch (e) {
      return { status: 0, body: { message: (e as Error).message } };
    }
  }

  output(kind: ProcessKind): string {
    return this.procs.get(kind)?.out ?? '';
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const p of this.standbys.values()) p.child.kill('SIGKILL');
    await Promise.all([...this.standbys.values()].map((p) => p.child));
    this.standbys.clear();
    this.endOutage();
    for (const k of PROCESS_KINDS) await this.kill(k);
    await this.temporal?.stop().catch(() => undefined);
    await this.conn?.close().catch(() => undefined);
    await this.db?.close().catch(() => undefined);
    this.sim?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
