// Control-worker activities of Reconcile: which hosts to ask, and the comparison of their reports
// with inventory (domain/drift.ts) recorded as Drift rows (db/repositories/drift.ts). Database
// only; never touches a VM. Idempotent: recording the same reports twice changes only lastSeenAt.
import type { Db } from '../db/orm.js';
import { Allocation, Host, Operation, Vm } from '../db/entities.js';
import { recordFindings } from '../db/repositories/drift.js';
import { updateOperation } from '../db/repositories/operations.js';
import { compareInventory, emptyCounts, type DriftKindName, type HostReport, type HostUtilization, type ReconcileResult } from '../domain/drift.js';
import { withFailureMapping } from './errors.js';

export interface DriftActivityDeps {
  db: Db;
}

export function createDriftActivities(deps: DriftActivityDeps) {
  const { db } = deps;
  const acts = {
    /** Hosts Reconcile asks: every host that is up (maintenance hosts too: their VMs still run). */
    async reconcileHosts(): Promise<string[]> {
      const hosts = await db.em().find(Host, { state: 'up' }, { orderBy: { id: 'asc' } });
      return hosts.map((h) => h.id);
    },

    /**
     * Compares the reports with inventory, records the drift, refreshes utilization on the
     * operation's details. `unanswered` hosts are not judged at all.
     */
    async recordDrift(input: { operationId: string; hostsAsked: string[]; reports: HostReport[]; unanswered: Array<{ hostId: string; message: string }> }): Promise<ReconcileResult> {
      const em = db.em();
      const [inventory, running] = await Promise.all([
        em.find(Vm, { state: { $ne: 'deleted' } }, { fields: ['id', 'name', 'state', 'hostId'] }),
        em.find(Operation, { state: 'running', vmId: { $ne: null } }, { fields: ['vmId'] }),
      ]);
      const cmp = compareInventory({
        inventory: inventory.map((v) => ({ id: v.id, name: v.name, state: v.state, hostId: v.hostId ?? null })),
        reports: input.reports,
        busyVmIds: running.map((o) => o.vmId!),
      });
      const rec = await recordFindings(db, {
        operationId: input.operationId,
        findings: cmp.findings,
        answeredHostIds: input.reports.map((r) => r.hostId),
        skippedVmIds: cmp.skippedVmIds,
      });
      const counts = emptyCounts();
      for (const [k, n] of Object.entries(rec.openByKind)) counts[k as DriftKindName] = n;
      const result: ReconcileResult = {
        operationId: input.operationId,
        state: 'running',
        hostsAsked: input.hostsAsked,
        hostsAnswered: input.reports.map((r) => r.hostId),
        hostsUnanswered: input.unanswered,
        vmsSeen: cmp.vmsSeen,
        skippedVmIds: cmp.skippedVmIds,
        counts,
        openDriftIds: rec.open,
        newDriftIds: rec.created,
        reopenedDriftIds: rec.reopened,
        goneDriftIds: rec.gone,
        utilization: await utilization(db),
      };
      await updateOperation(db, input.operationId, { stage: 'recorded', details: { result } });
      return result;
    },
  };
  return withFailureMapping(acts);
}

/** Allocated / allocatable (with overcommit) per host, as /metrics' ferry_host_utilization_ratio. */
async function utilization(db: Db): Promise<HostUtilization[]> {
  const em = db.em();
  const [hosts, allocs] = await Promise.all([em.find(Host, {}, { orderBy: { id: 'asc' } }), em.find(Allocation, {}, { fields: ['hostId', 'cpus', 'memoryMiB'] })]);
  return hosts.map((h) => {
    const mine = allocs.filter((a) => a.hostId === h.id);
    const cpuCap = h.cpus * h.cpuOvercommit;
    const memCap = h.memoryMiB * h.memoryOvercommit;
    const round = (x: number) => Math.round(x * 10_000) / 10_000;
    return {
      hostId: h.id,
      cpu: cpuCap > 0 ? round(mine.reduce((s, a) => s + a.cpus, 0) / cpuCap) : 0,
      memory: memCap > 0 ? round(mine.reduce((s, a) => s + a.memoryMiB, 0) / memCap) : 0,
    };
  });
}

export type DriftActivities = ReturnType<typeof createDriftActivities>;
