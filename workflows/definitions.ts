// Everything a client needs to talk to ferry's workflows: names, IDs, task queues, search
// attributes, queries/signals/updates, and the plain-JSON input/output types. Safe to import
// from the API (no workflow-only APIs are called at module load except define*()).
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { PolicyOverrides } from '../domain/policies.js';
import type { MigrationStats } from '../domain/hypervisor.js';

// ---------------------------------------------------------------- task queues and ids
export const CONTROL_QUEUE = 'ferry-control';
export const HOST_QUEUE_PREFIX = 'ferry-host-';

/**
 * Task queues carry an optional prefix (tests run many isolated ferry instances against one
 * dev server). A workflow derives the prefix from its own task queue, so routing host
 * activities stays deterministic and needs no extra input.
 */
export function controlQueue(prefix = ''): string {
  return `${prefix}${CONTROL_QUEUE}`;
}
export function hostQueue(hostId: string, prefix = ''): string {
  return `${prefix}${HOST_QUEUE_PREFIX}${hostId}`;
}
export function prefixOfControlQueue(taskQueue: string): string {
  return taskQueue.endsWith(CONTROL_QUEUE) ? taskQueue.slice(0, -CONTROL_QUEUE.length) : '';
}

export const workflowIds = {
  provision: (vmName: string) => `provision-${vmName}`,
  migrate: (vmId: string) => `migrate-${vmId}`,
  lifecycle: (vmId: string, action: LifecycleAction) => `vm-${action}-${vmId}`,
  template: (templateName: string) => `template-${templateName}`,
  evacuate: (hostId: string) => `evacuate-${hostId}`,
};

// ---------------------------------------------------------------- search attributes
export const SA = {
  VmId: defineSearchAttributeKey('VmId', SearchAttributeType.KEYWORD),
  SourceHost: defineSearchAttributeKey('SourceHost', SearchAttributeType.KEYWORD),
  TargetHost: defineSearchAttributeKey('TargetHost', SearchAttributeType.KEYWORD),
  MigrationKind: defineSearchAttributeKey('MigrationKind', SearchAttributeType.KEYWORD),
  Stage: defineSearchAttributeKey('Stage', SearchAttributeType.KEYWORD),
  HostId: defineSearchAttributeKey('HostId', SearchAttributeType.KEYWORD),
  /**
   * The static summary again, set at start: Temporal's workflow list (Server 1.29, UI 2.42) has
   * no summary column, but shows a search attribute as one (and can filter by it).
   */
  OperationSummary: defineSearchAttributeKey('OperationSummary', SearchAttributeType.KEYWORD),
};

/** The search attributes a migration is started with (the API's; LiveMigrate does not upsert them again). */
export function migrationStartAttributes(m: { vmId: string; kind: 'live' | 'cold' | 'storage'; sourceHostId: string; targetHostId?: string }) {
  return [
    { key: SA.VmId, value: m.vmId },
    { key: SA.SourceHost, value: m.sourceHostId },
    ...(m.targetHostId !== undefined ? [{ key: SA.TargetHost, value: m.targetHostId }] : []),
    { key: SA.MigrationKind, value: m.kind },
  ];
}

// ---------------------------------------------------------------- provisioning
export type ProvisionSource =
  | { kind: 'template'; templateId: string; linked?: boolean }
  | { kind: 'clone'; sourceVmId: string }
  | { kind: 'import'; path: string; format: 'vmdk' | 'vhdx' | 'raw' | 'qcow2' }
  | { kind: 'iso'; isoPath: string };

export interface ProvisionInput {
  vmId: string;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
  name: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  source: ProvisionSource;
  networkId: string;
  hostId?: string;
  hostname?: string;
  sshKeys?: string[];
  userData?: string;
  tags?: string[];
  extraVolumesGiB?: number[];
  antiAffinityTag?: string;
  affinityTag?: string;
  weigher?: 'spread' | 'pack';
  /** simulator workload of the new guest */
  workload?: { dirtyRateBytesPerSec: number; writableWorkingSetBytes: number; diskWriteRateBytesPerSec?: number };
}

export const PROVISION_STEPS = ['select', 'load-software', 'customize', 'start'] as const;
export type ProvisionStep = (typeof PROVISION_STEPS)[number];

export interface CompensationRecord {
  name: string;
  ok: boolean;
  attempts: number;
  error?: string;
}

export interface ProvisionProgress {
  vmId: string;
  name: string;
  state: 'running' | 'completed' | 'failed' | 'cancelled';
  step: number;
  stepName: ProvisionStep | 'done';
  hostId?: string;
  datastoreId?: string;
  ip?: string;
  placement?: { chosen?: string; rejected: Array<{ hostId: string; reasons: string[] }> };
  stepTimingsMs: Record<string, number>;
  compensations: CompensationRecord[];
  error?: string;
}

export interface ProvisionResult {
  vmId: string;
  hostId: string;
  ip: string;
  datastoreId: string;
  diskPaths: string[];
}

// ---------------------------------------------------------------- lifecycle
export type LifecycleAction = 'start' | 'stop' | 'reboot' | 'delete';
export interface LifecycleInput {
  vmId: string;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
  action: LifecycleAction;
  /** stop/delete: force off after the graceful timeout */
  force?: boolean;
  timeoutMs?: number;
}

export interface CreateTemplateInput {
  templateId: string;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
  name: string;
  vmId: string;
  os?: string;
  owner?: string;
  department?: string;
  tags?: string[];
  requiredCpuFeatures?: string[];
}

// ---------------------------------------------------------------- live migration
export const MIGRATION_STAGES = ['pre-migration', 'reservation', 'pre-copy', 'stop-and-copy', 'commitment', 'activation'] as const;
export type MigrationStage = (typeof MIGRATION_STAGES)[number] | 'queued' | 'rollback' | 'done';

/** kind auto: what the API chose for the request and why (recorded on the Operation). */
export interface AutoChoice {
  requested: 'auto';
  chose: 'live' | 'cold';
  reason: string;
}

export interface LiveMigrateInput {
  vmId: string;
  /** kind auto chose live: why */
  auto?: AutoChoice;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
  targetHostId?: string;
  /** named policy: default | minimal-downtime | converge-or-abort | suspend-if-needed */
  policy?: string;
  overrides?: PolicyOverrides;
  /** copyDisks: cap of the disk mirror (bytes/s); default uncapped (QEMU throttles zero areas too) */
  diskMirrorBandwidthBytesPerSec?: number;
}

export type MigrationState = 'running' | 'completed' | 'failed' | 'cancelled' | 'rolled-back';

/** Disk mirror progress (copyDisks live migration, storage migration). */
export interface DiskMirrorProgress {
  copiedBytes: number;
  totalBytes: number;
  dirtyBytes: number;
  inSync: boolean;
  transferRateBytesPerSec?: number;
  writeRateBytesPerSec?: number;
  etaSeconds?: number;
  /** storage migration: the pause the pivot took */
  pivotMs?: number;
}

export interface MigrationProgress {
  migrationId: string;
  vmId: string;
  kind: 'live' | 'storage';
  state: MigrationState;
  stage: MigrationStage | StorageStage;
  stageIndex: number;
  sourceHostId: string;
  targetHostId?: string;
  policy: string;
  /** waiting for a per-host migration slot: which limit and since when */
  queue?: { reason: string; sinceMs: number };
  awaitingApproval: boolean;
  /** the hypervisor's counters (MigrationStats) plus the controller's view */
  progress: Pick<
    MigrationStats,
    'round' | 'transferredBytes' | 'remainingBytes' | 'totalBytes' | 'dirtyRateBytesPerSec' | 'transferRateBytesPerSec' | 'expectedDowntimeMs' | 'throttlePct'
  > & {
    percent: number;
    etaSeconds?: number;
    verdict: 'converging' | 'stalled' | 'diverging' | 'unknown';
    downtimeLimitMs: number;
  };
  /** copyDisks / storage migration: the disk mirror */
  disks?: DiskMirrorProgress;
  /** storage migration: where the disks go */
  targetDatastoreId?: string;
  decisions: Array<{ atMs: number; action: string; reason: string }>;
  stageTimingsMs: Record<string, number>;
  downtimeMs?: number;
  durationMs?: number;
  compensations: CompensationRecord[];
  error?: string;
}

// ---------------------------------------------------------------- storage migration
export const STORAGE_STAGES = ['pre-migration', 'reservation', 'mirror', 'pivot', 'commitment', 'cleanup'] as const;
export type StorageStage = (typeof STORAGE_STAGES)[number];

export interface StorageMigrateInput {
  vmId: string;
  /** a datastore of the VM's own host */
  targetDatastoreId: string;
  /** who asked for it (the audit record names it) */
  principal?: string;
  /** mirror bandwidth cap (bytes/s) */
  maxBandwidthBytesPerSec?: number;
  /** give up when the mirror is not in sync after this long (default 6 h) */
  maxMirrorMs?: number;
}

export interface MigrationResult {
  state: MigrationState;
  vmId: string;
  sourceHostId: string;
  targetHostId?: string;
  downtimeMs?: number;
  rounds?: number;
  transferredBytes?: number;
  /** B's received copy was lost after the commit and the VM booted there from its disks */
  guestRestarted?: boolean;
  error?: string;
}

export interface SetMigrationParamsInput {
  maxBandwidthBytesPerSec?: number;
  maxDowntimeMs?: number;
}

// ---------------------------------------------------------------- cold migration
export const COLD_STAGES = ['pre-migration', 'reservation', 'stop', 'copy', 'verify', 'register', 'commitment', 'cleanup', 'start'] as const;
export type ColdStage = (typeof COLD_STAGES)[number] | 'queued' | 'rollback' | 'done';

export interface ColdMigrateInput {
  vmId: string;
  /** who asked for it (the audit record names it); an evacuation's moves carry its principal */
  principal?: string;
  /** kind auto chose cold: why */
  auto?: AutoChoice;
  targetHostId?: string;
  /** a datastore of the target (default: the VM's own when the target reaches it, else the target's roomiest) */
  targetDatastoreId?: string;
  /** power off after the graceful timeout (default false: a guest that ignores ACPI fails the migration) */
  force?: boolean;
  /** start on the target if it ran before (default true) */
  start?: boolean;
  /** true: flatten linked clones; false: keep the chain (refused if the base is not on the target); default: keep when possible */
  flatten?: boolean;
  /** graceful shutdown timeout (default 60 s) */
  shutdownTimeoutMs?: number;
  /** copy bandwidth cap (bytes/s) */
  maxBandwidthBytesPerSec?: number;
}

/** The `progress` query of a cold migration: the live shape's common fields plus the copy's. */
export interface ColdMigrationProgress {
  migrationId: string;
  vmId: string;
  kind: 'cold';
  state: MigrationState;
  stage: ColdStage;
  stageIndex: number;
  sourceHostId: string;
  targetHostId?: string;
  targetDatastoreId?: string;
  policy: 'cold';
  awaitingApproval: false;
  wasRunning?: boolean;
  backingDecision?: string;
  progress: {
    transferredBytes: number;
    totalBytes: number;
    remainingBytes: number;
    transferRateBytesPerSec: number;
    percent: number;
    etaSeconds?: number;
    file?: string;
    filesDone: number;
    filesTotal: number;
    /** bytes found already copied when the last attempt started (a resumed copy) */
    resumedFromBytes: number;
    attempts: number;
    perFile: Array<{ path: string; doneBytes: number; totalBytes: number }>;
  };
  /** every file with its sha256 on both sides, once verified */
  files?: Array<{ kind: string; source: string; target: string; sizeBytes: number; sourceSha256: string; targetSha256: string; flattened: boolean }>;
  decisions: Array<{ atMs: number; action: string; reason: string }>;
  stageTimingsMs: Record<string, number>;
  /** guest off: from stop to start on the target */
  downtimeMs?: number;
  durationMs?: number;
  compensations: CompensationRecord[];
  error?: string;
}

export const coldProgressQuery = defineQuery<ColdMigrationProgress>('progress');

// ---------------------------------------------------------------- messages
export const provisionProgressQuery = defineQuery<ProvisionProgress>('progress');
export const migrationProgressQuery = defineQuery<MigrationProgress>('progress');
/** force the switchover now (accepting a longer downtime), or approve a held one */
export const switchoverUpdate = defineUpdate<MigrationProgress>('switchover');
export const setMigrationParamsUpdate = defineUpdate<MigrationProgress, [SetMigrationParamsInput]>('setParams');
/** cancel = roll back (only before commitment); also reachable by cancelling the workflow */
export const cancelMigrationSignal = defineSignal<[{ reason?: string }]>('cancel');

// ---------------------------------------------------------------- fleet operations
/** Business keys of the fleet operations besides `workflowIds.evacuate`. */
export const fleetIds = {
  rebalance: (cluster: string) => `rebalance-${cluster}`,
  /** a dry run that only plans: never holds the business key of the real operation */
  plan: (planId: string) => `plan-${planId}`,
  reconcile: (cluster: string) => `reconcile-${cluster}`,
};

/** The cluster name of the rebalance and reconcile business keys (one cluster per ferry). */
export const DEFAULT_CLUSTER = 'default';

export interface EvacuateInput {
  hostId: string;
  /** moves in flight at once (default 3); the hosts' own migration limits apply too */
  maxParallel?: number;
  /** a VM that cannot move live may move cold */
  allowCold?: boolean;
  /** stopped VMs move cold instead of staying */
  includeStopped?: boolean;
  /** plan, store the plan under planId, touch nothing else */
  dryRun?: boolean;
  /** the stored plan: the dry run's id, or the approved plan to execute exactly */
  planId?: string;
  /** convergence policy of every live move */
  policy?: string;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
  /** internal: the state carried across continue-as-new */
  carry?: FleetCarry;
}

export interface RebalanceInput {
  cluster: string;
  /** 1 = fix violated rules only ... 5 = any small benefit (default 3, like DRS) */
  level?: 1 | 2 | 3 | 4 | 5;
  /** moves per run (default 5) */
  maxMoves?: number;
  maxParallel?: number;
  /** a VM moved within this many ms is not moved again (default 15 min; no ping-pong) */
  cooldownMs?: number;
  dryRun?: boolean;
  planId?: string;
  policy?: string;
  principal?: string;
  carry?: FleetCarry;
}

export type VmMoveState = 'waiting' | 'in-flight' | 'moved' | 'failed' | 'left' | 'cancelled';

/** One VM of an evacuation or rebalance, from plan to outcome. */
export interface VmMoveReport {
  vmId: string;
  vmName: string;
  from: string;
  /** the current (or final) target */
  to?: string;
  kind?: 'live' | 'cold';
  state: VmMoveState;
  attempts: number;
  /** targets tried and failed, oldest first */
  failedTargets: string[];
  predictedMs?: number;
  /** workflow time, ms since epoch */
  startedAtMs?: number;
  endedAtMs?: number;
  durationMs?: number;
  downtimeMs?: number;
  /** the child migration's workflow id */
  migrationId?: string;
  /** why it stayed, failed or was cancelled; for a move: why it moved */
  reason?: string;
}

export type FleetState = 'validating' | 'planning' | 'running' | 'paused' | 'cancelling' | 'completed' | 'failed' | 'cancelled' | 'refused' | 'planned';

export interface FleetProgress {
  operationId: string;
  kind: 'evacuation' | 'rebalance';
  /** the evacuated host, or the cluster */
  subject: string;
  state: FleetState;
  planId?: string;
  dryRun: boolean;
  maxParallel: number;
  counts: { moved: number; inFlight: number; waiting: number; failed: number; left: number; cancelled: number };
  vms: VmMoveReport[];
  predictedMakespanMs?: number;
  lowerBoundMs?: number;
  /** ms since epoch when everything is predicted done, re-predicted from finished moves */
  etaMs?: number;
  /** actual / predicted duration of the finished moves (1 before any finished) */
  predictionFactor?: number;
  imbalanceBefore?: number;
  imbalanceAfter?: number;
  startedAtMs: number;
  endedAtMs?: number;
  /** why the operation was refused (stale plan) or failed */
  error?: string;
  /** peak of moves in flight at once */
  maxInFlightSeen: number;
}

/** What crosses continue-as-new: the report so far; waiting moves are re-read from it. */
export interface FleetCarry {
  progress: FleetProgress;
  /** the plan's moves not yet started, in order */
  queue: Array<{ vmId: string; to: string; kind: 'live' | 'cold'; predictedMs: number }>;
}

export const fleetProgressQuery = defineQuery<FleetProgress>('progress');
/** no new move starts; running ones finish */
export const pauseFleetSignal = defineSignal('pause');
export const resumeFleetSignal = defineSignal('resume');
/** no new move starts; `abortRunning` also rolls back moves before their commitment */
export const cancelFleetSignal = defineSignal<[{ reason?: string; abortRunning?: boolean }]>('cancel');

/** VmConsole: read the last `tail` lines of a VM's serial console on the host that runs it. */
export interface ConsoleInput {
  vmId: string;
  hostId: string;
  tail: number;
}

// ---------------------------------------------------------------- V2V (workflows/v2v.ts)
/** ImportVm: ProvisionVm's import method on a package inspectVmPackage staged on provision.hostId. */
export interface ImportVmInput {
  provision: ProvisionInput;
  /** the staging folder (and simulator image) openVmPackage made; discarded when the import ends */
  stageId: string;
  importPath: string;
  /** false: stop the VM once provisioned (ProvisionVm always boots it to prove it runs) */
  start: boolean;
}

