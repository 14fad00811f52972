// The host one driver instance is bound to: its options, checked and defaulted once, and what it
// offers (hostInfo, the CPU features and networks a VM spec may ask for, its datastores).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DriverError, assertSafeName, type HostInfo } from '../hypervisor.js';
import { QEMU64_FEATURES } from '../common.js';

export interface QemuDatastoreConfig {
  id: string;
  path: string;
  shared: boolean;
  /** reported in hostInfo (placement's copy-time estimates); default 500 MB/s */
  throughputBytesPerSec?: number;
}

export interface QemuDriverOptions {
  hostId: string;
  stateDir: string;
  /** address other hosts use to reach this host's incoming migrations */
  migrationAddress?: string;
  /** inclusive TCP port range for incoming migrations; default [47000, 47999] */
  portRange?: [number, number];
  /** `-cpu` model; default qemu64 */
  cpuModel?: string;
  /** features the CPU model offers guests; a VM spec asking for more is refused */
  cpuFeatures?: string[];
  cpus?: number;
  memoryBytes?: number;
  datastores?: QemuDatastoreConfig[];
  /** network names; every network is user-mode networking here (no bridges on CI) */
  networks?: string[];
  /** default tcg (faster and deterministic on the CI machines, see shared/notes/qemu-facts.md) */
  accel?: 'tcg' | 'kvm' | 'auto';
  /** machine type; the same on both ends of a migration. Default `pc` */
  machine?: string;
  qemuBinary?: string;
  qemuImgBinary?: string;
  /**
   * network namespace QEMU runs in (`ip netns exec <netns> qemu-system-...`, root only): its
   * migration and NBD listeners bind the namespace's address, so the port probe is QEMU's own
   * bind (a busy port fails migrate-incoming / nbd-server-start and the next one is tried). QMP
   * stays a unix socket in the state folder, reachable from any namespace.
   */
  netns?: string;
  /** per-command QMP timeout; default 10 s */
  qmpTimeoutMs?: number;
  /** how long continueSwitchover / cancelMigration wait for QEMU to reach the end state; default 60 s */
  migrationWaitMs?: number;
}

/** The options with every default filled in (and the raw ones for hostInfo's cpus/memory). */
export interface HostConfig {
  options: QemuDriverOptions;
  hostId: string;
  stateDir: string;
  migrationAddress: string;
  portRange: [number, number];
  datastores: QemuDatastoreConfig[];
  networks: string[];
  cpuModel: string;
  cpuFeatures: string[];
  qemuBinary: string;
  qemuImgBinary: string;
  netns: string | undefined;
  machine: string;
  qmpTimeoutMs: number;
  migrationWaitMs: number;
}


/** Checks the options (permanent INVALID_ARGUMENT naming the bad one) and fills in defaults. */
export function resolveHost(options: QemuDriverOptions): HostConfig {
  assertSafeName('hostId', options.hostId);
  if (typeof options.stateDir !== 'string' || !path.isAbsolute(options.stateDir)) {
    throw new DriverError(`stateDir "${options.stateDir}" must be an absolute path`, 'INVALID_ARGUMENT', true);
  }
  const stateDir = path.resolve(options.stateDir);
  const migrationAddress = options.migrationAddress ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:-]+$/.test(migrationAddress)) {
    throw new DriverError(`migrationAddress "${migrationAddress}" is not a host name or address`, 'INVALID_ARGUMENT', true);
  }
  const portRange = options.portRange ?? [47000, 47999];
  if (!(Number.isInteger(portRange[0]) && Number.isInteger(portRange[1]) && portRange[0] >= 1024 && portRange[1] <= 65535 && portRange[0] <= portRange[1])) {
    throw new DriverError(`portRange ${JSON.stringify(portRange)} must be [lo, hi] within 1024..65535`, 'INVALID_ARGUMENT', true);
  }
  const datastores: QemuDatastoreConfig[] = options.datastores ?? [
    { id: 'local', path: path.join(stateDir, 'datastores', 'local'), shared: false },
  ];
  for (const ds of datastores) {
    assertSafeName('datastore id', ds.id);
    if (!path.isAbsolute(ds.path)) throw new DriverError(`datastore "${ds.id}" path "${ds.path}" must be absolute`, 'INVALID_ARGUMENT', true);
  }
  if (options.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(options.netns)) {
    throw new DriverError(`netns "${options.netns}" is not a network namespace name`, 'INVALID_ARGUMENT', true);
  }
  const networks = options.networks ?? ['default'];
  networks.forEach((n) => assertSafeName('network', n));
  return {
    options,
    hostId: options.hostId,
    stateDir,
    migrationAddress,
    portRange,
    datastores,
    networks,
    cpuModel: options.cpuModel ?? 'qemu64',
    cpuFeatures: options.cpuFeatures ?? QEMU64_FEATURES,
    qemuBinary: options.qemuBinary ?? 'qemu-system-x86_64',
    qemuImgBinary: options.qemuImgBinary ?? 'qemu-img',
    netns: options.netns,
    machine: options.machine ?? 'pc',
    qmpTimeoutMs: options.qmpTimeoutMs ?? 10_000,
    migrationWaitMs: options.migrationWaitMs ?? 60_000,
  };
}

/** A spec this host cannot run (CPU features, network) is refused before any process starts. */
export { checkHostOffers } from '../common.js';

export function datastore(cfg: HostConfig, id: string): QemuDatastoreConfig {
  const ds = cfg.datastores.find((d) => d.id === id);
  if (!ds) throw new DriverError(`datastoreId "${id}" is not a datastore of host "${cfg.hostId}"`, 'NOT_FOUND', true);
  return ds;
}

/** The datastore a file lies directly in, if any. */
export function datastoreOf(cfg: HostConfig, file: string): QemuDatastoreConfig | undefined {
  const abs = path.resolve(file);
  return cfg.datastores.find((d) => path.dirname(abs) === path.resolve(d.path));
}

export async function hostInfo(cfg: HostConfig): Promise<HostInfo> {
  const dsInfo = [];
  for (const ds of cfg.datastores) {
    await fs.mkdir(ds.path, { recursive: true });
    const st = await fs.statfs(ds.path);
    dsInfo.push({
      id: ds.id,
      path: ds.path,
      shared: ds.shared,
      capacityBytes: st.blocks * st.bsize,
      freeBytes: st.bavail * st.bsize,
      throughputBytesPerSec: ds.throughputBytesPerSec ?? 500e6,
    });
  }
  return {
    hostId: cfg.hostId,
    cpuModel: cfg.cpuModel,
    cpuFeatures: [...cfg.cpuFeatures],
    cpus: cfg.options.cpus ?? os.availableParallelism(),
    memoryBytes: cfg.options.memoryBytes ?? os.totalmem(),
    datastores: dsInfo,
    networks: [...cfg.networks],
    migrationAddress: cfg.migrationAddress,
  };
}
