// The baseline of `npm run bench` (ferry LiveMigrate vs a bare Temporal workflow): a workflow
// that runs `n` no-op activities one after another, bundled by its own Worker on its own task
// queue. Sandboxed workflow code: imports only @temporalio/workflow.
import { proxyActivities } from '@temporalio/workflow';

/** The bare worker's activities (implemented in bench/sim.ts). */
export interface BareActivities {
  noop(i: number): Promise<void>;
}

const { noop } = proxyActivities<BareActivities>({ startToCloseTimeout: '30 seconds' });

/** Runs `n` no-op activities sequentially, as LiveMigrate runs its activities. */
export async function bareActivities(n: number): Promise<number> {
  for (let i = 0; i < n; i++) await noop(i);
  return n;
}
