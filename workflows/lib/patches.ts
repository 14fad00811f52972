// One patch marker for every patch that existed on 2026-12-03. Each `patched(id)` a new run
// makes costs two history events (the marker and the TemporalChangeVersion search-attribute
// upsert the SDK adds), and a live migration asked four of them: eight of its 76 events, which
// is what bounds throughput on one server (bench/README.md, benchmark 8). New runs record only
// EPOCH and take every covered patch's new path; a history recorded before the epoch has no
// EPOCH marker, so while it replays `patched(EPOCH)` is false and each covered patch is asked
// as it was when that history ran. A patch added after the epoch must NOT join COVERED: runs
// recorded with the epoch but before that patch would then take its new path on replay.
import { patched } from '@temporalio/workflow';

export const PATCH_EPOCH = 'patches-2026-12-03';

const COVERED: ReadonlySet<string> = new Set([
  'audit-stage-writes-local',
  'live-control-local',
  'source-check-overlaps-reservation',
  'precopy-start-watches',
  'controller-ceiling-in-force',
  'cancel-wins-over-abort',
  'template-refusal-closes-operation',
  'fleet-cold-migrate-child',
]);

/** `patched(patchId)`, answered by the epoch's one marker for a patch it covers. */
export function isPatched(patchId: string): boolean {
  if (!COVERED.has(patchId)) return patched(patchId);
  return patched(PATCH_EPOCH) || patched(patchId);
}

/** True in runs recorded since the epoch (what the epoch itself changed: fewer search-attribute upserts in LiveMigrate, its stage-1 compensations registered before its first cancel check). */
export function sinceEpoch(): boolean {
  return patched(PATCH_EPOCH);
}
