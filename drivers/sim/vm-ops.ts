// The driver's VM lifecycle calls on one host: define (idempotent by spec), start, stop, reboot,
// pause, resume, destroy, status, list. A guest never runs twice: a postmigrate source resumes
// only while the guest runs nowhere else, and a VM that is migrating is neither stopped nor
// rebooted before the migration is cancelled.
import type { VmRuntime, VmSpec } from '../hypervisor.js';
import { toRuntime, type SimHost } from './host.js';
import { attached, diskRow, imageRow, setVmState } from './lookups.js';
import { abortMigration, evaluate, openMigrationFrom, openMigrations } from './migrations.js';
import type { DiskRow, VmRow } from './store.js';
import { invalid, invalidState, nonEmptyString, nonNegativeInt, nonNegativeNumber, positiveInt, safeName, stableJson, stringArray } from './validate.js';

export function defineVm(h: SimHost, spec: VmSpec): VmRuntime {
  validateVmSpec(spec);
  return h.op('defineVm', spec.vmId, (nowV) => {
    h.checkHostFits(spec);
    const row = h.vmRow(spec.vmId);
    const json = stableJson(spec);
    if (row) {
      if (row.spec === json) return toRuntime(row);
      if (!['defined', 'stopped', 'crashed'].includes(row.state)) {
        throw invalidState(`vm ${spec.vmId} is ${row.state} on ${h.hostId} with a different spec; stop it before redefining`, true);
      }
      h.store.run('UPDATE vms SET spec = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?', json, nowV, h.hostId, spec.vmId);
    } else {
      h.store.run(
        'INSERT INTO vms (host_id, vm_id, state, spec, generation, updated_v) VALUES (?, ?, ?, ?, 0, ?)',
        h.hostId,
        spec.vmId,
        'defined',
        json,
        nowV,
      );
    }
    return h.runtime(spec.vmId);
  });
}

export function startVm(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('startVm', vmId, (row, nowV) => {
    switch (row.state) {
      case 'running':
        return toRuntime(row);
      case 'defined':
      case 'stopped':
      case 'crashed':
        return boot(h, row, nowV);
      case 'paused':
        throw invalidState(`vm ${vmId} is paused on ${h.hostId}; resumeVm resumes it`);
      case 'incoming':
        throw invalidState(`vm ${vmId} on ${h.hostId} is waiting for an incoming migration; activateIncoming resumes it`, true);
      case 'postmigrate':
        throw invalidState(`vm ${vmId} on ${h.hostId} is postmigrate (it migrated away); starting it would run the guest twice`, true);
      default:
        throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}`, true);
    }
  });
}

/** Boots a VM that runs nowhere on this host from its files (a new guest generation). */
export function boot(h: SimHost, row: VmRow, nowV: number): VmRuntime {
  const spec = JSON.parse(row.spec) as VmSpec;
  checkFilesPresent(h, spec, nowV);
  h.store.run(
    "UPDATE vms SET state = 'running', generation = generation + 1, updated_v = ? WHERE host_id = ? AND vm_id = ?",
    nowV,
    h.hostId,
    row.vm_id,
  );
  return h.runtime(row.vm_id);
}

export function stopVm(h: SimHost, vmId: string, opts: { timeoutMs: number; force: boolean }): VmRuntime {
  safeName('vmId', vmId);
  nonNegativeNumber('timeoutMs', opts?.timeoutMs);
  if (typeof opts.force !== 'boolean') throw invalid('force must be a boolean');
  return h.vmOp('stopVm', vmId, (row, nowV) => {
    if (row.state === 'running' || row.state === 'paused') {
      refuseWhileMigrating(h, vmId, 'stop');
      setVmState(h.store, h.hostId, vmId, 'stopped', nowV);
      return h.runtime(vmId);
    }
    if (row.state === 'incoming') throw invalidState(`vm ${vmId} on ${h.hostId} is an incoming migration container; destroyVm removes it`, true);
    return toRuntime(row); // defined, stopped, crashed, postmigrate: nothing runs
  });
}

export function rebootVm(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('rebootVm', vmId, (row, nowV) => {
    if (row.state !== 'running') throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}; only a running vm reboots`, row.state !== 'paused');
    refuseWhileMigrating(h, vmId, 'reboot');
    h.store.run('UPDATE vms SET generation = generation + 1, updated_v = ? WHERE host_id = ? AND vm_id = ?', nowV, h.hostId, vmId);
    return h.runtime(vmId);
  });
}

export function pauseVm(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('pauseVm', vmId, (row, nowV) => {
    if (row.state === 'paused') return toRuntime(row);
    if (row.state !== 'running') throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}; only a running vm pauses`, true);
    setVmState(h.store, h.hostId, vmId, 'paused', nowV);
    return h.runtime(vmId);
  });
}

export function resumeVm(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('resumeVm', vmId, (row, nowV) => {
    if (row.state === 'running') return toRuntime(row);
    if (row.state === 'postmigrate') {
      // QEMU lets `cont` resume a postmigrate source; the workflow does it only when it knows the
      // commit did not happen (B's copy is then paused, never activated). The simulator refuses
      // when the guest already runs elsewhere: that resume would run it twice.
      const elsewhere = h.store.all<{ host_id: string }>(
        "SELECT host_id FROM vms WHERE vm_id = ? AND host_id != ? AND state = 'running'",
        vmId,
        h.hostId,
      );
      if (elsewhere.length > 0) {
        throw invalidState(
          `vm ${vmId} on ${h.hostId} is postmigrate and the guest runs on ${elsewhere.map((e) => e.host_id).join(', ')}; resuming it would run the guest twice`,
          true,
        );
      }
      setVmState(h.store, h.hostId, vmId, 'running', nowV);
      return h.runtime(vmId);
    }
    if (row.state !== 'paused') throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}; only a paused vm resumes`, true);
    const m = openMigrationFrom(h.store, vmId, h.hostId);
    if (m) {
      const status = evaluate(h.store, m, nowV).status;
      if (status === 'pre-switchover' || status === 'device') {
        throw invalidState(`vm ${vmId} is paused by its migration to ${m.target_host} (${status}); cancelMigration or continueSwitchover`);
      }
    }
    setVmState(h.store, h.hostId, vmId, 'running', nowV);
    return h.runtime(vmId);
  });
}

export function destroyVm(h: SimHost, vmId: string): void {
  safeName('vmId', vmId);
  h.op('destroyVm', vmId, (nowV) => {
    if (!h.vmRow(vmId)) return;
    for (const m of openMigrations(h.store).filter((x) => x.vm_id === vmId)) {
      if (m.source_host === h.hostId) abortMigration(h.store, m, nowV, 'failed', `source vm destroyed on ${h.hostId}`);
      else if (m.target_host === h.hostId) abortMigration(h.store, m, nowV, 'failed', `destination vm destroyed on ${h.hostId}`);
    }
    h.store.run('DELETE FROM vms WHERE host_id = ? AND vm_id = ?', h.hostId, vmId);
  });
}

export function vmStatus(h: SimHost, vmId: string): VmRuntime | null {
  safeName('vmId', vmId);
  return h.op('vmStatus', vmId, () => {
    const row = h.vmRow(vmId);
    return row ? toRuntime(row) : null;
  });
}

export function listVms(h: SimHost): VmRuntime[] {
  return h.op('listVms', undefined, () =>
    h.store.all<VmRow>('SELECT * FROM vms WHERE host_id = ? ORDER BY vm_id', h.hostId).map(toRuntime),
  );
}

function refuseWhileMigrating(h: SimHost, vmId: string, what: string): void {
  const m = openMigrationFrom(h.store, vmId, h.hostId);
  if (m) throw invalidState(`cannot ${what} vm ${vmId}: it is migrating to ${m.target_host}; cancel the migration first`);
}

/** Every disk, seed and ISO of the spec exists, is complete and is on a datastore of this host. */
function checkFilesPresent(h: SimHost, spec: VmSpec, nowV: number): void {
  const files: [string, string][] = spec.disks.map((p, i) => [`disks[${i}]`, p]);
  if (spec.seedPath) files.push(['seedPath', spec.seedPath]);
  if (spec.isoPath) files.push(['isoPath', spec.isoPath]);
  for (const [field, p] of files) {
    const d: DiskRow | undefined = diskRow(h.store, p);
    const img = d ? undefined : imageRow(h.store, p);
    if (!d && !img) throw invalidState(`${field}: "${p}" does not exist; vm ${spec.vmId} cannot start`, true);
    const ds = d?.datastore_id ?? img!.datastore_id;
    if (!attached(h.store, ds, h.hostId)) throw invalidState(`${field}: "${p}" is on datastore ${ds}, not reachable from ${h.hostId}`, true);
    if (d && d.end_v > nowV) throw invalidState(`${field}: "${p}" is still being created`);
  }
}

export function validateVmSpec(spec: VmSpec): void {
  if (!spec || typeof spec !== 'object') throw invalid('vm spec must be an object');
  safeName('vmId', spec.vmId);
  nonEmptyString('name', spec.name);
  positiveInt('cpus', spec.cpus);
  positiveInt('memoryBytes', spec.memoryBytes);
  stringArray('disks', spec.disks);
  stringArray('cpuFeatures', spec.cpuFeatures);
  for (const k of ['seedPath', 'isoPath', 'mac'] as const) if (spec[k] !== undefined) nonEmptyString(k, spec[k]);
  if (spec.network !== undefined) safeName('network', spec.network);
  if (spec.workload !== undefined) {
    if (!spec.workload || typeof spec.workload !== 'object') throw invalid('workload must be an object');
    nonNegativeNumber('workload.dirtyRateBytesPerSec', spec.workload.dirtyRateBytesPerSec);
    nonNegativeInt('workload.writableWorkingSetBytes', spec.workload.writableWorkingSetBytes);
  }
}

