// Host-agent activities of ColdMigrate (workflows/cold-migrate.ts), registered beside host.ts's on
// `ferry-host-<hostId>`. The copy runs on the TARGET's agent (it pulls the source's files), is
// long, heartbeats progress with a checkpoint (bytes fsynced per file) and, when retried after
// the agent died, reads that checkpoint back from its own heartbeat details and continues from it.
import { Context } from '@temporalio/activity';
import type { ColdCopyProgress, ColdCopyRequest, ColdCopyResult, HypervisorDriver, VmHomeFile, VmHomeManifest, VmRuntime, VmSpec } from '../drivers/hypervisor.js';
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
    async describeVmHome(input: { vmId: string }): Promise<VmHomeManifest> {
      return driver.describeVmHome(input.vmId);
    },

    /**
     * Target: copies the home. Resumes from the checkpoint of this activity's last heartbeat (an
     * earlier attempt that died), so a crash costs only the bytes after the last checkpoint.
     */
    async copyVmHome(input: ColdCopyRequest): Promise<ColdCopyResult & { attempt: number; resumedAfterCrash: boolean }> {
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
      return { ...result, attempt: ctx?.info.attempt ?? 1, resumedAfterCrash: (ctx?.info.attempt ?? 1) > 1 };
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
