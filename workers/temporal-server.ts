// The production Temporal server on this machine, without Docker: the real `temporal-server`
// (go.temporal.io/server, frontend + history + matching + worker in one process) on PostgreSQL
// for persistence and visibility, its schemas applied by its own `temporal-sql-tool`, and the
// standalone Web UI (`temporal-ui-server`). Measured facts behind every choice are in
// ../shared/notes/temporal-server.md; the config is deploy/temporal/config.yaml, rendered by the
// server itself from the environment set here (docker-compose.yml mounts the same file).
//
// Binaries are found like the CLI (workers/temporal-cli.ts): an env var, the project tools folder,
// PATH, Go's GOBIN / ~/go/bin; else built with `go install` (about 11 min cold on 2 cores, ~25 s
// once Go's build cache is warm). v1.32.1 and ui-server v2.55.0 are the newest releases this
// machine's Go (1.26.8, GOTOOLCHAIN=local) accepts.
import { execa, type ResultPromise } from 'execa';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import { createWriteStream, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { ensureSearchAttributes, waitForTemporal } from './dev-server.js';
import { findGo, isExecutable, PROJECT_ROOT, PROJECT_TOOLS_DIR, type Log } from './temporal-cli.js';

export const TEMPORAL_SERVER_VERSION = 'v1.32.1';
export const TEMPORAL_SERVER_MODULES = [`go.temporal.io/server/cmd/server@${TEMPORAL_SERVER_VERSION}`, `go.temporal.io/server/cmd/tools/sql@${TEMPORAL_SERVER_VERSION}`];
export const TEMPORAL_UI_MODULE = 'github.com/temporalio/ui-server/v2/cmd/server@v2.55.0';
export const TEMPORAL_CONFIG_FILE = join(PROJECT_ROOT, 'deploy', 'temporal', 'config.yaml');
export const TEMPORAL_DYNAMIC_CONFIG_FILE = join(PROJECT_ROOT, 'deploy', 'temporal', 'dynamicconfig.yaml');
const UI_CONFIG_ROOT = join(PROJECT_ROOT, 'deploy', 'temporal');

export interface ServerBinaries {
  server: string;
  sqlTool: string;
}

function searchDirs(env: NodeJS.ProcessEnv): string[] {
  const dirs = [PROJECT_TOOLS_DIR, ...(env.PATH ?? '').split(delimiter).filter(Boolean)];
  if (env.GOBIN) dirs.push(env.GOBIN);
  dirs.push(join(env.GOPATH || join(homedir(), 'go'), 'bin'));
  return dirs;
}

/** temporal-server and temporal-sql-tool: FERRY_TEMPORAL_SERVER_PATH (the tool beside it), else the first folder holding both. */
export function findTemporalServer(env: NodeJS.ProcessEnv = process.env): ServerBinaries | undefined {
  const explicit = env.FERRY_TEMPORAL_SERVER_PATH;
  if (explicit) {
    const sqlTool = env.FERRY_TEMPORAL_SQL_TOOL_PATH || join(dirname(explicit), 'temporal-sql-tool');
    if (!isExecutable(explicit)) throw new Error(`FERRY_TEMPORAL_SERVER_PATH=${explicit} is not an executable file`);
    if (!isExecutable(sqlTool)) throw new Error(`no executable temporal-sql-tool at ${sqlTool} (set FERRY_TEMPORAL_SQL_TOOL_PATH)`);
    return { server: explicit, sqlTool };
  }
  for (const dir of searchDirs(env)) {
    const b = { server: join(dir, 'temporal-server'), sqlTool: join(dir, 'temporal-sql-tool') };
    if (isExecutable(b.server) && isExecutable(b.sqlTool)) return b;
  }
  return undefined;
}

export function findTemporalUi(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.FERRY_TEMPORAL_UI_PATH) {
    if (!isExecutable(env.FERRY_TEMPORAL_UI_PATH)) throw new Error(`FERRY_TEMPORAL_UI_PATH=${env.FERRY_TEMPORAL_UI_PATH} is not an executable file`);
    return env.FERRY_TEMPORAL_UI_PATH;
  }
  return searchDirs(env).map((d) => join(d, 'temporal-ui-server')).find(isExecutable);
}

/**
 * `go install` of `modules` into a scratch GOBIN, then each binary renamed into `installDir`
 * (the server's and the UI's mains are both called `server`, so they cannot share a GOBIN).
 */
async function goInstall(modules: string[], renames: Record<string, string>, opts: { log: Log; env: NodeJS.ProcessEnv; installDir: string; what: string; expect: string }): Promise<void> {
  const go = await findGo();
  if (!go) throw new Error(`${opts.what} not found and Go is not installed (install Go, or set the path variable)`);
  mkdirSync(opts.installDir, { recursive: true });
  const gobin = mkdtempSync(join(opts.installDir, '.build-'));
  opts.log(`ferry: ${opts.what} not found; building ${modules.join(' ')} into ${opts.installDir} (${opts.expect})...`);
  const started = Date.now();
  try {
    await execa(go, ['install', '-tags', 'disable_grpc_modules', ...modules], { env: { ...opts.env, GOBIN: gobin, CGO_ENABLED: '0' }, stdout: 'inherit', stderr: 'inherit' });
    for (const [from, to] of Object.entries(renames)) renameSync(join(gobin, from), join(opts.installDir, to));
  } finally {
    rmSync(gobin, { recursive: true, force: true });
  }
  opts.log(`ferry: built ${opts.what} in ${Math.round((Date.now() - started) / 1000)} s`);
}

export async function ensureTemporalServer(opts: { log?: Log; env?: NodeJS.ProcessEnv; installDir?: string } = {}): Promise<ServerBinaries> {
  const env = opts.env ?? process.env;
  const found = findTemporalServer(env);
  if (found) return found;
  const installDir = opts.installDir ?? PROJECT_TOOLS_DIR;
  await goInstall(TEMPORAL_SERVER_MODULES, { server: 'temporal-server', sql: 'temporal-sql-tool' }, {
    log: opts.log ?? ((l) => console.log(l)),
    env,
    installDir,
    what: `temporal-server ${TEMPORAL_SERVER_VERSION}`,
    expect: 'about 11 minutes on 2 cores the first time, under a minute with a warm Go build cache',
  });
  return { server: join(installDir, 'temporal-server'), sqlTool: join(installDir, 'temporal-sql-tool') };
}

export async function ensureTemporalUi(opts: { log?: Log; env?: NodeJS.ProcessEnv; installDir?: string } = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const found = findTemporalUi(env);
  if (found) return found;
  const installDir = opts.installDir ?? PROJECT_TOOLS_DIR;
  await goInstall([TEMPORAL_UI_MODULE], { server: 'temporal-ui-server' }, { log: opts.log ?? ((l) => console.log(l)), env, installDir, what: 'temporal-ui-server v2.55.0', expect: 'under a minute' });
  return join(installDir, 'temporal-ui-server');
}

// ---------------------------------------------------------------- databases and schemas

/** Where the server keeps its two databases (FERRY_TEMPORAL_DB_URL, default postgres://postgres@127.0.0.1:5432/temporal). */
export interface TemporalDbTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  visibilityDatabase: string;
}

export function temporalDbTarget(url = 'postgres://postgres@127.0.0.1:5432/temporal'): TemporalDbTarget {
  const u = new URL(url);
  if (!/^postgres(ql)?:$/.test(u.protocol)) throw new Error(`FERRY_TEMPORAL_DB_URL: "${url}" is not a postgres:// URL`);
  const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || 'temporal';
  if (!/^[a-z_][a-z0-9_]{0,50}$/.test(database)) throw new Error(`FERRY_TEMPORAL_DB_URL: database name "${database}" must be lower-case letters, digits and _`);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || 'postgres'),
    password: decodeURIComponent(u.password),
    database,
    visibilityDatabase: `${database}_visibility`,
  };
}

function sqlToolArgs(t: Pick<TemporalDbTarget, 'host' | 'port' | 'user' | 'password'>, db: string): string[] {
  const args = ['--plugin', 'postgres12', '--ep', t.host, '-p', String(t.port), '-u', t.user, '--db', db];
  if (t.password) args.push('--pw', t.password);
  return args;
}

/** CREATE DATABASE when missing (the SQL tool's create-database is idempotent: rc 0 when it exists). */
export async function createDatabase(sqlTool: string, t: Pick<TemporalDbTarget, 'host' | 'port' | 'user' | 'password'>, db: string): Promise<void> {
  await execa(sqlTool, [...sqlToolArgs(t, db), 'create-database']);
}

/**
 * Both databases created and their schemas set up and upgraded to the versions embedded in the
 * tool (postgresql/v12/temporal 1.19, visibility 1.14 for v1.32.1). Idempotent: a second run finds
 * the versions current and changes nothing (about 3 s the first time, under 1 s after).
 */
export async function setupTemporalSchemas(sqlTool: string, t: TemporalDbTarget): Promise<void> {
  for (const [db, schema] of [
    [t.database, 'postgresql/v12/temporal'],
    [t.visibilityDatabase, 'postgresql/v12/visibility'],
  ] as const) {
    await createDatabase(sqlTool, t, db);
    await execa(sqlTool, [...sqlToolArgs(t, db), 'setup-schema', '-v', '0.0']);
    await execa(sqlTool, [...sqlToolArgs(t, db), 'update-schema', '--schema-name', schema]);
  }
}

export async function dropTemporalDatabases(sqlTool: string, t: TemporalDbTarget): Promise<void> {
  for (const db of [t.database, t.visibilityDatabase]) await execa(sqlTool, [...sqlToolArgs(t, db), 'drop-database', '-f'], { reject: false });
}

// ---------------------------------------------------------------- ports

/** The server's ports: gRPC per service, the frontend's HTTP API, membership per service, metrics. */
export interface TemporalPorts {
  frontend: number;
  http: number;
  history: number;
  matching: number;
  worker: number;
  frontendMembership: number;
  historyMembership: number;
  matchingMembership: number;
  workerMembership: number;
  metrics: number;
}

/** The layout Temporal's sample configs use, shifted to `base` (17233 for prod:local: away from a dev server on 7233). */
export function temporalPorts(base: number, metrics: number): TemporalPorts {
  return {
    frontend: base,
    http: base + 10,
    history: base + 1,
    matching: base + 2,
    worker: base + 6,
    frontendMembership: base - 300,
    historyMembership: base - 299,
    matchingMembership: base - 298,
    workerMembership: base - 294,
    metrics,
  };
}

export async function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/** A base whose whole block (temporalPorts) is free, for tests that run beside prod:local. */
export async function freeTemporalPorts(): Promise<TemporalPorts> {
  for (let i = 0; i < 200; i++) {
    // membership ports go into a smallint column of cluster_membership: all below 32768
    const base = 20_400 + Math.floor(Math.random() * 11_000);
    const p = temporalPorts(base, base + 20);
    if ((await Promise.all(Object.values(p).map(portFree))).every(Boolean)) return p;
  }
  throw new Error('no free block of ports for the Temporal server');
}

// ---------------------------------------------------------------- server and UI processes

export interface TemporalServer {
  address: string;
  namespace: string;
  metricsUrl: string;
  pid: number;
  stop(): Promise<void>;
}

export interface TemporalServerOptions {
  binaries: ServerBinaries;
  db: TemporalDbTarget;
  ports: TemporalPorts;
  /** the server's stdout and stderr are appended here */
  logFile: string;
  namespace?: string;
  /** per-service pool sizes (default 5 and 2: four services share one process, PostgreSQL allows 100 in all) */
  maxConns?: number;
  visibilityMaxConns?: number;
  log?: Log;
}

/** The environment deploy/temporal/config.yaml reads. */
export function temporalServerEnv(o: Pick<TemporalServerOptions, 'db' | 'ports' | 'maxConns' | 'visibilityMaxConns'>): Record<string, string> {
  const p = o.ports;
  return {
    TEMPORAL_DB_HOST: o.db.host,
    TEMPORAL_DB_PORT: String(o.db.port),
    TEMPORAL_DB_USER: o.db.user,
    TEMPORAL_DB_PASSWORD: o.db.password,
    TEMPORAL_DB_NAME: o.db.database,
    TEMPORAL_VISIBILITY_DB_NAME: o.db.visibilityDatabase,
    TEMPORAL_DB_MAX_CONNS: String(o.maxConns ?? 5),
    TEMPORAL_VISIBILITY_DB_MAX_CONNS: String(o.visibilityMaxConns ?? 2),
    BIND_ON_IP: '127.0.0.1',
    TEMPORAL_BROADCAST_ADDRESS: '127.0.0.1',
    TEMPORAL_FRONTEND_PORT: String(p.frontend),
    TEMPORAL_FRONTEND_HTTP_PORT: String(p.http),
    TEMPORAL_HISTORY_PORT: String(p.history),
    TEMPORAL_MATCHING_PORT: String(p.matching),
    TEMPORAL_WORKER_PORT: String(p.worker),
    TEMPORAL_FRONTEND_MEMBERSHIP_PORT: String(p.frontendMembership),
    TEMPORAL_HISTORY_MEMBERSHIP_PORT: String(p.historyMembership),
    TEMPORAL_MATCHING_MEMBERSHIP_PORT: String(p.matchingMembership),
    TEMPORAL_WORKER_MEMBERSHIP_PORT: String(p.workerMembership),
    TEMPORAL_METRICS_ADDRESS: `127.0.0.1:${p.metrics}`,
    TEMPORAL_DYNAMIC_CONFIG_FILE,
  };
}

export interface LoggedChild {
  child: ResultPromise;
  /** undefined while it runs; then how it ended, with its last output lines */
  exited: () => string | undefined;
  /** everything it printed since the start (the first 64 KiB) */
  output: () => string;
}

/** A child whose output goes to a log file; the last lines are kept for error messages. */
export function spawnLogged(cmd: string, args: string[], env: Record<string, string>, logFile: string, opts: { cwd?: string } = {}): LoggedChild {
  mkdirSync(dirname(logFile), { recursive: true });
  const out = createWriteStream(logFile, { flags: 'a' });
  const child = execa(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...env }, reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', cleanup: true });
  let tail = '';
  let head = '';
  for (const s of [child.stdout, child.stderr]) {
    s?.on('data', (d: Buffer) => {
      out.write(d);
      tail = (tail + d.toString()).slice(-3000);
      if (head.length < 65_536) head += d.toString();
    });
  }
  let exitInfo: string | undefined;
  void child.then((r) => {
    exitInfo = `exit ${r.exitCode ?? r.signal}: ${tail.trim().split('\n').slice(-4).join(' | ')} (log ${logFile})`;
    out.end();
  });
  return { child, exited: () => exitInfo, output: () => head };
}

/** SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: ResultPromise, exited: () => string | undefined, graceMs = 8000): Promise<void> {
  if (exited()) return;
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await child;
  clearTimeout(killer);
}

/** Registers the namespace unless it exists, then waits until the frontend serves it. */
export async function ensureNamespace(address: string, namespace: string, retentionDays = 3): Promise<void> {
  const conn = await Connection.connect({ address });
  try {
    try {
      await conn.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs(retentionDays * 86_400_000) });
    } catch (e) {
      // gRPC 6 = ALREADY_EXISTS: a second start, or another process got there first
      if ((e as { code?: number }).code !== 6) throw e;
    }
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await conn.workflowService.describeNamespace({ namespace });
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`namespace ${namespace} not served 30 s after registering it: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } finally {
    await conn.close();
  }
}

/**
 * Schemas, then the server, then (once its frontend answers health checks) the namespace and
 * ferry's six Keyword search attributes (SQL visibility allows ten per namespace).
 */
export async function startTemporalServer(o: TemporalServerOptions): Promise<TemporalServer> {
  const log = o.log ?? ((l) => console.log(l));
  const namespace = o.namespace ?? 'default';
  if (!(await portFree(o.ports.frontend))) throw new Error(`cannot start temporal-server: port ${o.ports.frontend} is in use (another prod:local, or set FERRY_TEMPORAL_PORT)`);
  const t0 = Date.now();
  await setupTemporalSchemas(o.binaries.sqlTool, o.db);
  const tSchema = Date.now();
  const { child, exited } = spawnLogged(o.binaries.server, ['--config-file', TEMPORAL_CONFIG_FILE, '--allow-no-auth', 'start'], temporalServerEnv(o), o.logFile);
  const address = `127.0.0.1:${o.ports.frontend}`;
  try {
    await waitForTemporal(address, { exited, timeoutMs: 60_000 });
    await ensureNamespace(address, namespace);
    await ensureSearchAttributes(address, namespace);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`temporal-server: ${(e as Error).message.replace('temporal dev server exited', 'exited')}`);
  }
  log(`ferry: temporal-server ${TEMPORAL_SERVER_VERSION} on ${address} (schemas ${tSchema - t0} ms, serving ${Date.now() - tSchema} ms later; log ${o.logFile})`);
  return {
    address,
    namespace,
    metricsUrl: `http://127.0.0.1:${o.ports.metrics}/metrics`,
    pid: child.pid!,
    stop: () => stopChild(child, exited),
  };
}

export interface TemporalUi {
  url: string;
  stop(): Promise<void>;
}

/** The standalone Web UI on `port`, pointed at `address` (config: deploy/temporal/ui/base.yaml). */
export async function startTemporalUi(o: { binary: string; address: string; port: number; namespace?: string; logFile: string }): Promise<TemporalUi> {
  if (!(await portFree(o.port))) throw new Error(`cannot start the Temporal Web UI: port ${o.port} is in use (set FERRY_TEMPORAL_UI_PORT)`);
  const env = { TEMPORAL_ADDRESS: o.address, TEMPORAL_UI_PORT: String(o.port), TEMPORAL_UI_HOST: '127.0.0.1', TEMPORAL_DEFAULT_NAMESPACE: o.namespace ?? 'default' };
  const { child, exited } = spawnLogged(o.binary, ['--root', UI_CONFIG_ROOT, '--config', 'ui', '--env', 'base', 'start'], env, o.logFile);
  const url = `http://127.0.0.1:${o.port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const why = exited();
    if (why) throw new Error(`temporal-ui-server exited before it served: ${why}`);
    const ok = await fetch(`${url}/api/v1/settings`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`temporal-ui-server did not answer on ${url} within 30 s (log ${o.logFile})`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, stop: () => stopChild(child, exited, 3000) };
}
