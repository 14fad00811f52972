// StorageMigrate: live storage migration ("Storage vMotion", ARCHITECTURE.md section 3). A
// running VM's disks and home move to another datastore of the SAME host; the guest pauses only
// for the pivot. Id `migrate-<vmId>` (one migration per VM, whatever its kind).
//   0 pre-migration  checks (datastore known, reachable from the VM's host, room); nothing to undo
//   1 reservation    the disk's space on the target datastore
//   2 mirror         mirror every disk with dirty tracking until in sync (progress: bytes, dirty
//                    bytes, in-sync flag, ETA); cancellable
//   3 pivot          the VM switches onto the copies (qemu block-job-complete): the point of no
//                    return; before it any failure or cancel cancels the mirror, deletes the
//                    partial copies and leaves the VM on its source disks
//   4 commitment     ONE transaction: datastore, disk paths, seed and allocation move
//   5 cleanup        the old files are deleted
//
// Patch 'storage-fewer-tasks' (same guarantees, fewer round trips, as ColdMigrate's
// 'cold-fewer-tasks'): the control steps are local activities, several per call (the record, the
// plan and the hosts on it; the reservation and the next stage; the commit and its stages); the
// mirror's start also watches its first window; stages that take no time leave their row write to
// the next. Histories from before the patch replay the old path.
import { ApplicationFailure, CancellationScope, isCancellation, patched, proxyActivities, proxyLocalActivities, setHandler, sleep, upsertSearchAttributes } from '@temporalio/workflow';
import type { StorageControlActivities } from '../activities/storage-control.js';
import { describeFailure, failureType } from '../domain/failures.js';
import { SA, STORAGE_STAGES, cancelMigrationSignal, migrationProgressQuery, type MigrationProgress, type MigrationResult, type StorageMigrateInput, type StorageStage } from './definitions.js';
import { workflowContext } from './context.js';
import { MIRROR_WATCH_WINDOW_MS, mirrorUntilInSync } from './disk-mirror.js';
import { Saga } from './lib/saga.js';
import { sinceEpoch } from './lib/patches.js';
import { activationProfile, compensationProfile, dbLocalProfile, dbProfile, hostQuickProfile, watchProfile } from './profiles.js';

class Rollback extends Error {
  constructor(
    message: string,
    readonly cancelled = false,
  ) {
    super(message);
  }
}

export async function storageMigrate(input: StorageMigrateInput): Promise<MigrationResult> {
  // asked before the first command, once; the epoch too, in this first task (see coldMigrate:
  // asked first right after a local activity's result, SDK 1.24 can replay a patch as absent)
  const fewerTasks = patched('storage-fewer-tasks');
  if (fewerTasks) sinceEpoch();
  const { info, ctl: ctlRemote, ctlLocal, ctlComp, writeAudit, onHost } = workflowContext();
  const ctl = fewerTasks ? ctlLocal('storage-fewer-tasks') : ctlRemote;
  const st = fewerTasks ? proxyLocalActivities<StorageControlActivities>(dbLocalProfile) : proxyActivities<StorageControlActivities>(dbProfile);
  const operationId = info.runId;
  const startedAt = Date.now();
  const progress: MigrationProgress = {
    migrationId: info.workflowId,
    vmId: input.vmId,
    kind: 'storage',
    state: 'running',
    stage: 'pre-migration',
    stageIndex: 0,
    sourceHostId: '',
    targetDatastoreId: input.targetDatastoreId,
    policy: 'storage',
    awaitingApproval: false,
    progress: { round: 0, transferredBytes: 0, remainingBytes: 0, totalBytes: 0, dirtyRateBytesPerSec: 0, transferRateBytesPerSec: 0, expectedDowntimeMs: 0, percent: 0, verdict: 'unknown', downtimeLimitMs: 0, throttlePct: 0 },
    decisions: [],
    stageTimingsMs: {},
    compensations: [],
  };
  let cancelReason: string | undefined;
  let pivoted = false;
  setHandler(migrationProgressQuery, () => progress);
  setHandler(cancelMigrationSignal, ({ reason } = {}) => {
    if (!pivoted) cancelReason = reason || 'cancelled by operator';
  });
  const checkCancel = () => {
    if (cancelReason) throw new Rollback(cancelReason, true);
  };

  let stageStarted = Date.now();
  /** `record: false` (patched path only): the row write is left to the call that follows */
  async function enterStage(stage: StorageStage, opts: { record?: boolean } = {}) {
    progress.stageTimingsMs[progress.stage] = (progress.stageTimingsMs[progress.stage] ?? 0) + (Date.now() - stageStarted);
    stageStarted = Date.now();
    progress.stage = stage;
    progress.stageIndex = STORAGE_STAGES.indexOf(stage);
    upsertSearchAttributes([{ key: SA.Stage, value: `${progress.stageIndex}-${stage}` }]);
    if (fewerTasks && opts.record === false) return;
    await writeAudit({ id: operationId, stage, details: { stageTimingsMs: progress.stageTimingsMs } });
  }
  const stageRow = (name: StorageStage) => ({ name, stageTimingsMs: { ...progress.stageTimingsMs } });

  upsertSearchAttributes([
    { key: SA.VmId, value: input.vmId },
    { key: SA.MigrationKind, value: 'storage' },
  ]);
  const operation = { id: operationId, workflowId: info.workflowId, runId: info.runId, vmId: input.vmId, details: { targetDatastoreId: input.targetDatastoreId }, ...(input.principal ? { principal: input.principal } : {}) };
  if (!fewerTasks) await ctl.beginOperation({ ...operation, kind: 'migration', subkind: 'storage' });
  const saga = new Saga({ maxAttempts: 3, pauseBetweenAttempts: (a) => sleep(a * 1000) });
  let hostId = '';
  let oldFiles: string[] = [];
  let result: { diskPaths: string[]; seedPath?: string; pivotMs: number } | undefined;
  try {
    await enterStage('pre-migration', { record: false });
    const planInput = { vmId: input.vmId, targetDatastoreId: input.targetDatastoreId, operationId };
    // patched: the record (in this stage), the plan and the hosts on the record, one call
    const plan = fewerTasks ? await st.beginStorageMigration({ operation, plan: planInput }) : await st.planStorageMigration(planInput);
    hostId = plan.hostId;
    progress.sourceHostId = progress.targetHostId = hostId;
    upsertSearchAttributes([
      { key: SA.SourceHost, value: hostId },
      { key: SA.TargetHost, value: hostId },
    ]);
    if (!fewerTasks) await ctl.updateOperation({ id: operationId, sourceHostId: hostId, targetHostId: hostId, details: { sourceDatastoreId: plan.sourceDatastoreId } });
    const A = onHost(hostId, hostQuickProfile);
    const AComp = onHost(hostId, compensationProfile);
    const vm = await A.vmStatus({ vmId: input.vmId });
    if (vm?.state !== 'running') throw ApplicationFailure.create({ type: 'Refused', message: `VM ${input.vmId} is ${vm?.state ?? 'not present'} on ${hostId}, not running`, nonRetryable: true });
    oldFiles = [...vm.spec.disks, ...(vm.spec.seedPath ? [vm.spec.seedPath] : [])];

    await enterStage('reservation', { record: false });
    saga.add('restore-inventory', () => ctlComp.restoreVmAfterRollback({ vmId: input.vmId, hostId }));
    saga.add('release-reservation', () => ctlComp.releaseReservation({ operationId }));
    const reservation = { operationId, vmId: input.vmId, hostId, datastoreId: input.targetDatastoreId };
    // patched: the record goes straight to `mirror` (the reservation takes no time of its own)
    if (fewerTasks) await st.reserveStorageTarget({ ...reservation, next: stageRow('mirror') });
    else await st.reserveStorageTarget(reservation);
    checkCancel();

    await enterStage('mirror', { record: false });
    // registered before the mirror starts: cancels it and deletes the partial copies; the VM
    // stays on its source disks (a no-op once pivoted)
    saga.add('cancel-mirror-delete-copies', () => AComp.cancelDiskMirror({ vmId: input.vmId }));
    const speed = input.maxBandwidthBytesPerSec ? { speedBytesPerSec: input.maxBandwidthBytesPerSec } : {};
    const target = { kind: 'datastore' as const, datastoreId: input.targetDatastoreId, ...speed };
    // patched: the start watches the first window (heartbeating: the watch profile) and returns its sample
    const first = fewerTasks
      ? await onHost(hostId, watchProfile).startDiskMirror({ vmId: input.vmId, target, watchWindowMs: MIRROR_WATCH_WINDOW_MS })
      : void (await A.startDiskMirror({ vmId: input.vmId, target }));
    await mirrorUntilInSync({
      ...(first ? { first } : {}),
      watch: (i) => onHost(hostId, watchProfile).watchDiskMirror(i),
      vmId: input.vmId,
      checkCancel,
      maxMs: input.maxMirrorMs ?? 6 * 3600_000,
      onProgress: (p) => {
        progress.disks = p;
        Object.assign(progress.progress, { transferredBytes: p.copiedBytes, totalBytes: p.totalBytes, remainingBytes: p.dirtyBytes, transferRateBytesPerSec: p.transferRateBytesPerSec ?? 0, dirtyRateBytesPerSec: p.writeRateBytesPerSec ?? 0 });
        progress.progress.percent = p.totalBytes > 0 ? Math.min(100, Math.floor((100 * p.copiedBytes) / p.totalBytes)) : 0;
        progress.progress.etaSeconds = p.etaSeconds;
        progress.progress.verdict = p.inSync ? 'converging' : 'unknown';
      },
    });
    checkCancel();

    await enterStage('pivot', { record: false });
    const done = await A.completeDiskMirror({ vmId: input.vmId });
    pivoted = true;
    result = { diskPaths: done.diskPaths ?? [], ...(done.seedPath ? { seedPath: done.seedPath } : {}), pivotMs: done.pivotMs ?? 0 };
    progress.disks = { ...(progress.disks ?? { copiedBytes: done.copiedBytes, totalBytes: done.totalBytes }), dirtyBytes: 0, inSync: true, pivotMs: result.pivotMs, etaSeconds: 0 };
  } catch (err) {
    if (!pivoted) return rollBack(err);
    // the VM runs on the copies: only forward from here
  }

  return CancellationScope.nonCancellable(async () => {
    const r = result!;
    await enterStage('commitment', { record: false });
    const commit = { operationId, vmId: input.vmId, datastoreId: input.targetDatastoreId, diskPaths: r.diskPaths, seedPath: r.seedPath ?? null };
    // patched: the commit records `commitment`, then `cleanup` once committed
    if (fewerTasks) await st.commitStorageMigration({ ...commit, stage: { ...stageRow('commitment'), after: 'cleanup' } });
    else await st.commitStorageMigration(commit);
    await enterStage('cleanup', { record: false });
    const keep = new Set([...r.diskPaths, ...(r.seedPath ? [r.seedPath] : [])]);
    const stale = oldFiles.filter((f) => !keep.has(f));
    if (stale.length) await onHost(hostId, activationProfile).deleteDisks({ paths: stale });
    progress.stageTimingsMs.cleanup = Date.now() - stageStarted;
    progress.state = 'completed';
    progress.stage = 'done';
    progress.progress.percent = 100;
    progress.downtimeMs = r.pivotMs;
    progress.durationMs = Date.now() - startedAt;
    upsertSearchAttributes([{ key: SA.Stage, value: 'done' }]);
    await ctl.finishOperation({ id: operationId, state: 'completed', details: { stageTimingsMs: progress.stageTimingsMs, downtimeMs: r.pivotMs, durationMs: progress.durationMs, progress: progress.progress, disks: progress.disks, diskPaths: r.diskPaths, deletedFiles: stale } });
    return { state: 'completed', vmId: input.vmId, sourceHostId: hostId, targetHostId: hostId, downtimeMs: r.pivotMs, transferredBytes: progress.disks?.copiedBytes } satisfies MigrationResult;
  });

  async function rollBack(err: unknown): Promise<never> {
    const cancelled = (err instanceof Rollback && err.cancelled) || isCancellation(err);
    const reason = err instanceof Rollback ? err.message : cancelled ? (cancelReason ?? 'workflow cancelled') : describeFailure(err);
    const refused = progress.stageIndex === 0 && ['Refused', 'NotFound', 'InvalidArgument', 'Capacity'].includes(failureType(err) ?? '');
    progress.error = reason;
    const failedStage = progress.stage;
    progress.stage = 'rollback';
    progress.compensations = await saga.compensate((fn) => CancellationScope.nonCancellable(fn));
    const state = cancelled ? 'cancelled' : refused ? 'failed' : 'rolled-back';
    progress.state = state;
    progress.durationMs = Date.now() - startedAt;
    upsertSearchAttributes([{ key: SA.Stage, value: state }]);
    await CancellationScope.nonCancellable(() =>
      ctlComp.finishOperation({ id: operationId, state, error: reason, details: { failedStage, compensations: progress.compensations, stageTimingsMs: progress.stageTimingsMs, durationMs: progress.durationMs, progress: progress.progress, disks: progress.disks } }),
    );
    throw ApplicationFailure.create({
      type: state === 'failed' ? (failureType(err) ?? 'Refused') : state === 'cancelled' ? 'MigrationCancelled' : 'MigrationRolledBack',
      message: state === 'failed' ? reason : `storage migration of ${input.vmId} ${state} at ${failedStage}: ${reason}`,
      nonRetryable: true,
      details: [{ state, failedStage, compensations: progress.compensations }],
    });
  }
}
