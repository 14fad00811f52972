// Named live-migration convergence policies and their validation (ARCHITECTURE.md section 3,
// LiveMigrate stage 2). Pure and deterministic: runs inside the workflow sandbox and in the API
// (to refuse a bad request with 400 before any workflow starts). Plain JSON in and out.
//
// The knobs follow Nova's libvirt options where one exists:
//   initialDowntimeMs / maxDowntimeMs / downtimeSteps / downtimeStepDelaySecPerGiB
//     ~ live_migration_downtime, live_migration_downtime_steps, live_migration_downtime_delay
//   completionTimeoutSecPerGiB ~ live_migration_completion_timeout (800 s/GiB)
//   progressTimeoutSec         ~ live_migration_progress_timeout (150 s)
// and QEMU's auto-converge parameters (cpu-throttle-initial 20, -increment 10, max 99).

import { DEFAULT_MAX_ROUNDS, DEFAULT_MAX_SENT_FACTOR } from './precopy-model.js';

/** What to do when a migration stops paying off (budget, progress timeout, rounds, bytes sent). */
export type OnStall = 'abort' | 'auto-converge' | 'switchover';

/** auto-converge's last resort once the throttle is at its maximum and still not enough. */
export type OnThrottleExhausted = 'abort' | 'switchover';

export interface ConvergencePolicy {
  /** which named policy this was resolved from */
  name: PolicyName;
  /** downtime limit the migration starts with (ms) */
  initialDowntimeMs: number;
  /** ceiling the stepped downtime limit reaches; operators may move it while running */
  maxDowntimeMs: number;
  /** number of linear steps from initialDowntimeMs to maxDowntimeMs */
  downtimeSteps: number;
  /** one downtime step every `downtimeStepDelaySecPerGiB * memoryGiB` seconds */
  downtimeStepDelaySecPerGiB: number;
  /** whole-migration budget, `x * memoryGiB` seconds; 0 disables */
  completionTimeoutSecPerGiB: number;
  /** trip when remainingBytes made no new minimum for this long; 0 disables */
  progressTimeoutSec: number;
  /** verdict 'stalled' when remainingBytes made no new minimum for this long (not a trip by itself) */
  stallWindowSec: number;
  /** trip when the hypervisor's round counter reaches this */
  maxRounds: number;
  /** trip when more than `maxSentFactor x memory` bytes have been sent */
  maxSentFactor: number;
  onStall: OnStall;
  /** auto-converge: first throttle, percent */
  throttleInitialPct: number;
  /** auto-converge: added per step, percent */
  throttleIncrementPct: number;
  /** auto-converge: ceiling, percent (QEMU accepts at most 99) */
  throttleMaxPct: number;
  /** auto-converge: at most one throttle step per this many seconds */
  throttleStepSec: number;
  onThrottleExhausted: OnThrottleExhausted;
  /**
   * false (default): the switchover is pre-approved (the host agent continues from pre-switchover
   * itself, because QEMU counts the paused time as downtime). true: hold at stage 3's doorstep
   * until an operator approves (the source keeps running, rounds continue); the controller then
   * reports `awaitingApproval` instead of emitting a switchover.
   */
  approveSwitchover: boolean;
  /** migration bandwidth cap, bytes/s; null = no cap */
  maxBandwidthBytesPerSec: number | null;
}

export type PolicyName = 'default' | 'minimal-downtime' | 'converge-or-abort' | 'suspend-if-needed';

export type PolicyOverrides = Partial<Omit<ConvergencePolicy, 'name'>>;

/** Thrown for a bad policy name or knob; `field` names the offending knob. */
export class PolicyError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = 'PolicyError';
  }
}

const DEFAULT: ConvergencePolicy = {
  name: 'default',
  // Nova's 500 ms ceiling reached in 10 steps, 75 s/GiB apart; start at 50 ms like Nova's first step.
  initialDowntimeMs: 50,
  maxDowntimeMs: 500,
  downtimeSteps: 10,
  downtimeStepDelaySecPerGiB: 75,
  completionTimeoutSecPerGiB: 800,
  progressTimeoutSec: 150,
  stallWindowSec: 30,
  maxRounds: DEFAULT_MAX_ROUNDS,
  maxSentFactor: DEFAULT_MAX_SENT_FACTOR,
  onStall: 'auto-converge',
  throttleInitialPct: 20,
  throttleIncrementPct: 10,
  throttleMaxPct: 99,
  throttleStepSec: 5,
  // Aborting keeps the VM running where it was; a forced switchover at an unknown downtime is
  // something a policy must ask for explicitly (suspend-if-needed).
  onThrottleExhausted: 'abort',
  approveSwitchover: false,
  maxBandwidthBytesPerSec: null,
};

export const POLICIES: Readonly<Record<PolicyName, Readonly<ConvergencePolicy>>> = {
  default: DEFAULT,
  // Keep the pause short: a low start, a 500 ms ceiling, slow the guest rather than pause longer.
  'minimal-downtime': {
    ...DEFAULT,
    name: 'minimal-downtime',
    initialDowntimeMs: 30,
    maxDowntimeMs: 500,
    onStall: 'auto-converge',
    onThrottleExhausted: 'abort',
  },
  // Never touch the guest's speed: when rounds stop paying off, roll back and keep running on A.
  'converge-or-abort': {
    ...DEFAULT,
    name: 'converge-or-abort',
    initialDowntimeMs: 50,
    maxDowntimeMs: 500,
    onStall: 'abort',
  },
  // The move matters more than the pause: step up to 10 s, then force the switchover
  // (effectively suspend on A, copy, resume on B).
  'suspend-if-needed': {
    ...DEFAULT,
    name: 'suspend-if-needed',
    initialDowntimeMs: 300,
    maxDowntimeMs: 10_000,
    onStall: 'switchover',
    onThrottleExhausted: 'switchover',
  },
};

export const POLICY_NAMES = Object.keys(POLICIES) as PolicyName[];

type Check = (v: unknown) => string | null;

const num =
  (opts: { min?: number; minExclusive?: number; max?: number; integer?: boolean }): Check =>
  (v) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return 'must be a finite number';
    if (opts.integer && !Number.isInteger(v)) return 'must be an integer';
    if (opts.minExclusive !== undefined && !(v > opts.minExclusive)) return `must be greater than ${opts.minExclusive}`;
    if (opts.min !== undefined && v < opts.min) return `must be at least ${opts.min}`;
    if (opts.max !== undefined && v > opts.max) return `must be at most ${opts.max}`;
    return null;
  };

const oneOf =
  (values: readonly string[]): Check =>
  (v) =>
    typeof v === 'string' && values.includes(v) ? null : `must be one of ${values.map((x) => `'${x}'`).join(', ')}`;

const KNOBS: Record<keyof PolicyOverrides, Check> = {
  initialDowntimeMs: num({ minExclusive: 0, max: 600_000 }),
  maxDowntimeMs: num({ minExclusive: 0, max: 600_000 }),
  downtimeSteps: num({ min: 1, max: 1000, integer: true }),
  downtimeStepDelaySecPerGiB: num({ minExclusive: 0, max: 86_400 }),
  completionTimeoutSecPerGiB: num({ min: 0, max: 86_400 }),
  progressTimeoutSec: num({ min: 0, max: 86_400 }),
  stallWindowSec: num({ minExclusive: 0, max: 86_400 }),
  maxRounds: num({ min: 1, max: 100_000, integer: true }),
  maxSentFactor: num({ min: 1, max: 1000 }),
  onStall: oneOf(['abort', 'auto-converge', 'switchover']),
  throttleInitialPct: num({ min: 1, max: 99, integer: true }),
  throttleIncrementPct: num({ min: 1, max: 99, integer: true }),
  throttleMaxPct: num({ min: 1, max: 99, integer: true }),
  throttleStepSec: num({ minExclusive: 0, max: 86_400 }),
  onThrottleExhausted: oneOf(['abort', 'switchover']),
  approveSwitchover: (v) => (typeof v === 'boolean' ? null : 'must be a boolean'),
  maxBandwidthBytesPerSec: (v) => (v === null ? null : num({ minExclusive: 0 })(v)),
};

export const POLICY_KNOBS = Object.keys(KNOBS) as (keyof PolicyOverrides)[];

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return typeof v;
}

/** Checks every knob and the relations between them; throws PolicyError naming the field. */
export function validatePolicy(policy: ConvergencePolicy): ConvergencePolicy {
  if (!POLICY_NAMES.includes(policy.name)) {
    throw new PolicyError('name', `policy.name ${describe(policy.name)} must be one of ${POLICY_NAMES.join(', ')}`);
  }
  for (const key of POLICY_KNOBS) {
    const problem = KNOBS[key]((policy as unknown as Record<string, unknown>)[key]);
    if (problem) throw new PolicyError(key, `policy.${key} ${problem}, got ${describe(policy[key])}`);
  }
  if (policy.maxDowntimeMs < policy.initialDowntimeMs) {
    throw new PolicyError(
      'maxDowntimeMs',
      `policy.maxDowntimeMs (${policy.maxDowntimeMs}) must be at least initialDowntimeMs (${policy.initialDowntimeMs})`,
    );
  }
  if (policy.throttleMaxPct < policy.throttleInitialPct) {
    throw new PolicyError(
      'throttleMaxPct',
      `policy.throttleMaxPct (${policy.throttleMaxPct}) must be at least throttleInitialPct (${policy.throttleInitialPct})`,
    );
  }
  return policy;
}

/**
 * The named policy with a request's overrides applied and every knob validated.
 * `undefined` override values are ignored (an absent JSON field); unknown fields are refused.
 */
export function resolvePolicy(name: string | undefined, overrides: Record<string, unknown> = {}): ConvergencePolicy {
  const policyName = name ?? 'default';
  if (!Object.hasOwn(POLICIES, policyName)) {
    throw new PolicyError('policy', `policy ${describe(policyName)} is not one of ${POLICY_NAMES.join(', ')}`);
  }
  if (overrides === null || typeof overrides !== 'object' || Array.isArray(overrides)) {
    throw new PolicyError('overrides', `policy overrides must be an object, got ${describe(overrides)}`);
  }
  const merged: Record<string, unknown> = { ...POLICIES[policyName as PolicyName] };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!Object.hasOwn(KNOBS, key)) {
      throw new PolicyError(key, `policy.${key} is not a policy knob (knobs: ${POLICY_KNOBS.join(', ')})`);
    }
    merged[key] = value;
  }
  return validatePolicy(merged as unknown as ConvergencePolicy);
}
