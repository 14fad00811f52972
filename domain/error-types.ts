// Failure type names shared by activities (activities/errors.ts) and workflows. Pure.

/** Types that no retry can fix: activities mark these failures non-retryable themselves. */
export const NON_RETRYABLE_TYPES = ['InvalidArgument', 'NotFound', 'Conflict', 'Capacity', 'Refused', 'MigrationFailed'];

/**
 * What the activity profiles refuse to retry. An injected simulator fault stands for a permanent
 * failure of that step (the saga must undo it), except where a profile says otherwise: the
 * post-commit activation retries everything, because it may never fall back.
 */
export const PROFILE_NON_RETRYABLE_TYPES = [...NON_RETRYABLE_TYPES, 'FaultInjected'];
