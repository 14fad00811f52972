// Routing a workflow's calls by a patch: the new path once the patch is recorded, the old one
// when an older history replays.
import type { ActivityOptions } from '@temporalio/workflow';
import { isPatched } from './patches.js';

/**
 * A proxy whose every call goes to `whenPatched` when the workflow has recorded (or now records)
 * patch `patchId`, else to `before`. The patch is asked at each call, where the commands diverge.
 */
export function byPatch<T extends object>(patchId: string, whenPatched: T, before: T): T {
  return new Proxy(whenPatched, {
    get(target, name) {
      if (typeof name !== 'string') return (target as Record<string | symbol, unknown>)[name];
      const pick = (): Record<string, unknown> => (isPatched(patchId) ? whenPatched : before) as Record<string, unknown>;
      const call = (...args: unknown[]) => (pick()[name] as (...a: unknown[]) => unknown)(...args);
      call.executeWithOptions = (o: ActivityOptions, args: unknown[]) =>
        (pick()[name] as { executeWithOptions: (o: ActivityOptions, a: unknown[]) => unknown }).executeWithOptions(o, args);
      return call;
    },
  });
}
