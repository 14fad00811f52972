// Host-agent activities of ColdMigrate (workflows/cold-migrate.ts), registered beside host.ts's on
// `ferry-host-<hostId>`. The copy runs on the TARGET's agent (it pulls the source's files), is
// long, heartbeats progress with a checkpoint (bytes fsynced per file) and, when retried after
// the agent died, reads that checkpoint back from its own heartbeat details and continues from it.
import { Context } from '@temporalio/activity';
import type { ColdCopyProgress, ColdCopyRequest, ColdCopyResult, HypervisorDriver, VmHomeFile, VmHomeManifest, VmRuntime, VmSpec } from '../drivers/hypervisor.js';
import { coldCopyMismatches } from '../domain/cold.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

/** What copyVmHome heartbeats: its progress, whose checkpoint a retry resumes from. */
export type ColdCopyHeartbeat = Partial<ColdCopyProgress> & Pick<ColdCopyProgress, 'checkpoint'>;

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // called outside an activity (unit tests)
  }
}

export function createColdHostActivities(deps: { driver: HypervisorDriver }) {
  const { driver } = deps;

  const acts = {
    /** Source: the files of the stopped VM's home, with size and sha256 (the verification's reference). */
    async describeVmHome(input: { vmId: string; checksums?: boolean }): Promise<VmHomeManifest> {
      return driver.describeVmHome(input.vmId, { checksums: input.checksums });
    },

    /**
     * Source, one task instead of two: stops the VM (graceful for `timeoutMs`, then forced only
     * if `force`), heartbeating while it waits, then lists its home — without checksums when
     * `checksums` is false (the target hashes the source while copying it). Idempotent: a retry
     * finds the VM stopped.
     */
    async stopAndDescribeVmHome(input: { vmId: string; stop?: { timeoutMs: number; force: boolean }; checksums?: boolean }): Promise<VmHomeManifest> {
      if (input.stop) {
        const ctx = activityContext();
        const beat = setInterval(() => ctx?.heartbeat({ vmId: input.vmId, stopping: true }), 5000);
        try {
          const vm = await driver.stopVm(input.vmId, input.stop);
          if (vm.state === 'running') throw failure(ErrorType.Timeout, `VM ${input.vmId} did not shut down within ${input.stop.timeoutMs} ms; retry with force to power it off`, undefined, true);
        } finally {
          clearInterval(beat);
        }
      }
      return driver.describeVmHome(input.vmId, { checksums: input.checksums });
    },

    /**
     * Target: copies the home. Resumes from the checkpoint of this activity's last heartbeat (an
     * earlier attempt that died), so a crash costs only the bytes after the last checkpoint.
     */
    async copyVmHome(input: ColdCopyRequest & { register?: boolean }): Promise<ColdCopyResult & { attempt: number; resumedAfterCrash: boolean; registered?: boolean }> {
      const ctx = activityContext();
      // a retry of this very activity (the agent died mid-window) continues from its own last
      // heartbeat, which is newer than the checkpoint the workflow handed in
      const beat = ctx?.info.heartbeatDetails as ColdCopyHeartbeat | undefined;
      const resumeFrom = beat?.checkpoint ?? input.resumeFrom;
      // the first heartbeat carries the checkpoint handed in, so even a crash before the first
      // progress report leaves the retry something to resume from
      if (resumeFrom) ctx?.heartbeat({ checkpoint: resumeFrom } satisfies ColdCopyHeartbeat);
      const result = await driver.receiveVmHome(
        { ...input, ...(resumeFrom ? { resumeFrom } : {}) },
        { signal: ctx?.cancellationSignal, onProgress: (p) => ctx?.heartbeat(p satisfies ColdCopyHeartbeat) },
      );
      const out = { ...result, attempt: ctx?.info.attempt ?? 1, resumedAfterCrash: (ctx?.info.attempt ?? 1) > 1 };
      // `register`: the window that completes the copy also defines the VM here — only when every
      // file verified (the workflow checks the same again; its discard undoes a define)
      if (input.register && result.complete && coldCopyMismatches(input.files, result.files).length === 0) {
        await acts.registerColdCopy({ spec: result.spec });
        return { ...out, registered: true };
      }
      return out;
    },

    /** Target, after the copy verified: the VM is defined here (not started; the commit comes first). */
    async registerColdCopy(input: { spec: VmSpec }): Promise<VmRuntime> {
      const cur = await driver.vmStatus(input.spec.vmId);
      if (cur) return cur;
      return driver.defineVm(input.spec);
    },

    /** Target compensation (before commit): undefine and delete every copied file, partial or whole. */
    async discardColdCopy(input: { vmId: string; files: VmHomeFile[]; targetDatastoreId: string }): Promise<void> {
      const vm = await driver.vmStatus(input.vmId);
      if (vm?.state === 'running') {
        // the commit is the fence: the target copy is started only after it
        throw failure(ErrorType.InvalidState, `refusing to discard ${input.vmId} on ${driver.hostId}: it is running`, undefined, true);
      }
      if (vm) await driver.destroyVm(input.vmId);
      await driver.discardVmHome(input);
    },

    /** Source, after commit (forward only): undefine and delete the home; `keep` = paths the target uses too. */
    async deleteSourceHome(input: { vmId: string; files: VmHomeFile[]; keep: string[] }): Promise<{ deleted: string[] }> {
      const vm = await driver.vmStatus(input.vmId);
      if (vm?.state === 'running') {
        throw failure(ErrorType.InvalidState, `source copy of ${input.vmId} on ${driver.hostId} is running after commit; refusing to delete it`, undefined, true);
      }
      if (vm) await driver.destroyVm(input.vmId);
      const deleted: string[] = [];
      for (const f of input.files) {
        if ((f.kind !== 'disk' && f.kind !== 'seed') || input.keep.includes(f.path)) continue;
        await driver.deleteDisk(f.path);
        deleted.push(f.path);
      }
      return { deleted };
    },
  };
  return withFailureMapping(acts);
}

export type ColdHostActivities = ReturnType<typeof createColdHostActivities>;
