// Stage 5 of a live migration, forward only: resume B's received copy, retried without limit.
// When B's copy is lost after the commit (its process crashed or exited: failure type CopyLost)
// no retry brings it back, and A's postmigrate copy must not run (the commit is the fence). So
// the VM boots on B from its disks, which are its own since the commit, as an HA restart would:
// A's stale copy is destroyed first, so the guest never runs twice; the guest restarts, its
// memory went with the copy. Patched ('activation-boots-lost-copy'): before it a lost copy was
// retried with back-off forever and the VM ran nowhere (docs/chaos.md, seeds 248-250).
import { patched, sleep } from '@temporalio/workflow';
import type { HostActivities } from '../../activities/host.js';
import type { VmSpec } from '../../domain/hypervisor.js';
import { describeFailure, failureType } from '../../domain/failures.js';

export interface ActivationSteps {
  vmId: string;
  /** the received spec (B's disk copies with copyDisks) */
  spec: VmSpec;
  target: Pick<HostActivities, 'activateOnTarget' | 'recoverOnTarget'>;
  source: Pick<HostActivities, 'cleanupSource'>;
  /** the decision log: every attempt and the cold boot stay in history and on the record */
  log(kind: string, reason: string): void;
  /** marks the operation stuck in activation with the last error (before each back-off) */
  stuck(error: string): Promise<unknown>;
}

/** Returns once the VM runs on B: whether the guest restarted (and A's copy is already gone). */
export async function activateForward(s: ActivationSteps): Promise<{ guestRestarted: boolean }> {
  for (let attempt = 1; ; attempt++) {
    let err: unknown;
    try {
      await s.target.activateOnTarget({ vmId: s.vmId, timeoutMs: 60_000 });
      return { guestRestarted: false };
    } catch (e) {
      err = e;
      s.log('activation-retry', describeFailure(e));
    }
    if (failureType(err) === 'CopyLost' && patched('activation-boots-lost-copy')) {
      try {
        s.log('activation-cold-boot', `the received copy is lost: ${s.vmId} boots on the target from its disks (the guest restarts), after the source's stale copy is destroyed`);
        await s.source.cleanupSource({ vmId: s.vmId });
        await s.target.recoverOnTarget({ spec: s.spec, timeoutMs: 60_000 });
        return { guestRestarted: true };
      } catch (e) {
        err = e;
        s.log('activation-retry', describeFailure(e));
      }
    }
    // activationProfile retries without limit: only a non-retryable error gets here
    await s.stuck(describeFailure(err));
    await sleep(Math.min(60_000, 1000 * 2 ** attempt));
  }
}
