// LiveMigrate: the Xen stages as a durable workflow (ARCHITECTURE.md section 3).
//   0 pre-migration   checks; nothing to undo
//   1 reservation     capacity on B + empty container on B
//   2 pre-copy        rounds watched here, convergence controller decides (decisions in history)
//   3 stop-and-copy   A paused, rest sent; A stays primary
//   4 commitment      B confirms, ONE database transaction moves the VM: the point of no return
//   5 activation      resume on B, announce, clean A; retried, never falls back to A
// Before commitment every failure or cancel runs the saga: cancel the transfer and resume A,
// destroy B's copy, release the reservation and the migration slots, restore inventory.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import type { MigrationStats, VmSpec } from '../domain/hypervisor.js';
import {
  MIGRATION_STAGES,
  SA,
  cancelMigrationSignal,
  migrationProgressQuery,
  setMigrationParamsUpdate,
  switchoverUpdate,
  type LiveMigrateInput,
  type MigrationProgress,
  type MigrationResult,
  type MigrationStage,
} from './definitions.js';
import { activationProfile, compensationProfile, hostQuickProfile, watchProfile } from './profiles.js';
import { Saga } from './lib/saga.js';
import { isPatched, sinceEpoch } from './lib/patches.js';
import { unsetAttributes, upsertAttributes } from './lib/start-attributes.js';
import { diskProgress, mirrorUntilInSync } from './disk-mirror.js';
import { activateForward } from './lib/activation.js';
import { PrecopyWindows, WATCH_WINDOW_MS } from './lib/precopy-windows.js';
import { workflowContext } from './context.js';
import { migrationDetails, phaseOf } from './lib/current-details.js';
import { activitySummary } from '../domain/summaries.js';
import { describeFailure, failureType } from '../domain/failures.js';
import { PolicyError, resolvePolicy, type ConvergencePolicy } from '../domain/policies.js';
import { applyOperatorChange, decide, initialControllerState, initialMigrationParams, type ControllerState } from '../domain/convergence.js';

/** How often a queued migration re-asks for a slot. */
const QUEUE_POLL = '1 second';

class Rollback extends Error {
  constructor(message: string, readonly cancelled = false) {
    super(message);
  }
}

export async function liveMigrate(input: LiveMigrateInput): Promise<MigrationResult> {
  // every activity names its stage and host in the Web UI (read when the call is made)
  const { info, ctlLocal, ctlComp, writeAudit, onHost } = workflowContext((where, type) =>
    activitySummary(phaseOf(progress), where, type, type === 'watchPrecopy' ? `round ${progress.progress.round}` : undefined),
  );
  // the control side's database steps (begin, plan, slots, reservation, commit, finish) run as
  // local activities since this patch: one task dispatch fewer each (bench/README.md, "levers")
  const ctl = ctlLocal('live-control-local');
  const operationId = info.runId;
  const on = (hostId: string, profile = hostQuickProfile) => onHost(hostId, profile);

  let policy: ConvergencePolicy;
  try {
    policy = resolvePolicy(input.policy, (input.overrides ?? {}) as Record<string, unknown>);
  } catch (err) {
    const field = err instanceof PolicyError ? err.field : 'policy';
    throw ApplicationFailure.create({ type: 'InvalidArgument', message: (err as Error).message, nonRetryable: true, details: [{ field }] });
  }

  const startedAt = Date.now();
  const progress: MigrationProgress = {
    migrationId: info.workflowId,
    vmId: input.vmId,
    kind: 'live',
    state: 'running',
    stage: 'pre-migration',
    stageIndex: 0,
    sourceHostId: '',
    targetHostId: input.targetHostId,
    policy: policy.name,
    awaitingApproval: false,
    progress: {
      round: 0,
      transferredBytes: 0,
      remainingBytes: 0,
      totalBytes: 0,
      dirtyRateBytesPerSec: 0,
      transferRateBytesPerSec: 0,
      expectedDowntimeMs: 0,
      percent: 0,
      verdict: 'unknown',
      downtimeLimitMs: policy.initialDowntimeMs,
      throttlePct: 0,
    },
    decisions: [],
    stageTimingsMs: {},
    compensations: [],
  };

  // ---- operator steering: cancel, force/approve switchover, bandwidth and downtime
  let cancelReason: string | undefined;
  let switchoverRequested: string | undefined;
  let ctrl: ControllerState | undefined;
  let committed = false;
  let committedHere = false; // the commit call answered (so it recorded its stages), not read back
  let migrationStarted = false;
  /** the stage-0 source check (overlapped with stage 1) refused the migration */
  let refusedAtSourceCheck = false;
  let sourceHost = '';
  /** copyDisks: the source's own files, deleted once the VM runs on its copies */
  let oldDiskFiles: string[] = [];
  let receivedSpec: VmSpec | undefined; // B's copy's spec (stage 4): a lost copy boots from it
  const pendingParams: Array<{ maxBandwidthBytesPerSec?: number; downtimeLimitMs?: number }> = [];

  /** the pre-copy watch windows (lib/precopy-windows.ts): operator input interrupts a long one */
  const windows = new PrecopyWindows();
  setHandler(migrationProgressQuery, () => progress);
  setHandler(cancelMigrationSignal, ({ reason } = {}) => {
    if (!committed) cancelReason = reason || 'cancelled by operator';
    windows.interrupt();
  });
  setHandler(
    switchoverUpdate,
    () => {
      switchoverRequested = policy.approveSwitchover ? 'approved by operator' : 'forced by operator';
      decisionLog('switchover', switchoverRequested);
      windows.interrupt();
      return progress;
    },
    {
      validator: () => {
        if (progress.state !== 'running') throw new Error(`migration is ${progress.state}`);
        if (progress.stageIndex > 3) throw new Error(`migration is past stop-and-copy (${progress.stage})`);
      },
    },
  );
  setHandler(
    setMigrationParamsUpdate,
    (change) => {
      if (change.maxDowntimeMs !== undefined && ctrl) {
        const r = applyOperatorChange(ctrl, { maxDowntimeMs: change.maxDowntimeMs });
        ctrl = r.state;
        for (const a of r.actions) if (a.kind === 'set-downtime') pendingParams.push({ downtimeLimitMs: a.ms });
      }
      if (change.maxBandwidthBytesPerSec !== undefined) pendingParams.push({ maxBandwidthBytesPerSec: change.maxBandwidthBytesPerSec });
      decisionLog('operator-params', JSON.stringify(change));
      windows.interrupt();
      return progress;
    },
    {
      validator: (change) => {
        if (progress.state !== 'running' || progress.stageIndex > 2) throw new Error(`migration is ${progress.state} at ${progress.stage}: parameters can only change during pre-copy`);
        if (change.maxBandwidthBytesPerSec !== undefined && !(change.maxBandwidthBytesPerSec > 0)) throw new Error('maxBandwidthBytesPerSec must be positive');
        if (change.maxDowntimeMs !== undefined && !(change.maxDowntimeMs > 0 && change.maxDowntimeMs <= 600_000)) throw new Error('maxDowntimeMs must be in (0, 600000]');
      },
    },
  );

  function decisionLog(action: string, reason: string) {
    progress.decisions.push({ atMs: Date.now() - startedAt, action, reason });
    publish();
  }
  /** the Web UI's current details: the progress query's answer as markdown (no command) */
  function publish() {
    setCurrentDetails(migrationDetails(progress, Date.now(), startedAt));
  }
  publish();

  let stageStarted = Date.now();
  /** `record: false` (patch 'live-folded-steps' only): the row write goes with the next control call */
  async function enterStage(stage: MigrationStage, opts: { record?: boolean } = {}) {
    const idx = (MIGRATION_STAGES as readonly string[]).indexOf(stage);
    if (progress.stage !== stage) progress.stageTimingsMs[progress.stage] = (progress.stageTimingsMs[progress.stage] ?? 0) + (Date.now() - stageStarted);
    stageStarted = Date.now();
    progress.stage = stage;
    if (idx >= 0) progress.stageIndex = idx;
    publish();
    upsertSearchAttributes([...carriedAttributes.splice(0), { key: SA.Stage, value: idx >= 0 ? `${idx}-${stage}` : stage }]);
    if (folded && opts.record === false) return;
    await writeAudit({ id: operationId, stage, details: { stageTimingsMs: progress.stageTimingsMs } });
  }
  const stageRow = (name: MigrationStage) => ({ name, stageTimingsMs: { ...progress.stageTimingsMs } });

  function checkCancel() {
    if (cancelReason) throw new Rollback(cancelReason, true);
  }

  function absorb(st: MigrationStats) {
    Object.assign(progress.progress, {
      round: st.round,
      transferredBytes: st.transferredBytes,
      remainingBytes: st.remainingBytes,
      totalBytes: st.totalBytes,
      dirtyRateBytesPerSec: st.dirtyRateBytesPerSec,
      transferRateBytesPerSec: st.transferRateBytesPerSec,
      expectedDowntimeMs: st.expectedDowntimeMs,
      throttlePct: st.throttlePct,
    });
    if (st.disk) progress.disks = diskProgress(st.disk);
    publish();
  }

  // since the patch epoch the start's search attributes are not upserted again (lib/start-attributes.ts)
  // and what is missing travels with stage 0's Stage upsert
  const epoch = sinceEpoch();
  // Patch 'live-folded-steps' (asked here, in the first workflow task, next to the epoch: asked
  // first right after a local activity's result a patch can replay as absent, see coldMigrate):
  // the control steps fold into fewer local activities (begin = record + plan + plan on the
  // record; slots + reservation + its stage; the commit with its stages), and the stages that
  // take no time of their own leave their row write to that call. Every stage still reaches the
  // search attribute, the progress query and the record's timings.
  const folded = patched('live-folded-steps');
  const startAttributes: SearchAttributeUpdatePair[] = [{ key: SA.VmId, value: input.vmId }, { key: SA.MigrationKind, value: 'live' }];
  const carriedAttributes = epoch ? unsetAttributes(startAttributes) : [];
  if (!epoch) upsertSearchAttributes(startAttributes);
  const operation = { id: operationId, workflowId: info.workflowId, runId: info.runId, kind: 'migration' as const, subkind: 'live', vmId: input.vmId, details: { policy: policy.name, policyKnobs: policy, ...(input.auto ? { auto: input.auto } : {}) }, ...(input.principal ? { principal: input.principal } : {}) };
  if (!folded) await ctl.beginOperation(operation);

  // compensations retry 3 times on top of their activity's own retry policy, 1 s, 2 s apart
  const saga = new Saga({ maxAttempts: 3, pauseBetweenAttempts: (a) => sleep(a * 1000) });
  let final: MigrationStats | undefined;
  try {
    // ---------------------------------------------------------------- stage 0: pre-migration
    await enterStage('pre-migration', { record: false });
    const planInput = { vmId: input.vmId, targetHostId: input.targetHostId, operationId };
    const plan = folded ? await ctl.beginLiveMigration({ operation, plan: planInput }) : await ctl.planLiveMigration(planInput);
    sourceHost = plan.sourceHostId;
    progress.sourceHostId = plan.sourceHostId;
    progress.targetHostId = plan.targetHostId;
    const hostAttributes: SearchAttributeUpdatePair[] = [{ key: SA.SourceHost, value: plan.sourceHostId }, { key: SA.TargetHost, value: plan.targetHostId }];
    upsertAttributes(hostAttributes, epoch);
    if (!folded) await ctl.updateOperation({ id: operationId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, details: { plan: { copyDisks: plan.copyDisks, rejected: plan.rejected } } });
    const A = on(plan.sourceHostId);
    const AComp = on(plan.sourceHostId, compensationProfile);
    const B = on(plan.targetHostId);
    const BComp = on(plan.targetHostId, compensationProfile);
    const notRunning = (vm: Awaited<ReturnType<typeof A.vmStatus>>) =>
      vm?.state === 'running' ? undefined : ApplicationFailure.create({ type: 'Refused', message: `VM ${input.vmId} is ${vm?.state ?? 'not present'} on ${plan.sourceHostId}, not running`, nonRetryable: true });
    // Since this patch the source check runs while stage 1 reserves B and starts its container
    // (one dispatch and a QEMU start overlapped); a VM found not running still ends `failed`
    // (refused), after the saga undid stage 1. Before it, the check came first.
    const overlapCheck = isPatched('source-check-overlaps-reservation');
    if (!overlapCheck) {
      const refusal = notRunning(await A.vmStatus({ vmId: input.vmId }));
      if (refusal) throw refusal;
    }

    // ---------------------------------------------------------------- per-host migration slots
    saga.add('release-migration-slots', () => ctlComp.releaseMigrationSlots({ operationId }));
    // Since the patch epoch stage 1's compensations are registered before the first cancel
    // check: a workflow task that ran the slot and reservation local activities and then timed
    // out leaves their rows but no markers, and its retry may roll back here (a cancel arrived
    // meanwhile). Both are idempotent and no-ops when nothing was reserved (chaos seed 1061).
    const restoreInventory = () => ctlComp.restoreVmAfterRollback({ vmId: input.vmId, hostId: plan.sourceHostId });
    const releaseReservation = () => ctlComp.releaseReservation({ operationId });
    if (epoch) {
      saga.add('restore-inventory', restoreInventory);
      saga.add('release-reservation', releaseReservation);
    }
    const slots = { operationId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId };
    const reservation = { operationId, vmId: input.vmId, targetHostId: plan.targetHostId, ...(plan.copyDisks ? { targetDatastoreId: plan.targetDatastoreId } : {}) };
    for (let queuedSince: number | undefined; ; ) {
      checkCancel();
      // folded: a granted slot (the record then shows stage reservation) is reserved on B at once
      const slot = folded ? await ctl.slotAndReserveLiveTarget({ slots, reservation }) : await ctl.acquireMigrationSlots(slots);
      if (slot.granted) break;
      if (queuedSince === undefined) {
        queuedSince = Date.now();
        await enterStage('queued');
      }
      progress.queue = { reason: slot.reason ?? 'waiting for a migration slot', sinceMs: queuedSince };
      await condition(() => cancelReason !== undefined, QUEUE_POLL);
    }
    progress.queue = undefined;

    // ---------------------------------------------------------------- stage 1: reservation
    await enterStage('reservation', { record: false });
    if (!epoch) {
      saga.add('restore-inventory', restoreInventory);
      saga.add('release-reservation', releaseReservation);
    }
    // settled into a value at once, so a rollback before it is awaited leaves no unhandled rejection
    const sourceCheck = overlapCheck ? A.vmStatus({ vmId: input.vmId }).then(notRunning, (err: unknown) => err) : undefined;
    if (!folded) await ctl.reserveMigrationTarget(reservation);
    checkCancel();
    // copyDisks (no shared storage): B creates empty copies of the disks, sized from A's; the
    // destroy below removes them too while B's copy was never activated
    const ownFiles = [...plan.spec.disks, ...(plan.spec.seedPath ? [plan.spec.seedPath] : [])];
    const copyDisks = plan.copyDisks
      ? { datastoreId: plan.targetDatastoreId!, disks: (await A.describeDisks({ paths: ownFiles })).map((d) => ({ sourcePath: d.path, virtualSizeBytes: d.virtualSizeBytes, format: d.format })) }
      : undefined;
    saga.add('destroy-destination-copy', () => BComp.destroyDestinationContainer({ vmId: input.vmId }));
    const incoming = await B.startDestinationContainer({ spec: plan.spec, ...(copyDisks ? { copyDisks } : {}) });
    const uri = incoming.uri;
    if (sourceCheck) {
      const refusal = await sourceCheck;
      if (refusal) {
        refusedAtSourceCheck = true;
        throw refusal;
      }
    }
    checkCancel();

    // ---------------------------------------------------------------- stage 2: iterative pre-copy
    await enterStage('pre-copy');
    saga.add('cancel-transfer-resume-source', async () => {
      await AComp.rollbackSource({ vmId: input.vmId, commitKnownAbsent: true });
    });
    const params = initialMigrationParams(policy);
    if (incoming.mirror) {
      // libvirt's order: the disks first, until in sync (writes mirrored from then on), then memory
      const speed = input.diskMirrorBandwidthBytesPerSec ? { speedBytesPerSec: input.diskMirrorBandwidthBytesPerSec } : {};
      await A.startDiskMirror({ vmId: input.vmId, target: { ...incoming.mirror, ...speed } });
      decisionLog('disk-mirror', `mirroring ${ownFiles.length} disk(s) to ${plan.targetHostId} (${incoming.mirror.kind})`);
      await mirrorUntilInSync({
        watch: (i) => on(plan.sourceHostId, watchProfile).watchDiskMirror(i),
        vmId: input.vmId,
        checkCancel,
        onProgress: (p) => (progress.disks = p),
      });
    }
    // `autoSwitchover` lets the agent continue from pre-switchover by itself (QEMU counts the
    // paused time as downtime); with operator approval the source is held running instead.
    const Awatch = on(plan.sourceHostId, watchProfile);
    const start = { vmId: input.vmId, uri, params, ...(plan.copyDisks ? { copyDisks: true } : {}) };
    // since this patch the start also watches the first window (heartbeating, so under the watch
    // profile) and returns its sample: a small guest often converges inside it
    let firstSample = isPatched('precopy-start-watches') ? ((await Awatch.startPrecopy({ ...start, watchWindowMs: WATCH_WINDOW_MS })) ?? undefined) : void (await A.startPrecopy(start));
    migrationStarted = true;
    ctrl = initialControllerState(policy, plan.memoryBytes);
    progress.progress.downtimeLimitMs = ctrl.downtimeMs;
    const precopyStart = Date.now();
    for (;;) {
      // a cancel that came during the watch is looked at after the controller's decision on
      // its sample (the first sample, too: cancel-wins-over-abort below keeps the verdict)
      if (!firstSample) checkCancel();
      while (pendingParams.length) {
        const p = pendingParams.shift()!;
        try {
          await A.setMigrationParams({ vmId: input.vmId, params: p });
          if (p.downtimeLimitMs !== undefined) progress.progress.downtimeLimitMs = p.downtimeLimitMs;
        } catch (err) {
          // a knob on a transfer that already converged is moot, no rollback (patched: it rolled back)
          if (isCancellation(err) || !patched('operator-params-never-roll-back')) throw err;
          decisionLog('params-not-applied', `${describeFailure(err)}; the transfer's own state decides`);
        }
      }
      if (switchoverRequested) break;
      const st = firstSample ?? (await windows.watch((windowMs) => Awatch.watchPrecopy({ vmId: input.vmId, windowMs })));
      firstSample = undefined;
      if (!st) continue; // operator input interrupted a long window: it goes first
      absorb(st);
      if (st.status === 'failed' || st.status === 'cancelled' || st.status === 'none') {
        throw new Rollback(`pre-copy ${st.status}${st.error ? `: ${st.error}` : ''}`);
      }
      if (st.status !== 'setup' && st.status !== 'active') break; // converged: pre-switchover / device / completed
      const sample = { ...st, elapsedMs: st.elapsedMs ?? Date.now() - precopyStart };
      let d = decide(ctrl, sample);
      // The controller puts the ceiling in force when a tripped migration's remainder fits it
      // (an extra set-downtime). Patched: histories from before it kept the lower limit here
      // and must replay so; asked only where the two behaviours differ.
      if (d.actions.some((a) => a.kind === 'set-downtime')) {
        const before = decide(ctrl, sample, { ceilingInForce: false });
        if (JSON.stringify(before.actions) !== JSON.stringify(d.actions) && !isPatched('controller-ceiling-in-force')) d = before;
      }
      ctrl = d.state;
      windows.plan(d);
      progress.progress.percent = d.progress.percent;
      progress.progress.etaSeconds = d.progress.etaSec ?? undefined;
      progress.progress.verdict = d.verdict;
      progress.progress.downtimeLimitMs = d.progress.downtimeLimitMs;
      progress.awaitingApproval = d.awaitingApproval !== null;
      for (const a of d.actions) {
        decisionLog(a.kind, a.reason);
        if (a.kind === 'set-downtime') await A.setMigrationParams({ vmId: input.vmId, params: { downtimeLimitMs: a.ms } });
        else if (a.kind === 'throttle') await A.setMigrationParams({ vmId: input.vmId, params: { throttlePct: a.pct } });
        else if (a.kind === 'switchover') switchoverRequested = `controller: ${a.reason}`;
        else if (a.kind === 'abort') throw new Rollback(`convergence controller aborted: ${a.reason}`);
      }
      publish();
    }
    checkCancel();

    // ---------------------------------------------------------------- stage 3: stop-and-copy
    await enterStage('stop-and-copy', { record: false });
    progress.awaitingApproval = false;
    final = await on(plan.sourceHostId, watchProfile).stopAndCopy({ vmId: input.vmId, timeoutMs: 10 * 60_000 });
    absorb(final);

    // ---------------------------------------------------------------- stage 4: commitment
    await enterStage('commitment', { record: false });
    const image = await B.confirmDestinationImage({ vmId: input.vmId });
    receivedSpec = image.spec;
    // copyDisks: the VM's disks are B's copies from the commit on (same transaction)
    const home = plan.copyDisks ? { diskPaths: image.spec.disks, seedPath: image.spec.seedPath ?? null } : undefined;
    if (home) oldDiskFiles = ownFiles.filter((f) => !home.diskPaths.includes(f) && f !== home.seedPath);
    try {
      // folded: the record shows commitment while committing, activation once committed
      const stage = folded ? { stage: { ...stageRow('commitment'), after: 'activation' } } : {};
      await ctl.commitMigration({ operationId, vmId: input.vmId, sourceHostId: plan.sourceHostId, targetHostId: plan.targetHostId, ...(home ? { home } : {}), ...stage });
      committed = committedHere = true;
    } catch (err) {
      // The outcome is unknown (timed out, lost reply): read the recorded decision back; never guess.
      committed = (await CancellationScope.nonCancellable(() => ctl.readCommit({ vmId: input.vmId, operationId }))).committed;
      if (!committed) throw err;
    }
  } catch (err) {
    return rollBack(err);
  }

  // ---------------------------------------------------------------- stage 5: activation (forward only)
  // Past the fence: cancellation no longer applies; everything below runs to the end.
  return CancellationScope.nonCancellable(async () => {
    await enterStage('activation', { record: !(folded && committedHere) });
    const A = on(sourceHost, activationProfile);
    const { guestRestarted } = await activateForward({
      vmId: input.vmId,
      spec: receivedSpec!,
      target: on(progress.targetHostId!, activationProfile),
      source: A,
      log: decisionLog,
      stuck: (error) => ctl.updateOperation({ id: operationId, details: { activationStuck: true, activationError: error } }),
    });
    await ctl.recordMigrationActivated({ operationId, vmId: input.vmId, hostId: progress.targetHostId! });
    if (!guestRestarted) await A.cleanupSource({ vmId: input.vmId });
    if (oldDiskFiles.length) await A.deleteDisks({ paths: oldDiskFiles });
    progress.stageTimingsMs.activation = Date.now() - stageStarted;
    progress.state = 'completed';
    progress.stage = 'done';
    progress.progress.percent = 100;
    progress.downtimeMs = final?.downtimeMs;
    progress.durationMs = Date.now() - startedAt;
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: 'done' }]);
    await ctl.finishOperation({
      id: operationId,
      state: 'completed',
      details: {
        stageTimingsMs: progress.stageTimingsMs,
        rounds: final?.round,
        transferredBytes: final?.transferredBytes,
        downtimeMs: final?.downtimeMs,
        hypervisorTotalTimeMs: final?.totalTimeMs,
        durationMs: progress.durationMs,
        decisions: progress.decisions,
        progress: progress.progress,
        activationStuck: false,
        ...(guestRestarted ? { guestRestarted } : {}),
      },
    });
    return {
      state: 'completed',
      vmId: input.vmId,
      sourceHostId: progress.sourceHostId,
      targetHostId: progress.targetHostId,
      downtimeMs: final?.downtimeMs,
      rounds: final?.round,
      transferredBytes: final?.transferredBytes,
      ...(guestRestarted ? { guestRestarted } : {}),
    } satisfies MigrationResult;
  });

  async function rollBack(err: unknown): Promise<never> {
    let cancelled = (err instanceof Rollback && err.cancelled) || isCancellation(err);
    let reason = err instanceof Rollback ? err.message : cancelled ? cancelReason ?? 'workflow cancelled' : describeFailure(err);
    // The operator's cancel wins over a rollback for any other reason (the controller's abort, the
    // round limit, a failed pre-copy or step) when it was received before the workflow acted on
    // that reason: both landing in one workflow task (or the cancel during the activity whose
    // result aborts) ends `cancelled`, as the operator asked; the superseded verdict stays in the
    // decisions. Decided here, synchronously at the first step of the rollback, so the order in
    // which the task's jobs arrive cannot change it. Patched: histories recorded before it rolled
    // back under the controller's reason and must replay so.
    if (!cancelled && cancelReason !== undefined && isPatched('cancel-wins-over-abort')) {
      decisionLog('superseded-by-cancel', reason);
      cancelled = true;
      reason = cancelReason;
    }
    const refused = !migrationStarted && (progress.stageIndex === 0 || refusedAtSourceCheck) && ['Refused', 'NotFound', 'InvalidArgument', 'Capacity'].includes(failureType(err) ?? '');
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
    await CancellationScope.nonCancellable(() =>
      ctlComp.finishOperation({
        id: operationId,
        state,
        error: reason,
        details: {
          failedStage,
          compensations: progress.compensations,
          decisions: progress.decisions,
          stageTimingsMs: progress.stageTimingsMs,
          rounds: progress.progress.round,
          transferredBytes: progress.progress.transferredBytes,
          durationMs: progress.durationMs,
          progress: progress.progress,
        },
      }),
    );
    throw ApplicationFailure.create({
      type: state === 'failed' ? failureType(err) ?? 'Refused' : state === 'cancelled' ? 'MigrationCancelled' : 'MigrationRolledBack',
      message: state === 'failed' ? reason : `migration of ${input.vmId} ${state} at ${failedStage}: ${reason}`,
      nonRetryable: true,
      details: [{ state, failedStage, compensations: progress.compensations }],
    });
  }
}
