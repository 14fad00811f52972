// HypervisorDriver over the simulated cluster, bound to one host: a facade whose every method is
// one call into the file of its concern (disks, VM lifecycle, migration), each made of
// transactions on the shared state file (SimHost.op in host.ts).
import type {
  DiskFormat,
  DiskMirrorStats,
  DiskMirrorTarget,
  CloudInitSeed,
  ColdCopyOptions,
  ColdCopyRequest,
  ColdCopyResult,
  VmHomeManifest,
  DiskInfo,
  DiskSpec,
  HostInfo,
  HypervisorDriver,
  LongCallOptions,
  MigrationParams,
  MigrationStats,
  StartMigrationOptions,
  VmRuntime,
  VmSpec,
} from '../hypervisor.js';
import { DriverError } from '../hypervisor.js';
import { lastLines, type ConsoleTail } from '../../domain/console.js';
import type { SimCluster } from './cluster.js';
import * as cold from './cold-ops.js';
import * as disks from './disk-ops.js';
import { SimHost } from './host.js';
import * as migration from './migration-ops.js';
import * as mirror from './mirror-ops.js';
import * as vms from './vm-ops.js';
import * as v2v from './v2v-ops.js';

export class SimDriver implements HypervisorDriver {
  readonly kind = 'sim' as const;
  private readonly host: SimHost;

  constructor(
    sim: SimCluster,
    readonly hostId: string,
  ) {
    this.host = new SimHost(sim, hostId);
  }

  async hostInfo(): Promise<HostInfo> {
    return this.host.hostInfo();
  }

  // ------------------------------------------------------------------ disks (disk-ops.ts)

  async createDisk(spec: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    return disks.createDisk(this.host, spec, opts);
  }

  async copyDisk(sourcePath: string, target: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    return disks.copyDisk(this.host, sourcePath, target, opts);
  }

  async deleteDisk(path: string): Promise<void> {
    disks.deleteDisk(this.host, path);
  }

  async diskInfo(path: string): Promise<DiskInfo | null> {
    return disks.diskInfo(this.host, path);
  }

  async writeSeed(vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }> {
    return disks.writeSeed(this.host, vmId, datastoreId, seed);
  }

  // ------------------------------------------------------------------ VM lifecycle (vm-ops.ts)

  async defineVm(spec: VmSpec): Promise<VmRuntime> {
    return vms.defineVm(this.host, spec);
  }

  async startVm(vmId: string): Promise<VmRuntime> {
    return vms.startVm(this.host, vmId);
  }

  async stopVm(vmId: string, opts: { timeoutMs: number; force: boolean }): Promise<VmRuntime> {
    return vms.stopVm(this.host, vmId, opts);
  }

  async rebootVm(vmId: string): Promise<VmRuntime> {
    return vms.rebootVm(this.host, vmId);
  }

  async pauseVm(vmId: string): Promise<VmRuntime> {
    return vms.pauseVm(this.host, vmId);
  }

  async resumeVm(vmId: string): Promise<VmRuntime> {
    return vms.resumeVm(this.host, vmId);
  }

  async destroyVm(vmId: string): Promise<void> {
    vms.destroyVm(this.host, vmId);
  }

  async vmStatus(vmId: string): Promise<VmRuntime | null> {
    return vms.vmStatus(this.host, vmId);
  }

  async listVms(): Promise<VmRuntime[]> {
    return vms.listVms(this.host);
  }

  /** No guest runs in the simulator: its console says so and shows the simulated VM's state. */
  async consoleTail(vmId: string, tail: number): Promise<ConsoleTail> {
    const rt = await this.vmStatus(vmId);
    if (!rt) throw new DriverError(`vm "${vmId}" is not on host "${this.hostId}"`, 'NOT_FOUND', true);
    const text = [
      `ferry simulator: serial console of ${vmId} (simulated, no guest OS runs)`,
      `[sim] ${vmId} ${rt.state} on ${this.hostId}: ${rt.spec.cpus} vCPU, ${rt.spec.memoryBytes / 1024 / 1024} MiB, ${rt.spec.disks.length} disk(s)`,
      '',
    ].join('\n');
    const { lines, truncated } = lastLines(text, tail);
    // size as the lines show the log (domain/console.ts): without its final newline
    return { vmId, hostId: this.hostId, lines, size: Buffer.byteLength(text) - 1, truncated };
  }

  // ------------------------------------------------------------------ live migration (migration-ops.ts)

  async prepareIncoming(spec: VmSpec): Promise<{ uri: string }> {
    return migration.prepareIncoming(this.host, spec);
  }

  async activateIncoming(vmId: string): Promise<VmRuntime> {
    return migration.activateIncoming(this.host, vmId);
  }

  async recoverIncoming(vmId: string): Promise<VmRuntime> {
    return migration.recoverIncoming(this.host, vmId);
  }

  async startMigration(vmId: string, opts: StartMigrationOptions): Promise<void> {
    migration.startMigration(this.host, vmId, opts);
  }

  async migrationStatus(vmId: string): Promise<MigrationStats> {
    return migration.migrationStatus(this.host, vmId);
  }

  async setMigrationParams(vmId: string, params: MigrationParams): Promise<void> {
    migration.setMigrationParams(this.host, vmId, params);
  }

  async continueSwitchover(vmId: string): Promise<void> {
    migration.continueSwitchover(this.host, vmId);
  }

  async cancelMigration(vmId: string): Promise<void> {
    migration.cancelMigration(this.host, vmId);
  }

  // ------------------------------------------------------------------ storage mirror (mirror-ops.ts)

  async startDiskMirror(vmId: string, target: DiskMirrorTarget): Promise<void> {
    mirror.startDiskMirror(this.host, vmId, target);
  }

  async diskMirrorStatus(vmId: string): Promise<DiskMirrorStats> {
    return mirror.diskMirrorStatus(this.host, vmId);
  }

  async completeDiskMirror(vmId: string): Promise<DiskMirrorStats> {
    return mirror.completeDiskMirror(this.host, vmId);
  }

  async cancelDiskMirror(vmId: string): Promise<void> {
    mirror.cancelDiskMirror(this.host, vmId);
  }

  // ------------------------------------------------------------------ cold migration (cold-ops.ts)

  async describeVmHome(vmId: string): Promise<VmHomeManifest> {
    return cold.describeVmHome(this.host, vmId);
  }

  async receiveVmHome(request: ColdCopyRequest, opts: ColdCopyOptions = {}): Promise<ColdCopyResult> {
    return cold.receiveVmHome(this.host, request, opts);
  }

  async discardVmHome(request: Pick<ColdCopyRequest, 'vmId' | 'files' | 'targetDatastoreId'>): Promise<void> {
    cold.discardVmHome(this.host, request);
  }

  /** sha256 of what the simulator holds at a path (tests), null when nothing is there */
  fileSha256(path: string): string | null {
    return cold.simFileSha256(this.host, path);
  }

  // ------------------------------------------------------------------ V2V (v2v-ops.ts)

  /** A validated package disk as an importable image on one of this host's datastores. */
  async adoptImportImage(i: { stageId: string; file: string; format: DiskFormat; sizeBytes: number }): Promise<{ path: string }> {
    return v2v.adoptImportImage(this.host, i);
  }

  async forgetImportImage(path: string): Promise<void> {
    v2v.forgetImportImage(this.host, path);
  }
}
