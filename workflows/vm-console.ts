// VmConsole: one read of a VM's serial console, run by the host agent of the host the API found
// in the inventory (the console log lives on that host's disk; the API never talks to drivers).
// A short workflow rather than a long-lived per-host one: nothing to keep, nothing to recover; a
// host whose agent is down answers with a timeout after the schedule-to-close below.
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { ConsoleActivities } from '../activities/console.js';
import type { ConsoleTail } from '../domain/console.js';
import { hostQueue, prefixOfControlQueue, type ConsoleInput } from './definitions.js';

export async function vmConsole(input: ConsoleInput): Promise<ConsoleTail> {
  const { consoleTail } = proxyActivities<ConsoleActivities>({
    taskQueue: hostQueue(input.hostId, prefixOfControlQueue(workflowInfo().taskQueue)),
    // a file read: seconds are plenty; 15 s covers an agent restarting, not one that is gone
    startToCloseTimeout: '10 seconds',
    scheduleToCloseTimeout: '15 seconds',
    retry: { maximumAttempts: 2, nonRetryableErrorTypes: ['InvalidArgument', 'NotFound', 'InvalidState'] },
    summary: `console of ${input.vmId} on ${input.hostId}`,
  });
  return consoleTail({ vmId: input.vmId, tail: input.tail });
}
