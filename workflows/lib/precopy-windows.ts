// How long LiveMigrate lets the source's agent follow pre-copy before the controller looks again.
// The controller samples every WATCH_WINDOW_MS while it may have something to decide. Patch
// 'precopy-long-windows': while it has nothing to do (its last decision took no action, the
// verdict is converging, no switchover awaits approval) the next window is a quarter of the ETA,
// up to LONG_WINDOW_MAX_MS, so a long migration costs one watch task and one workflow task every
// few seconds instead of every second (what bounded migrations in flight: bench/README.md,
// benchmark 9). The watch still ends at once when the transfer leaves pre-copy, and operator
// input (cancel, switchover, parameters) interrupts a long window so it is acted on at once. The
// progress query is then as old as the window (never more than a quarter of the ETA).
import { CancellationScope, isCancellation, patched } from '@temporalio/workflow';
import type { Decision } from '../../domain/convergence.js';

export const WATCH_WINDOW_MS = 1000;
export const LONG_WINDOW_MAX_MS = 15_000;

export class PrecopyWindows {
  private nextMs = WATCH_WINDOW_MS;
  private patchedLong: boolean | undefined;
  private interruptCurrent: (() => void) | undefined;

  /** The window after decision `d` (asks the patch only when a long window would differ). */
  plan(d: Decision): number {
    const eta = d.progress.etaSec;
    const quiet = d.actions.length === 0 && d.verdict === 'converging' && d.awaitingApproval === null && eta !== null && eta * 250 > WATCH_WINDOW_MS;
    this.nextMs = quiet && (this.patchedLong ??= patched('precopy-long-windows')) ? Math.min(LONG_WINDOW_MAX_MS, Math.round(eta! * 250)) : WATCH_WINDOW_MS;
    return this.nextMs;
  }

  /** Operator input: a long window running now ends (its watch returns undefined). */
  interrupt(): void {
    this.interruptCurrent?.();
  }

  /** One watch of the planned window; undefined when operator input interrupted a long one. */
  async watch<T>(watchFor: (windowMs: number) => Promise<T>): Promise<T | undefined> {
    const windowMs = this.nextMs;
    this.nextMs = WATCH_WINDOW_MS;
    if (windowMs <= WATCH_WINDOW_MS) return watchFor(windowMs);
    const scope = new CancellationScope();
    this.interruptCurrent = () => scope.cancel();
    try {
      return await scope.run(() => watchFor(windowMs));
    } catch (err) {
      // our own scope's cancel; a cancel of the whole workflow goes on as before
      if (isCancellation(err) && !CancellationScope.current().consideredCancelled) return undefined;
      throw err;
    } finally {
      this.interruptCurrent = undefined;
    }
  }
}
