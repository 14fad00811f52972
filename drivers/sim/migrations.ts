// Migration rows and their timelines: a row plus its parameter segments is a model.ts input, and
// settle() writes into the vm rows what every open timeline says happened up to now (source
// paused, postmigrate, destination holding the guest, rollback). SimCluster.tx settles before
// every call, so the persisted rows plus virtual now are the whole truth, whichever process looks.
import type { VmSpec } from '../hypervisor.js';
import { materializeDiskCopies, type DiskCopyPlan } from './disks.js';
import { markFired } from './faults.js';
import { setVmState, vmRow } from './lookups.js';
import { evaluateMigration, type MigrationModelInput, type MigrationView, type SegmentParams } from './model.js';
import type { MigrationParamRow, MigrationRow, Store } from './store.js';

/** Statuses of a migration that has not ended (the guest may still move). */
export const OPEN_STATUSES = new Set(['active', 'pre-switchover', 'device']);

export function openMigrations(store: Store): MigrationRow[] {
  return store.all<MigrationRow>('SELECT * FROM migrations WHERE finalized = 0 ORDER BY id');
}

/** The open migration of vmId whose source is hostId. */
export function openMigrationFrom(store: Store, vmId: string, hostId: string): MigrationRow | undefined {
  return openMigrations(store).find((m) => m.vm_id === vmId && m.source_host === hostId);
}

/** The newest migration of vmId whose source (or, failing that, target) is hostId. */
export function latestMigration(store: Store, vmId: string, hostId: string): MigrationRow | undefined {
  return (
    store.get<MigrationRow>('SELECT * FROM migrations WHERE vm_id = ? AND source_host = ? ORDER BY id DESC LIMIT 1', vmId, hostId) ??
    store.get<MigrationRow>('SELECT * FROM migrations WHERE vm_id = ? AND target_host = ? ORDER BY id DESC LIMIT 1', vmId, hostId)
  );
}

export function modelInput(store: Store, m: MigrationRow): MigrationModelInput {
  const segs = store.all<MigrationParamRow>('SELECT * FROM migration_params WHERE migration_id = ? ORDER BY id', m.id);
  return {
    startV: m.start_v,
    memoryBytes: m.memory_bytes,
    linkBandwidthBytesPerSec: m.link_bw,
    dirtyRateBytesPerSec: m.dirty_rate,
    writableWorkingSetBytes: m.wws,
    deviceStateBytes: m.device_bytes,
    diskBytes: m.disk_bytes,
    segments: segs.map((s) => ({ atV: s.at_v, params: JSON.parse(s.params) as SegmentParams })),
    continueAtV: m.continue_at_v,
    abort:
      m.abort_at_v === null ? null : { atV: m.abort_at_v, status: m.abort_status === 'cancelled' ? 'cancelled' : 'failed', error: m.abort_error ?? 'aborted' },
    failAfterRound1: m.fail_round1,
    failAtPause: m.fail_pause,
    failAtContinue: m.fail_continue,
  };
}

/** The migration at nowV (a finalized one is what it was when it ended). */
export function evaluate(store: Store, m: MigrationRow, nowV: number): MigrationView {
  if (m.finalized && m.final_json) return JSON.parse(m.final_json) as MigrationView;
  return evaluateMigration(modelInput(store, m), nowV);
}

export function addSegment(store: Store, migrationId: number, atV: number, params: SegmentParams): void {
  store.run('INSERT INTO migration_params (migration_id, at_v, params) VALUES (?, ?, ?)', migrationId, atV, JSON.stringify(params));
}

/** Records an external terminal event (cancel, crash, link cut) at nowV and settles it. */
export function abortMigration(store: Store, m: MigrationRow, nowV: number, status: 'failed' | 'cancelled', error: string): void {
  store.run(
    'UPDATE migrations SET abort_at_v = ?, abort_status = ?, abort_error = ? WHERE id = ? AND abort_at_v IS NULL AND finalized = 0',
    nowV,
    status,
    error,
    m.id,
  );
  settle(store, nowV);
}

/** Writes into the vm rows what every open migration's timeline says happened by nowV. */
export function settle(store: Store, nowV: number): void {
  for (const m of openMigrations(store)) {
    const v = evaluate(store, m, nowV);
    const src = vmRow(store, m.source_host, m.vm_id);
    const dst = vmRow(store, m.target_host, m.vm_id);
    if (v.status === 'pre-switchover' || v.status === 'device') {
      if (src && src.state === 'running') setVmState(store, m.source_host, m.vm_id, 'paused', nowV);
      continue;
    }
    if (v.status === 'active') continue;
    if (v.status === 'completed') {
      if (src) setVmState(store, m.source_host, m.vm_id, 'postmigrate', nowV);
      if (dst) {
        let spec = JSON.parse(dst.spec) as VmSpec;
        const plan = JSON.parse(m.disk_plan) as DiskCopyPlan[];
        if (plan.length > 0) spec = materializeDiskCopies(store, plan, spec, nowV);
        store.run(
          'UPDATE vms SET state = ?, generation = ?, spec = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?',
          'paused',
          src?.generation ?? dst.generation,
          JSON.stringify(spec),
          nowV,
          m.target_host,
          m.vm_id,
        );
      }
    } else {
      // failed / cancelled: A is primary; resume it if it ran before; B's container exits
      if (src && (src.state === 'paused' || src.state === 'postmigrate') && m.source_prev_state === 'running') {
        setVmState(store, m.source_host, m.vm_id, 'running', nowV);
      }
      if (dst && dst.state === 'incoming') store.run('DELETE FROM vms WHERE host_id = ? AND vm_id = ?', m.target_host, m.vm_id);
      const bound = JSON.parse(m.bound_faults) as Partial<Record<'round1' | 'pause' | 'continue', string>>;
      const id = v.cause && v.cause !== 'abort' ? bound[v.cause] : undefined;
      if (id) markFired(store, id, v.endedAtV ?? nowV);
    }
    store.run('UPDATE migrations SET finalized = 1, final_json = ? WHERE id = ?', JSON.stringify(v), m.id);
  }
}
