// The libvirt host one driver instance is bound to: its options (checked once), the libvirtd it
// talks to (a qemu+unix:// URI from the agent's own machine, qemu+tcp:// where a host really is
// remote), its datastores as libvirt storage pools, and what it offers (hostInfo from `virsh
// nodeinfo` and `pool-dumpxml`; the host UUID from `virsh capabilities`).
import path from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { DriverError, assertSafeName, type HostInfo } from '../hypervisor.js';
import { QEMU64_FEATURES } from '../common.js';
import { parsePoolXml, type PoolXml } from './domain-xml.js';
import { parseNodeInfo } from './parse.js';
import { createVirsh, type Virsh } from './virsh.js';

export interface LibvirtDatastoreConfig {
  /** ferry's datastore id (shared datastores have the same id and path on every host) */
  id: string;
  /** the libvirt storage pool (type dir) holding it on this host */
  pool: string;
  shared: boolean;
  /** reported in hostInfo; default 500 MB/s */
  throughputBytesPerSec?: number;
}

export interface LibvirtDriverOptions {
  hostId: string;
  /** how this agent reaches its libvirtd, e.g. qemu+unix:///system?socket=/srv/x/run/libvirt-sock */
  uri: string;
  /**
   * the p2p destination URI other hosts' libvirtd dial for a migration to this host
   * (qemu+tcp://<address>/system); never dialled by ferry itself
   */
  migrationUri: string;
  /** folder for the driver's migration records (which migration it started, with what) */
  stateDir: string;
  datastores: LibvirtDatastoreConfig[];
  networks?: string[];
  /** qemu (TCG, default) or kvm */
  domainType?: 'qemu' | 'kvm';
  /** default pc */
  machine?: string;
  /** guest CPU model; default qemu64 */
  cpuModel?: string;
  cpuFeatures?: string[];
  /** override nodeinfo (tests, overcommitted labs) */
  cpus?: number;
  memoryBytes?: number;
  virshBinary?: string;
  qemuImgBinary?: string;
  /** how long continueSwitchover / cancelMigration / stop wait for libvirt; default 60 s */
  migrationWaitMs?: number;
}

export interface HostConfig {
  options: LibvirtDriverOptions;
  hostId: string;
  uri: string;
  migrationUri: string;
  migrationAddress: string;
  stateDir: string;
  datastores: LibvirtDatastoreConfig[];
  networks: string[];
  domainType: 'qemu' | 'kvm';
  machine: string;
  cpuModel: string;
  cpuFeatures: string[];
  qemuImgBinary: string;
  migrationWaitMs: number;
  virsh: Virsh;
}


const bad = (m: string) => new DriverError(m, 'INVALID_ARGUMENT', true);

/** qemu+unix:///system?socket=/abs/path, qemu:///system or qemu+tcp://host[:port]/system. */
export function checkConnectUri(what: string, uri: unknown): string {
  if (typeof uri !== 'string' || !/^qemu(\+(unix|tcp|tls|ssh))?:\/\/[A-Za-z0-9.:\[\]-]*\/(system|session)(\?socket=\/[A-Za-z0-9._/-]+)?$/.test(uri)) {
    throw bad(`${what} "${String(uri)}" is not a libvirt qemu URI (qemu+unix:///system?socket=/path, qemu+tcp://host/system)`);
  }
  return uri;
}

export function resolveHost(options: LibvirtDriverOptions): HostConfig {
  assertSafeName('hostId', options.hostId);
  const uri = checkConnectUri('uri', options.uri);
  const migrationUri = checkConnectUri('migrationUri', options.migrationUri);
  const m = /^qemu\+(tcp|tls|ssh):\/\/([^/:]+|\[[^\]]+\])(:\d+)?\//.exec(migrationUri);
  if (!m) throw bad(`migrationUri "${migrationUri}" must name a network host (qemu+tcp://<address>/system): peers dial it`);
  if (typeof options.stateDir !== 'string' || !path.isAbsolute(options.stateDir)) throw bad(`stateDir "${options.stateDir}" must be an absolute path`);
  if (!Array.isArray(options.datastores) || options.datastores.length === 0) throw bad('datastores must name at least one storage pool');
  for (const ds of options.datastores) {
    assertSafeName('datastore id', ds.id);
    assertSafeName(`pool of datastore "${ds.id}"`, ds.pool);
    if (typeof ds.shared !== 'boolean') throw bad(`datastore "${ds.id}".shared must be true or false`);
  }
  const networks = options.networks ?? ['default'];
  networks.forEach((n) => assertSafeName('network', n));
  const domainType = options.domainType ?? 'qemu';
  if (domainType !== 'qemu' && domainType !== 'kvm') throw bad(`domainType "${domainType}" must be qemu or kvm`);
  return {
    options,
    hostId: options.hostId,
    uri,
    migrationUri,
    migrationAddress: m[2]!,
    stateDir: path.resolve(options.stateDir),
    datastores: options.datastores,
    networks,
    domainType,
    machine: options.machine ?? 'pc',
    cpuModel: options.cpuModel ?? 'qemu64',
    cpuFeatures: options.cpuFeatures ?? QEMU64_FEATURES,
    qemuImgBinary: options.qemuImgBinary ?? 'qemu-img',
    migrationWaitMs: options.migrationWaitMs ?? 60_000,
    virsh: createVirsh(uri, { binary: options.virshBinary }),
  };
}

export { checkHostOffers } from '../common.js';

export function datastore(cfg: HostConfig, id: string): LibvirtDatastoreConfig {
  const ds = cfg.datastores.find((d) => d.id === id);
  if (!ds) throw new DriverError(`datastoreId "${id}" is not a datastore of host "${cfg.hostId}"`, 'NOT_FOUND', true);
  return ds;
}

/** The pool's XML (target path, capacity); a pool that is not active is started first. */
export async function poolInfo(cfg: HostConfig, pool: string): Promise<PoolXml> {
  const xml = await cfg.virsh.maybe(['pool-dumpxml', pool]);
  if (xml === null) throw new DriverError(`storage pool "${pool}" does not exist on libvirt host "${cfg.hostId}" (${cfg.uri})`, 'NOT_FOUND', true);
  const state = await cfg.virsh.run(['pool-info', pool]);
  if (!/^State:\s+running$/m.test(state)) await cfg.virsh.run(['pool-start', pool]);
  return parsePoolXml(xml);
}

/** The datastore whose pool folder holds `file` directly, if any. */
export async function datastoreOf(cfg: HostConfig, file: string): Promise<{ ds: LibvirtDatastoreConfig; pool: PoolXml } | undefined> {
  for (const ds of cfg.datastores) {
    const pool = await poolInfo(cfg, ds.pool);
    if (path.dirname(path.resolve(file)) === path.resolve(pool.targetPath)) return { ds, pool };
  }
  return undefined;
}

const capsParser = new XMLParser({ ignoreAttributes: true, parseTagValue: false });

/** `virsh capabilities` → host UUID (must differ between hosts, or libvirt refuses migration). */
export async function hostUuid(cfg: HostConfig): Promise<string> {
  const caps = capsParser.parse(await cfg.virsh.run(['capabilities'])) as { capabilities?: { host?: { uuid?: string } } };
  const uuid = caps.capabilities?.host?.uuid;
  if (typeof uuid !== 'string' || !/^[0-9a-f-]{36}$/.test(uuid)) throw new DriverError(`virsh capabilities on ${cfg.uri}: no host UUID`, 'HYPERVISOR');
  return uuid;
}

export async function hostInfo(cfg: HostConfig): Promise<HostInfo> {
  const node = parseNodeInfo(await cfg.virsh.run(['nodeinfo']));
  const datastores = [];
  for (const ds of cfg.datastores) {
    const p = await poolInfo(cfg, ds.pool);
    datastores.push({ id: ds.id, path: p.targetPath, shared: ds.shared, capacityBytes: p.capacityBytes, freeBytes: p.availableBytes, throughputBytesPerSec: ds.throughputBytesPerSec ?? 500e6 });
  }
  return {
    hostId: cfg.hostId,
    cpuModel: cfg.cpuModel,
    cpuFeatures: [...cfg.cpuFeatures],
    cpus: cfg.options.cpus ?? node.cpus,
    memoryBytes: cfg.options.memoryBytes ?? node.memoryBytes,
    datastores,
    networks: [...cfg.networks],
    migrationAddress: cfg.migrationAddress,
  };
}
