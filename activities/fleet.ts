// Control-worker activities of the fleet operations (evacuation, rebalance, reconcile): the
// inventory snapshot a plan is made from, maintenance mode on the Operation log, stored plans,
// and where each VM ended. Database only, like every control activity; idempotent by key.
import type { Db } from '../db/orm.js';
import { Host, Network, Operation, Plan, Vm, type PlanKind, type PlanState } from '../db/entities.js';
import { setMaintenance } from '../db/repositories/maintenance.js';
import type { ClusterSnapshot, FleetPlan, PlanLink, PlanVm, PlanVmState } from '../domain/plan-types.js';
import { hostCandidates } from './queries.js';
import { ErrorType, failure } from './errors.js';

/** How the control worker predicts a move's wall-clock time (see domain/plan-types.ts). */
export interface FleetPredictionConfig {
  /** the simulator's time scale; 1 on a real hypervisor */
  timeScale: number;
  /** measured fixed cost of one live migration outside its transfer (workflow tasks, activities) */
  perMoveOverheadMs: number;
  coldCopyBytesPerSec: number;
  /** bandwidth of a host pair no agent reports a link for */
  defaultLinkBandwidthBytesPerSec: number;
}

/**
 * Defaults: a live migration through ferry costs about 1 s of wall time beyond its transfer on
 * the dev server (16 activities and 17 workflow tasks at ~55 ms each; bench/README.md); cold
 * copies at a modest datastore's 200 MiB/s; hosts with no known link talk at 1 GiB/s (the
 * simulator's default link).
 */
export const DEFAULT_FLEET_PREDICTION: FleetPredictionConfig = {
  timeScale: 1,
  perMoveOverheadMs: 1000,
  coldCopyBytesPerSec: 200 * 1024 ** 2,
  defaultLinkBandwidthBytesPerSec: 1024 ** 3,
};

export interface FleetActivityDeps {
  db: Db;
  prediction?: Partial<FleetPredictionConfig>;
}

const MOVABLE_STATES: readonly string[] = ['running', 'stopped', 'paused', 'migrating', 'provisioning', 'error'];

export function createFleetActivities(fleetDeps: FleetActivityDeps) {
  const { db } = fleetDeps;
  const deps = { db, prediction: { ...DEFAULT_FLEET_PREDICTION, ...fleetDeps.prediction } };
  return {
    /**
     * The prediction settings, with the per-move overhead LEARNED from the fleet moves this
     * ferry finished recently (their recorded durations minus the modelled transfer part), so
     * predictions follow this machine and this Temporal server; the default until there are some.
     */
    async fleetSettings(): Promise<FleetPredictionConfig & { overheadLearnedFrom: number }> {
      const learned = await learnedOverheadMs(db);
      return { ...deps.prediction, perMoveOverheadMs: learned?.ms ?? deps.prediction.perMoveOverheadMs, overheadLearnedFrom: learned?.samples ?? 0 };
    },

    /**
     * The inventory as the planner sees it. A VM whose migration is running counts as migrating
     * (never planned), whatever its row says. `links` come from the host agents (hostInfo).
     */
    async fleetSnapshot(input: { takenAtMs: number; links: PlanLink[] }): Promise<ClusterSnapshot> {
      const em = db.em();
      const [hosts, hostRows, vms, networks, running] = await Promise.all([
        hostCandidates(db),
        em.find(Host, {}),
        em.find(Vm, { state: { $ne: 'deleted' }, hostId: { $ne: null } }, { orderBy: { id: 'asc' } }),
        em.find(Network, {}),
        em.find(Operation, { kind: 'migration', state: 'running' }),
      ]);
      const limits = new Map(hostRows.map((h) => [h.id, h]));
      const inFlight = new Set(running.map((o) => o.vmId).filter((v): v is string => Boolean(v)));
      const netName = new Map(networks.map((n) => [n.id, n.name]));
      const planVms: PlanVm[] = vms
        .filter((v) => MOVABLE_STATES.includes(v.state))
        .map((v) => ({
          id: v.id,
          name: v.name,
          hostId: v.hostId!,
          state: (inFlight.has(v.id) ? 'migrating' : v.state) as PlanVmState,
          cpus: v.cpus,
          memoryMiB: v.memoryMiB,
          diskGiB: v.diskGiB,
          cpuFeatures: v.cpuFeatures,
          datastoreIds: v.datastoreId ? [v.datastoreId] : [],
          network: v.networkId ? netName.get(v.networkId) : undefined,
          tags: v.tags,
          antiAffinityTag: v.antiAffinityTag ?? undefined,
          affinityTag: v.affinityTag ?? undefined,
          dirtyRateBytesPerSec: v.workload?.dirtyRateBytesPerSec ?? 0,
          writableWorkingSetBytes: v.workload?.writableWorkingSetBytes ?? 0,
          lastMovedAtMs: v.lastMigratedAt ? v.lastMigratedAt.getTime() : undefined,
        }));
      return {
        takenAtMs: input.takenAtMs,
        hosts: hosts.map((h) => ({ ...h, maxOutgoing: limits.get(h.id)!.maxOutgoingMigrations, maxIncoming: limits.get(h.id)!.maxIncomingMigrations })),
        vms: planVms,
        links: input.links,
        defaultLinkBandwidthBytesPerSec: deps.prediction.defaultLinkBandwidthBytesPerSec,
      };
    },

    /** Enter or leave maintenance, recorded on the Operation log (idempotent by key). */
    async setHostMaintenance(input: { hostId: string; enabled: boolean; key: string; workflowId: string; reason: string; principal?: string }): Promise<{ changed: boolean }> {
      const r = await setMaintenance(db, input);
      return { changed: r.changed };
    },

    /** Stores a dry-run plan; idempotent by id (a retried activity finds its own row). */
    async storePlan(input: { id: string; kind: PlanKind; subject: string; request: Record<string, unknown>; plan: FleetPlan }): Promise<void> {
      const em = db.em();
      if (await em.findOne(Plan, { id: input.id })) return;
      em.create(Plan, {
        id: input.id,
        kind: input.kind,
        subject: input.subject,
        state: 'proposed',
        request: input.request,
        plan: input.plan as unknown as Record<string, unknown>,
        workflowId: null,
        refusal: null,
        decidedAt: null,
      });
      await em.flush();
    },

    async getPlan(input: { id: string }): Promise<{ id: string; kind: PlanKind; subject: string; state: PlanState; request: Record<string, unknown>; plan: FleetPlan }> {
      const p = await db.em().findOne(Plan, { id: input.id });
      if (!p) throw failure(ErrorType.NotFound, `plan ${input.id} does not exist`);
      return { id: p.id, kind: p.kind, subject: p.subject, state: p.state, request: p.request, plan: p.plan as unknown as FleetPlan };
    },

    /** Records the approval's outcome: executed by `workflowId`, or refused with the reason. */
    async decidePlan(input: { id: string; state: Exclude<PlanState, 'proposed'>; workflowId?: string; refusal?: string }): Promise<void> {
      const em = db.em();
      const p = await em.findOne(Plan, { id: input.id });
      if (!p) throw failure(ErrorType.NotFound, `plan ${input.id} does not exist`);
      p.state = input.state;
      p.workflowId = input.workflowId ?? p.workflowId;
      p.refusal = input.refusal ?? null;
      p.decidedAt ??= new Date();
      await em.flush();
    },

    /** Where each VM is now (the evacuation report reads the inventory, not its own belief). */
    async vmHomes(input: { vmIds: string[] }): Promise<Record<string, { hostId: string | null; state: string }>> {
      const rows = await db.em().find(Vm, { id: { $in: input.vmIds } });
      return Object.fromEntries(rows.map((v) => [v.id, { hostId: v.hostId ?? null, state: v.state }]));
    },
  };
}

export type FleetActivities = ReturnType<typeof createFleetActivities>;

/** How many of the latest finished fleet moves the overhead is learned from. */
const OVERHEAD_SAMPLES = 40;

interface ReportRow {
  state?: string;
  kind?: string;
  predictedMs?: number;
  durationMs?: number;
  attempts?: number;
}

/**
 * Median of (actual duration - modelled transfer) over recent moved VMs of finished evacuations
 * and rebalances; each operation records the overhead its plan assumed (details.prediction), so
 * the transfer part is predictedMs - that overhead. Undefined with fewer than 3 samples.
 */
export async function learnedOverheadMs(db: Db): Promise<{ ms: number; samples: number } | undefined> {
  const ops = await db.em().find(Operation, { kind: { $in: ['evacuation', 'rebalance'] }, state: { $ne: 'running' } }, { orderBy: { startedAt: 'desc' }, limit: 20 });
  const samples: number[] = [];
  for (const op of ops) {
    const d = op.details as { report?: ReportRow[]; prediction?: { perMoveOverheadMs?: number } };
    const assumed = d.prediction?.perMoveOverheadMs;
    if (typeof assumed !== 'number' || !Array.isArray(d.report)) continue;
    for (const v of d.report) {
      // a retried move's duration covers two attempts: not a sample of one move's overhead
      if (v.state !== 'moved' || v.kind !== 'live' || v.attempts !== 1 || typeof v.predictedMs !== 'number' || typeof v.durationMs !== 'number') continue;
      samples.push(v.durationMs - (v.predictedMs - assumed));
      if (samples.length >= OVERHEAD_SAMPLES) break;
    }
    if (samples.length >= OVERHEAD_SAMPLES) break;
  }
  if (samples.length < 3) return undefined;
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  const median = samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
  return { ms: Math.max(0, Math.round(median)), samples: samples.length };
}
