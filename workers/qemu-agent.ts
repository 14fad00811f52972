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
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../config/index.js';
import { createQemuConsole, createQemuDriver, type QemuDatastoreConfig, type QemuDriver, type QemuDriverOptions } from '../drivers/qemu/index.js';
import { datastoresVar, intVar, loadHostAgentBase, networksVar, runHostAgentMain, safeVar, startHostAgent, type HostAgentBaseConfig, type RunningHostAgent } from './host-agent.js';

const MiB = 1024 ** 2;

export interface QemuAgentConfig extends HostAgentBaseConfig {
  driver: QemuDriverOptions;
}

function parseDatastores(raw: string | undefined): QemuDatastoreConfig[] | undefined {
  if (raw === undefined || raw === '') return undefined;
  return datastoresVar('FERRY_QEMU_DATASTORES', raw, 'path', (v) => (typeof v === 'string' && isAbsolute(v) ? undefined : 'must be an absolute path'));
}

/** Reads and validates the agent's environment; a bad value throws a ConfigError naming it. */
export function loadQemuAgentConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): QemuAgentConfig {
  const hostId = env.FERRY_HOST_ID;
  if (!hostId) throw new ConfigError('FERRY_HOST_ID', 'must be set (the id of this qemu host)');
  safeVar('FERRY_HOST_ID', 'host id', hostId);
  const stateDir = env.FERRY_QEMU_STATE_DIR;
  if (!stateDir || !isAbsolute(stateDir)) throw new ConfigError('FERRY_QEMU_STATE_DIR', `must be an absolute path, got "${stateDir ?? ''}"`);
  const base = loadHostAgentBase(env, cwd, 'qemu', { variable: 'FERRY_QEMU_POLL_MS', defaultMs: 100 });

  const networks = networksVar(env, 'FERRY_QEMU_NETWORKS');
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
  const datastores = parseDatastores(env.FERRY_QEMU_DATASTORES);

  return {
    ...base,
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

export type RunningQemuAgent = RunningHostAgent<QemuDriver>;

/** Starts the agent: driver, inventory registration, the Temporal worker. */
export function startQemuAgent(cfg: QemuAgentConfig): Promise<RunningQemuAgent> {
  const driver = createQemuDriver(cfg.driver);
  return startHostAgent(cfg, 'qemu', driver, { console: createQemuConsole(driver.hostId, driver.stateDir) });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runHostAgentMain({
    name: 'qemu-agent',
    load: () => loadQemuAgentConfig(),
    start: startQemuAgent,
    running: (a) => `qemu agent ${a.driver.hostId} running (task queue ${a.taskQueue}, state ${a.driver.stateDir})`,
  });
}
