// Stage bookkeeping on a workflow's audit record (Operation.stage, timings). Since the patch
// 'audit-stage-writes-local' these writes run as LOCAL activities on the control worker: they
// touch only the database, take milliseconds, and as regular activities each one cost a full task
// dispatch (measured ~40 ms on the dev server, 7 of a live migration's 22 activities). Histories
// recorded before the patch replay the old path.
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control.js';
import { dbLocalProfile, dbProfile } from './profiles.js';
import { byPatch } from './lib/by-patch.js';

type UpdateOperationInput = Parameters<ControlActivities['updateOperation']>[0];

export function auditWriter(): (input: UpdateOperationInput) => Promise<void> {
  const ctl = byPatch('audit-stage-writes-local', proxyLocalActivities<ControlActivities>(dbLocalProfile), proxyActivities<ControlActivities>(dbProfile));
  return (input) => ctl.updateOperation(input);
}
