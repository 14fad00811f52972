// ColdMigrate (ARCHITECTURE.md section 3 "Cold"), id `migrate-<vmId>` like LiveMigrate (one
// migration per VM):
//   pre-migration  capacity and target datastore space (no CPU or shared-storage check)
//   reservation    CPU/memory on B, and the disk's space on B's datastore when the files move
//   stop           graceful shutdown, forced only if the request allows it
//   copy           B pulls A's home (config, NVRAM, logs, disks) in windows of a few seconds;
//                  each window is an activity that heartbeats a checkpoint, and a retry after the
//                  agent died resumes from it (progress lands in this workflow between windows)
//   verify         size and sha256 of every file on both sides
//   register       defined on B (not started: the commit is the fence)
//   commitment     ONE transaction moves the VM's home (readCommit after an unknown outcome)
//   cleanup/start  delete from A, start on B if it ran and `start` allows; forward only
// Before the commit any failure or cancel runs the saga: discard B's copy, restart A if it ran,
// release the reservation, restore inventory.
//
// Patch 'cold-fewer-tasks' (same guarantees, fewer round trips): the control steps (begin, plan,
// operation updates, slots, reservation, backing decision, commit and its read-back, the final
// record, finish) are local activities; the source is stopped and listed in ONE host task, without
// a hashing pass (the target hashes the source while copying it and reads every chunk back, so
// verification compares both sha256 without reading anything twice); the copy window that
// completes also registers the VM on B once every file verified; after the commit the source's
// clean-up and the start on B run at once. Histories from before the patch replay the old path.
import { ApplicationFailure, CancellationScope, condition, isCancellation, patched, proxyActivities, proxyLocalActivities, setCurrentDetails, setHandler, sleep, upsertSearchAttributes } from '@temporalio/workflow';
import type { ColdControlActivities } from '../activities/cold-control.js';
import type { ColdHostActivities } from '../activities/cold.js';
import type { HostActivities } from '../activities/host.js';
import { coldCopyMismatches, copySizeOf, sourceSha256Of, type ColdCopyCheckpoint, type ColdCopyResult, type VmHomeManifest } from '../domain/cold.js';
import { describeFailure, failureType } from '../domain/failures.js';
import { summarized, workflowContext } from './context.js';
import { activitySummary } from '../domain/summaries.js';
import { coldDetails } from './lib/current-details.js';
import { COLD_STAGES, SA, cancelMigrationSignal, coldProgressQuery, hostQueue, prefixOfControlQueue, type ColdMigrateInput, type ColdMigrationProgress, type ColdStage, type MigrationResult } from './definitions.js';
import { activationProfile, bootProfile, coldCopyProfile, compensationProfile, dbLocalProfile, dbProfile, hostQuickProfile } from './profiles.js';
import { Saga } from './lib/saga.js';
import { sinceEpoch } from './lib/patches.js';

/** How long one copy window runs before the workflow updates its progress. */
const COPY_WINDOW_MS = 3000;
const QUEUE_POLL = '1 second';

class Rollback extends Error {
  constructor(message: string, readonly cancelled = false) {
    super(message);
  }
}

export async function coldMigrate(input: ColdMigrateInput): Promise<MigrationResult> {
  // every activity names its stage (and host) in the Web UI: `stage 3 copy on qb: copy vm home`.
  // Summaries travel in the command's user metadata and current details are workflow state:
  // neither adds a command, so histories from before replay unchanged.
  const label = (where: string, type: string) => activitySummary(progress.stage === 'rollback' ? 'rollback' : `stage ${progress.stageIndex} ${progress.stage}`, where, type);
  // asked before the first command, once: every step below follows the same answer
  const fewerTasks = patched('cold-fewer-tasks');
  // The patched path also asks the patch epoch here, in the first workflow task, instead of at its
  // first stage write (writeAudit asks it). Asked first right after a local activity's result, a
  // patch can replay as absent: when the activity's completion closed its workflow task (seen
  // under load: the marker lands in one task, the code after it in the next), the replay delivers
  // the result while still in the earlier task and the SDK (1.24) has not yet seen the later
  // task's patch marker — a nondeterminism error on replay (found replaying a cancelled run).
  if (fewerTasks) sinceEpoch();
  const { info, ctl: ctlRemote, ctlLocal, ctlComp, writeAudit } = workflowContext(label);
  const ctl = fewerTasks ? ctlLocal('cold-fewer-tasks') : ctlRemote;
  const operationId = info.runId;
  const prefix = prefixOfControlQueue(info.taskQueue);
  const cold = summarized(fewerTasks ? proxyLocalActivities<ColdControlActivities>(dbLocalProfile) : proxyActivities<ColdControlActivities>(dbProfile), (t) => label('control', t));
  const coldComp = summarized(proxyActivities<ColdControlActivities>(compensationProfile), (t) => label('control', t));
  const on = (hostId: string, profile = hostQuickProfile) => summarized(proxyActivities<HostActivities & ColdHostActivities>({ ...profile, taskQueue: hostQueue(hostId, prefix) }), (t) => label(hostId, t));

  const startedAt = Date.now();
  const progress: ColdMigrationProgress = {
    migrationId: info.workflowId,
    vmId: input.vmId,
    kind: 'cold',
    state: 'running',
    stage: 'pre-migration',
    stageIndex: 0,
    sourceHostId: '',
    targetHostId: input.targetHostId,
    policy: 'cold',
    awaitingApproval: false,
    progress: { transferredBytes: 0, totalBytes: 0, remainingBytes: 0, transferRateBytesPerSec: 0, percent: 0, filesDone: 0, filesTotal: 0, resumedFromBytes: 0, attempts: 0, perFile: [] },
    decisions: [],
    stageTimingsMs: {},
    compensations: [],
  };
  let cancelReason: string | undefined;
  let committed = false;
  setHandler(coldProgressQuery, () => progress);
  /** the Web UI's current details: the progress query's answer as markdown (no command) */
  const publish = () => setCurrentDetails(coldDetails(progress, Date.now(), startedAt));
  publish();
  setHandler(cancelMigrationSignal, ({ reason } = {}) => {
    if (!committed) cancelReason = reason || 'cancelled by operator';
  });
  const decision = (action: string, reason: string) => progress.decisions.push({ atMs: Date.now() - startedAt, action, reason });
  const checkCancel = () => {
    if (cancelReason) throw new Rollback(cancelReason, true);
  };

  let stageStarted = Date.now();
  /**
   * `record: false` (patched path only): the stage's row write is left to the next one — for the
   * stages that take no time (verify: workflow code; register: done by the copy; cleanup when the
   * start follows at once) and for pre-migration, which beginOperation records.
   */
  async function enterStage(stage: ColdStage, opts: { record?: boolean } = {}) {
    const idx = (COLD_STAGES as readonly string[]).indexOf(stage);
    progress.stageTimingsMs[progress.stage] = (progress.stageTimingsMs[progress.stage] ?? 0) + (Date.now() - stageStarted);
    stageStarted = Date.now();
    progress.stage = stage;
    if (idx >= 0) progress.stageIndex = idx;
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: idx >= 0 ? `${idx}-${stage}` : stage }]);
    if (fewerTasks && opts.record === false) return;
    await writeAudit({ id: operationId, stage, details: { stageTimingsMs: progress.stageTimingsMs } });
  }

  upsertSearchAttributes([
    { key: SA.VmId, value: input.vmId },
    { key: SA.MigrationKind, value: 'cold' },
  ]);
  const operation = { id: operationId, workflowId: info.workflowId, runId: info.runId, vmId: input.vmId, details: { kind: 'cold', request: input }, ...(input.principal ? { principal: input.principal } : {}) };
  if (!fewerTasks) await ctl.beginOperation({ ...operation, kind: 'migration', subkind: 'cold' });

  const saga = new Saga({ maxAttempts: 3, pauseBetweenAttempts: (a) => sleep(a * 1000) });
  let stoppedAt: number | undefined;
  let manifest: VmHomeManifest | undefined;
  let copy: (ColdCopyResult & { registered?: boolean }) | undefined;
  let plan: Awaited<ReturnType<ColdControlActivities['planColdMigration']>>;
  let moved = false;
  /** the VM starts on B after the commit; the commit's call recorded the stage after it */
  const startAfterCommit = () => progress.wasRunning === true && input.start !== false;
  let nextStageRecorded = false;
  try {
    // ---------------------------------------------------------------- pre-migration
    await enterStage('pre-migration', { record: false });
    const planInput = { vmId: input.vmId, operationId, targetHostId: input.targetHostId, targetDatastoreId: input.targetDatastoreId, flatten: input.flatten };
    // patched: the record (in this stage), the plan and the plan on the record, one call
    plan = fewerTasks ? await cold.beginColdMigration({ operation, plan: planInput }) : await cold.planColdMigration(planInput);
    Object.assign(progress, { sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, targetDatastoreId: plan.targetDatastoreId, backingDecision: plan.backingDecision });
    upsertSearchAttributes([
      { key: SA.SourceHost, value: plan.sourceHostId },
      { key: SA.TargetHost, value: plan.targetHostId },
    ]);
    decision('plan', `${plan.copyFiles ? `copy to datastore ${plan.targetDatastoreId}` : 'no copy'}; ${plan.backingDecision}`);
    if (!fewerTasks) await ctl.updateOperation({ id: operationId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, details: { plan: { targetDatastoreId: plan.targetDatastoreId, copyFiles: plan.copyFiles, flatten: plan.flatten, backingDecision: plan.backingDecision, rejected: plan.rejected } } });
    const A = on(plan.sourceHostId);
    const AComp = on(plan.sourceHostId, compensationProfile);
    const B = on(plan.targetHostId);
    const BComp = on(plan.targetHostId, compensationProfile);
    const before = await A.vmStatus({ vmId: input.vmId });
    if (!before) throw ApplicationFailure.create({ type: 'Refused', message: `VM ${input.vmId} is not present on ${plan.sourceHostId}`, nonRetryable: true });
    const wasRunning = before.state === 'running';
    progress.wasRunning = wasRunning;

    saga.add('release-migration-slots', () => ctlComp.releaseMigrationSlots({ operationId }));
    const reservation = { operationId, vmId: input.vmId, targetHostId: plan.targetHostId, targetDatastoreId: plan.targetDatastoreId, copyFiles: plan.copyFiles };
    if (fewerTasks) {
      // slots, then the reservation and its stage, in one call (compensations registered first:
      // each is a no-op when nothing was reserved)
      saga.add('restore-inventory', () => ctlComp.restoreVmAfterRollback({ vmId: input.vmId, hostId: plan.sourceHostId }));
      saga.add('release-reservation', () => ctlComp.releaseReservation({ operationId }));
      for (let queuedSince: number | undefined; ; ) {
        checkCancel();
        const slot = await cold.slotAndReserveColdTarget({ ...reservation, sourceHostId: plan.sourceHostId, nextStage: 'stop', stageTimingsMs: progress.stageTimingsMs });
        if (slot.granted) break;
        if (queuedSince === undefined) {
          queuedSince = Date.now();
          await enterStage('queued');
        }
        await condition(() => cancelReason !== undefined, QUEUE_POLL);
      }
      await enterStage('reservation', { record: false });
    } else {
      for (let queuedSince: number | undefined; ; ) {
        checkCancel();
        const slot = await ctl.acquireMigrationSlots({ operationId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId });
        if (slot.granted) break;
        if (queuedSince === undefined) {
          queuedSince = Date.now();
          await enterStage('queued');
        }
        await condition(() => cancelReason !== undefined, QUEUE_POLL);
      }

      // -------------------------------------------------------------- reservation
      await enterStage('reservation');
      saga.add('restore-inventory', () => ctlComp.restoreVmAfterRollback({ vmId: input.vmId, hostId: plan.sourceHostId }));
      saga.add('release-reservation', () => ctlComp.releaseReservation({ operationId }));
      await cold.reserveColdTarget(reservation);
    }
    checkCancel();

    // ---------------------------------------------------------------- stop
    // (patched: the reservation's call recorded this stage)
    await enterStage('stop', { record: false });
    if (wasRunning) {
      saga.add('restart-source', async () => {
        await AComp.startVm({ vmId: input.vmId, timeoutMs: 60_000 });
      });
      stoppedAt = Date.now();
    }
    const stop = { timeoutMs: input.shutdownTimeoutMs ?? 60_000, force: input.force ?? false };
    if (fewerTasks) {
      // stop and list in one task, no hashing pass: a copy hashes the source as it reads it, and
      // files that stay where they are are not verified
      manifest = await on(plan.sourceHostId, bootProfile).stopAndDescribeVmHome({ vmId: input.vmId, ...(wasRunning ? { stop } : {}), checksums: false });
      checkCancel();
    } else {
      if (wasRunning) await on(plan.sourceHostId, bootProfile).stopVm({ vmId: input.vmId, ...stop });
      checkCancel();
      manifest = await A.describeVmHome({ vmId: input.vmId });
    }
    const files = manifest.files;
    // patched: the copy stage is recorded by the backing decision's call when there is one
    let copyStageRecorded = false;
    if (plan.copyFiles) {
      const backingPaths = files.filter((f) => f.backingPath).map((f) => f.backingPath!);
      // (no linked clone: nothing to decide, the activity's own first answer)
      const ask = { targetHostId: plan.targetHostId, backingPaths, flatten: input.flatten };
      const backing = !fewerTasks
        ? await cold.decideColdBacking(ask)
        : backingPaths.length === 0
          ? { flatten: false, backingDecision: 'no linked clones' }
          : await cold.decideColdBacking({ ...ask, stage: { operationId, name: 'copy', stageTimingsMs: progress.stageTimingsMs } });
      copyStageRecorded = fewerTasks && backingPaths.length > 0;
      Object.assign(plan, backing);
      progress.backingDecision = backing.backingDecision;
      decision('backing', backing.backingDecision);
    }
    const total = plan.copyFiles ? files.reduce((s, f) => s + copySizeOf(f, plan.flatten), 0) : 0;
    Object.assign(progress.progress, { totalBytes: total, remainingBytes: total, filesTotal: plan.copyFiles ? files.filter((f) => f.kind !== 'config').length : 0 });

    // ---------------------------------------------------------------- copy (windows)
    await enterStage('copy', { record: !copyStageRecorded });
    saga.add('discard-target-copy', () => BComp.discardColdCopy({ vmId: input.vmId, files: plan.copyFiles ? files : [], targetDatastoreId: plan.targetDatastoreId }));
    if (plan.copyFiles) {
      const Bcopy = on(plan.targetHostId, coldCopyProfile);
      let checkpoint: ColdCopyCheckpoint | undefined;
      const copyStarted = Date.now();
      for (;;) {
        checkCancel();
        // a cancel during a window cancels that activity (which stops writing first: WAIT_CANCELLATION_COMPLETED)
        const scope = new CancellationScope();
        let over = false;
        void condition(() => over || cancelReason !== undefined).then(() => !over && scope.cancel());
        const w = await scope.run(() => Bcopy.copyVmHome({ vmId: input.vmId, spec: plan.spec, files, targetDatastoreId: plan.targetDatastoreId, flatten: plan.flatten, maxBandwidthBytesPerSec: input.maxBandwidthBytesPerSec, budgetMs: COPY_WINDOW_MS, ...(checkpoint ? { resumeFrom: checkpoint } : {}), ...(fewerTasks ? { register: true } : {}) })).finally(() => (over = true));
        checkpoint = w.checkpoint;
        progress.progress.attempts++;
        if (w.resumedAfterCrash) {
          progress.progress.resumedFromBytes = w.resumedFromBytes;
          decision('copy-resumed', `attempt ${w.attempt} resumed at ${w.resumedFromBytes} of ${total} bytes from its heartbeat checkpoint`);
        }
        const p = w.progress;
        if (p) {
          const elapsed = Math.max(1, Date.now() - copyStarted);
          Object.assign(progress.progress, { transferredBytes: p.doneBytes, remainingBytes: Math.max(0, total - p.doneBytes), transferRateBytesPerSec: p.throughputBytesPerSec || Math.round((p.doneBytes * 1000) / elapsed), file: p.file, filesDone: p.filesDone, perFile: p.perFile });
          progress.progress.percent = total > 0 ? Math.round((p.doneBytes / total) * 1000) / 10 : 100;
          const r = progress.progress.transferRateBytesPerSec;
          progress.progress.etaSeconds = r > 0 ? Math.round(progress.progress.remainingBytes / r) : undefined;
          publish();
        }
        if (w.complete) {
          copy = w;
          break;
        }
      }
      Object.assign(progress.progress, { transferredBytes: total, remainingBytes: 0, percent: 100, filesDone: progress.progress.filesTotal, etaSeconds: 0 });

      // -------------------------------------------------------------- verify
      await enterStage('verify', { record: false });
      const bad = coldCopyMismatches(files, copy!.files);
      progress.files = copy!.files.map((c) => ({ kind: c.kind, source: c.source, target: c.target, sizeBytes: c.sizeBytes, sourceSha256: sourceSha256Of(files.find((f) => f.path === c.source)!, c), targetSha256: c.sha256, flattened: c.flattened }));
      if (bad.length) throw new Rollback(`verification failed: ${bad.join('; ')}`);
      decision('verified', `${copy!.files.length} files, ${total} bytes: sizes and sha256 equal on both sides`);
    }
    checkCancel();

    // ---------------------------------------------------------------- register
    await enterStage('register', { record: !copy?.registered });
    const spec = copy?.spec ?? plan.spec;
    if (copy?.registered) decision('registered', `defined on ${plan.targetHostId} by the copy window that completed, after every file verified`);
    else await B.registerColdCopy({ spec });
    checkCancel();

    // ---------------------------------------------------------------- commitment
    // (patched: the commit's own call records this stage, and the next one once committed)
    await enterStage('commitment', { record: false });
    const commit = { operationId, vmId: input.vmId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, diskPaths: spec.disks, cpuFeatures: spec.cpuFeatures, ...(spec.seedPath ? { seedPath: spec.seedPath } : {}) };
    try {
      await cold.commitColdMigration(fewerTasks ? { ...commit, stage: { name: 'commitment', after: startAfterCommit() ? 'start' : 'cleanup', stageTimingsMs: progress.stageTimingsMs } } : commit);
      committed = true;
      nextStageRecorded = fewerTasks;
    } catch (err) {
      // outcome unknown (timeout, lost reply): read the recorded decision back; never guess
      committed = (await CancellationScope.nonCancellable(() => ctl.readCommit({ vmId: input.vmId, operationId }))).committed;
      if (!committed) throw err;
    }
    moved = true;
  } catch (err) {
    return rollBack(err);
  }

  // ---------------------------------------------------------------- after the commit: forward only
  return CancellationScope.nonCancellable(async () => {
    const start = startAfterCommit();
    await enterStage('cleanup', { record: !start && !nextStageRecorded });
    const keep = plan.copyFiles ? [] : manifest!.files.map((f) => f.path);
    const deleteSource = () => on(plan.sourceHostId, activationProfile).deleteSourceHome({ vmId: input.vmId, files: manifest!.files, keep });
    const startOnTarget = async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await on(plan.targetHostId, activationProfile).startVm({ vmId: input.vmId, timeoutMs: 60_000 });
          break;
        } catch (err) {
          decision('start-retry', describeFailure(err));
          await ctl.updateOperation({ id: operationId, details: { activationStuck: true, activationError: describeFailure(err) } });
          await sleep(Math.min(60_000, 1000 * 2 ** attempt));
        }
      }
    };
    if (fewerTasks) {
      // two hosts, independent steps: A's files go while B boots (B runs on its own copies, or
      // on the shared files `keep` protects)
      const deleted = deleteSource();
      if (start) await enterStage('start', { record: !nextStageRecorded });
      // a failed deletion fails the workflow as it did before, once B's start (already under
      // way) has finished
      const [del] = await Promise.allSettled([deleted, start ? startOnTarget() : undefined]);
      if (del.status === 'rejected') throw del.reason;
    } else {
      await deleteSource();
      if (start) {
        await enterStage('start');
        await startOnTarget();
      }
    }
    const done = () => {
      if (start && stoppedAt !== undefined) progress.downtimeMs = Date.now() - stoppedAt;
      progress.stageTimingsMs[progress.stage] = (progress.stageTimingsMs[progress.stage] ?? 0) + (Date.now() - stageStarted);
      progress.state = 'completed';
      progress.stage = 'done';
      progress.durationMs = Date.now() - startedAt;
      publish();
      upsertSearchAttributes([{ key: SA.Stage, value: 'done' }]);
    };
    const vmState = start ? 'running' : 'stopped';
    if (fewerTasks) {
      // the VM's state and the closed record, one call
      done();
      await cold.finishColdMigration({ vmId: input.vmId, hostId: plan.targetHostId, state: vmState, operation: { id: operationId, details: finalDetails({ activationStuck: false }) } });
    } else {
      await cold.recordColdMigrated({ vmId: input.vmId, hostId: plan.targetHostId, state: vmState });
      done();
      await ctl.finishOperation({ id: operationId, state: 'completed', details: finalDetails({ activationStuck: false }) });
    }
    return { state: 'completed', vmId: input.vmId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, downtimeMs: progress.downtimeMs, transferredBytes: progress.progress.transferredBytes } satisfies MigrationResult;
  });

  function finalDetails(extra: Record<string, unknown>): Record<string, unknown> {
    return {
      kind: 'cold',
      stageTimingsMs: progress.stageTimingsMs,
      transferredBytes: progress.progress.transferredBytes,
      downtimeMs: progress.downtimeMs,
      durationMs: progress.durationMs,
      decisions: progress.decisions,
      progress: progress.progress,
      files: progress.files,
      compensations: progress.compensations,
      ...extra,
    };
  }

  async function rollBack(err: unknown): Promise<never> {
    const cancelled = (err instanceof Rollback && err.cancelled) || isCancellation(err);
    const reason = err instanceof Rollback ? err.message : cancelled ? (cancelReason ?? 'workflow cancelled') : describeFailure(err);
    const refused = !moved && progress.stageIndex === 0 && ['Refused', 'NotFound', 'InvalidArgument', 'Capacity'].includes(failureType(err) ?? '');
    progress.error = reason;
    const failedStage = progress.stage;
    progress.stage = 'rollback';
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: 'rollback' }]);
    progress.compensations = await saga.compensate((fn) => CancellationScope.nonCancellable(fn));
    const state = cancelled ? 'cancelled' : refused ? 'failed' : 'rolled-back';
    progress.state = state;
    progress.durationMs = Date.now() - startedAt;
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: state }]);
    await CancellationScope.nonCancellable(() => ctlComp.finishOperation({ id: operationId, state, error: reason, details: finalDetails({ failedStage }) }));
    throw ApplicationFailure.create({
      type: state === 'failed' ? (failureType(err) ?? 'Refused') : state === 'cancelled' ? 'MigrationCancelled' : 'MigrationRolledBack',
      message: state === 'failed' ? reason : `cold migration of ${input.vmId} ${state} at ${failedStage}: ${reason}`,
      nonRetryable: true,
      details: [{ state, failedStage, compensations: progress.compensations, field: failureField(err) }],
    });
  }
}

/** The request field a refusal names (planColdMigration puts it in the failure's details). */
function failureField(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    const d = (e as { details?: unknown[] }).details?.[0] as { field?: unknown } | undefined;
    if (typeof d?.field === 'string') return d.field;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}
