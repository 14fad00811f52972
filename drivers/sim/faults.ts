// Fault injection: persisted rows in the state file, so the API process (POST /v1/sim/faults)
// can inject into a cluster whose host agents run in another process. A fault "fires" when it
// takes effect; firedAtV/firedCount record it so tests and chaos runs can assert it did.
import type { SimFaultInput, SimFaultKind, validateFaultInput } from '../../domain/faults.js';
import type { FaultRow, Store } from './store.js';

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
