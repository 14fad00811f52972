// The QEMU hypervisor driver: one instance bound to one "host", which is a state folder.
//
// <stateDir>/vms/<vmId>/   spec.json, runtime.json, qmp.sock, qemu.pid, serial.log
// <datastore.path>/        <disk>.qcow2, <vmId>-seed.img (default datastore: <stateDir>/datastores/local)
//
// QEMU runs daemonized (-daemonize -pidfile), so a VM outlives the agent; a new driver instance on
// the same stateDir re-attaches through the pid file and the QMP socket. Every fact about a VM
// that matters after a crash lives in the folder (spec.json, runtime.json) or in QEMU itself
// (query-status, query-migrate), never only in this process's memory.
//
// This file only wires the parts together; each concern has its own file (see README.md).
import { promises as fs } from 'node:fs';
import type { HypervisorDriver, VmRuntime } from '../hypervisor.js';
import { diskMirrorsOf, sourceMigrationOf } from '../common.js';
import { createBlockJobs } from './block-jobs.js';
import { createColdCopy } from './cold-copy.js';
import { createDisks } from './disks.js';
import { hostInfo, resolveHost, type QemuDriverOptions } from './host.js';
import { createIncoming } from './incoming.js';
import { createLifecycle } from './lifecycle.js';
import { createMigration } from './migration.js';
import { createProcesses } from './processes.js';
import { writeSeed } from './seeds.js';
import { createQmpSessions } from './sessions.js';
import { createVmStore, type VmPaths } from './vm-store.js';

export interface QemuDriver extends HypervisorDriver {
  readonly kind: 'qemu';
  readonly stateDir: string;
  /** files of one VM on this host */
  vmPaths(vmId: string): VmPaths;
  /** a raw QMP command on a VM (tests, diagnostics) */
  qmp<T = unknown>(vmId: string, command: string, args?: Record<string, unknown>): Promise<T>;
  /** HMP passthrough (`xp /1wx 0x500`) */
  hmp(vmId: string, commandLine: string): Promise<string>;
  /**
   * Like the interface's resumeVm; `afterCompletedMigration` allows resuming a `postmigrate`
   * source, which only the workflow may decide (when the commit is known not to have happened).
   */
  resumeVm(vmId: string, opts?: { afterCompletedMigration?: boolean }): Promise<VmRuntime>;
  /** closes this instance's QMP sessions; VMs keep running (a new instance re-attaches) */
  close(): Promise<void>;
}

export function createQemuDriver(options: QemuDriverOptions): QemuDriver {
  const cfg = resolveHost(options);
  const store = createVmStore(cfg.stateDir, cfg.hostId);
  // the MIGRATION event watcher lives with the source side of migration, created below
  const sessions = createQmpSessions({
    store,
    hostId: cfg.hostId,
    qmpTimeoutMs: cfg.qmpTimeoutMs,
    onMigrationEvent: (vmId, e) => void migration.onMigrationEvent(vmId, e),
  });
  const deps = { cfg, store, sessions, procs: createProcesses(cfg, store, sessions) };
  const lifecycle = createLifecycle(deps);
  const blockJobs = createBlockJobs(deps);
  const incoming = createIncoming(deps, lifecycle, blockJobs);
  const migration = createMigration(deps, blockJobs);
  const disks = createDisks(cfg);
  const cold = createColdCopy(cfg, store, lifecycle.status);

  return {
    kind: 'qemu',
    hostId: cfg.hostId,
    stateDir: cfg.stateDir,
    vmPaths: store.vmPaths,
    hostInfo: () => hostInfo(cfg),

    createDisk: disks.createDisk,
    deleteDisk: disks.deleteDisk,
    diskInfo: disks.diskInfo,
    copyDisk: disks.copyDisk,
    writeSeed: (vmId, datastoreId, seed) => writeSeed(cfg, vmId, datastoreId, seed),

    defineVm: lifecycle.defineVm,
    startVm: lifecycle.startVm,
    stopVm: lifecycle.stopVm,
    rebootVm: lifecycle.rebootVm,
    pauseVm: lifecycle.pauseVm,
    resumeVm: lifecycle.resumeVm,
    async destroyVm(vmId) {
      // a never-activated copyDisks destination takes its empty or partial disk copies along
      const copies = await blockJobs.incomingCopies(vmId);
      await lifecycle.destroyVm(vmId);
      for (const f of copies) await fs.rm(f, { force: true });
    },
    vmStatus: lifecycle.status,
    listVms: lifecycle.listVms,

    prepareIncoming: incoming.prepareIncoming,
    activateIncoming: incoming.activateIncoming,
    recoverIncoming: incoming.recoverIncoming,
    ...sourceMigrationOf(migration),
    watchMigrationEvents: sessions.watchMigrationEvents,
    ...diskMirrorsOf(blockJobs),

    describeVmHome: cold.describeVmHome,
    receiveVmHome: cold.receiveVmHome,
    discardVmHome: cold.discardVmHome,

    qmp: (vmId, command, args) => sessions.qmp(vmId, command, args),
    hmp: sessions.hmp,
    close: sessions.close,
  };
}
