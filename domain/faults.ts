// The simulator's fault table (kinds, the steps a fail-step fault can name) and the validation of
// a fault request. Pure: the API refuses a bad fault with 400 from this table, and the simulator
// applies only what passed it.
import { DriverError } from './hypervisor.js';

export const FAULT_KINDS = ['fail-step', 'fail-stage', 'destination-crash', 'link-cut', 'dirty-rate', 'slow-disk'] as const;
export type SimFaultKind = (typeof FAULT_KINDS)[number];

/** Steps a `fail-step` fault can name: driver methods, and control-worker steps that consult the simulator. */
export const FAULT_STEPS = [
  'hostInfo',
  'createDisk',
  'deleteDisk',
  'diskInfo',
  'writeSeed',
  'copyDisk',
  'defineVm',
  'startVm',
  'stopVm',
  'rebootVm',
  'pauseVm',
  'resumeVm',
  'destroyVm',
  'vmStatus',
  'listVms',
  'prepareIncoming',
  'activateIncoming',
  'startMigration',
  'migrationStatus',
  'setMigrationParams',
  'continueSwitchover',
  'cancelMigration',
  'startDiskMirror',
  'diskMirrorStatus',
  'completeDiskMirror',
  'cancelDiskMirror',
  // control-worker steps (database only), checked through Simulator.checkStepFault by a hook
  'reserveCapacity',
  'allocateIp',
  'reserveMigrationTarget',
  'commitMigration',
] as const;
export type SimFaultStep = (typeof FAULT_STEPS)[number];

export interface SimFaultInput {
  /** stable id (re-injecting the same id replaces the fault); generated when absent */
  id?: string;
  kind: SimFaultKind;
  /** fail-step/fail-stage: only calls on this host; destination-crash: the destination; link-cut: one end; slow-disk: the host's datastores */
  hostId?: string;
  /** link-cut: the other end (absent = every link of hostId) */
  peerHostId?: string;
  /** slow-disk: one datastore instead of a host's */
  datastoreId?: string;
  vmId?: string;
  /** fail-stage: 1, 2, 3 or 5; destination-crash: when it fires if no migration is active (1, 2, 3 or 5; default 2) */
  stage?: number;
  /** fail-step: the driver method */
  step?: string;
  /** times it fires (default 1; -1 = until cleared). link-cut, dirty-rate and slow-disk last until cleared */
  count?: number;
  /** dirty-rate: bytes/s; slow-disk: throughput divisor (default 10) */
  value?: number;
}

const bad = (msg: string) => new DriverError(msg, 'INVALID_ARGUMENT', true);

export function validateFaultInput(f: SimFaultInput): Required<Pick<SimFaultInput, 'kind'>> & SimFaultInput & { count: number } {
  if (!f || typeof f !== 'object') throw bad('fault must be an object');
  if (!FAULT_KINDS.includes(f.kind)) throw bad(`fault.kind must be one of ${FAULT_KINDS.join(', ')}, got ${JSON.stringify(f.kind)}`);
  for (const k of ['id', 'hostId', 'peerHostId', 'datastoreId', 'vmId', 'step'] as const) {
    const v = f[k];
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw bad(`fault.${k} must be a non-empty string`);
  }
  const persistent = f.kind === 'link-cut' || f.kind === 'dirty-rate' || f.kind === 'slow-disk';
  const count = f.count ?? (persistent ? -1 : 1);
  if (!Number.isInteger(count) || (count < 1 && count !== -1)) throw bad(`fault.count must be a positive integer or -1 (forever), got ${f.count}`);
  if (f.stage !== undefined && !(Number.isInteger(f.stage) && f.stage >= 1 && f.stage <= 5)) {
    throw bad(`fault.stage must be an integer 1..5, got ${f.stage}`);
  }
  switch (f.kind) {
    case 'fail-step':
      if (!f.step || !(FAULT_STEPS as readonly string[]).includes(f.step)) {
        throw bad(`fault.step must name a driver method (${FAULT_STEPS.join(', ')}), got ${JSON.stringify(f.step)}`);
      }
      break;
    case 'fail-stage':
      if (f.stage === undefined) throw bad('fault.stage is required for fail-stage (1, 2, 3 or 5)');
      if (f.stage === 4) throw bad('fault.stage 4 (commit) is a database step outside the driver; use 1, 2, 3 or 5');
      break;
    case 'destination-crash':
      if (!f.hostId) throw bad('fault.hostId (the destination host) is required for destination-crash');
      if (f.stage === 4) throw bad('fault.stage 4 (commit) is a database step outside the driver; use 1, 2, 3 or 5');
      break;
    case 'link-cut':
      if (!f.hostId) throw bad('fault.hostId is required for link-cut');
      break;
    case 'dirty-rate':
      if (!f.vmId) throw bad('fault.vmId is required for dirty-rate');
      if (!(typeof f.value === 'number' && Number.isFinite(f.value) && f.value >= 0)) {
        throw bad(`fault.value (dirty rate, bytes/s) must be a non-negative number, got ${f.value}`);
      }
      break;
    case 'slow-disk':
      if (!f.hostId && !f.datastoreId) throw bad('fault.hostId or fault.datastoreId is required for slow-disk');
      if (f.value !== undefined && !(Number.isFinite(f.value) && f.value >= 1)) {
        throw bad(`fault.value (slow-disk throughput divisor) must be a number >= 1, got ${f.value}`);
      }
      break;
  }
  return { ...f, count };
}
