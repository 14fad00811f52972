// The one interface every hypervisor driver implements (sim, qemu, later libvirt).
// Temporal-free: activities are the only callers. Every method is idempotent where the
// comment says so, because an activity retried after a crash calls it a second time.
//
// A driver instance is bound to ONE host (the host agent of `ferry-host-<hostId>` owns it).
// Cross-host operations (migration) name the peer by the opaque `uri` the destination hands out.
// The value types and DriverError live in domain/hypervisor.ts (every layer shares them); they
// are re-exported here so a driver file has its whole vocabulary in one import.
import type {
  CloudInitSeed,
  DiskMirrorStats,
  DiskMirrorTarget,
  IncomingOptions,
  IncomingResult,
  DiskInfo,
  DiskSpec,
  HostInfo,
  MigrationParams,
  MigrationStats,
  Progress,
  StartMigrationOptions,
  VmRuntime,
  VmSpec,
} from '../domain/hypervisor.js';
import type { ColdCopyProgress, ColdCopyRequest, ColdCopyResult, VmHomeManifest } from '../domain/cold.js';

export * from '../domain/hypervisor.js';
export * from '../domain/cold.js';

/** Options for long calls: the activity bridges heartbeats and cancellation through these. */
export interface LongCallOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/** receiveVmHome's options: progress carries the checkpoint the activity heartbeats. */
export interface ColdCopyOptions {
  signal?: AbortSignal;
  onProgress?: (p: ColdCopyProgress) => void;
}

/** Migration events buffered since the watch began (drivers without events simply lack it). */
export interface MigrationEventWatch {
  /** resolves at the next event (at once if one came since the last call) or after `timeoutMs` */
  next(timeoutMs: number): Promise<void>;
  close(): void;
}

export interface HypervisorDriver {
  readonly kind: 'sim' | 'qemu' | 'libvirt';
  readonly hostId: string;

  hostInfo(): Promise<HostInfo>;

  // ---- disks (idempotent by spec.name) ----
  createDisk(spec: DiskSpec, opts?: LongCallOptions): Promise<DiskInfo>;
  /** idempotent: a missing disk is not an error */
  deleteDisk(path: string): Promise<void>;
  diskInfo(path: string): Promise<DiskInfo | null>;
  /** writes the NoCloud seed image; idempotent by vmId */
  writeSeed(vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }>;
  /** copies a disk to another host/datastore path reachable by this host (cold migration, template capture) */
  copyDisk(sourcePath: string, target: DiskSpec, opts?: LongCallOptions): Promise<DiskInfo>;

  // ---- VM lifecycle ----
  /** idempotent: defining the same vmId with the same spec again is a no-op */
  defineVm(spec: VmSpec): Promise<VmRuntime>;
  /** idempotent: starting a running VM is a no-op */
  startVm(vmId: string): Promise<VmRuntime>;
  /** graceful shutdown within timeoutMs, then forced if `force`; idempotent */
  stopVm(vmId: string, opts: { timeoutMs: number; force: boolean }): Promise<VmRuntime>;
  rebootVm(vmId: string): Promise<VmRuntime>;
  pauseVm(vmId: string): Promise<VmRuntime>;
  /**
   * Resumes a paused VM. A source left in `postmigrate` by a completed transfer is resumed only
   * with `afterCompletedMigration` (the workflow read the commit back and knows it did not happen).
   */
  resumeVm(vmId: string, opts?: { afterCompletedMigration?: boolean }): Promise<VmRuntime>;
  /** stops (forced) and forgets the VM; idempotent; keeps disks */
  destroyVm(vmId: string): Promise<void>;
  vmStatus(vmId: string): Promise<VmRuntime | null>;
  listVms(): Promise<VmRuntime[]>;

  // ---- live migration: destination side ----
  /** stage 1: start an empty container waiting for incoming state; idempotent by vmId */
  prepareIncoming(spec: VmSpec, opts?: IncomingOptions): Promise<IncomingResult>;
  /** stage 5: resume the received VM, announce its addresses; idempotent (running is fine) */
  activateIncoming(vmId: string): Promise<VmRuntime>;
  /**
   * stage 5's forward recovery, after the commit: the received copy is lost (its process crashed
   * or exited), so the VM boots here from its disks, which are its own from the commit on (a
   * cold boot: the guest restarts, its memory is gone). Refused (permanent) for a copy that is
   * not lost: a paused or still incoming copy is activateIncoming's. Idempotent (running is fine).
   */
  recoverIncoming(vmId: string): Promise<VmRuntime>;

  // ---- live migration: source side ----
  /** stage 2: begin pre-copy to the destination; idempotent (an active migration to the same uri is fine) */
  startMigration(vmId: string, opts: StartMigrationOptions): Promise<void>;
  migrationStatus(vmId: string): Promise<MigrationStats>;
  /**
   * optional: the hypervisor's own migration events (QEMU: MIGRATION, MIGRATION_PASS) from now
   * on, so a watcher wakes when the state changes instead of at its next fixed poll
   */
  watchMigrationEvents?(vmId: string): Promise<MigrationEventWatch>;
  setMigrationParams(vmId: string, params: MigrationParams): Promise<void>;
  /** stage 3: leave pre-switchover (or force it now) and complete stop-and-copy */
  continueSwitchover(vmId: string): Promise<void>;
  /** compensation: cancel the transfer; the source ends running if it ran before; idempotent */
  cancelMigration(vmId: string): Promise<void>;

  // ---- disk mirrors (optional: copyDisks out of band, storage migration) ----
  /** starts mirroring every disk of the VM to `target`; idempotent (a running mirror is kept) */
  startDiskMirror?(vmId: string, target: DiskMirrorTarget): Promise<void>;
  diskMirrorStatus?(vmId: string): Promise<DiskMirrorStats>;
  /** storage migration: pivot the VM onto the in-sync copies (brief pause); idempotent */
  completeDiskMirror?(vmId: string): Promise<DiskMirrorStats>;
  /** abort: the VM stays on its source disks, the partial copies are deleted; idempotent */
  cancelDiskMirror?(vmId: string): Promise<void>;

  // ---- cold migration (drivers/README.md "Cold copy") ----
  /**
   * source: the files of a VM's home (config, NVRAM, logs, disks, seed) with size and sha256; stop
   * the VM first. `checksums: false` skips the read pass that hashes them (sha256 ''): a driver
   * whose receiveVmHome reports sourceSha256 hashes the source while copying it instead
   */
  describeVmHome(vmId: string, opts?: { checksums?: boolean }): Promise<VmHomeManifest>;
  /** target: copies the home onto one of this host's datastores; resumes from `resumeFrom`; verifies */
  receiveVmHome(request: ColdCopyRequest, opts?: ColdCopyOptions): Promise<ColdCopyResult>;
  /** target compensation: removes whatever receiveVmHome wrote for this request, partial or whole; idempotent */
  discardVmHome(request: Pick<ColdCopyRequest, 'vmId' | 'files' | 'targetDatastoreId'>): Promise<void>;
}

