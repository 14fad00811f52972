// What every ferry workflow sets up first: the control activities (database), their
// compensation flavour, the audit writer, and host-agent activities routed by task queue. The
// task-queue prefix (tests run isolated ferries on one server) comes from the workflow's own
// queue, so routing stays deterministic and needs no input.
import { proxyActivities, workflowInfo, type ActivityOptions } from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control.js';
import type { HostActivities } from '../activities/host.js';
import { hostQueue, prefixOfControlQueue } from './definitions.js';
import { compensationProfile, dbProfile } from './profiles.js';
import { auditWriter } from './audit.js';

export function workflowContext() {
  const info = workflowInfo();
  const prefix = prefixOfControlQueue(info.taskQueue);
  return {
    info,
    ctl: proxyActivities<ControlActivities>(dbProfile),
    ctlComp: proxyActivities<ControlActivities>(compensationProfile),
    writeAudit: auditWriter(),
    /** the activities of host `hostId`'s agent (task queue ferry-host-<hostId>) */
    onHost: (hostId: string, profile: ActivityOptions) => proxyActivities<HostActivities>({ ...profile, taskQueue: hostQueue(hostId, prefix) }),
  };
}
