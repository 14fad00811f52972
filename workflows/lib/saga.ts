// A compensation stack for workflows (ARCHITECTURE.md sections 3 and 6), free of @temporalio
// imports so it is unit-tested directly. The workflow injects what needs the SDK:
//
//   const saga = new Saga({ maxAttempts: 3 });
//   saga.add('release reservation', () => acts.releaseReservation(id));   // BEFORE the step
//   await acts.reserve(id);
//   ...
//   } catch (err) {
//     const report = await saga.compensate(
//       (fn) => CancellationScope.nonCancellable(fn),
//       (name, e, attempt) => log.warn('compensation failed', { name, attempt, error: String(e) }),
//     );
//     throw ApplicationFailure.nonRetryable(..., ErrorType..., { cause: err, compensations: report });
//   }
//
// Rules it enforces: compensations run in reverse order of registration; each is retried up to
// maxAttempts times (on top of the activity's own retry policy); every step is reported as
// { name, ok, attempts, error? }; a compensation that keeps failing is reported and the rest
// still run (a failure is never dropped). Compensations must be idempotent: they are registered
// before their step, so they may run when the step never happened, and they may be retried.

export interface CompensationResult {
  name: string;
  ok: boolean;
  attempts: number;
  /** last error message when !ok */
  error?: string;
}

export interface SagaOptions {
  /** attempts per compensation, at least 1 (default 3) */
  maxAttempts?: number;
  /**
   * Called between attempts (after failed attempt `attempt`), also through runNonCancellable.
   * A workflow passes a durable timer, e.g. `(a) => sleep(a * 1000)`; default: no pause.
   */
  pauseBetweenAttempts?: (attempt: number) => Promise<void>;
}

export type RunNonCancellable = (fn: () => Promise<void>) => Promise<void>;
export type OnCompensationError = (name: string, err: unknown, attempt: number) => void;

/** The error's message, with its cause's (Temporal wraps an activity's error in ActivityFailure). */
function message(err: unknown): string {
  if (err instanceof Error) {
    const own = err.message || err.name;
    return err.cause instanceof Error && err.cause.message ? `${own}: ${err.cause.message}` : own;
  }
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

export class Saga {
  private readonly steps: Array<{ name: string; fn: () => Promise<void> }> = [];
  private readonly maxAttempts: number;
  private readonly pause?: (attempt: number) => Promise<void>;

  constructor(options: SagaOptions = {}) {
    const n = options.maxAttempts ?? 3;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`maxAttempts must be an integer >= 1, got ${n}`);
    this.maxAttempts = n;
    this.pause = options.pauseBetweenAttempts;
  }

  /** Registers a compensation; call it BEFORE the step it undoes. */
  add(name: string, fn: () => Promise<void>): void {
    if (typeof name !== 'string' || name === '') throw new TypeError(`compensation name must be a non-empty string, got ${String(name)}`);
    if (typeof fn !== 'function') throw new TypeError(`compensation "${name}" must be a function`);
    this.steps.push({ name, fn });
  }

  /** Names of the registered compensations, in registration order. */
  get names(): string[] {
    return this.steps.map((s) => s.name);
  }

  get size(): number {
    return this.steps.length;
  }

  /**
   * Forgets every compensation: after a point of no return (the migration's commit) only
   * forward recovery is allowed, and nothing registered before may be undone.
   */
  clear(): void {
    this.steps.length = 0;
  }

  /**
   * Runs every compensation, newest first, each inside `runNonCancellable`, and returns one
   * result per compensation in the order they ran. The stack is emptied first, so a second call
   * does not undo anything twice. `onError` is told of every failed attempt; an exception it
   * throws is ignored so that reporting cannot stop the compensations.
   */
  async compensate(runNonCancellable: RunNonCancellable, onError: OnCompensationError = () => {}): Promise<CompensationResult[]> {
    const steps = this.steps.splice(0).reverse();
    const results: CompensationResult[] = [];
    for (const step of steps) {
      let attempts = 0;
      let lastError: unknown;
      let ok = false;
      while (attempts < this.maxAttempts && !ok) {
        attempts += 1;
        try {
          await runNonCancellable(step.fn);
          ok = true;
        } catch (err) {
          lastError = err;
          try {
            onError(step.name, err, attempts);
          } catch {
            // the report is in the results; a broken reporter must not stop compensating
          }
          if (attempts < this.maxAttempts && this.pause) {
            const pause = this.pause;
            const n = attempts;
            try {
              await runNonCancellable(() => pause(n));
            } catch {
              // a failed pause only shortens the wait before the next attempt
            }
          }
        }
      }
      results.push(ok ? { name: step.name, ok, attempts } : { name: step.name, ok, attempts, error: message(lastError) });
    }
    return results;
  }
}

/** One line for a failure's message or an alert: which compensations failed and why. */
export function summarizeCompensations(results: CompensationResult[]): { ok: boolean; failed: CompensationResult[]; summary: string } {
  const failed = results.filter((r) => !r.ok);
  const summary =
    failed.length === 0
      ? `${results.length} compensation(s) ran`
      : `${failed.length} of ${results.length} compensation(s) failed: ${failed.map((f) => `${f.name} after ${f.attempts} attempt(s): ${f.error}`).join('; ')}`;
  return { ok: failed.length === 0, failed, summary };
}
