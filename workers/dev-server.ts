// Local Temporal dev server: `temporal server start-dev` with a database file (so workflows
// survive a restart), the Web UI, and ferry's custom search attributes. Health-waited before
// anyone connects; stopped with SIGTERM (then SIGKILL) on shutdown.
import { execa, type ResultPromise } from 'execa';
import { Connection } from '@temporalio/client';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createServer } from 'node:net';
import { ensureTemporalCli, type Log } from './temporal-cli.js';

/** ferry's custom search attributes (ARCHITECTURE.md section 3). */
export const SEARCH_ATTRIBUTES = {
  VmId: 'Keyword',
  SourceHost: 'Keyword',
  TargetHost: 'Keyword',
  MigrationKind: 'Keyword',
  Stage: 'Keyword',
  HostId: 'Keyword',
  OperationSummary: 'Keyword',
} as const;

export interface DevServerOptions {
  /** sqlite file for the server's state; omit for in-memory (tests) */
  dbFile?: string;
  port?: number;
  /** Web UI port; 0 or undefined with headless = no UI */
  uiPort?: number;
  headless?: boolean;
  namespace?: string;
  log?: Log;
  cliPath?: string;
  /** extra `--dynamic-config-value K=V` */
  dynamicConfig?: Record<string, unknown>;
}

export interface DevServer {
  address: string;
  uiUrl?: string;
  namespace: string;
  /** the server process (a chaos harness SIGKILLs it); absent for the downloaded fallback */
  pid?: number;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

async function portInUse(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(true));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(false)));
  });
}

/** Waits until the frontend answers a health check, or the process exits, or the deadline passes. */
export async function waitForTemporal(address: string, opts: { timeoutMs?: number; exited?: () => string | undefined } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let lastError = '';
  while (Date.now() < deadline) {
    const exited = opts.exited?.();
    if (exited) throw new Error(`temporal dev server exited before it was ready: ${exited}`);
    try {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await conn.healthService.check({});
        return;
      } finally {
        await conn.close();
      }
    } catch (e) {
      lastError = e instanceof Error ? e.message : String(e);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`Temporal at ${address} not reachable after ${opts.timeoutMs ?? 60_000} ms: ${lastError}`);
}

/**
 * Registers missing custom search attributes. `--search-attribute` on start-dev is ignored for
 * attributes added after the db file was first created, so we always reconcile through the
 * operator API (idempotent).
 */
export async function ensureSearchAttributes(address: string, namespace: string): Promise<void> {
  const conn = await Connection.connect({ address });
  try {
    const { customAttributes } = await conn.operatorService.listSearchAttributes({ namespace });
    const missing = Object.entries(SEARCH_ATTRIBUTES).filter(([name]) => !(customAttributes && name in customAttributes));
    if (missing.length === 0) return;
    // IndexedValueType enum: Keyword = 2
    const searchAttributes: Record<string, number> = {};
    for (const [name] of missing) searchAttributes[name] = 2;
    await conn.operatorService.addSearchAttributes({ namespace, searchAttributes });
    // visibility picks new attributes up asynchronously
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const after = await conn.operatorService.listSearchAttributes({ namespace });
      if (missing.every(([n]) => after.customAttributes && n in after.customAttributes)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`search attributes ${missing.map(([n]) => n).join(', ')} not registered after 15 s`);
  } finally {
    await conn.close();
  }
}

export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const log = opts.log ?? ((l) => console.log(l));
  const namespace = opts.namespace ?? 'default';
  const port = opts.port ?? (await freePort());
  if (await portInUse(port)) {
    throw new Error(`cannot start the Temporal dev server: port ${port} is already in use (set TEMPORAL_ADDRESS to use a running server)`);
  }
  let cli: string;
  try {
    cli = opts.cliPath ?? (await ensureTemporalCli({ log }));
  } catch (err) {
    if (!/install Go/.test(String((err as Error).message))) throw err;
    // Neither a temporal binary nor Go: @temporalio/testing can download the dev server itself
    // (needs internet access to temporal.download, which this project's CI machine does not have).
    log(`ferry: ${(err as Error).message}; falling back to @temporalio/testing's own download of the dev server`);
    return startDownloadedDevServer({ ...opts, port, namespace }, log);
  }
  const args = ['server', 'start-dev', '--port', String(port), '--ip', '127.0.0.1', '--log-level', 'error', '--namespace', namespace];
  if (opts.dbFile) {
    mkdirSync(dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
    // WAL with synchronous=NORMAL (measured here: 55 ms per activity against 72 ms with SQLite's
    // default rollback journal, notes in issue 13). What each costs:
    // - a process crash (SIGKILL of `npm start`, an OOM kill): nothing is lost. A committed
    //   transaction is in the WAL file as soon as commit returns; the OS keeps the file's pages
    //   even when the process dies, and the next open replays the WAL.
    // - power loss or an OS crash: the transactions committed since the last WAL sync (at most
    //   the last checkpoint interval) may be rolled back; the database stays consistent, never
    //   corrupt. synchronous=FULL would close that window at the price of an fsync per commit.
    // The embedded default runs on a developer's machine, where a process crash is the common
    // failure; production runs a Temporal cluster on PostgreSQL (issue 15), not this file.
    args.push('--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', 'synchronous=normal');
  }
  if (opts.headless || !opts.uiPort) args.push('--headless');
  else args.push('--ui-port', String(opts.uiPort));
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);
  for (const [k, v] of Object.entries(opts.dynamicConfig ?? {})) args.push('--dynamic-config-value', `${k}=${JSON.stringify(v)}`);

  const child: ResultPromise = execa(cli, args, { reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', cleanup: true });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  let exitInfo: string | undefined;
  void child.then((r) => {
    exitInfo = `exit code ${r.exitCode ?? r.signal}: ${output.trim().split('\n').slice(-3).join(' | ')}`;
  });
  const address = `127.0.0.1:${port}`;
  try {
    await waitForTemporal(address, { exited: () => exitInfo });
    await ensureSearchAttributes(address, namespace);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const uiUrl = !opts.headless && opts.uiPort ? `http://localhost:${opts.uiPort}` : undefined;
  return {
    address,
    uiUrl,
    namespace,
    pid: child.pid,
    async stop() {
      if (exitInfo) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child;
      clearTimeout(killer);
    },
  };
}

async function startDownloadedDevServer(opts: DevServerOptions & { port: number; namespace: string }, log: Log): Promise<DevServer> {
  const { TestWorkflowEnvironment } = await import('@temporalio/testing');
  const { SA } = await import('../workflows/definitions.js');
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      dbFilename: opts.dbFile,
      port: opts.port,
      namespace: opts.namespace,
      ui: !opts.headless && Boolean(opts.uiPort),
      uiPort: opts.headless ? undefined : opts.uiPort,
      searchAttributes: Object.values(SA),
    },
  });
  const address = `127.0.0.1:${opts.port}`;
  await ensureSearchAttributes(address, opts.namespace);
  log(`ferry: downloaded dev server running at ${address}`);
  return {
    address,
    uiUrl: !opts.headless && opts.uiPort ? `http://localhost:${opts.uiPort}` : undefined,
    namespace: opts.namespace,
    stop: () => env.teardown(),
  };
}
