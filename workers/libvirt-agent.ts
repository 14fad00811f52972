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
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../config/index.js';
import { assertSafeName } from '../domain/hypervisor.js';
import { checkConnectUri, createLibvirtDriver, type LibvirtDatastoreConfig, type LibvirtDriver, type LibvirtDriverOptions } from '../drivers/libvirt/index.js';
import { datastoresVar, intVar, loadHostAgentBase, networksVar, runHostAgentMain, safeVar, startHostAgent, type HostAgentBaseConfig, type RunningHostAgent } from './host-agent.js';

const MiB = 1024 ** 2;

export interface LibvirtAgentConfig extends HostAgentBaseConfig {
  driver: LibvirtDriverOptions;
}

function wrap<T>(variable: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new ConfigError(variable, (e as Error).message);
  }
}

function parseDatastores(raw: string | undefined): LibvirtDatastoreConfig[] {
  const name = 'FERRY_LIBVIRT_DATASTORES';
  if (!raw) throw new ConfigError(name, 'must be set: JSON [{"id","pool","shared"}] naming the storage pools of this host');
  return datastoresVar(name, raw, 'pool', (v) => {
    if (typeof v !== 'string') return 'must be a string (a storage pool name)';
    try {
      assertSafeName('pool', v);
      return undefined;
    } catch (e) {
      return `is not a pool name: ${(e as Error).message}`;
    }
  });
}

/** Reads and validates the agent's environment; a bad value throws a ConfigError naming it. */
export function loadLibvirtAgentConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LibvirtAgentConfig {
  const hostId = env.FERRY_HOST_ID;
  if (!hostId) throw new ConfigError('FERRY_HOST_ID', 'must be set (the id of this libvirt host)');
  safeVar('FERRY_HOST_ID', 'host id', hostId);
  const uri = wrap('FERRY_LIBVIRT_URI', () => checkConnectUri('uri', env.FERRY_LIBVIRT_URI));
  const migrationUri = wrap('FERRY_LIBVIRT_MIGRATION_URI', () => checkConnectUri('migration uri', env.FERRY_LIBVIRT_MIGRATION_URI));
  const stateDir = env.FERRY_LIBVIRT_STATE_DIR;
  if (!stateDir || !isAbsolute(stateDir)) throw new ConfigError('FERRY_LIBVIRT_STATE_DIR', `must be an absolute path, got "${stateDir ?? ''}"`);
  const base = loadHostAgentBase(env, cwd, 'libvirt', { variable: 'FERRY_LIBVIRT_POLL_MS', defaultMs: 200 });
  const networks = networksVar(env, 'FERRY_LIBVIRT_NETWORKS');
  const domainType = env.FERRY_LIBVIRT_DOMAIN_TYPE || 'qemu';
  if (domainType !== 'qemu' && domainType !== 'kvm') throw new ConfigError('FERRY_LIBVIRT_DOMAIN_TYPE', `"${domainType}" must be qemu or kvm`);
  const cpus = intVar(env, 'FERRY_LIBVIRT_CPUS', 1, 4096);
  const memoryMiB = intVar(env, 'FERRY_LIBVIRT_MEMORY_MIB', 64, 1 << 30);
  const datastores = parseDatastores(env.FERRY_LIBVIRT_DATASTORES);
  return {
    ...base,
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

export interface RunningLibvirtAgent extends RunningHostAgent<LibvirtDriver> {
  hostUuid: string;
}

/** Starts the agent: driver, inventory registration from what libvirt reports, the Temporal worker. */
export async function startLibvirtAgent(cfg: LibvirtAgentConfig): Promise<RunningLibvirtAgent> {
  const driver = createLibvirtDriver(cfg.driver);
  // fails early (UNREACHABLE) when the libvirtd is not there, before anything is registered
  const hostUuid = await driver.hostUuid();
  return { ...(await startHostAgent(cfg, 'libvirt', driver)), hostUuid };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runHostAgentMain({
    name: 'libvirt-agent',
    load: () => loadLibvirtAgentConfig(),
    start: startLibvirtAgent,
    running: (a) => `libvirt agent ${a.driver.hostId} running (task queue ${a.taskQueue}, libvirt ${a.driver.uri}, host uuid ${a.hostUuid})`,
  });
}
