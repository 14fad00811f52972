// What every ferry workflow sets up first: the control activities (database), their
// compensation flavour, the audit writer, and host-agent activities routed by task queue. The
// task-queue prefix (tests run isolated ferries on one server) comes from the workflow's own
// queue, so routing stays deterministic and needs no input.
import { proxyActivities, proxyLocalActivities, workflowInfo, type ActivityOptions } from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control.js';
import type { HostActivities } from '../activities/host.js';
import { hostQueue, prefixOfControlQueue } from './definitions.js';
import { compensationProfile, dbLocalProfile, dbProfile } from './profiles.js';
import { auditWriter } from './audit.js';
import { byPatch } from './lib/by-patch.js';

/** Names an activity for the Web UI: `where` is 'control' or the host id, read at call time. */
export type ActivityLabel = (where: string, activityType: string) => string;

export function workflowContext(label?: ActivityLabel) {
  const info = workflowInfo();
  const prefix = prefixOfControlQueue(info.taskQueue);
  const tag = <T extends object>(proxy: T, where: string): T => (label ? summarized(proxy, (t) => label(where, t)) : proxy);
  return {
    info,
    ctl: tag(proxyActivities<ControlActivities>(dbProfile), 'control'),
    ctlComp: tag(proxyActivities<ControlActivities>(compensationProfile), 'control'),
    /**
     * The same control activities as LOCAL activities once the workflow records patch
     * `patchId`: short database work run inside the control worker's workflow task instead of a
     * task dispatch each (~50 ms on this machine); histories from before the patch replay the
     * remote path. Same retry bounds, same idempotent implementations.
     */
    ctlLocal: (patchId: string) =>
      tag(byPatch(patchId, proxyLocalActivities<ControlActivities>(dbLocalProfile), proxyActivities<ControlActivities>(dbProfile)), 'control'),
    writeAudit: auditWriter(),
    /** the activities of host `hostId`'s agent (task queue ferry-host-<hostId>) */
    onHost: (hostId: string, profile: ActivityOptions) => tag(proxyActivities<HostActivities>({ ...profile, taskQueue: hostQueue(hostId, prefix) }), hostId),
  };
}

/**
 * `proxy` (from proxyActivities) with every call carrying the activity summary the Web UI shows,
 * `summary(activityType)` computed when the call is made (so it can name the current stage). The
 * summary travels in the ScheduleActivityTask command's user metadata: no command is added, and
 * replay does not compare it.
 */
export function summarized<T extends object>(proxy: T, summary: (activityType: string) => string): T {
  return new Proxy(proxy, {
    get(target, name) {
      const fn = (target as Record<string | symbol, unknown>)[name] as { executeWithOptions?: (o: ActivityOptions, a: unknown[]) => Promise<unknown> } | undefined;
      if (typeof name !== 'string' || typeof fn?.executeWithOptions !== 'function') return fn;
      return (...args: unknown[]) => fn.executeWithOptions!({ summary: summary(name) } as ActivityOptions, args);
    },
  });
}
