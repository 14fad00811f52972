// Fault injection: persisted rows in the state file, so the API process (POST /v1/sim/faults)
// can inject into a cluster whose host agents run in another process. A fault "fires" when it
// takes effect; firedAtV/firedCount record it so tests and chaos runs can assert it did.
import { DriverError } from '../hypervisor.js';
import type { FaultRow, Store } from './store.js';

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

export interface SimFault {
  id: string;
  kind: SimFaultKind;
  hostId?: string;
  peerHostId?: string;
  datastoreId?: string;
  vmId?: string;
  stage?: number;
  step?: string;
  count: number;
  /** firings left (-1 = unlimited, 0 = spent) */
  remaining: number;
  value?: number;
  createdAtV: number;
  firedAtV?: number;
  firedCount: number;
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

export function toFault(r: FaultRow): SimFault {
  const out: SimFault = {
    id: r.id,
    kind: r.kind as SimFaultKind,
    count: r.count,
    remaining: r.remaining,
    createdAtV: r.created_v,
    firedCount: r.fired_count,
  };
  if (r.host_id !== null) out.hostId = r.host_id;
  if (r.peer_host_id !== null) out.peerHostId = r.peer_host_id;
  if (r.datastore_id !== null) out.datastoreId = r.datastore_id;
  if (r.vm_id !== null) out.vmId = r.vm_id;
  if (r.stage !== null) out.stage = r.stage;
  if (r.step !== null) out.step = r.step;
  if (r.value !== null) out.value = r.value;
  if (r.fired_at_v !== null) out.firedAtV = r.fired_at_v;
  return out;
}

export function insertFault(store: Store, f: ReturnType<typeof validateFaultInput>, nowV: number): FaultRow {
  return store.tx(() => {
    if (f.id !== undefined) store.run('DELETE FROM faults WHERE id = ?', f.id);
    const tmp = f.id ?? `pending-${process.pid}-${Math.random().toString(36).slice(2)}`;
    store.run(
      `INSERT INTO faults (id, kind, host_id, peer_host_id, datastore_id, vm_id, stage, step, count, remaining, value, created_v)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      tmp,
      f.kind,
      f.hostId ?? null,
      f.peerHostId ?? null,
      f.datastoreId ?? null,
      f.vmId ?? null,
      f.stage ?? null,
      f.step ?? null,
      f.count,
      f.count,
      f.value ?? null,
      nowV,
    );
    const row = store.get<FaultRow>('SELECT * FROM faults WHERE id = ?', tmp)!;
    if (f.id === undefined) {
      store.run('UPDATE faults SET id = ? WHERE seq = ?', `fault-${row.seq}`, row.seq);
      row.id = `fault-${row.seq}`;
    }
    return row;
  });
}

/** Unspent faults of one kind, oldest first. */
export function liveFaults(store: Store, kind: SimFaultKind): FaultRow[] {
  return store.all<FaultRow>('SELECT * FROM faults WHERE kind = ? AND remaining != 0 ORDER BY seq', kind);
}

/** Records that a fault took effect at virtual time atV. */
export function markFired(store: Store, id: string, atV: number): void {
  store.run(
    'UPDATE faults SET fired_count = fired_count + 1, fired_at_v = COALESCE(fired_at_v, ?) WHERE id = ?',
    atV,
    id,
  );
}

/** Spends one firing (counted faults) and records it; returns the fault. */
export function consume(store: Store, row: FaultRow, atV: number, markNow = true): FaultRow {
  if (row.remaining > 0) store.run('UPDATE faults SET remaining = remaining - 1 WHERE id = ?', row.id);
  if (markNow) markFired(store, row.id, atV);
  return row;
}

/** A fault filter that is absent matches everything. */
export function matches(filter: string | null, value: string | undefined): boolean {
  return filter === null || filter === value;
}
