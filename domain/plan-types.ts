// The vocabulary of fleet plans (evacuation and rebalance), shared by the planner
// (domain/planner.ts), the workflows that execute plans, the activities that take the inventory
// snapshot, and the API that stores and shows them. Plain JSON only: plans cross the workflow
// boundary and are stored as they are.
import type { HostCandidate, RejectedHost } from './placement.js';
import type { ConvergencePolicy } from './policies.js';

/** A host as the planner sees it: placement's view plus its migration limits and link speed. */
export interface PlanHost extends HostCandidate {
  /** concurrent outgoing / incoming live migrations this host allows (Host.maxOutgoingMigrations) */
  maxOutgoing: number;
  maxIncoming: number;
}

/** A migration link between two hosts (undirected); pairs without one use the snapshot default. */
export interface PlanLink {
  a: string;
  b: string;
  bandwidthBytesPerSec: number;
}

export type PlanVmState = 'running' | 'stopped' | 'paused' | 'migrating' | 'provisioning' | 'error';

export interface PlanVm {
  id: string;
  name: string;
  hostId: string;
  state: PlanVmState;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  cpuFeatures: string[];
  /** datastores holding the VM's disks */
  datastoreIds: string[];
  network?: string;
  tags: string[];
  /** never on a host with another VM carrying this tag (at any step of a plan) */
  antiAffinityTag?: string;
  /** on a host with the other VMs carrying this tag (at the end of a plan; groups move together) */
  affinityTag?: string;
  /** the guest's memory behaviour, for the pre-copy prediction (0 when unknown) */
  dirtyRateBytesPerSec: number;
  writableWorkingSetBytes: number;
  /** end of this VM's last migration (ms since epoch), for the rebalance cool-down */
  lastMovedAtMs?: number;
}

export interface ClusterSnapshot {
  /** when the snapshot was taken (ms since epoch; workflow time) */
  takenAtMs: number;
  hosts: PlanHost[];
  vms: PlanVm[];
  links: PlanLink[];
  /** bandwidth of a pair with no link row (bytes/s) */
  defaultLinkBandwidthBytesPerSec: number;
}

/** How a move's wall-clock time is predicted (ARCHITECTURE.md: pre-copy model + link bandwidth). */
export interface PredictionSettings {
  /** the downtime limit the migration's policy starts with (ms) */
  downtimeLimitMs: number;
  /** cap on migration bandwidth (bytes/s), as a request's maxBandwidthMiBps; none = the link */
  maxBandwidthBytesPerSec?: number;
  /**
   * Hypervisor seconds per wall second: the simulator's time scale (FERRY_SIM_TIME_SCALE), 1 for a
   * real hypervisor. Model time is divided by it.
   */
  timeScale: number;
  /** fixed wall-clock cost of one move outside the transfer (workflow tasks, activities), ms */
  perMoveOverheadMs: number;
  /** cold migration: bytes/s of the disk copy (datastore throughput) */
  coldCopyBytesPerSec: number;
  /** the moves' convergence policy (resolvePolicy), steering a move that does not converge at
   * downtimeLimitMs; absent: the default policy starting at downtimeLimitMs */
  policy?: ConvergencePolicy;
}

export interface ParallelLimits {
  /** moves in flight at once in the whole plan */
  maxParallel: number;
  /** the hosts' own limits apply too (PlanHost.maxOutgoing / maxIncoming) */
}

export type MoveKind = 'live' | 'cold';

export interface PlannedMove {
  /** execution order (0-based): moves start in this order as slots free up */
  order: number;
  vmId: string;
  vmName: string;
  from: string;
  to: string;
  kind: MoveKind;
  /** the disks travel along (no shared storage) */
  copyDisks: boolean;
  /** where copied disks go (copyDisks or cold), else null */
  targetDatastoreId: string | null;
  /** predicted wall-clock duration of the move, ms */
  predictedMs: number;
  /** predicted guest downtime, ms (cold: the whole move) */
  predictedDowntimeMs: number;
  /** false when the pre-copy model says it stops on max rounds / max sent rather than converging */
  converges: boolean;
  /** predicted start and end, ms after the plan starts (list scheduling under the limits) */
  startAtMs: number;
  endAtMs: number;
  /** why this move (rebalance: the benefit; evacuation: the host is being drained) */
  reason: string;
}

export interface LeftBehind {
  vmId: string;
  vmName: string;
  reason: string;
  /** every host considered and why it refused, when a placement was tried */
  rejected: RejectedHost[];
}

export interface FleetPlan {
  kind: 'evacuation' | 'rebalance';
  /** evacuation: the host being drained */
  hostId?: string;
  moves: PlannedMove[];
  left: LeftBehind[];
  /** predicted time from the first move's start to the last move's end, ms */
  makespanMs: number;
  /** max(Σ t_j / k, max t_j) over the planned moves (fleet-anchors.md section 3) */
  lowerBoundMs: number;
  maxParallel: number;
  /** rebalance: standard deviation of normalized host load before and after the plan */
  imbalanceBefore?: number;
  imbalanceAfter?: number;
  /** a digest of what the plan depends on (hosts' capacity, maintenance, the moved VMs' homes) */
  snapshotDigest: string;
}

export interface EvacuationRequest {
  hostId: string;
  maxParallel: number;
  /** a VM that cannot move live may move cold */
  allowCold: boolean;
  /** stopped VMs move (cold); otherwise they stay and the report says so */
  includeStopped: boolean;
}

export interface RebalanceRequest {
  /** 1 = only moves that fix a violated rule ... 5 = any move with a small benefit */
  level: 1 | 2 | 3 | 4 | 5;
  maxMoves: number;
  maxParallel: number;
  /** a VM moved less than this long ago (ms) is not moved again */
  cooldownMs: number;
}
