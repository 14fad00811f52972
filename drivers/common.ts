// What the QEMU and libvirt drivers share (both run QEMU, one directly, one through libvirtd): the
// qemu64 guest CPU's features, the checks of a VmSpec and of migration parameters before anything
// reaches a hypervisor, "does this host offer what the spec needs", and the method groups of the
// driver interface a facade takes from its source-migration and disk-mirror parts. Each driver adds
// its own checks on top (path syntax for QEMU's argv, libvirt's refusal of `hold`).
import { DriverError, assertSafeName, type HypervisorDriver, type MigrationParams, type VmSpec } from './hypervisor.js';

/** The features QEMU's qemu64 CPU model offers (the default guest CPU of both drivers). */
export const QEMU64_FEATURES = [
  'fpu', 'tsc', 'pae', 'cx8', 'apic', 'sep', 'cmov', 'clflush', 'mmx', 'fxsr',
  'sse', 'sse2', 'pni', 'cx16', 'lm', 'syscall', 'nx', 'lahf_lm',
];

/** Forcing the switchover: any remainder fits (QEMU's own maximum downtime-limit is 2000 s). */
export const FORCE_DOWNTIME_MS = 2_000_000;

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

const bad = (m: string) => new DriverError(m, 'INVALID_ARGUMENT', true);

/**
 * The VmSpec fields that reach a hypervisor, checked (INVALID_ARGUMENT naming the field).
 * `checkPath` is the driver's own check of a disk, seed or ISO path (after the absolute-path one).
 */
export function validateVmSpecFields(spec: VmSpec, o: { checkPath: (what: string, path: string) => void; maxNameLength?: number }): void {
  if (!spec || typeof spec !== 'object') throw bad('spec must be an object');
  assertSafeName('spec.vmId', spec.vmId);
  const max = o.maxNameLength;
  if (typeof spec.name !== 'string' || spec.name.length === 0 || (max !== undefined && spec.name.length > max)) {
    throw bad(`spec.name must be a non-empty string${max !== undefined ? ` (at most ${max} chars)` : ''}`);
  }
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1 || spec.cpus > 255) throw bad(`spec.cpus ${spec.cpus} must be an integer 1..255`);
  const mib = spec.memoryBytes / (1024 * 1024);
  if (!Number.isInteger(mib) || mib < 16) throw bad(`spec.memoryBytes ${spec.memoryBytes} must be a whole number of MiB, at least 16 MiB`);
  if (!Array.isArray(spec.disks)) throw bad('spec.disks must be an array of paths');
  const path = (what: string, p: unknown) => {
    if (typeof p !== 'string' || !p.startsWith('/')) throw bad(`${what} "${String(p)}" must be an absolute path`);
    o.checkPath(what, p);
  };
  spec.disks.forEach((d, i) => path(`spec.disks[${i}]`, d));
  if (spec.seedPath !== undefined) path('spec.seedPath', spec.seedPath);
  if (spec.isoPath !== undefined) path('spec.isoPath', spec.isoPath);
  if (spec.mac !== undefined && !MAC.test(spec.mac)) throw bad(`spec.mac "${spec.mac}" is not a lowercase MAC address (aa:bb:cc:dd:ee:ff)`);
  if (spec.network !== undefined) assertSafeName('spec.network', spec.network);
  if (!Array.isArray(spec.cpuFeatures)) throw bad('spec.cpuFeatures must be an array');
}

/** Bandwidth, downtime limit and throttle as a driver can apply them. */
export function validateMigrationParams(p: MigrationParams): void {
  if (p.maxBandwidthBytesPerSec !== undefined && !(Number.isFinite(p.maxBandwidthBytesPerSec) && p.maxBandwidthBytesPerSec > 0)) {
    throw bad(`maxBandwidthBytesPerSec ${p.maxBandwidthBytesPerSec} must be > 0`);
  }
  if (p.downtimeLimitMs !== undefined && !(Number.isInteger(p.downtimeLimitMs) && p.downtimeLimitMs >= 1 && p.downtimeLimitMs <= FORCE_DOWNTIME_MS)) {
    throw bad(`downtimeLimitMs ${p.downtimeLimitMs} must be an integer 1..${FORCE_DOWNTIME_MS}`);
  }
  if (p.throttlePct !== undefined && !(Number.isFinite(p.throttlePct) && p.throttlePct >= 0 && p.throttlePct <= 99)) {
    throw bad(`throttlePct ${p.throttlePct} must be 0..99`);
  }
}

/** What a host offers a VM: the guest CPU's features and the networks it has. */
export interface HostOffer {
  hostId: string;
  cpuModel: string;
  cpuFeatures: string[];
  networks: string[];
}

/** The spec's CPU features and network are on this host (INVALID_ARGUMENT naming what is missing). */
export function checkHostOffers(host: HostOffer, spec: VmSpec): void {
  const missing = spec.cpuFeatures.filter((f) => !host.cpuFeatures.includes(f));
  if (missing.length) throw bad(`spec.cpuFeatures: host "${host.hostId}" (${host.cpuModel}) does not offer ${missing.join(', ')}`);
  if (spec.network !== undefined && !host.networks.includes(spec.network)) {
    throw bad(`spec.network "${spec.network}" is not present on host "${host.hostId}" (has ${host.networks.join(', ') || 'none'})`);
  }
}

const SOURCE_MIGRATION = ['startMigration', 'migrationStatus', 'setMigrationParams', 'continueSwitchover', 'cancelMigration'] as const;
const DISK_MIRRORS = ['startDiskMirror', 'diskMirrorStatus', 'completeDiskMirror', 'cancelDiskMirror'] as const;

export type SourceMigration = Pick<HypervisorDriver, (typeof SOURCE_MIGRATION)[number]>;
export type DiskMirrors = Required<Pick<HypervisorDriver, (typeof DISK_MIRRORS)[number]>>;

function pick<T extends object, K extends keyof T>(from: T, keys: readonly K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, from[k]])) as Pick<T, K>;
}

/** The source side of live migration, taken from a driver's migration part for its facade. */
export function sourceMigrationOf(part: SourceMigration): SourceMigration {
  return pick(part, SOURCE_MIGRATION);
}

/** The disk-mirror methods, taken from a driver's block-job part for its facade. */
export function diskMirrorsOf(part: DiskMirrors): DiskMirrors {
  return pick(part, DISK_MIRRORS);
}
