// Fleet metrics computed at scrape time from the database (Operation records, allocations,
// hosts), so they are right across worker restarts and with several workers and API replicas:
// every scrape resets the metrics from createMetrics() and sets them from the records. Workers
// keep their own process-local copies on their own registry/port.
import { Registry } from 'prom-client';
import type { Db } from '../db/orm.js';
import { Allocation, Drift, DRIFT_KINDS, Host, Operation, OPERATION_KINDS } from '../db/entities.js';
import { createMetrics, type Metrics } from '../metrics/index.js';

const FINISHED = ['completed', 'failed', 'cancelled', 'rolled-back'] as const;

type OpRow = Pick<Operation, 'kind' | 'subkind' | 'state' | 'stage' | 'details' | 'startedAt' | 'endedAt'>;

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);

export interface FleetMetrics {
  metrics: Metrics;
  /** the registry's exposition content type */
  contentType: string;
  /** refreshes every fleet metric from the database, then renders the registry */
  render(): Promise<string>;
}

/**
 * ferry's metrics on `registry`: created there, or (when the process already called
 * createMetrics on it, as the all-in-one entrypoint does) the ones already registered.
 */
export function metricsOn(registry: Registry): Metrics {
  if (!registry.getSingleMetric('ferry_migrations_total')) return createMetrics(registry);
  const probe = createMetrics(new Registry());
  const found: Record<string, unknown> = { registry };
  for (const [key, m] of Object.entries(probe)) {
    if (key === 'registry') continue;
    const name = (m as unknown as { name: string }).name;
    const existing = registry.getSingleMetric(name);
    if (!existing) throw new Error(`metrics registry holds some ferry metrics but not ${name}`);
    found[key] = existing;
  }
  return found as Metrics;
}

export function createFleetMetrics(db: Db, registry: Registry): FleetMetrics {
  const metrics = metricsOn(registry);
  // Scrapes are serialised: two concurrent scrapes must not interleave reset() and set().
  let chain: Promise<unknown> = Promise.resolve();

  async function refresh(): Promise<void> {
    const em = db.em();
    const [ops, hosts, allocations, drifts] = await Promise.all([
      em.find(Operation, {}, { fields: ['kind', 'subkind', 'state', 'stage', 'details', 'startedAt', 'endedAt'] }),
      em.find(Host, {}),
      em.find(Allocation, {}, { fields: ['hostId', 'cpus', 'memoryMiB'] }),
      em.find(Drift, { state: 'open' }, { fields: ['kind'] }),
    ]);
    // From here on everything is synchronous: the registry never shows a half-set state.
    for (const m of [
      metrics.migrationsTotal,
      metrics.migrationDuration,
      metrics.migrationDowntime,
      metrics.migrationRounds,
      metrics.migrationBytes,
      metrics.provisionsTotal,
      metrics.provisionStepDuration,
      metrics.compensationsTotal,
      metrics.evacuationsTotal,
      metrics.evacuationVms,
      metrics.hostUtilization,
      metrics.clusterImbalance,
      metrics.operationsInFlight,
      metrics.activationStuck,
      metrics.drift,
    ]) {
      m.reset();
    }
    for (const kind of OPERATION_KINDS) metrics.operationsInFlight.set({ kind }, 0);
    let stuck = 0;
    for (const op of ops as OpRow[]) observeOperation(metrics, op, () => stuck++);
    metrics.activationStuck.set(stuck);
    for (const kind of DRIFT_KINDS) metrics.drift.set({ kind }, drifts.filter((d) => d.kind === kind).length);

    const used = new Map<string, { cpus: number; memoryMiB: number }>();
    for (const a of allocations) {
      const u = used.get(a.hostId) ?? { cpus: 0, memoryMiB: 0 };
      u.cpus += a.cpus;
      u.memoryMiB += a.memoryMiB;
      used.set(a.hostId, u);
    }
    const loads: number[] = [];
    for (const h of hosts) {
      const u = used.get(h.id) ?? { cpus: 0, memoryMiB: 0 };
      const cpuCap = h.cpus * h.cpuOvercommit;
      const memCap = h.memoryMiB * h.memoryOvercommit;
      const cpu = cpuCap > 0 ? u.cpus / cpuCap : 0;
      const mem = memCap > 0 ? u.memoryMiB / memCap : 0;
      metrics.hostUtilization.set({ host: h.id, resource: 'cpu' }, cpu);
      metrics.hostUtilization.set({ host: h.id, resource: 'memory' }, mem);
      // the planner's normalized load (domain/rebalance.ts): the mean of the cpu and memory ratios
      if (h.state === 'up' && !h.maintenance) loads.push((cpu + mem) / 2);
    }
    metrics.clusterImbalance.set(stddev(loads));
  }

  return {
    metrics,
    contentType: registry.contentType,
    render() {
      const next = chain.then(async () => {
        await refresh();
        return registry.metrics();
      });
      chain = next.catch(() => undefined);
      return next;
    },
  };
}

function stddev(xs: number[]): number {
  if (xs.length === 0) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length);
}

function observeOperation(metrics: Metrics, op: OpRow, onStuck: () => void): void {
  const d = (op.details ?? {}) as Record<string, unknown>;
  if (op.state === 'running') {
    metrics.operationsInFlight.inc({ kind: op.kind });
    if (op.kind === 'evacuation') observeEvacuationCounts(metrics, d.counts);
    if (op.kind === 'migration' && (d.activationStuck === true || (op.stage === 'activation' && (num(d.activationAttempts) ?? 0) > 3))) onStuck();
    return;
  }
  if (!(FINISHED as readonly string[]).includes(op.state)) return;
  const durationMs = num(d.durationMs) ?? (op.endedAt ? op.endedAt.getTime() - op.startedAt.getTime() : undefined);
  recordCompensations(metrics, op.kind, d.compensations);
  switch (op.kind) {
    case 'migration': {
      const kind = op.subkind ?? String(d.kind ?? 'live');
      metrics.migrationsTotal.inc({ kind, result: op.state });
      if (durationMs !== undefined && durationMs >= 0) metrics.migrationDuration.observe({ kind }, durationMs / 1000);
      const downtime = num(d.downtimeMs);
      if (downtime !== undefined && op.state === 'completed') metrics.migrationDowntime.observe(downtime / 1000);
      const rounds = num(d.rounds) ?? num((d.progress as Record<string, unknown> | undefined)?.round);
      if (rounds !== undefined && kind === 'live') metrics.migrationRounds.observe(rounds);
      const bytes = num(d.transferredBytes) ?? num((d.progress as Record<string, unknown> | undefined)?.transferredBytes);
      if (bytes !== undefined) metrics.migrationBytes.inc({ kind }, bytes);
      break;
    }
    case 'provision': {
      metrics.provisionsTotal.inc({ result: op.state });
      const timings = d.stepTimingsMs;
      if (timings && typeof timings === 'object') {
        for (const [step, ms] of Object.entries(timings as Record<string, unknown>)) {
          const v = num(ms);
          if (v !== undefined) metrics.provisionStepDuration.observe({ step }, v / 1000);
        }
      }
      break;
    }
    case 'evacuation':
      metrics.evacuationsTotal.inc({ result: op.state });
      break;
    default:
      break;
  }
}

function recordCompensations(metrics: Metrics, workflow: string, list: unknown): void {
  if (!Array.isArray(list)) return;
  for (const c of list as Array<Record<string, unknown>>) {
    if (!c || typeof c.name !== 'string') continue;
    metrics.compensationsTotal.inc({ workflow, step: c.name, result: c.ok === false ? 'failed' : 'ok' });
  }
}

const EVACUATION_VM_STATES = { moved: 'moved', inFlight: 'in-flight', waiting: 'waiting', failed: 'failed', left: 'left', cancelled: 'cancelled' } as const;

/** A running evacuation's per-state VM counts, as its workflow last recorded them. */
function observeEvacuationCounts(metrics: Metrics, counts: unknown): void {
  if (!counts || typeof counts !== 'object') return;
  for (const [key, state] of Object.entries(EVACUATION_VM_STATES)) {
    const n = num((counts as Record<string, unknown>)[key]);
    if (n !== undefined) metrics.evacuationVms.inc({ state }, n);
  }
}
