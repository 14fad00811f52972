// Named activity option profiles. Every number says why it is what it is.
import { ActivityCancellationType, type ActivityOptions, type LocalActivityOptions } from '@temporalio/workflow';
import { PROFILE_NON_RETRYABLE_TYPES } from '../domain/error-types.js';

const nonRetryableErrorTypes = PROFILE_NON_RETRYABLE_TYPES;

/** Database work on the control worker: short, transactional, safe to retry. */
export const dbProfile: ActivityOptions = {
  // a transaction that takes longer than 30 s is stuck on a lock: retry it
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 ms', backoffCoefficient: 2, maximumInterval: '5 seconds', maximumAttempts: 10, nonRetryableErrorTypes },
};

/**
 * The same database work as a local activity (stage bookkeeping): runs inside the control
 * worker's workflow task, retried there; 30 s bounds a write stuck on a lock.
 */
export const dbLocalProfile: LocalActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 ms', backoffCoefficient: 2, maximumInterval: '5 seconds', maximumAttempts: 10, nonRetryableErrorTypes },
};

/** Quick hypervisor calls (define, destroy, status, set params): seconds, not minutes. */
export const hostQuickProfile: ActivityOptions = {
  startToCloseTimeout: '2 minutes',
  // an agent that died is noticed by schedule-to-start never firing; we bound the whole call
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 6, nonRetryableErrorTypes },
};

/** Disk copies and imports: long, so they heartbeat; a dead agent is detected in 15 s. */
export const diskProfile: ActivityOptions = {
  startToCloseTimeout: '6 hours',
  // a cancelled copy must have stopped (and removed its partial file) before the saga's
  // delete-disk runs, or the copy could finish after the compensation
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  heartbeatTimeout: '15 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5, nonRetryableErrorTypes },
};

/** Start-and-wait-running: bounded inside the activity by its own timeout argument. */
export const bootProfile: ActivityOptions = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '20 seconds', maximumAttempts: 4, nonRetryableErrorTypes },
};

/**
 * Pre-copy watching: a one-second window per call, heartbeating each poll. A SIGKILLed agent is
 * noticed after the 5 s heartbeat timeout and the watch resumes on the restarted agent (the
 * hypervisor kept migrating meanwhile).
 */
export const watchProfile: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  heartbeatTimeout: '5 seconds',
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '5 seconds', maximumAttempts: 30, nonRetryableErrorTypes },
};

/**
 * Activation after commitment: forward recovery only, so it retries without an attempt limit,
 * backing off to one try a minute; a stuck activation shows in ferry_migration_activation_stuck.
 */
export const activationProfile: ActivityOptions = {
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: [] },
};

/** Compensations: retried hard (the saga retries again on top); each is idempotent. */
export const compensationProfile: ActivityOptions = {
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 8, nonRetryableErrorTypes: ['InvalidArgument'] },
};

/**
 * One window (a few seconds) of a cold copy on the target's agent. The 10 s heartbeat timeout
 * notices a SIGKILLed agent; the retry, on the restarted agent, resumes from the checkpoint in
 * its last heartbeat. Cancellation waits until the copy stopped writing, so the saga's discard
 * never races a copy still running.
 */
export const coldCopyProfile: ActivityOptions = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '10 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 10, nonRetryableErrorTypes },
};
