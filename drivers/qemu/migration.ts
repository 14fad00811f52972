// The source side of a live migration over QMP: migrate with pause-before-switchover and
// auto-converge, query-migrate polling, hold / auto-switchover (persisted in runtime.json so a
// restarted agent acts the same), forced switchover, cancel with rollback to the running source.
import { DriverError, type MigrationParams, type MigrationStats, type StartMigrationOptions } from '../hypervisor.js';
import {
  DEFAULT_DOWNTIME_MS,
  FORCE_DOWNTIME_MS,
  HOLD_WARMUP_BYTES_PER_SEC,
  HOLD_WARMUP_MS,
  IN_PROGRESS,
  QEMU_DEFAULT_BANDWIDTH,
  mapStats,
  migrationParamsFor,
  queryMigrate as query,
  staleCompleted,
  validateMigrationParams,
  type QueryMigrate,
} from './migration-model.js';
import { sleep } from './process.js';
import type { VmDeps } from './processes.js';
import { QmpCommandError, type QmpEvent } from './qmp.js';
import type { MigrationRecord } from './vm-store.js';
import type { BlockJobs } from './block-jobs.js';

export function createMigration({ cfg, store, sessions, procs }: VmDeps, blockJobs: BlockJobs) {
  const { hostId, migrationWaitMs } = cfg;
  const { readRuntime, updateRuntime, requireSpec } = store;
  const { qmp, runstate } = sessions;
  const queryMigrate = (vmId: string): Promise<QueryMigrate> => query(qmp, vmId);

  /** The MIGRATION event watcher: continue at once from pre-switchover when pre-approved. */
  async function onMigrationEvent(vmId: string, e: QmpEvent): Promise<void> {
    if (e.data?.status !== 'pre-switchover') return;
    try {
      const rec = (await readRuntime(vmId)).migration;
      if (rec?.autoSwitchover && !rec.hold) await migrateContinue(vmId);
    } catch {
      // migrationStatus() retries the same decision on its next poll
    }
  }

  /** migrate-continue, tolerating a concurrent continue (state already device/completed). */
  async function migrateContinue(vmId: string): Promise<void> {
    // copyDisks: the source is paused here; the mirrors finish in sync before the device state goes
    await blockJobs.finishForSwitchover(vmId);
    try {
      await qmp(vmId, 'migrate-continue', { state: 'pre-switchover' });
    } catch (err) {
      if (!(err instanceof QmpCommandError)) throw err;
      const s = (await queryMigrate(vmId)).status;
      if (s !== 'device' && s !== 'completed') throw err;
    }
  }

  /** Polls query-migrate until `done` says so; events are not needed for this (and survive restarts). */
  async function waitMigration(vmId: string, done: (s: string) => boolean, what: string): Promise<QueryMigrate> {
    const deadline = Date.now() + migrationWaitMs;
    for (;;) {
      const q = await queryMigrate(vmId);
      if (done(q.status ?? 'none')) return q;
      if (Date.now() >= deadline) {
        throw new DriverError(`vm "${vmId}": migration did not reach ${what} within ${migrationWaitMs} ms (status ${q.status ?? 'none'})`, 'TIMEOUT');
      }
      await sleep(20);
    }
  }

  async function startMigration(vmId: string, opts: StartMigrationOptions): Promise<void> {
    await requireSpec(vmId);
    if (!opts || typeof opts.uri !== 'string' || !/^(tcp:[A-Za-z0-9.:-]+:\d{1,5}|unix:\/[^\s,]+)$/.test(opts.uri)) {
      throw new DriverError(`uri "${opts?.uri}" is not a tcp:host:port or unix:/path migration uri`, 'INVALID_ARGUMENT', true);
    }
    if (opts.copyDisks) {
      // the disks travel by blockdev-mirror (startDiskMirror), which must be in sync first
      const disk = await blockJobs.diskMirrorStatus(vmId);
      if (disk.status !== 'ready') {
        throw new DriverError(`copyDisks: the disk mirror of vm "${vmId}" is ${disk.status}, not in sync; startDiskMirror to the destination's NBD exports first${disk.error ? ` (${disk.error})` : ''}`, 'INVALID_STATE', disk.status !== 'running');
      }
    }
    validateMigrationParams(opts);
    const rt = await readRuntime(vmId);
    const q = await queryMigrate(vmId);
    let st = q.status ?? 'none';
    const rs = await runstate(vmId);
    if (st === 'completed' && staleCompleted(rs)) st = 'none';
    if (IN_PROGRESS.has(st) || st === 'completed') {
      if (rt.migration?.uri === opts.uri) {
        if (st !== 'completed') await setMigrationParams(vmId, opts);
        return; // idempotent: the same migration is already under way (or done)
      }
      throw new DriverError(`vm "${vmId}" already has a migration ${st} to ${rt.migration?.uri ?? 'another destination'}`, 'INVALID_STATE', true);
    }
    if (rs !== 'running' && rs !== 'paused' && rs !== 'prelaunch') {
      throw new DriverError(`vm "${vmId}" cannot be migrated from runstate ${rs}`, 'INVALID_STATE', true);
    }
    const rec: MigrationRecord = {
      uri: opts.uri,
      hold: opts.hold ?? false,
      autoSwitchover: opts.autoSwitchover ?? false,
      downtimeLimitMs: opts.downtimeLimitMs ?? DEFAULT_DOWNTIME_MS,
      throttlePct: opts.throttlePct ?? 0,
      maxBandwidthBytesPerSec: opts.maxBandwidthBytesPerSec ?? QEMU_DEFAULT_BANDWIDTH,
      wasRunning: rs === 'running',
    };
    await qmp(vmId, 'migrate-set-capabilities', {
      capabilities: [
        { capability: 'events', state: true },
        { capability: 'pause-before-switchover', state: true },
        { capability: 'auto-converge', state: true },
      ],
    });
    const params = migrationParamsFor(rec, { ...opts, throttlePct: rec.throttlePct });
    if (rec.hold) params['max-bandwidth'] = HOLD_WARMUP_BYTES_PER_SEC;
    await qmp(vmId, 'migrate-set-parameters', params);
    await updateRuntime(vmId, { migration: rec });
    await sessions.get(vmId); // the connection carries the auto-switchover watcher
    await qmp(vmId, 'migrate', { uri: opts.uri });
    // connecting is asynchronous: wait until QEMU leaves setup so a refused connection is
    // reported here with its reason rather than on the next poll
    let after = await queryMigrate(vmId);
    for (const deadline = Date.now() + 2_000; after.status === 'setup' && Date.now() < deadline; ) {
      await sleep(10);
      after = await queryMigrate(vmId);
    }
    if (after.status === 'failed') {
      throw new DriverError(`migration of vm "${vmId}" to ${opts.uri} failed: ${after['error-desc'] ?? 'unknown error'}`, 'HYPERVISOR');
    }
    if (rec.hold) {
      // warm-up over (see HOLD_WARMUP_MS); a retry after a crash here restores it through the
      // idempotent path above (setMigrationParams)
      await sleep(HOLD_WARMUP_MS);
      await qmp(vmId, 'migrate-set-parameters', { 'max-bandwidth': Math.round(rec.maxBandwidthBytesPerSec) });
    }
  }

  async function migrationStatus(vmId: string): Promise<MigrationStats> {
    await requireSpec(vmId);
    if ((await procs.livePid(vmId)) === undefined) {
      return { ...mapStats({}), status: 'failed', error: `vm "${vmId}" has no QEMU process on host "${hostId}"` };
    }
    let q = await queryMigrate(vmId);
    if (q.status === 'completed' && staleCompleted(await runstate(vmId))) return mapStats({});
    // the first query that shows completed can read 0 timings: re-query shortly after
    for (let i = 0; i < 10 && q.status === 'completed' && !q['total-time']; i++) {
      await sleep(50);
      q = await queryMigrate(vmId);
    }
    if (q.status === 'pre-switchover') {
      // safety net for a watcher lost with a restarted agent
      const rec = (await readRuntime(vmId)).migration;
      if (rec?.autoSwitchover && !rec.hold) {
        await migrateContinue(vmId);
        q = await queryMigrate(vmId);
      }
    }
    const stats = mapStats(q);
    if ((await readRuntime(vmId)).mirror?.kind === 'nbd') stats.disk = await blockJobs.diskMirrorStatus(vmId);
    return stats;
  }

  async function setMigrationParams(vmId: string, params: MigrationParams): Promise<void> {
    await requireSpec(vmId);
    validateMigrationParams(params);
    const rt = await readRuntime(vmId);
    const prev: MigrationRecord = rt.migration ?? {
      uri: '',
      hold: false,
      autoSwitchover: false,
      downtimeLimitMs: DEFAULT_DOWNTIME_MS,
      throttlePct: 0,
      maxBandwidthBytesPerSec: QEMU_DEFAULT_BANDWIDTH,
      wasRunning: true,
    };
    const rec: MigrationRecord = {
      ...prev,
      hold: params.hold ?? prev.hold,
      autoSwitchover: params.autoSwitchover ?? prev.autoSwitchover,
      downtimeLimitMs: params.downtimeLimitMs ?? prev.downtimeLimitMs,
      throttlePct: params.throttlePct ?? prev.throttlePct,
      maxBandwidthBytesPerSec: params.maxBandwidthBytesPerSec ?? prev.maxBandwidthBytesPerSec,
    };
    await updateRuntime(vmId, { migration: rec });
    await qmp(vmId, 'migrate-set-parameters', migrationParamsFor(rec, params));
    if (rec.autoSwitchover && !rec.hold && (await queryMigrate(vmId)).status === 'pre-switchover') await migrateContinue(vmId);
  }

  async function continueSwitchover(vmId: string): Promise<void> {
    await requireSpec(vmId);
    const rt = await readRuntime(vmId);
    if (rt.migration) await updateRuntime(vmId, { migration: { ...rt.migration, hold: false } });
    let st = (await queryMigrate(vmId)).status ?? 'none';
    if (st === 'completed') return;
    if (!IN_PROGRESS.has(st) || st === 'cancelling') {
      throw new DriverError(`vm "${vmId}" has no migration to switch over (status ${st})`, 'INVALID_STATE', true);
    }
    if (st === 'setup' || st === 'active' || st === 'wait-unplug') {
      // forced switchover: any remainder now fits the limit, so the next pass stops the source
      await qmp(vmId, 'migrate-set-parameters', { 'downtime-limit': FORCE_DOWNTIME_MS });
      st = (await waitMigration(vmId, (s) => !['setup', 'active', 'wait-unplug'].includes(s), 'pre-switchover')).status ?? 'none';
    }
    if (st === 'pre-switchover') await migrateContinue(vmId);
    const q = await waitMigration(vmId, (s) => !IN_PROGRESS.has(s), 'completed');
    if (q.status !== 'completed') {
      throw new DriverError(`migration of vm "${vmId}" ended ${q.status}: ${q['error-desc'] ?? 'no error given'}`, 'HYPERVISOR', true);
    }
  }

  async function cancelMigration(vmId: string): Promise<void> {
    await requireSpec(vmId);
    const refuse = (): DriverError =>
      new DriverError(
        `migration of vm "${vmId}" already completed: the source on host "${hostId}" is in postmigrate and must not be resumed`,
        'INVALID_STATE',
        true,
      );
    if ((await procs.livePid(vmId)) === undefined) {
      throw new DriverError(`vm "${vmId}" has no QEMU process on host "${hostId}" to resume`, 'INVALID_STATE', true);
    }
    const rt = await readRuntime(vmId);
    let st = (await queryMigrate(vmId)).status ?? 'none';
    if (st === 'completed') throw refuse();
    if (IN_PROGRESS.has(st)) {
      await qmp(vmId, 'migrate_cancel');
      st = (await waitMigration(vmId, (s) => !IN_PROGRESS.has(s), 'cancelled')).status ?? 'none';
      if (st === 'completed') throw refuse();
    }
    const wasRunning = rt.migration?.wasRunning ?? true;
    if (rt.migration) await updateRuntime(vmId, { migration: undefined });
    const rs = await runstate(vmId);
    if (wasRunning && (rs === 'paused' || rs === 'finish-migrate' || rs === 'postmigrate')) {
      // the migration ended cancelled/failed (never completed), so the source is still primary
      await qmp(vmId, 'cont');
    }
  }

  return { onMigrationEvent, startMigration, migrationStatus, setMigrationParams, continueSwitchover, cancelMigration };
}
