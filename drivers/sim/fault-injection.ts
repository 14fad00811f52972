// Injecting and clearing faults (SimCluster.injectFault / clearFaults, inside its transaction):
// the fault row is written, and what it changes at once is applied: a destination-crash or
// link-cut ends the open migrations it hits, a dirty-rate changes their next rounds, a slow-disk
// re-times the copies in progress. Faults that wait for a call are spent by the driver.
import type { SimFaultKind, validateFaultInput } from '../../domain/faults.js';
import { rescheduleDisks } from './disks.js';
import { consume, cutMatches, insertFault, liveFaults, markFired, matches, toFault, type SimFault } from './faults.js';
import { datastoreRow, hostRow } from './lookups.js';
import { abortMigration, addSegment, evaluate, OPEN_STATUSES, openMigrations } from './migrations.js';
import type { FaultRow, Store } from './store.js';
import { notFound } from './validate.js';

/** Persists a validated fault; destination-crash and link-cut hit open migrations at once. */
export function injectFault(store: Store, f: ReturnType<typeof validateFaultInput>, nowV: number): SimFault {
  for (const k of ['hostId', 'peerHostId'] as const) {
    const h = f[k];
    if (h !== undefined && !hostRow(store, h)) throw notFound(`fault.${k}: host "${h}" is not in the simulator`);
  }
  if (f.datastoreId !== undefined && !datastoreRow(store, f.datastoreId)) {
    throw notFound(`fault.datastoreId: datastore "${f.datastoreId}" is not in the simulator`);
  }
  const row = insertFault(store, f, nowV);
  applyFaultToOpenMigrations(store, row, nowV);
  if (row.kind === 'slow-disk') rescheduleDisks(store, nowV);
  return toFault(store.get<FaultRow>('SELECT * FROM faults WHERE id = ?', row.id)!);
}

/** Removes faults (all, or by id / kind); a cleared dirty-rate restores the guest's own rate. Returns how many. */
export function clearFaults(store: Store, filter: { id?: string; kind?: SimFaultKind }, nowV: number): number {
  const rows = store
    .all<FaultRow>('SELECT * FROM faults ORDER BY seq')
    .filter((r) => (filter.id === undefined || r.id === filter.id) && (filter.kind === undefined || r.kind === filter.kind));
  for (const r of rows) {
    store.run('DELETE FROM faults WHERE id = ?', r.id);
    if (r.kind === 'dirty-rate' && r.vm_id) {
      for (const m of openMigrations(store).filter((x) => x.vm_id === r.vm_id)) {
        const other = liveFaults(store, 'dirty-rate').find((x) => x.vm_id === r.vm_id);
        addSegment(store, m.id, nowV, { dirtyRateBytesPerSec: other?.value ?? m.dirty_rate });
      }
    }
  }
  if (rows.some((r) => r.kind === 'slow-disk')) rescheduleDisks(store, nowV);
  return rows.length;
}

function applyFaultToOpenMigrations(store: Store, f: FaultRow, nowV: number): void {
  for (const m of openMigrations(store)) {
    if (!matches(f.vm_id, m.vm_id)) continue;
    const status = evaluate(store, m, nowV).status;
    if (!OPEN_STATUSES.has(status)) continue;
    if (f.kind === 'destination-crash' && f.host_id === m.target_host) {
      abortMigration(store, m, nowV, 'failed', 'destination crashed');
      consume(store, f, nowV);
    } else if (f.kind === 'link-cut' && cutMatches(f, m.source_host, m.target_host)) {
      abortMigration(store, m, nowV, 'failed', `link down between ${m.source_host} and ${m.target_host}`);
      markFired(store, f.id, nowV);
    } else if (f.kind === 'dirty-rate' && f.vm_id === m.vm_id && status === 'active') {
      addSegment(store, m.id, nowV, { dirtyRateBytesPerSec: f.value ?? 0 });
      markFired(store, f.id, nowV);
    }
    const left = store.get<FaultRow>('SELECT * FROM faults WHERE id = ?', f.id);
    if (!left || left.remaining === 0) return;
  }
}
