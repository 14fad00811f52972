// The production layout on one machine (ARCHITECTURE.md section 8), as `npm run prod:local` and
// the test tier test/prod/ start it: the real Temporal server on PostgreSQL
// (workers/temporal-server.ts), then ferry as separate processes of workers/main.ts, one per
// role, so any one can be killed alone:
//   agents     one process with a host agent per simulated host (seeds the demo cluster into an
//              empty inventory, so it starts first and alone: it also runs the migrations)
//   control-1, control-2   two control workers on the same task queue
//   api-1, api-2           two API replicas (stateless; fleet metrics come from the database)
// plus the standalone Temporal Web UI. ferry's inventory is on PostgreSQL (DATABASE_URL); the
// simulator's state is the one sim.sqlite in the shared data folder, which every process opens
// (WAL, busy timeout), as hypervisors are shared by whoever talks to them.
import { join } from 'node:path';
import { loadConfig } from '../config/index.js';
import { resolveAdminToken } from '../api/auth.js';
import type { Role } from './main.js';
import { PROJECT_ROOT, type Log } from './temporal-cli.js';
import {
  createDatabase,
  ensureTemporalServer,
  ensureTemporalUi,
  portFree,
  spawnLogged,
  startTemporalServer,
  startTemporalUi,
  stopChild,
  temporalPorts,
  type LoggedChild,
  type TemporalDbTarget,
  type TemporalPorts,
  type TemporalServer,
  type TemporalUi,
} from './temporal-server.js';

export interface ProdPorts {
  temporal: TemporalPorts;
  ui: number;
  api: [number, number];
  /** worker metrics (Temporal SDK + process) of control-1, control-2 and agents */
  control: [number, number];
  agents: number;
}

/** prod:local's fixed ports, away from a dev server (7233/8233), npm start's API (8080) and worker metrics (9464). */
export function defaultProdPorts(env: NodeJS.ProcessEnv = process.env): ProdPorts {
  const n = (name: string, d: number) => (env[name] ? Number(env[name]) : d);
  return {
    temporal: temporalPorts(n('FERRY_TEMPORAL_PORT', 17233), n('FERRY_TEMPORAL_METRICS_PORT', 18000)),
    ui: n('FERRY_TEMPORAL_UI_PORT', 18233),
    api: [n('FERRY_API_PORT', 18080), n('FERRY_API_PORT', 18080) + 1],
    control: [n('FERRY_WORKER_METRICS_PORT', 19464), n('FERRY_WORKER_METRICS_PORT', 19464) + 1],
    agents: n('FERRY_WORKER_METRICS_PORT', 19464) + 2,
  };
}

export interface FerryProcess {
  name: string;
  role: Role;
  /** API base URL (api) or the worker metrics URL (control, agents) */
  url: string;
  metricsUrl: string;
  pid(): number | undefined;
  running(): boolean;
  start(): Promise<void>;
  /** a crash: the signal and nothing else (default SIGKILL) */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** a clean stop: SIGTERM, the workers drain */
  stop(): Promise<void>;
}

export interface ProdCluster {
  temporal: TemporalServer;
  ui?: TemporalUi;
  processes: FerryProcess[];
  byName(name: string): FerryProcess;
  apiUrls: string[];
  adminToken: string;
  dataDir: string;
  databaseUrl: string;
  stop(): Promise<void>;
}

export interface ProdClusterOptions {
  dataDir: string;
  /** ferry's own database (postgres://...; created when missing) */
  databaseUrl: string;
  temporalDb: TemporalDbTarget;
  ports: ProdPorts;
  namespace?: string;
  /** the standalone Web UI (default true) */
  ui?: boolean;
  simTimeScale?: number;
  /** extra environment for every ferry process */
  env?: Record<string, string>;
  log?: Log;
}

function ferryProcess(name: string, role: Role, port: number, env: Record<string, string>, logFile: string): FerryProcess {
  let current: LoggedChild | undefined;
  const isApi = role === 'api';
  const url = isApi ? `http://127.0.0.1:${port}` : `http://127.0.0.1:${port}/metrics`;
  const ownEnv = isApi ? { ...env, FERRY_ROLE: role, FERRY_API_PORT: String(port) } : { ...env, FERRY_ROLE: role, FERRY_WORKER_METRICS_PORT: String(port) };
  const running = () => !!current && current.exited() === undefined;
  const p: FerryProcess = {
    name,
    role,
    url,
    metricsUrl: isApi ? `${url}/metrics` : url,
    pid: () => (running() ? current!.child.pid : undefined),
    running,
    async start() {
      if (running()) return;
      if (!(await portFree(port))) throw new Error(`${name}: port ${port} is in use`);
      const c = spawnLogged(process.execPath, ['--import', 'tsx', 'workers/main.ts'], ownEnv, logFile, { cwd: PROJECT_ROOT });
      current = c;
      const deadline = Date.now() + 90_000;
      while (!c.output().includes(`ferry: ${role} running`)) {
        const why = c.exited();
        if (why) throw new Error(`${name} (${role}) exited before it ran: ${why}`);
        if (Date.now() > deadline) {
          c.child.kill('SIGKILL');
          throw new Error(`${name} (${role}) did not start within 90 s (log ${logFile})`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async kill(signal = 'SIGKILL') {
      if (!running()) return;
      current!.child.kill(signal);
      await current!.child;
    },
    async stop() {
      if (current) await stopChild(current.child, current.exited, 15_000);
    },
  };
  return p;
}

export async function startProdCluster(o: ProdClusterOptions): Promise<ProdCluster> {
  const log = o.log ?? ((l) => console.log(l));
  const namespace = o.namespace ?? 'default';
  const logs = join(o.dataDir, 'logs');
  const binaries = await ensureTemporalServer({ log });
  const uiBinary = o.ui === false ? undefined : await ensureTemporalUi({ log });
  const temporal = await startTemporalServer({ binaries, db: o.temporalDb, ports: o.ports.temporal, namespace, logFile: join(logs, 'temporal-server.log'), log });
  const started: FerryProcess[] = [];
  let ui: TemporalUi | undefined;
  try {
    // ferry's database: the SQL tool's create-database is a plain, idempotent CREATE DATABASE
    const u = new URL(o.databaseUrl);
    await createDatabase(binaries.sqlTool, { host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) }, decodeURIComponent(u.pathname.slice(1)));
    const webUi = `http://127.0.0.1:${o.ports.ui}`;
    const env: Record<string, string> = {
      FERRY_DATA_DIR: o.dataDir,
      DATABASE_URL: o.databaseUrl,
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: namespace,
      FERRY_DRIVER: 'sim',
      FERRY_SIM_TIME_SCALE: String(o.simTimeScale ?? 10),
      FERRY_API_HOST: '127.0.0.1',
      FERRY_WEB_UI_URL: webUi,
      ...o.env,
    };
    // one admin token for both replicas: generated once here, read from the data folder by each
    const adminToken = resolveAdminToken(loadConfig({ ...process.env, ...env }));
    const processes = [
      ferryProcess('agents', 'agents', o.ports.agents, env, join(logs, 'agents.log')),
      ferryProcess('control-1', 'control', o.ports.control[0], env, join(logs, 'control-1.log')),
      ferryProcess('control-2', 'control', o.ports.control[1], env, join(logs, 'control-2.log')),
      ferryProcess('api-1', 'api', o.ports.api[0], env, join(logs, 'api-1.log')),
      ferryProcess('api-2', 'api', o.ports.api[1], env, join(logs, 'api-2.log')),
    ];
    const t0 = Date.now();
    await processes[0].start();
    started.push(processes[0]);
    await Promise.all(processes.slice(1).map(async (p) => {
      await p.start();
      started.push(p);
    }));
    log(`ferry: agents, 2 control workers and 2 API replicas running (${Date.now() - t0} ms; logs in ${logs})`);
    if (uiBinary) ui = await startTemporalUi({ binary: uiBinary, address: temporal.address, port: o.ports.ui, namespace, logFile: join(logs, 'temporal-ui.log') });
    return {
      temporal,
      ui,
      processes,
      byName: (name) => processes.find((p) => p.name === name) ?? (() => { throw new Error(`no ferry process ${name}`); })(),
      apiUrls: processes.filter((p) => p.role === 'api').map((p) => p.url),
      adminToken: adminToken.token,
      dataDir: o.dataDir,
      databaseUrl: o.databaseUrl,
      async stop() {
        // API first (no new operations), then the workers drain, then the server
        for (const group of [['api-1', 'api-2'], ['control-1', 'control-2'], ['agents']]) {
          await Promise.all(processes.filter((p) => group.includes(p.name)).map((p) => p.stop()));
        }
        await ui?.stop();
        await temporal.stop();
      },
    };
  } catch (e) {
    await Promise.all(started.map((p) => p.kill('SIGKILL')));
    await ui?.stop();
    await temporal.stop();
    throw e;
  }
}
