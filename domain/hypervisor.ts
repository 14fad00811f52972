// The values a hypervisor driver speaks (specs, runtime states, migration statistics) and the
// error it throws. Pure: the workflows, activities, the API and every driver share these; the
// driver interface itself lives in drivers/hypervisor.ts.
import { nameProblem } from './names.js';

export interface Progress {
  /** 0..1 when known */
  fraction?: number;
  doneBytes?: number;
  totalBytes?: number;
  message?: string;
}

export interface HostDatastoreInfo {
  id: string;
  /** where this datastore lives on the host (folder for qemu, label for sim) */
  path: string;
  shared: boolean;
  capacityBytes: number;
  freeBytes: number;
  throughputBytesPerSec: number;
}

export interface HostInfo {
  hostId: string;
  cpuModel: string;
  cpuFeatures: string[];
  cpus: number;
  memoryBytes: number;
  datastores: HostDatastoreInfo[];
  /** network names bridged on this host */
  networks: string[];
  /** address other hosts use to reach this host for migration traffic */
  migrationAddress: string;
  /** migration links to other hosts whose bandwidth the driver knows (the simulator's links) */
  links?: Array<{ peerHostId: string; bandwidthBytesPerSec: number }>;
}

/** Where a new disk's content comes from (provisioning step 2). */
export type DiskSource =
  | { kind: 'blank' }
  /** from a template image: linked = copy-on-write overlay (qemu-img create -b), else full copy */
  | { kind: 'template'; imagePath: string; linked: boolean }
  /** clone of an existing disk (a stopped VM's disk, or a running VM's snapshot) */
  | { kind: 'clone'; sourcePath: string }
  /** import from another platform: vmdk | vhdx | raw | qcow2, converted to qcow2 */
  | { kind: 'import'; sourcePath: string; format: DiskFormat };

export type DiskFormat = 'qcow2' | 'raw' | 'vmdk' | 'vhdx';

export interface DiskSpec {
  /** deterministic name (e.g. `<vmId>-root`): a retry finds its own earlier disk by it */
  name: string;
  datastoreId: string;
  sizeBytes: number;
  source: DiskSource;
}

export interface DiskInfo {
  name: string;
  datastoreId: string;
  path: string;
  format: DiskFormat;
  virtualSizeBytes: number;
  actualSizeBytes: number;
  backingPath?: string;
}

/** cloud-init NoCloud seed (provisioning step 3) */
export interface CloudInitSeed {
  instanceId: string;
  hostname: string;
  sshAuthorizedKeys: string[];
  userData?: string;
  network?: { address: string; prefixLength: number; gateway: string; dns: string[]; vlan?: number; mac: string };
}

export interface VmSpec {
  vmId: string;
  name: string;
  cpus: number;
  memoryBytes: number;
  /** disk paths as returned by createDisk, boot disk first */
  disks: string[];
  /** NoCloud seed image path, attached read-only */
  seedPath?: string;
  /** installer ISO attached as cdrom (manual install) */
  isoPath?: string;
  mac?: string;
  network?: string;
  /** CPU features the guest sees; a migration target must offer all of them */
  cpuFeatures: string[];
  /** workload model used by the simulator (ignored by real hypervisors) */
  workload?: SimWorkload;
}

export interface SimWorkload {
  dirtyRateBytesPerSec: number;
  writableWorkingSetBytes: number;
  /** bytes/s the guest writes to its disks (a storage mirror must catch up with it); default 0 */
  diskWriteRateBytesPerSec?: number;
}

export type VmPowerState =
  | 'defined' // known to the hypervisor, not started
  | 'running'
  | 'paused'
  | 'stopped'
  | 'incoming' // empty container waiting for migration state (stage 1)
  | 'postmigrate' // source after a completed outgoing migration: must not be resumed
  | 'crashed';

export interface VmRuntime {
  vmId: string;
  state: VmPowerState;
  pid?: number;
  spec: VmSpec;
}

export type MigrationStatusName =
  | 'none'
  | 'setup'
  | 'active'
  | 'pre-switchover' // source paused, waiting for continueSwitchover (stage 3's doorstep)
  | 'device' // stop-and-copy in progress
  | 'completed'
  | 'failed'
  | 'cancelled';

export interface MigrationStats {
  status: MigrationStatusName;
  /** pre-copy rounds completed (QEMU dirty-sync-count) */
  round: number;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  dirtyRateBytesPerSec: number;
  transferRateBytesPerSec: number;
  expectedDowntimeMs: number;
  /** measured downtime (only once completed) */
  downtimeMs?: number;
  totalTimeMs?: number;
  /** time since the migration started, in the hypervisor's clock (virtual time for the simulator) */
  elapsedMs?: number;
  /** guest CPU throttle applied by auto-converge, percent */
  throttlePct: number;
  error?: string;
  /** copyDisks: the disk mirror running alongside (qemu) */
  disk?: DiskMirrorStats;
}

export interface MigrationParams {
  maxBandwidthBytesPerSec?: number;
  downtimeLimitMs?: number;
  /** auto-converge guest throttle, percent 0..99 */
  throttlePct?: number;
  /**
   * hold = never enter stop-and-copy on its own (operator approval pending): the source keeps
   * running and rounds continue. Cleared by continueSwitchover or setting it false.
   */
  hold?: boolean;
  /**
   * The switchover is pre-approved: the driver continues from pre-switchover itself the moment
   * the source pauses (QEMU counts the paused time as downtime, so no workflow round trip).
   */
  autoSwitchover?: boolean;
}

export interface StartMigrationOptions extends MigrationParams {
  /** uri returned by the destination's prepareIncoming */
  uri: string;
  /** disks are copied along (no shared storage) */
  copyDisks?: boolean;
}

/** A disk the destination of a copyDisks migration receives (sizes come from the source). */
export interface IncomingDiskCopy {
  sourcePath: string;
  virtualSizeBytes: number;
  format: DiskFormat;
}

export interface IncomingOptions {
  /** no shared storage: create empty copies of these disks (and the seed) on `datastoreId` */
  copyDisks?: { datastoreId: string; disks: IncomingDiskCopy[] };
}

/**
 * Where a disk mirror writes: an NBD server of the destination host (live migration without
 * shared storage) or another datastore of the same host (storage migration).
 */
export type DiskMirrorTarget =
  | { kind: 'nbd'; host: string; port: number; exports: Array<{ device: string; exportName: string }>; speedBytesPerSec?: number }
  | { kind: 'datastore'; datastoreId: string; speedBytesPerSec?: number };

export interface IncomingResult {
  uri: string;
  /** copyDisks on a hypervisor that mirrors out of band (qemu): where the source mirrors to */
  mirror?: DiskMirrorTarget;
  /** the destination's disk paths when they differ from the source's (copyDisks) */
  diskPaths?: string[];
  seedPath?: string;
}

export type DiskMirrorStatusName = 'none' | 'running' | 'ready' | 'completed' | 'failed' | 'cancelled';

/** A disk mirror's progress: `ready` = every disk in sync (writes are mirrored as they happen). */
export interface DiskMirrorStats {
  status: DiskMirrorStatusName;
  copiedBytes: number;
  totalBytes: number;
  /** bytes known to differ between source and target right now */
  dirtyBytes: number;
  inSync: boolean;
  /** bytes/s the guest writes to the mirrored disks (the simulator knows it; qemu: 0) */
  writeRateBytesPerSec?: number;
  transferRateBytesPerSec?: number;
  /** after a pivot (storage migration): the disks the VM runs on now */
  diskPaths?: string[];
  seedPath?: string;
  /** the pause the pivot took (ms) */
  pivotMs?: number;
  error?: string;
}

export class DriverError extends Error {
  constructor(
    message: string,
    /** maps onto activities/errors.ts ErrorType */
    readonly code:
      | 'NOT_FOUND'
      | 'INVALID_ARGUMENT'
      | 'INVALID_STATE'
      | 'HYPERVISOR'
      | 'INSUFFICIENT_SPACE'
      | 'FAULT_INJECTED'
      | 'TIMEOUT'
      | 'UNREACHABLE',
    /** true when retrying cannot help */
    readonly permanent = false,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}

/** Names that reach file systems and process arguments: no shell metacharacters, no path parts. */
export { SAFE_NAME } from './names.js';

export function assertSafeName(what: string, value: string): void {
  const problem = nameProblem(what, value);
  if (problem) throw new DriverError(problem, 'INVALID_ARGUMENT', true);
}
