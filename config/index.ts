// loadConfig(env): every environment variable ferry reads, validated once. A bad value throws a
// ConfigError whose one-line message names the variable (entrypoints print it and exit 2).
import { resolve } from 'node:path';

export type DriverKind = 'sim' | 'qemu' | 'libvirt';

export interface FerryConfig {
  dataDir: string;
  apiPort: number;
  apiHost: string;
  apiToken?: string;
  driver: DriverKind;
  simTimeScale: number;
  workerMetricsPort: number;
  /** SQLite file path or postgres URL */
  databaseUrl: string;
  /** set = use this cluster, start no dev server */
  temporalAddress?: string;
  temporalNamespace: string;
  temporalCliPath?: string;
  temporalUiPort: number;
  temporalPort: number;
  webUiBaseUrl: string;
  /** per-host default limits on concurrent migrations */
  maxOutgoingMigrations: number;
  maxIncomingMigrations: number;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

const DRIVERS: readonly string[] = ['sim', 'qemu', 'libvirt'];

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `"${raw}" is not a port number (1-65535)`);
  const n = Number(raw);
  if (n < 1 || n > 65535) throw new ConfigError(name, `${n} is outside 1-65535`);
  return n;
}

function positiveNumber(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(name, `"${raw}" is not a positive number`);
  return n;
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const n = positiveNumber(env, name, fallback);
  if (!Number.isInteger(n)) throw new ConfigError(name, `"${env[name]}" is not a whole number`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): FerryConfig {
  const dataDir = resolve(cwd, env.FERRY_DATA_DIR || './data');
  const driver = env.FERRY_DRIVER || 'sim';
  if (!DRIVERS.includes(driver)) throw new ConfigError('FERRY_DRIVER', `unknown driver "${driver}" (expected one of: ${DRIVERS.join(', ')})`);

  const databaseUrl = env.DATABASE_URL || resolve(dataDir, 'ferry.sqlite');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(databaseUrl) && !/^(postgres|postgresql|sqlite):\/\//i.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', `unsupported scheme in "${databaseUrl}" (use a SQLite file path or a postgres:// URL)`);
  }

  const temporalAddress = env.TEMPORAL_ADDRESS || undefined;
  if (temporalAddress && !/^[\w.-]+:\d{1,5}$/.test(temporalAddress)) {
    throw new ConfigError('TEMPORAL_ADDRESS', `"${temporalAddress}" is not host:port`);
  }
  const apiToken = env.FERRY_API_TOKEN || undefined;
  if (apiToken !== undefined && apiToken.length < 16) {
    throw new ConfigError('FERRY_API_TOKEN', 'must be at least 16 characters');
  }
  const temporalUiPort = port(env, 'FERRY_TEMPORAL_UI_PORT', 8233);
  return {
    dataDir,
    apiPort: port(env, 'FERRY_API_PORT', 8080),
    apiHost: env.FERRY_API_HOST || '0.0.0.0',
    apiToken,
    driver: driver as DriverKind,
    simTimeScale: positiveNumber(env, 'FERRY_SIM_TIME_SCALE', 10),
    workerMetricsPort: port(env, 'FERRY_WORKER_METRICS_PORT', 9464),
    databaseUrl,
    temporalAddress,
    temporalNamespace: env.TEMPORAL_NAMESPACE || 'default',
    temporalCliPath: env.TEMPORAL_CLI_PATH || undefined,
    temporalUiPort,
    temporalPort: port(env, 'FERRY_TEMPORAL_PORT', 7233),
    webUiBaseUrl: env.FERRY_WEB_UI_URL || `http://localhost:${temporalUiPort}`,
    maxOutgoingMigrations: positiveInt(env, 'FERRY_MAX_OUTGOING_MIGRATIONS', 2),
    maxIncomingMigrations: positiveInt(env, 'FERRY_MAX_INCOMING_MIGRATIONS', 2),
  };
}
