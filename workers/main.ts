// ferry's process entrypoint (composition root). Roles:
//   all      control worker + one host agent per host + API (the embedded default)
//   workers  control worker + host agents, no API (tests kill and restart this process)
//   control  control worker only;  agents  host agents only;  api  API only
// With FERRY_DRIVER=sim the simulator's state lives in <FERRY_DATA_DIR>/sim.sqlite and the demo
// cluster is seeded on first start. Ctrl-C / SIGTERM drains the workers and closes everything.
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import { Registry } from 'prom-client';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { createDb, migrateUp, type Db } from '../db/orm.js';
import { Host } from '../db/entities.js';
import { Simulator } from '../drivers/sim/index.js';
import type { FaultHook } from '../activities/control.js';
import { createControlWorker, createHostAgent, runWorkers } from './create-worker.js';
import { demoCluster, seedCluster } from './cluster-spec.js';
import { createMetrics } from '../metrics/index.js';

export type Role = 'all' | 'workers' | 'control' | 'agents' | 'api';
const ROLES: Role[] = ['all', 'workers', 'control', 'agents', 'api'];

export interface RunningFerry {
  config: FerryConfig;
  db: Db;
  sim?: Simulator;
  apiUrl?: string;
  adminToken?: { token: string; generated: boolean; path?: string };
  stop(): Promise<void>;
}

/** Lets a simulator `fail-step` fault fire inside control-worker steps too (after their effect). */
export function simFaultHook(sim: Simulator): FaultHook {
  return {
    check(step, scope) {
      sim.checkStepFault(step, scope.hostId ?? '', scope.vmId, sim.virtualNow());
    },
  };
}

export async function startFerry(opts: {
  config: FerryConfig;
  role?: Role;
  temporalAddress: string;
  prefix?: string;
  log?: (line: string) => void;
  seedDemo?: boolean;
}): Promise<RunningFerry> {
  const { config } = opts;
  const role = opts.role ?? 'all';
  const log = opts.log ?? ((l) => console.log(l));
  mkdirSync(config.dataDir, { recursive: true });

  const db = await createDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  await migrateUp(db);
  const sim = config.driver === 'sim' ? Simulator.open({ path: join(config.dataDir, 'sim.sqlite'), timeScale: config.simTimeScale }) : undefined;
  // The demo cluster goes only into an empty inventory: a database that already has hosts (a
  // second start, or a test's own cluster) is left exactly as it is.
  if (sim && opts.seedDemo !== false && (role === 'all' || role === 'workers' || role === 'agents') && (await db.em().count(Host, {})) === 0) {
    await seedCluster(db, sim, demoCluster());
    log('ferry: seeded the demo cluster (4 hosts, 2 racks, 16 running VMs, skewed towards host-a)');
  }

  const closers: Array<() => Promise<void>> = [];
  let connection: NativeConnection | undefined;
  const needsWorkers = role !== 'api';
  if (needsWorkers) {
    connection = await NativeConnection.connect({ address: opts.temporalAddress }).catch((e: unknown) => {
      throw new ConfigError('TEMPORAL_ADDRESS', `cannot connect to Temporal at ${opts.temporalAddress}: ${e instanceof Error ? e.message.replace(/\s+/g, ' ').slice(0, 200) : e}`);
    });
    const workers = [];
    if (role === 'all' || role === 'workers' || role === 'control') {
      workers.push(await createControlWorker({ connection, namespace: config.temporalNamespace, prefix: opts.prefix, deps: { db, faults: sim ? simFaultHook(sim) : undefined, prediction: sim ? { timeScale: config.simTimeScale } : undefined } }));
    }
    if (role === 'all' || role === 'workers' || role === 'agents') {
      const hosts = await db.em().find(Host, {}, { orderBy: { id: 'asc' } });
      for (const h of hosts) {
        if (h.driver !== config.driver) continue;
        // a qemu host's agent is its own process (workers/qemu-agent.ts; npm start's lab runs one per host)
        if (!sim) continue;
        workers.push(await createHostAgent({ connection, namespace: config.temporalNamespace, prefix: opts.prefix, driver: sim.forHost(h.id) }));
      }
    }
    const running = runWorkers(workers);
    running.done.catch((e) => log(`ferry: a worker stopped with an error: ${e instanceof Error ? e.message : e}`));
    closers.push(() => running.stop());
  }

  let apiUrl: string | undefined;
  let adminToken: RunningFerry['adminToken'];
  if (role === 'all' || role === 'api') {
    const { startApiServer, resolveAdminToken } = await import('../api/server.js');
    const conn = await Connection.connect({ address: opts.temporalAddress });
    const temporal = new Client({ connection: conn, namespace: config.temporalNamespace });
    const registry = new Registry();
    createMetrics(registry, { defaultMetrics: true });
    adminToken = resolveAdminToken(config);
    // role 'all' is npm start, which prints one summary of its own
    const server = await startApiServer({ db, temporal, config, registry, taskQueuePrefix: opts.prefix, simulator: sim, log: role === 'all' ? () => undefined : log });
    apiUrl = server.url;
    closers.push(async () => {
      await server.close();
      await conn.close();
    });
  }

  return {
    config,
    db,
    sim,
    apiUrl,
    adminToken,
    async stop() {
      for (const c of closers.reverse()) await c().catch((e) => log(`ferry: shutdown: ${e instanceof Error ? e.message : e}`));
      await connection?.close().catch(() => undefined);
      await db.close();
      sim?.close();
    },
  };
}

/** Installs the Temporal runtime once, exporting SDK metrics on the worker metrics port. */
export function installRuntime(config: FerryConfig): void {
  Runtime.install({
    // state changes and poller notes are INFO; an operator's terminal wants warnings and errors
    logger: new DefaultLogger(process.env.FERRY_LOG_LEVEL === 'debug' ? 'DEBUG' : process.env.FERRY_LOG_LEVEL === 'info' ? 'INFO' : 'WARN'),
    // counters end in _total, as Prometheus names them (promtool check metrics is clean; test/prod)
    telemetryOptions: { metrics: { prometheus: { bindAddress: `0.0.0.0:${config.workerMetricsPort}`, countersTotalSuffix: true } } },
  });
}

// ---------------------------------------------------------------- CLI entry
async function main() {
  let config: FerryConfig;
  const role = (process.env.FERRY_ROLE || 'all') as Role;
  try {
    if (!ROLES.includes(role)) throw new ConfigError('FERRY_ROLE', `unknown role "${role}" (expected one of: ${ROLES.join(', ')})`);
    config = loadConfig();
    if (!config.temporalAddress) throw new ConfigError('TEMPORAL_ADDRESS', 'must be set for workers/main.ts (npm start launches a dev server for you)');
  } catch (e) {
    console.error(`ferry: ${e instanceof Error ? e.message : e}`);
    process.exit(2);
  }
  if (role !== 'api' && process.env.FERRY_WORKER_METRICS !== 'off') installRuntime(config);
  let ferry: RunningFerry;
  try {
    ferry = await startFerry({ config, role, temporalAddress: config.temporalAddress!, prefix: process.env.FERRY_TASK_QUEUE_PREFIX || '' });
  } catch (e) {
    console.error(`ferry: ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  }
  console.log(`ferry: ${role} running${ferry.apiUrl ? ` (API ${ferry.apiUrl})` : ''}`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await ferry.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main();
