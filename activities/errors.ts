// The one table of failure types that cross the workflow boundary. Activities translate
// driver and database errors into ApplicationFailure with one of these types; workflows and
// retry policies read only the type.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { DriverError } from '../domain/hypervisor.js';
import { NON_RETRYABLE_TYPES } from '../domain/error-types.js';

export const ErrorType = {
  /** bad input: retrying cannot help */
  InvalidArgument: 'InvalidArgument',
  NotFound: 'NotFound',
  Conflict: 'Conflict',
  /** not enough CPU/memory/disk/addresses: names the resource */
  Capacity: 'Capacity',
  /** a migration pre-check refused (CPU features, network, maintenance, same host) */
  Refused: 'Refused',
  /** the hypervisor is in a state that forbids the call */
  InvalidState: 'InvalidState',
  /** transient hypervisor failure: retried */
  Hypervisor: 'Hypervisor',
  /** a simulator fault injected on purpose: retried like a real transient fault */
  FaultInjected: 'FaultInjected',
  Timeout: 'Timeout',
  /** the live migration failed or was aborted before commitment: roll back */
  MigrationFailed: 'MigrationFailed',
  Cancelled: 'Cancelled',
  /** stage 5: B's received copy is gone (crashed or exited); only a boot from its disks recovers */
  CopyLost: 'CopyLost',
} as const;
export type ErrorTypeName = (typeof ErrorType)[keyof typeof ErrorType];

/** Failure types that no retry can fix. Activity retry policies list these as non-retryable. */
export const NON_RETRYABLE: string[] = NON_RETRYABLE_TYPES;

export function failure(type: ErrorTypeName, message: string, details?: unknown, nonRetryable = NON_RETRYABLE.includes(type)): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable, details: details === undefined ? undefined : [details] });
}

const DRIVER_CODES: Record<DriverError['code'], ErrorTypeName> = {
  NOT_FOUND: ErrorType.NotFound,
  INVALID_ARGUMENT: ErrorType.InvalidArgument,
  INVALID_STATE: ErrorType.InvalidState,
  HYPERVISOR: ErrorType.Hypervisor,
  INSUFFICIENT_SPACE: ErrorType.Capacity,
  FAULT_INJECTED: ErrorType.FaultInjected,
  TIMEOUT: ErrorType.Timeout,
  UNREACHABLE: ErrorType.Hypervisor,
};

/** Maps any error thrown by a driver or repository into an ApplicationFailure. */
export function toFailure(err: unknown): ApplicationFailure {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof DriverError) {
    const type = DRIVER_CODES[err.code] ?? ErrorType.Hypervisor;
    return failure(type, err.message, undefined, err.permanent || NON_RETRYABLE.includes(type));
  }
  const e = err as { name?: string; message?: string; resource?: string };
  switch (e?.name) {
    case 'CapacityError':
      return failure(ErrorType.Capacity, e.message ?? 'capacity', { resource: e.resource });
    case 'NotFoundError':
      return failure(ErrorType.NotFound, e.message ?? 'not found');
    case 'ConflictError':
    case 'UniqueConstraintViolationException':
      return failure(ErrorType.Conflict, e.message ?? 'conflict');
    default:
      return failure(ErrorType.Hypervisor, e?.message ?? String(err), undefined, false);
  }
}

/** Wraps every function of an activity object so thrown errors become typed failures. */
export function withFailureMapping<T extends Record<string, (...args: any[]) => Promise<any>>>(acts: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(acts)) {
    out[name] = async (...args: unknown[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        // cancellation must reach the SDK as such, not as a failure (a driver aborted by the
        // activity's signal throws its own error)
        if (err instanceof CancelledFailure) throw err;
        if (activityCancelled()) throw new CancelledFailure(`activity cancelled: ${(err as Error)?.message ?? err}`);
        throw toFailure(err);
      }
    };
  }
  return out as T;
}

function activityCancelled(): boolean {
  try {
    return Context.current().cancellationSignal.aborted;
  } catch {
    return false; // not inside an activity (unit tests call the factories directly)
  }
}
