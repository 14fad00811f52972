// Fault rows: persisted in the state file, so the API process (POST /v1/sim/faults) can inject
// into a cluster whose host agents run in another process. A fault "fires" when it takes effect;
// firedAtV/firedCount record it so tests and chaos runs can assert it did. Here: the rows, and
// which live fault a call, a migration stage, a link or a disk copy meets (injecting and clearing,
// with their immediate effects, are in fault-injection.ts).
import { DriverError } from '../hypervisor.js';
import type { SimFaultInput, SimFaultKind, validateFaultInput } from '../../domain/faults.js';
import { commitThenThrow, type FaultRow, type Store } from './store.js';

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

/** Does a link-cut fault cut the link a <-> b (no peer: every link of its host)? */
export function cutMatches(f: FaultRow, a: string, b: string): boolean {
  if (f.peer_host_id === null) return f.host_id === a || f.host_id === b;
  return (f.host_id === a && f.peer_host_id === b) || (f.host_id === b && f.peer_host_id === a);
}

/** The live link-cut fault on a <-> b, if any (not recorded as fired). */
export function linkCut(store: Store, a: string, b: string): FaultRow | undefined {
  return liveFaults(store, 'link-cut').find((f) => cutMatches(f, a, b));
}

/**
 * The first live fail-step fault for `step` on this host/vm is spent and recorded, then
 * FAULT_INJECTED is thrown (as CommitThenThrow, so the spending is kept). A disk name matches a
 * vm filter when it is `<vmId>` or starts with `<vmId>-`.
 */
export function spendStepFault(store: Store, step: string, hostId: string, vmId: string | undefined, nowV: number, diskName?: string): void {
  const f = liveFaults(store, 'fail-step').find(
    (r) =>
      r.step === step &&
      matches(r.host_id, hostId) &&
      (r.vm_id === null || r.vm_id === vmId || (diskName !== undefined && (diskName === r.vm_id || diskName.startsWith(`${r.vm_id}-`)))),
  );
  if (f) {
    consume(store, f, nowV);
    commitThenThrow(new DriverError(`injected fault ${f.id}: ${step} failed on host ${hostId}${vmId ? ` (vm ${vmId})` : ''}`, 'FAULT_INJECTED'));
  }
}

/** Live fail-stage / destination-crash fault for a migration stage, filtered by host and vm (not spent). */
export function findStageFault(store: Store, kind: 'fail-stage' | 'destination-crash', stage: number, hosts: string[], vmId: string): FaultRow | undefined {
  return liveFaults(store, kind).find(
    (r) =>
      (r.stage ?? (kind === 'destination-crash' ? 2 : -1)) === stage &&
      (r.host_id === null || hosts.includes(r.host_id)) &&
      matches(r.vm_id, vmId),
  );
}

/** Throughput divisor from slow-disk faults on these datastores or this host (1 = none); records firing. */
export function slowFactor(store: Store, datastoreIds: string[], hostId: string | null, nowV: number): number {
  let factor = 1;
  for (const f of liveFaults(store, 'slow-disk')) {
    const hit = (f.datastore_id !== null && datastoreIds.includes(f.datastore_id)) || (f.datastore_id === null && f.host_id === hostId);
    if (!hit) continue;
    factor = Math.max(factor, f.value ?? 10);
    consume(store, f, nowV);
  }
  return factor;
}

/** Every fault row, oldest first. */
export function listFaults(store: Store): SimFault[] {
  return store.all<FaultRow>('SELECT * FROM faults ORDER BY seq').map(toFault);
}
