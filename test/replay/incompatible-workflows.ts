// DELIBERATELY INCOMPATIBLE liveMigrate, for test/replay/replay.test.ts: replaying the committed
// liveMigrate histories against this bundle must fail with a DeterminismViolationError. It is the
// change a well-meaning edit could make without `patched()`: one extra activity ("make sure the
// VM still exists before anything else") in front of today's real workflow, so a run recorded by
// the real workflow has different commands from its first one on. It wraps the real function
// instead of copying it, so it never needs to be kept in step with live-migrate.ts. Never import
// this file from ferry code.
import { proxyActivities } from '@temporalio/workflow';
import type { ControlActivities } from '../../activities/control.js';
import type { LiveMigrateInput, MigrationResult } from '../../workflows/definitions.js';
import { dbProfile } from '../../workflows/profiles.js';
import { liveMigrate as realLiveMigrate } from '../../workflows/live-migrate.js';

export async function liveMigrate(input: LiveMigrateInput): Promise<MigrationResult> {
  await proxyActivities<ControlActivities>(dbProfile).getVmForLifecycle({ vmId: input.vmId, action: 'start' });
  return realLiveMigrate(input);
}
