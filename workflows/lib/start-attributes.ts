// Search attributes a run may already hold: the API sets VmId, MigrationKind, SourceHost and
// TargetHost when it starts a migration, so since the patch epoch (patches.ts) a workflow upserts
// only what differs from them (one history event each upsert saved, same visibility).
import { upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';

/** The pairs whose value the run does not hold yet (from its start or an upsert since). */
export function unsetAttributes(pairs: SearchAttributeUpdatePair[]): SearchAttributeUpdatePair[] {
  return pairs.filter((p) => workflowInfo().typedSearchAttributes.get(p.key) !== p.value);
}

/** Upserts the pairs: only those not held yet when `onlyMissing` (runs since the epoch), else all. */
export function upsertAttributes(pairs: SearchAttributeUpdatePair[], onlyMissing: boolean): void {
  const missing = onlyMissing ? unsetAttributes(pairs) : pairs;
  if (missing.length) upsertSearchAttributes(missing);
}
