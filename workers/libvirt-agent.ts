// The production entrypoint of ONE host agent for a libvirt host: a Temporal worker on task queue
// `<prefix>ferry-host-<hostId>` running the host activities with a libvirt driver bound to that
// host's libvirtd. libvirtd owns the domains, so VMs outlive this process; a restarted agent finds
// them (and any migration it started, through stateDir/migrations) in libvirt again.
//
// On start it reads `virsh nodeinfo`, `virsh capabilities` (host UUID) and its pools, registers (or
// updates) the Host row with driver 'libvirt', adds the host to the datastores (pools) it reaches
// and to the networks it has.
//
//   FERRY_HOST_ID               host id (lowercase letters, digits, '-')                    required
//   FERRY_LIBVIRT_URI           qemu+unix:///system?socket=/path (or qemu+tcp://h/system)  required
//   FERRY_LIBVIRT_MIGRATION_URI p2p destination URI peers' libvirtd dial: qemu+tcp://<addr>/system  required
//   FERRY_LIBVIRT_STATE_DIR     absolute folder for migration records                      required
//   FERRY_LIBVIRT_DATASTORES    JSON [{"id","pool","shared","throughputBytesPerSec"?}]      required
//   FERRY_LIBVIRT_NETWORKS      comma-separated network names                              default 'default'
//   FERRY_LIBVIRT_DOMAIN_TYPE   qemu (TCG) | kvm                                           default qemu
//   FERRY_LIBVIRT_CPUS, FERRY_LIBVIRT_MEMORY_MIB  override what nodeinfo reports
//   FERRY_LIBVIRT_POLL_MS       how often long activities poll libvirt                     default 200
//   TEMPORAL_ADDRESS, FERRY_TASK_QUEUE_PREFIX, DATABASE_URL, FERRY_DATA_DIR, FERRY_LOG_LEVEL,
//   FERRY_WORKER_METRICS as for workers/qemu-agent.ts
// A bad value exits 2 with a message naming the variable. SIGTERM/SIGINT drain the worker.
import { DefaultLogger, NativeConnection, Runtime, type LogLevel } from '@temporalio/worker';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { createDb, migrateUp } from '../db/orm.js';
import { DriverError, assertSafeName } from '../domain/hypervisor.js';
import { checkConnectUri, createLibvirtDriver, type LibvirtDatastoreConfig, type LibvirtDriver, type LibvirtDriverOptions } from '../drivers/libvirt/index.js';
import { hostQueue } from '../workflows/definitions.js';
import { createHostAgent, runWorkers } from './create-worker.js';
import { registerHost } from './register-host.js';

const MiB = 1024 ** 2;

export interface LibvirtAgentConfig {
  ferry: FerryConfig;
  temporalAddress: string;
  prefix: string;
  driver: LibvirtDriverOptions;
  pollMs: number;
  metrics: boolean;
  logLevel: LogLevel;
}

function wrap<T>(variable: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new ConfigError(variable, (e as Error).message);
  }
}

function intVar(env: NodeJS.ProcessEnv, name: string, min: number, max: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) throw new ConfigError(name, `"${raw}" is not a whole number in ${min}..${max}`);
  return Number(raw);
}

function parseDatastores(raw: string | undefined): LibvirtDatastoreConfig[] {
  const name = 'FERRY_LIBVIRT_DATASTORES';
  if (!raw) throw new ConfigError(name, 'must be set: JSON [{"id","pool","shared"}] naming the storage pools of this host');
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new ConfigError(name, `is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw new ConfigError(name, 'must be a non-empty JSON array of {id, pool, shared}');
  return parsed.map((d: unknown, i) => {
    const o = d as Record<string, unknown>;
    if (!o || typeof o !== 'object') throw new ConfigError(name, `[${i}] must be an object {id, pool, shared}`);
    if (typeof o.id !== 'string' || typeof o.pool !== 'string') throw new ConfigError(name, `[${i}].id and .pool must be strings`);
    wrap(name, () => assertSafeName(`[${i}].id`, o.id as string));
    wrap(name, () => assertSafeName(`[${i}].pool`, o.pool as string));
    if (typeof o.shared !== 'boolean') throw new ConfigError(name, `[${i}].shared must be true or false`);
    const t = o.throughputBytesPerSec;
    if (t !== undefined && !(typeof t === 'number' && Number.isFinite(t) && t > 0)) throw new ConfigError(name, `[${i}].throughputBytesPerSec must be a positive number`);
    return { id: o.id, pool: o.pool, shared: o.shared, ...(t !== undefined ? { throughputBytesPerSec: t as number } : {}) };
  });
}

/** Reads and validates the agent's environment; a bad value throws a ConfigError naming it. */
export function loadLibvirtAgentConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LibvirtAgentConfig {
  const hostId = env.FERRY_HOST_ID;
  if (!hostId) throw new ConfigError('FERRY_HOST_ID', 'must be set (the id of this libvirt host)');
  wrap('FERRY_HOST_ID', () => assertSafeName('host id', hostId));
  const uri = wrap('FERRY_LIBVIRT_URI', () => checkConnectUri('uri', env.FERRY_LIBVIRT_URI));
  const migrationUri = wrap('FERRY_LIBVIRT_MIGRATION_URI', () => checkConnectUri('migration uri', env.FERRY_LIBVIRT_MIGRATION_URI));
  const stateDir = env.FERRY_LIBVIRT_STATE_DIR;
  if (!stateDir || !isAbsolute(stateDir)) throw new ConfigError('FERRY_LIBVIRT_STATE_DIR', `must be an absolute path, got "${stateDir ?? ''}"`);
  const ferry = loadConfig({ ...env, FERRY_DRIVER: 'libvirt' }, cwd);
  if (!ferry.temporalAddress) throw new ConfigError('TEMPORAL_ADDRESS', 'must be set (host:port of the Temporal frontend)');
  const prefix = env.FERRY_TASK_QUEUE_PREFIX ?? '';
  if (!/^[A-Za-z0-9_.-]*$/.test(prefix)) throw new ConfigError('FERRY_TASK_QUEUE_PREFIX', `"${prefix}" may only hold letters, digits, '_', '.', '-'`);
  const networks = env.FERRY_LIBVIRT_NETWORKS ? env.FERRY_LIBVIRT_NETWORKS.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
  networks?.forEach((n) => wrap('FERRY_LIBVIRT_NETWORKS', () => assertSafeName('network', n)));
  const domainType = env.FERRY_LIBVIRT_DOMAIN_TYPE || 'qemu';
  if (domainType !== 'qemu' && domainType !== 'kvm') throw new ConfigError('FERRY_LIBVIRT_DOMAIN_TYPE', `"${domainType}" must be qemu or kvm`);
  const cpus = intVar(env, 'FERRY_LIBVIRT_CPUS', 1, 4096);
  const memoryMiB = intVar(env, 'FERRY_LIBVIRT_MEMORY_MIB', 64, 1 << 30);
  const pollMs = intVar(env, 'FERRY_LIBVIRT_POLL_MS', 5, 60_000) ?? 200;
  const datastores = parseDatastores(env.FERRY_LIBVIRT_DATASTORES);
  const logLevel = (env.FERRY_LOG_LEVEL || 'INFO').toUpperCase();
  if (!['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'].includes(logLevel)) throw new ConfigError('FERRY_LOG_LEVEL', `"${logLevel}" must be TRACE, DEBUG, INFO, WARN or ERROR`);
  return {
    ferry,
    temporalAddress: ferry.temporalAddress,
    prefix,
    pollMs,
    metrics: env.FERRY_WORKER_METRICS !== 'off',
    logLevel: logLevel as LogLevel,
    driver: {
      hostId,
      uri,
      migrationUri,
      stateDir: resolve(stateDir),
      datastores,
      domainType,
      ...(networks ? { networks } : {}),
      ...(cpus ? { cpus } : {}),
      ...(memoryMiB ? { memoryBytes: memoryMiB * MiB } : {}),
    },
  };
}

export interface RunningLibvirtAgent {
  driver: LibvirtDriver;
  taskQueue: string;
  hostUuid: string;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts the agent: driver, inventory registration from what libvirt reports, the Temporal worker. */
export async function startLibvirtAgent(cfg: LibvirtAgentConfig): Promise<RunningLibvirtAgent> {
  const driver = createLibvirtDriver(cfg.driver);
  // fails early (UNREACHABLE) when the libvirtd is not there, before anything is registered
  const hostUuid = await driver.hostUuid();
  const info = await driver.hostInfo();
  const db = await createDb({ databaseUrl: cfg.ferry.databaseUrl, dataDir: cfg.ferry.dataDir });
  let connection: NativeConnection | undefined;
  try {
    await migrateUp(db);
    await registerHost(db, info, 'libvirt', { maxOutgoingMigrations: cfg.ferry.maxOutgoingMigrations, maxIncomingMigrations: cfg.ferry.maxIncomingMigrations });
    connection = await NativeConnection.connect({ address: cfg.temporalAddress });
    const worker = await createHostAgent({ connection, namespace: cfg.ferry.temporalNamespace, prefix: cfg.prefix, driver, pollMs: cfg.pollMs });
    const running = runWorkers([worker]);
    const conn = connection;
    return {
      driver,
      hostUuid,
      taskQueue: hostQueue(driver.hostId, cfg.prefix),
      done: running.done,
      async stop() {
        await running.stop().catch(() => undefined);
        await conn.close().catch(() => undefined);
        await db.close();
      },
    };
  } catch (e) {
    await connection?.close().catch(() => undefined);
    await db.close();
    throw e;
  }
}

async function main(): Promise<void> {
  let cfg: LibvirtAgentConfig;
  try {
    cfg = loadLibvirtAgentConfig();
  } catch (e) {
    console.error(`ferry libvirt-agent: ${e instanceof Error ? e.message : e}`);
    process.exit(2);
  }
  Runtime.install({
    logger: new DefaultLogger(cfg.logLevel),
    ...(cfg.metrics ? { telemetryOptions: { metrics: { prometheus: { bindAddress: `0.0.0.0:${cfg.ferry.workerMetricsPort}` } } } } : {}),
  });
  let agent: RunningLibvirtAgent;
  try {
    agent = await startLibvirtAgent(cfg);
  } catch (e) {
    const code = e instanceof ConfigError || (e instanceof DriverError && e.code === 'INVALID_ARGUMENT') ? 2 : 1;
    console.error(`ferry libvirt-agent: ${e instanceof Error ? e.message : e}`);
    process.exit(code);
  }
  console.log(`ferry: libvirt agent ${agent.driver.hostId} running (task queue ${agent.taskQueue}, libvirt ${agent.driver.uri}, host uuid ${agent.hostUuid})`);
  agent.done.catch((e) => console.error(`ferry libvirt-agent: worker stopped: ${e instanceof Error ? e.message : e}`));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await agent.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main();
