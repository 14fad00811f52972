// The production entrypoint of ONE host agent for a qemu host: a Temporal worker on task queue
// `<prefix>ferry-host-<hostId>` running the host activities with a qemu driver bound to a state
// folder. QEMU runs daemonized, so VMs outlive this process; a restarted agent re-attaches to them
// through the state folder (pid files, QMP sockets, runtime.json).
//
// On start it registers (or updates) the Host row from driver.hostInfo() and adds the host to the
// datastores it reaches and to the networks it has, so placement sees what the driver reports.
//
//   FERRY_HOST_ID            host id (lowercase letters, digits, '-')                 required
//   FERRY_QEMU_STATE_DIR     absolute state folder of this host (keep it short)       required
//   TEMPORAL_ADDRESS         host:port of the Temporal frontend                       required
//   FERRY_TASK_QUEUE_PREFIX  task-queue prefix (tests isolate themselves)             default ''
//   FERRY_QEMU_DATASTORES    JSON [{"id","path","shared","throughputBytesPerSec"?}]    default local
//   FERRY_QEMU_NETWORKS      comma-separated network names                           default 'default'
//   FERRY_QEMU_MIGRATION_ADDRESS  address peers use for incoming migrations           default 127.0.0.1
//   FERRY_QEMU_PORT_RANGE    "lo-hi" TCP ports for incoming migrations               default 47000-47999
//   FERRY_QEMU_NETNS         network namespace QEMU runs in (ip netns exec; root)    default none
//   FERRY_QEMU_BINARY        the qemu-system binary                                  default qemu-system-x86_64
//   FERRY_QEMU_CPU_MODEL, FERRY_QEMU_CPUS, FERRY_QEMU_MEMORY_MIB, FERRY_QEMU_ACCEL (tcg|kvm|auto)
//   FERRY_QEMU_POLL_MS       how often long activities poll QEMU                     default 100
//   DATABASE_URL / FERRY_DATA_DIR / TEMPORAL_NAMESPACE as for every ferry process (config/)
//   FERRY_WORKER_METRICS=off disables the SDK metrics endpoint (FERRY_WORKER_METRICS_PORT)
//   FERRY_LOG_LEVEL          Temporal SDK log level                                  default INFO
// A bad value exits 2 with a message naming the variable. SIGTERM/SIGINT drain the worker.
import { DefaultLogger, NativeConnection, Runtime, type LogLevel } from '@temporalio/worker';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { createDb, migrateUp, type Db } from '../db/orm.js';
import { assertSafeName, DriverError, type HostInfo } from '../domain/hypervisor.js';
import { createQemuConsole, createQemuDriver, type QemuDatastoreConfig, type QemuDriver, type QemuDriverOptions } from '../drivers/qemu/index.js';
import { hostQueue } from '../workflows/definitions.js';
import { createHostAgent, runWorkers } from './create-worker.js';
import { registerHost } from './register-host.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

export interface QemuAgentConfig {
  ferry: FerryConfig;
  temporalAddress: string;
  prefix: string;
  driver: QemuDriverOptions;
  pollMs: number;
  metrics: boolean;
  logLevel: LogLevel;
}

function safe(variable: string, what: string, value: string): void {
  try {
    assertSafeName(what, value);
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

function parseDatastores(raw: string | undefined): QemuDatastoreConfig[] | undefined {
  const name = 'FERRY_QEMU_DATASTORES';
  if (raw === undefined || raw === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new ConfigError(name, `is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw new ConfigError(name, 'must be a non-empty JSON array of {id, path, shared}');
  return parsed.map((d: unknown, i) => {
    const o = d as Record<string, unknown>;
    if (!o || typeof o !== 'object') throw new ConfigError(name, `[${i}] must be an object {id, path, shared}`);
    if (typeof o.id !== 'string') throw new ConfigError(name, `[${i}].id must be a string`);
    safe(name, `[${i}].id`, o.id);
    if (typeof o.path !== 'string' || !isAbsolute(o.path)) throw new ConfigError(name, `[${i}].path must be an absolute path`);
    if (typeof o.shared !== 'boolean') throw new ConfigError(name, `[${i}].shared must be true or false`);
    const t = o.throughputBytesPerSec;
    if (t !== undefined && !(typeof t === 'number' && Number.isFinite(t) && t > 0)) throw new ConfigError(name, `[${i}].throughputBytesPerSec must be a positive number`);
    return { id: o.id, path: o.path, shared: o.shared, ...(t !== undefined ? { throughputBytesPerSec: t as number } : {}) };
  });
}

/** Reads and validates the agent's environment; a bad value throws a ConfigError naming it. */
export function loadQemuAgentConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): QemuAgentConfig {
  const hostId = env.FERRY_HOST_ID;
  if (!hostId) throw new ConfigError('FERRY_HOST_ID', 'must be set (the id of this qemu host)');
  safe('FERRY_HOST_ID', 'host id', hostId);
  const stateDir = env.FERRY_QEMU_STATE_DIR;
  if (!stateDir || !isAbsolute(stateDir)) throw new ConfigError('FERRY_QEMU_STATE_DIR', `must be an absolute path, got "${stateDir ?? ''}"`);
  const ferry = loadConfig({ ...env, FERRY_DRIVER: 'qemu' }, cwd);
  if (!ferry.temporalAddress) throw new ConfigError('TEMPORAL_ADDRESS', 'must be set (host:port of the Temporal frontend)');
  const prefix = env.FERRY_TASK_QUEUE_PREFIX ?? '';
  if (!/^[A-Za-z0-9_.-]*$/.test(prefix)) throw new ConfigError('FERRY_TASK_QUEUE_PREFIX', `"${prefix}" may only hold letters, digits, '_', '.', '-'`);

  const networks = env.FERRY_QEMU_NETWORKS ? env.FERRY_QEMU_NETWORKS.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
  networks?.forEach((n) => safe('FERRY_QEMU_NETWORKS', 'network', n));
  let portRange: [number, number] | undefined;
  if (env.FERRY_QEMU_PORT_RANGE) {
    const m = /^(\d{4,5})-(\d{4,5})$/.exec(env.FERRY_QEMU_PORT_RANGE);
    if (!m || Number(m[1]) < 1024 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) {
      throw new ConfigError('FERRY_QEMU_PORT_RANGE', `"${env.FERRY_QEMU_PORT_RANGE}" is not lo-hi within 1024-65535`);
    }
    portRange = [Number(m[1]), Number(m[2])];
  }
  const migrationAddress = env.FERRY_QEMU_MIGRATION_ADDRESS || undefined;
  if (migrationAddress && !/^[A-Za-z0-9.:-]+$/.test(migrationAddress)) throw new ConfigError('FERRY_QEMU_MIGRATION_ADDRESS', `"${migrationAddress}" is not a host name or address`);
  const netns = env.FERRY_QEMU_NETNS || undefined;
  if (netns && !/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new ConfigError('FERRY_QEMU_NETNS', `"${netns}" is not a network namespace name`);
  const qemuBinary = env.FERRY_QEMU_BINARY || undefined;
  const accel = env.FERRY_QEMU_ACCEL || undefined;
  if (accel && !['tcg', 'kvm', 'auto'].includes(accel)) throw new ConfigError('FERRY_QEMU_ACCEL', `"${accel}" must be tcg, kvm or auto`);
  const cpuModel = env.FERRY_QEMU_CPU_MODEL || undefined;
  if (cpuModel && !/^[A-Za-z0-9_.+-]+$/.test(cpuModel)) throw new ConfigError('FERRY_QEMU_CPU_MODEL', `"${cpuModel}" is not a CPU model name`);
  const cpus = intVar(env, 'FERRY_QEMU_CPUS', 1, 4096);
  const memoryMiB = intVar(env, 'FERRY_QEMU_MEMORY_MIB', 64, 1 << 30);
  const pollMs = intVar(env, 'FERRY_QEMU_POLL_MS', 5, 60_000) ?? 100;
  const datastores = parseDatastores(env.FERRY_QEMU_DATASTORES);
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
      stateDir: resolve(stateDir),
      ...(datastores ? { datastores } : {}),
      ...(networks ? { networks } : {}),
      ...(portRange ? { portRange } : {}),
      ...(migrationAddress ? { migrationAddress } : {}),
      ...(netns ? { netns } : {}),
      ...(qemuBinary ? { qemuBinary } : {}),
      ...(accel ? { accel: accel as 'tcg' | 'kvm' | 'auto' } : {}),
      ...(cpuModel ? { cpuModel } : {}),
      ...(cpus ? { cpus } : {}),
      ...(memoryMiB ? { memoryBytes: memoryMiB * MiB } : {}),
    },
  };
}

export interface RunningQemuAgent {
  driver: QemuDriver;
  taskQueue: string;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts the agent: driver, inventory registration, the Temporal worker. */
export async function startQemuAgent(cfg: QemuAgentConfig): Promise<RunningQemuAgent> {
  const driver = createQemuDriver(cfg.driver);
  const db = await createDb({ databaseUrl: cfg.ferry.databaseUrl, dataDir: cfg.ferry.dataDir });
  let connection: NativeConnection | undefined;
  try {
    await migrateUp(db);
    await registerHost(db, await driver.hostInfo(), 'qemu', { maxOutgoingMigrations: cfg.ferry.maxOutgoingMigrations, maxIncomingMigrations: cfg.ferry.maxIncomingMigrations });
    connection = await NativeConnection.connect({ address: cfg.temporalAddress });
    const worker = await createHostAgent({ connection, namespace: cfg.ferry.temporalNamespace, prefix: cfg.prefix, driver, pollMs: cfg.pollMs, console: createQemuConsole(driver.hostId, driver.stateDir) });
    const running = runWorkers([worker]);
    const conn = connection;
    return {
      driver,
      taskQueue: hostQueue(driver.hostId, cfg.prefix),
      done: running.done,
      async stop() {
        await running.stop().catch(() => undefined);
        await driver.close();
        await conn.close().catch(() => undefined);
        await db.close();
      },
    };
  } catch (e) {
    await driver.close();
    await connection?.close().catch(() => undefined);
    await db.close();
    throw e;
  }
}

async function main(): Promise<void> {
  let cfg: QemuAgentConfig;
  try {
    cfg = loadQemuAgentConfig();
  } catch (e) {
    console.error(`ferry qemu-agent: ${e instanceof Error ? e.message : e}`);
    process.exit(2);
  }
  Runtime.install({
    logger: new DefaultLogger(cfg.logLevel),
    ...(cfg.metrics ? { telemetryOptions: { metrics: { prometheus: { bindAddress: `0.0.0.0:${cfg.ferry.workerMetricsPort}` } } } } : {}),
  });
  let agent: RunningQemuAgent;
  try {
    agent = await startQemuAgent(cfg);
  } catch (e) {
    const code = e instanceof ConfigError || (e instanceof DriverError && e.code === 'INVALID_ARGUMENT') ? 2 : 1;
    console.error(`ferry qemu-agent: ${e instanceof Error ? e.message : e}`);
    process.exit(code);
  }
  console.log(`ferry: qemu agent ${agent.driver.hostId} running (task queue ${agent.taskQueue}, state ${agent.driver.stateDir})`);
  agent.done.catch((e) => console.error(`ferry qemu-agent: worker stopped: ${e instanceof Error ? e.message : e}`));
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
