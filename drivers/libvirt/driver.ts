// The libvirt hypervisor driver: one instance bound to one libvirtd (one host) by its connection
// URI. Everything goes through virsh (execa, argument arrays); the facts that matter after a crash
// live in libvirt itself (domain definitions with ferry's spec in their metadata, job stats) plus
// one record per outgoing migration in stateDir/migrations/. This file only wires the parts
// together; each concern has its own file (see README.md).
import { DriverError, type HypervisorDriver } from '../hypervisor.js';
import { diskMirrorsOf, sourceMigrationOf } from '../common.js';
import { createBlockJobs } from './block-jobs.js';
import { createDisks } from './disks.js';
import { hostInfo, hostUuid, resolveHost, type LibvirtDriverOptions } from './host.js';
import { createLifecycle } from './lifecycle.js';
import { createMigration } from './migration.js';

export interface LibvirtDriver extends HypervisorDriver {
  readonly kind: 'libvirt';
  /** the connection URI of this host's libvirtd */
  readonly uri: string;
  /** the host UUID libvirt compares to refuse a migration to the same host */
  hostUuid(): Promise<string>;
  /** `virsh qemu-monitor-command --hmp` (tests, diagnostics) */
  hmp(vmId: string, commandLine: string): Promise<string>;
  /** the libvirt domain UUID of a vmId (the same on every host) */
  domainUuid(vmId: string): string;
  close(): Promise<void>;
}

function unsupported(what: string, why: string): never {
  throw new DriverError(`${what} is not supported by the libvirt driver yet: ${why}`, 'INVALID_ARGUMENT', true);
}

export function createLibvirtDriver(options: LibvirtDriverOptions): LibvirtDriver {
  const cfg = resolveHost(options);
  const life = createLifecycle(cfg);
  const disks = createDisks(cfg);
  const migration = createMigration(cfg, life, options.virshBinary);
  const blockJobs = createBlockJobs(cfg, life);
  const cold = 'ColdMigrate on libvirt (vol-download/vol-upload onto the target pool, then define) is planned';

  return {
    kind: 'libvirt',
    hostId: cfg.hostId,
    uri: cfg.uri,
    hostInfo: () => hostInfo(cfg),
    hostUuid: () => hostUuid(cfg),
    domainUuid: (vmId) => life.dom(vmId),

    createDisk: disks.createDisk,
    deleteDisk: disks.deleteDisk,
    diskInfo: disks.diskInfo,
    copyDisk: disks.copyDisk,
    writeSeed: disks.writeSeed,

    defineVm: life.defineVm,
    startVm: life.startVm,
    stopVm: life.stopVm,
    rebootVm: life.rebootVm,
    pauseVm: life.pauseVm,
    resumeVm: life.resumeVm,
    async destroyVm(vmId) {
      await blockJobs.cancelDiskMirror(vmId).catch(() => undefined);
      await life.destroyVm(vmId);
      await migration.dropRecord(vmId);
      // a copyDisks destination that never activated takes its disk copies along
      await migration.discardIncomingCopies(vmId);
    },
    vmStatus: life.status,
    listVms: life.listVms,

    prepareIncoming: migration.prepareIncoming,
    activateIncoming: migration.activateIncoming,
    recoverIncoming: migration.recoverIncoming,
    ...sourceMigrationOf(migration),
    ...diskMirrorsOf(blockJobs),

    describeVmHome: async () => unsupported('describeVmHome', cold),
    receiveVmHome: async () => unsupported('receiveVmHome', cold),
    discardVmHome: async () => unsupported('discardVmHome', cold),

    async hmp(vmId, commandLine) {
      return cfg.virsh.run(['qemu-monitor-command', '--hmp', life.dom(vmId), commandLine]);
    },
    async close() {
      // nothing held open: every call is its own virsh process
    },
  };
}
