// Host-agent activities: the only code that calls a hypervisor driver. Each host agent runs them
// on task queue `ferry-host-<hostId>` with its own driver instance; a workflow picks the host by
// picking the queue. Every activity is idempotent (a retry after a crash finds its own effect).
import { Context, CancelledFailure } from '@temporalio/activity';
import type {
  CloudInitSeed,
  DiskInfo,
  DiskMirrorStats,
  DiskMirrorTarget,
  IncomingOptions,
  IncomingResult,
  DiskSpec,
  HypervisorDriver,
  MigrationParams,
  MigrationStats,
  VmRuntime,
  VmSpec,
} from '../drivers/hypervisor.js';
import type { ReportedVm } from '../domain/drift.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

export interface HostActivityDeps {
  driver: HypervisorDriver;
  /** how often long activities poll the hypervisor (ms) */
  pollMs?: number;
}

/** how long confirmDestinationImage waits for an image whose last device state is still arriving */
const INCOMING_SETTLE_MS = 15_000;

function heartbeat(details?: unknown): void {
  // Outside a Temporal activity (unit tests calling the factory directly) there is no context.
  try {
    Context.current().heartbeat(details);
  } catch {
    /* not in an activity */
  }
}

function cancellationSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

async function pause(ms: number): Promise<void> {
  const signal = cancellationSignal();
  try {
    if (signal) await Context.current().sleep(ms);
    else await new Promise((r) => setTimeout(r, ms));
  } catch (err) {
    throw err instanceof CancelledFailure ? err : new CancelledFailure('activity cancelled');
  }
}

/** With migration events, the longest wait between two queries (heartbeats, progress samples). */
const EVENT_POLL_MS = 250;

/** `p`, or a CancelledFailure as soon as the activity is cancelled. */
async function cancellableWait(p: Promise<void>): Promise<void> {
  const signal = cancellationSignal();
  if (!signal) return p;
  if (signal.aborted) throw new CancelledFailure('activity cancelled');
  let onAbort: (() => void) | undefined;
  try {
    await Promise.race([p, new Promise<never>((_, reject) => signal.addEventListener('abort', (onAbort = () => reject(new CancelledFailure('activity cancelled'))), { once: true }))]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

export function createHostActivities(deps: HostActivityDeps) {
  const { driver } = deps;
  const pollMs = deps.pollMs ?? 100;

  /**
   * Runs `body` with a `wait(ms)` between its hypervisor queries: with a driver that emits
   * migration events (QEMU) it wakes at the next event, or at the latest after EVENT_POLL_MS so
   * heartbeats and samples keep flowing; without events it is the fixed poll (`fallbackMs`, else
   * pollMs). Either way it is cancellable and never longer than `remainingMs`.
   */
  async function withMigrationEvents<T>(vmId: string, body: (wait: (remainingMs: number, fallbackMs?: number) => Promise<void>) => Promise<T>): Promise<T> {
    const watch = await driver.watchMigrationEvents?.(vmId).catch(() => undefined);
    try {
      return await body(async (remainingMs, fallbackMs = pollMs) => {
        const ms = Math.max(0, remainingMs);
        if (!watch) return pause(Math.min(fallbackMs, ms));
        await cancellableWait(watch.next(Math.min(EVENT_POLL_MS, ms)));
      });
    } finally {
      watch?.close();
    }
  }

  /** Waits until the VM reports `running`, bounded by timeoutMs. */
  async function waitRunning(vmId: string, timeoutMs: number): Promise<VmRuntime> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = await driver.vmStatus(vmId);
      if (vm?.state === 'running') return vm;
      if (vm?.state === 'crashed') throw failure(ErrorType.Hypervisor, `VM ${vmId} crashed while starting on ${driver.hostId}`);
      if (Date.now() > deadline) {
        throw failure(
          ErrorType.Timeout,
          `VM ${vmId} did not reach running on ${driver.hostId} within ${timeoutMs} ms (last state: ${vm?.state ?? 'unknown'})`,
        );
      }
      heartbeat({ vmId, state: vm?.state });
      await pause(pollMs);
    }
  }

  const acts = {
    async hostInfo() {
      return driver.hostInfo();
    },

    // ---------------------------------------------------------------- provisioning step 2/3
    /** Disk work heartbeats progress and is cancellable; idempotent by spec.name. */
    async createDisk(spec: DiskSpec): Promise<DiskInfo> {
      return driver.createDisk(spec, {
        signal: cancellationSignal(),
        onProgress: (p) => heartbeat(p),
      });
    },

    async deleteDisk(input: { path: string }): Promise<void> {
      await driver.deleteDisk(input.path);
    },

    /** Compensation of createDisk when the path is not known yet (crash between create and return). */
    async deleteDiskByName(input: { datastoreId: string; name: string }): Promise<void> {
      const info = await driver.hostInfo();
      const ds = info.datastores.find((d) => d.id === input.datastoreId);
      if (!ds) return;
      for (const candidate of diskPathCandidates(driver, ds.path, input)) {
        if (await driver.diskInfo(candidate)) await driver.deleteDisk(candidate);
      }
    },

    async writeSeed(input: { vmId: string; datastoreId: string; seed: CloudInitSeed }): Promise<{ path: string }> {
      return driver.writeSeed(input.vmId, input.datastoreId, input.seed);
    },

    // ---------------------------------------------------------------- provisioning step 4 + lifecycle
    async defineAndStart(input: { spec: VmSpec; timeoutMs: number }): Promise<VmRuntime> {
      const existing = await driver.vmStatus(input.spec.vmId);
      if (!existing) await driver.defineVm(input.spec);
      await driver.startVm(input.spec.vmId);
      return waitRunning(input.spec.vmId, input.timeoutMs);
    },

    async startVm(input: { vmId: string; timeoutMs: number }): Promise<VmRuntime> {
      await driver.startVm(input.vmId);
      return waitRunning(input.vmId, input.timeoutMs);
    },

    async stopVm(input: { vmId: string; timeoutMs: number; force: boolean }): Promise<VmRuntime> {
      const vm = await driver.stopVm(input.vmId, { timeoutMs: input.timeoutMs, force: input.force });
      if (vm.state === 'running') {
        throw failure(ErrorType.Timeout, `VM ${input.vmId} did not shut down within ${input.timeoutMs} ms; retry with force to power it off`, undefined, true);
      }
      return vm;
    },

    async rebootVm(input: { vmId: string; timeoutMs: number }): Promise<VmRuntime> {
      await driver.rebootVm(input.vmId);
      return waitRunning(input.vmId, input.timeoutMs);
    },

    /** Stops (forced) and undefines; idempotent. Keeps disks. */
    async destroyVm(input: { vmId: string }): Promise<void> {
      await driver.destroyVm(input.vmId);
    },

    async vmStatus(input: { vmId: string }): Promise<VmRuntime | null> {
      return driver.vmStatus(input.vmId);
    },

    /** Reconcile: every VM this host's hypervisor knows, with its power state and spec size. */
    async reportVms(): Promise<{ hostId: string; vms: ReportedVm[] }> {
      const vms = await driver.listVms();
      return {
        hostId: driver.hostId,
        vms: vms.map((v) => ({ vmId: v.vmId, state: v.state, name: v.spec.name, cpus: v.spec.cpus, memoryBytes: v.spec.memoryBytes, disks: v.spec.disks, cpuFeatures: v.spec.cpuFeatures })),
      };
    },

    // ---------------------------------------------------------------- live migration
    /** Stage 1 (on B): empty container waiting for the incoming state. */
    async startDestinationContainer(input: { spec: VmSpec; copyDisks?: IncomingOptions['copyDisks'] }): Promise<IncomingResult> {
      return driver.prepareIncoming(input.spec, input.copyDisks ? { copyDisks: input.copyDisks } : undefined);
    },

    /** Sizes and formats of disks on this host (a copyDisks destination creates copies of them). */
    async describeDisks(input: { paths: string[] }): Promise<DiskInfo[]> {
      const out: DiskInfo[] = [];
      for (const p of input.paths) {
        const d = await driver.diskInfo(p);
        if (d) out.push(d);
      }
      return out;
    },

    /** Forward clean-up after a commit that moved the disks: the source's old files. Idempotent. */
    async deleteDisks(input: { paths: string[] }): Promise<void> {
      for (const p of input.paths) await driver.deleteDisk(p);
    },

    // ---------------------------------------------------------------- disk mirrors
    /**
     * Starts the mirror of every disk of the VM (idempotent: a running mirror is kept); with `watchWindowMs` it then watches the first window like
     * watchDiskMirror (heartbeating: call it under the watch profile) and returns its sample, so a
     * small disk is often in sync by the time the workflow looks.
     */
    async startDiskMirror(input: { vmId: string; target: DiskMirrorTarget; watchWindowMs?: number }): Promise<DiskMirrorStats | undefined> {
      if (!driver.startDiskMirror) throw failure(ErrorType.InvalidArgument, `the ${driver.kind} driver of ${driver.hostId} has no disk mirror`, undefined, true);
      await driver.startDiskMirror(input.vmId, input.target);
      return input.watchWindowMs === undefined ? undefined : acts.watchDiskMirror({ vmId: input.vmId, windowMs: input.watchWindowMs });
    },

    /**
     * Watches the mirror for a window (heartbeating its stats) and returns the last sample, early
     * once in sync; a failed mirror is a MigrationFailed error (the workflow rolls back).
     */
    async watchDiskMirror(input: { vmId: string; windowMs: number }): Promise<DiskMirrorStats> {
      if (!driver.diskMirrorStatus) throw failure(ErrorType.InvalidArgument, `the ${driver.kind} driver of ${driver.hostId} has no disk mirror`, undefined, true);
      const until = Date.now() + input.windowMs;
      for (;;) {
        const st = await driver.diskMirrorStatus(input.vmId);
        heartbeat(st);
        if (st.status === 'failed' || st.status === 'cancelled' || st.status === 'none') {
          throw failure(ErrorType.MigrationFailed, `disk mirror of ${input.vmId} on ${driver.hostId} is ${st.status}${st.error ? `: ${st.error}` : ''}`, undefined, true);
        }
        if (st.inSync || Date.now() >= until) return st;
        await pause(pollMs);
      }
    },

    /** Storage migration: pivot onto the in-sync copies, delete the old files; idempotent. */
    async completeDiskMirror(input: { vmId: string }): Promise<DiskMirrorStats> {
      if (!driver.completeDiskMirror) throw failure(ErrorType.InvalidArgument, `the ${driver.kind} driver of ${driver.hostId} has no disk mirror`, undefined, true);
      return driver.completeDiskMirror(input.vmId);
    },

    /** Compensation: the mirror stops, the VM stays on its source disks, partial copies go. */
    async cancelDiskMirror(input: { vmId: string }): Promise<void> {
      await driver.cancelDiskMirror?.(input.vmId);
    },

    /** Compensation of stage 1 (on B): B's copy is paused or empty, never running before commit. */
    async destroyDestinationContainer(input: { vmId: string }): Promise<void> {
      const vm = await driver.vmStatus(input.vmId);
      if (vm?.state === 'running') {
        // The commit is the fence: only activation (after commit) resumes B. A running copy here
        // means the invariant was broken elsewhere; refuse to destroy a live guest.
        throw failure(ErrorType.InvalidState, `refusing to destroy ${input.vmId} on ${driver.hostId}: it is running`, undefined, true);
      }
      await driver.destroyVm(input.vmId);
    },

    /**
     * Stage 2 (on A): start pre-copy. Idempotent: an active migration to the same uri is fine.
     * With `watchWindowMs` it then watches the first window itself and returns that sample (one
     * activity fewer per migration; a retry after a crash that finds the transfer already
     * completed returns that instead of failing).
     */
    async startPrecopy(input: { vmId: string; uri: string; params: MigrationParams; copyDisks?: boolean; watchWindowMs?: number }): Promise<MigrationStats | void> {
      const vm = await driver.vmStatus(input.vmId);
      if (!vm || vm.state !== 'running') {
        const st = await driver.migrationStatus(input.vmId);
        if (input.watchWindowMs !== undefined && st.status === 'completed') return st;
        if (st.status === 'none' || TERMINAL.has(st.status)) {
          throw failure(ErrorType.MigrationFailed, `VM ${input.vmId} is ${vm?.state ?? 'absent'} on ${driver.hostId}, not running`);
        }
      } else {
        const st = await driver.migrationStatus(input.vmId);
        if (st.status === 'none' || TERMINAL.has(st.status)) {
          await driver.startMigration(input.vmId, { uri: input.uri, ...input.params, ...(input.copyDisks ? { copyDisks: true } : {}) });
        }
      }
      if (input.watchWindowMs !== undefined) return acts.watchPrecopy({ vmId: input.vmId, windowMs: input.watchWindowMs });
    },

    /**
     * Stage 2 (on A): watch the transfer for a window, heartbeating stats, and return the last
     * sample. The workflow runs the convergence controller on the samples, so its decisions land
     * in history. Returns early when the hypervisor leaves pre-copy.
     */
    async watchPrecopy(input: { vmId: string; windowMs: number }): Promise<MigrationStats> {
      const until = Date.now() + input.windowMs;
      return withMigrationEvents(input.vmId, async (wait) => {
        for (;;) {
          const st = await driver.migrationStatus(input.vmId);
          heartbeat(st);
          if (st.status !== 'setup' && st.status !== 'active') return st;
          if (Date.now() >= until) return st;
          await wait(until - Date.now());
        }
      });
    },

    async setMigrationParams(input: { vmId: string; params: MigrationParams }): Promise<void> {
      await driver.setMigrationParams(input.vmId, input.params);
    },

    /**
     * Stage 3 (on A): pause A, send the rest and the CPU state; A stays primary. With a
     * pre-approved switchover the driver already continued by itself; this then only waits for
     * `completed`. Idempotent.
     */
    async stopAndCopy(input: { vmId: string; timeoutMs: number }): Promise<MigrationStats> {
      const deadline = Date.now() + input.timeoutMs;
      let continued = false;
      return withMigrationEvents(input.vmId, async (wait) => {
        for (;;) {
          const st = await driver.migrationStatus(input.vmId);
          heartbeat(st);
          if (st.status === 'completed') return st;
          if (st.status === 'failed' || st.status === 'cancelled' || st.status === 'none') {
            throw failure(ErrorType.MigrationFailed, `stop-and-copy of ${input.vmId} ended ${st.status}${st.error ? `: ${st.error}` : ''}`);
          }
          if (!continued && (st.status === 'pre-switchover' || st.status === 'active' || st.status === 'setup')) {
            await driver.continueSwitchover(input.vmId);
            continued = true;
          }
          if (Date.now() > deadline) throw failure(ErrorType.Timeout, `stop-and-copy of ${input.vmId} did not complete within ${input.timeoutMs} ms`);
          await wait(deadline - Date.now(), 50);
        }
      });
    },

    /** Compensation of stages 2-3 (on A): cancel the transfer and make sure A runs again. */
    async rollbackSource(input: { vmId: string; commitKnownAbsent: boolean }): Promise<VmRuntime | null> {
      const st = await driver.migrationStatus(input.vmId);
      if (st.status === 'completed') {
        // The transfer finished; resuming A is allowed only because the workflow read the
        // commit back and knows it did not happen (the commit is the fence).
        if (!input.commitKnownAbsent) {
          throw failure(ErrorType.InvalidState, `migration of ${input.vmId} completed and the commit is unknown: not resuming the source`, undefined, true);
        }
      } else if (st.status !== 'none') {
        await driver.cancelMigration(input.vmId);
      }
      const vm = await driver.vmStatus(input.vmId);
      if (vm && vm.state !== 'running') await driver.resumeVm(input.vmId, { afterCompletedMigration: st.status === 'completed' });
      // copyDisks: the source keeps its own disks; the mirror (if any) stops
      await driver.cancelDiskMirror?.(input.vmId);
      return driver.vmStatus(input.vmId);
    },

    /**
     * Stage 4's precondition (on B): a consistent, complete, paused image. Called once A said
     * `completed`: B may still be loading the last device state (QEMU's runstate leaves
     * inmigrate a moment after the source completes; with a Linux guest's devices that moment
     * was long enough to be caught, and the rollback that followed killed the only live copy).
     * So an image still arriving is waited for, up to INCOMING_SETTLE_MS.
     */
    async confirmDestinationImage(input: { vmId: string }): Promise<VmRuntime> {
      let vm = await driver.vmStatus(input.vmId);
      for (const deadline = Date.now() + INCOMING_SETTLE_MS; vm?.state === 'incoming' && Date.now() < deadline; ) {
        heartbeat({ vmId: input.vmId, state: vm.state });
        await pause(50);
        vm = await driver.vmStatus(input.vmId);
      }
      if (!vm || (vm.state !== 'paused' && vm.state !== 'running')) {
        throw failure(ErrorType.MigrationFailed, `destination ${driver.hostId} holds no complete image of ${input.vmId} (state ${vm?.state ?? 'absent'})`);
      }
      return vm;
    },

    /** Stage 5 (on B): resume, reattach, announce the IP, verify running. Retried, never falls back. */
    async activateOnTarget(input: { vmId: string; timeoutMs: number }): Promise<VmRuntime> {
      try {
        await driver.activateIncoming(input.vmId);
      } catch (err) {
        // a lost copy (its process crashed or exited, nothing left) cannot be activated by any retry
        const vm = await driver.vmStatus(input.vmId).catch(() => undefined);
        if (vm === null || vm?.state === 'crashed' || vm?.state === 'stopped') {
          throw failure(ErrorType.CopyLost, `the received copy of ${input.vmId} on ${driver.hostId} is lost (${vm?.state ?? 'absent'}): ${(err as Error).message}`, undefined, true);
        }
        throw err;
      }
      return waitRunning(input.vmId, input.timeoutMs);
    },

    /**
     * Stage 5's forward recovery (on B), after the commit, when activation met a lost copy: boots
     * the VM from its disks (the guest restarts; its memory went with the copy). A copy that is
     * not lost is refused (InvalidState, permanent); nothing left at all is defined from `spec`
     * (the received spec) first.
     */
    async recoverOnTarget(input: { spec: VmSpec; timeoutMs: number }): Promise<VmRuntime> {
      const vmId = input.spec.vmId;
      if (await driver.vmStatus(vmId)) await driver.recoverIncoming(vmId);
      else await driver.startVm((await driver.defineVm(input.spec)).vmId);
      return waitRunning(vmId, input.timeoutMs);
    },

    /** Stage 5 (on A): destroy the source's stale copy (postmigrate). */
    async cleanupSource(input: { vmId: string }): Promise<void> {
      const vm = await driver.vmStatus(input.vmId);
      if (vm?.state === 'running') {
        throw failure(ErrorType.InvalidState, `source copy of ${input.vmId} on ${driver.hostId} is running after commit; refusing to destroy blindly`, undefined, true);
      }
      await driver.destroyVm(input.vmId);
    },
  };
  return withFailureMapping(acts);
}

/**
 * Where a disk or seed named `name` lives on a datastore, for compensations registered before the
 * step that learns the path: the drivers name files `<datastore>/<name>.<ext>` (sim://<ds>/ for
 * the simulator); seeds are .iso (sim) or .img (qemu).
 */
function diskPathCandidates(driver: HypervisorDriver, dsPath: string, input: { datastoreId: string; name: string }): string[] {
  const base = driver.kind === 'sim' ? `sim://${input.datastoreId}/${input.name}` : `${dsPath}/${input.name}`;
  return ['.qcow2', '.iso', '.img'].map((ext) => base + ext);
}

export type HostActivities = ReturnType<typeof createHostActivities>;
