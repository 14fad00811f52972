// What every host agent entrypoint shares (qemu-agent.ts, libvirt-agent.ts): the environment both
// read the same way (Temporal, task-queue prefix, log level, metrics, whole numbers, datastores as
// JSON), the start (inventory registration from the driver's hostInfo, then the Temporal worker
// on `<prefix>ferry-host-<hostId>`), the stop that drains it, and main()'s exit codes and signals.
// Each entrypoint keeps only what is its driver's: its own variables and its driver factory.
import { DefaultLogger, NativeConnection, Runtime, type LogLevel } from '@temporalio/worker';
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { createDb, migrateUp } from '../db/orm.js';
import { assertSafeName, DriverError } from '../domain/hypervisor.js';
import type { HypervisorDriver } from '../drivers/hypervisor.js';
import type { ConsoleReader } from '../activities/console.js';
import { hostQueue } from '../workflows/definitions.js';
import { createHostAgent, runWorkers } from './create-worker.js';
import { registerHost, type HostDriver } from './register-host.js';

/** The part of an agent's configuration that is the same for every driver. */
export interface HostAgentBaseConfig {
  ferry: FerryConfig;
  temporalAddress: string;
  prefix: string;
  pollMs: number;
  metrics: boolean;
  logLevel: LogLevel;
}

/** A driver a host agent can own: it is closed when the agent stops. */
export type AgentDriver = HypervisorDriver & { close(): Promise<void> };

export interface RunningHostAgent<D extends AgentDriver> {
  driver: D;
  taskQueue: string;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** assertSafeName, failing as a ConfigError that names the variable. */
export function safeVar(variable: string, what: string, value: string): void {
  try {
    assertSafeName(what, value);
  } catch (e) {
    throw new ConfigError(variable, (e as Error).message);
  }
}

/** An optional whole number in min..max (unset or empty: undefined). */
export function intVar(env: NodeJS.ProcessEnv, name: string, min: number, max: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) throw new ConfigError(name, `"${raw}" is not a whole number in ${min}..${max}`);
  return Number(raw);
}

/** A comma-separated list of network names (unset: undefined, the driver's default). */
export function networksVar(env: NodeJS.ProcessEnv, name: string): string[] | undefined {
  const raw = env[name];
  if (!raw) return undefined;
  const networks = raw.split(',').map((s) => s.trim()).filter(Boolean);
  networks.forEach((n) => safeVar(name, 'network', n));
  return networks;
}

/**
 * A JSON array of datastores {id, <where>, shared, throughputBytesPerSec?}; `where` is the field
 * naming the storage (qemu: an absolute `path`, libvirt: a `pool`), checked by `checkWhere`
 * (which returns the problem, or undefined when the value is fine).
 */
export function datastoresVar<K extends string>(
  name: string,
  raw: string,
  where: K,
  checkWhere: (value: unknown) => string | undefined,
): Array<{ id: string; shared: boolean; throughputBytesPerSec?: number } & Record<K, string>> {
  const shape = `{id, ${where}, shared}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new ConfigError(name, `is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw new ConfigError(name, `must be a non-empty JSON array of ${shape}`);
  return parsed.map((d: unknown, i) => {
    const o = d as Record<string, unknown>;
    if (!o || typeof o !== 'object') throw new ConfigError(name, `[${i}] must be an object ${shape}`);
    if (typeof o.id !== 'string') throw new ConfigError(name, `[${i}].id must be a string`);
    safeVar(name, `[${i}].id`, o.id);
    const problem = checkWhere(o[where]);
    if (problem) throw new ConfigError(name, `[${i}].${where} ${problem}`);
    if (typeof o.shared !== 'boolean') throw new ConfigError(name, `[${i}].shared must be true or false`);
    const t = o.throughputBytesPerSec;
    if (t !== undefined && !(typeof t === 'number' && Number.isFinite(t) && t > 0)) throw new ConfigError(name, `[${i}].throughputBytesPerSec must be a positive number`);
    return { id: o.id, [where]: o[where] as string, shared: o.shared, ...(t !== undefined ? { throughputBytesPerSec: t as number } : {}) } as { id: string; shared: boolean; throughputBytesPerSec?: number } & Record<K, string>;
  });
}

/**
 * The variables every agent reads: ferry's config (FERRY_DRIVER forced to the agent's kind),
 * TEMPORAL_ADDRESS (required), FERRY_TASK_QUEUE_PREFIX, FERRY_WORKER_METRICS, FERRY_LOG_LEVEL and
 * `<pollVar>` (default `defaultPollMs`).
 */
export function loadHostAgentBase(env: NodeJS.ProcessEnv, cwd: string, driver: HostDriver, poll: { variable: string; defaultMs: number }): HostAgentBaseConfig {
  const ferry = loadConfig({ ...env, FERRY_DRIVER: driver }, cwd);
  if (!ferry.temporalAddress) throw new ConfigError('TEMPORAL_ADDRESS', 'must be set (host:port of the Temporal frontend)');
  const prefix = env.FERRY_TASK_QUEUE_PREFIX ?? '';
  if (!/^[A-Za-z0-9_.-]*$/.test(prefix)) throw new ConfigError('FERRY_TASK_QUEUE_PREFIX', `"${prefix}" may only hold letters, digits, '_', '.', '-'`);
  const pollMs = intVar(env, poll.variable, 5, 60_000) ?? poll.defaultMs;
  const logLevel = (env.FERRY_LOG_LEVEL || 'INFO').toUpperCase();
  if (!['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'].includes(logLevel)) throw new ConfigError('FERRY_LOG_LEVEL', `"${logLevel}" must be TRACE, DEBUG, INFO, WARN or ERROR`);
  return { ferry, temporalAddress: ferry.temporalAddress, prefix, pollMs, metrics: env.FERRY_WORKER_METRICS !== 'off', logLevel: logLevel as LogLevel };
}

/**
 * Starts an agent around a driver it now owns: the Host row (and its datastores and networks)
 * from driver.hostInfo(), then the worker. Anything that fails on the way closes what was opened.
 */
export async function startHostAgent<D extends AgentDriver>(cfg: HostAgentBaseConfig, kind: HostDriver, driver: D, opts: { console?: ConsoleReader } = {}): Promise<RunningHostAgent<D>> {
  const db = await createDb({ databaseUrl: cfg.ferry.databaseUrl, dataDir: cfg.ferry.dataDir });
  let connection: NativeConnection | undefined;
  try {
    await migrateUp(db);
    await registerHost(db, await driver.hostInfo(), kind, { maxOutgoingMigrations: cfg.ferry.maxOutgoingMigrations, maxIncomingMigrations: cfg.ferry.maxIncomingMigrations });
    connection = await NativeConnection.connect({ address: cfg.temporalAddress });
    const worker = await createHostAgent({ connection, namespace: cfg.ferry.temporalNamespace, prefix: cfg.prefix, driver, pollMs: cfg.pollMs, ...(opts.console ? { console: opts.console } : {}) });
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

/**
 * An agent's main(): a bad environment exits 2, a start that fails exits 2 for bad input (config,
 * a driver's INVALID_ARGUMENT) and 1 otherwise; once running it prints `ferry: <running(agent)>`
 * (the line lab/agents.ts waits for) and drains on SIGTERM/SIGINT.
 */
export async function runHostAgentMain<C extends HostAgentBaseConfig, A extends RunningHostAgent<AgentDriver>>(o: { name: string; load: () => C; start: (cfg: C) => Promise<A>; running: (agent: A) => string }): Promise<void> {
  let cfg: C;
  try {
    cfg = o.load();
  } catch (e) {
    console.error(`ferry ${o.name}: ${e instanceof Error ? e.message : e}`);
    process.exit(2);
  }
  Runtime.install({
    logger: new DefaultLogger(cfg.logLevel),
    ...(cfg.metrics ? { telemetryOptions: { metrics: { prometheus: { bindAddress: `0.0.0.0:${cfg.ferry.workerMetricsPort}` } } } } : {}),
  });
  let agent: A;
  try {
    agent = await o.start(cfg);
  } catch (e) {
    const code = e instanceof ConfigError || (e instanceof DriverError && e.code === 'INVALID_ARGUMENT') ? 2 : 1;
    console.error(`ferry ${o.name}: ${e instanceof Error ? e.message : e}`);
    process.exit(code);
  }
  console.log(`ferry: ${o.running(agent)}`);
  agent.done.catch((e) => console.error(`ferry ${o.name}: worker stopped: ${e instanceof Error ? e.message : e}`));
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
