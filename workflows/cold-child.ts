// A fleet operation's cold move (EvacuateHost's fallback when a VM cannot move live and the
// policy allows cold): a child ColdMigrate under the same business key as a live move
// (`migrate-<vmId>`), abandoned on parent close like live children (a migration always runs to
// its own end). Histories recorded before this existed reported such a move as left: the patch
// keeps them replaying.
import { ParentClosePolicy, startChild, type ChildWorkflowHandle } from '@temporalio/workflow';
import { isPatched } from './lib/patches.js';
import { coldMigrate } from './cold-migrate.js';
import type { liveMigrate } from './live-migrate.js';

export const COLD_CHILD_PATCH = 'fleet-cold-migrate-child';

/** True when this run starts cold children (new runs); false while replaying an older history. */
export function coldChildrenEnabled(): boolean {
  return isPatched(COLD_CHILD_PATCH);
}

export async function startColdChild(workflowId: string, vmId: string, targetHostId: string, principal?: string): Promise<ChildWorkflowHandle<typeof liveMigrate>> {
  const child = await startChild(coldMigrate, {
    workflowId,
    args: [{ vmId, targetHostId, ...(principal ? { principal } : {}) }],
    staticSummary: `cold migration of ${vmId} to ${targetHostId}`,
    parentClosePolicy: ParentClosePolicy.ABANDON,
  });
  // same result type (MigrationResult) and the same cancel signal: the executor treats both alike
  return child as unknown as ChildWorkflowHandle<typeof liveMigrate>;
}
