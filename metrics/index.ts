// Every ferry metric, registered on an injected Registry (never prom-client's global one).
// Fleet metrics (migrations, provisions, ...) are derived in the API from the database's
// Operation records so they stay correct across worker restarts and with several workers;
// workers use the same definitions on their own registry for process-local observations.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics(registry: Registry, opts: { defaultMetrics?: boolean } = {}) {
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'ferry_process_' });
  const registers = [registry];
  return {
    registry,
    migrationsTotal: new Counter({ name: 'ferry_migrations_total', help: 'Migrations finished, by kind and result', labelNames: ['kind', 'result'] as const, registers }),
    migrationDuration: new Histogram({
      name: 'ferry_migration_duration_seconds',
      help: 'Wall time of finished migrations',
      labelNames: ['kind'] as const,
      buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600],
      registers,
    }),
    migrationDowntime: new Histogram({
      name: 'ferry_migration_downtime_seconds',
      help: 'Guest downtime of live migrations as reported by the hypervisor',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers,
    }),
    migrationRounds: new Histogram({
      name: 'ferry_migration_precopy_rounds',
      help: 'Pre-copy rounds of live migrations',
      buckets: [1, 2, 3, 5, 8, 13, 21, 30, 50],
      registers,
    }),
    migrationBytes: new Counter({ name: 'ferry_migration_bytes_total', help: 'Bytes sent by migrations', labelNames: ['kind'] as const, registers }),
    provisionsTotal: new Counter({ name: 'ferry_provisions_total', help: 'Provisions finished, by result', labelNames: ['result'] as const, registers }),
    provisionStepDuration: new Histogram({
      name: 'ferry_provision_step_duration_seconds',
      help: 'Duration of each provisioning step',
      labelNames: ['step'] as const,
      buckets: [0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers,
    }),
    compensationsTotal: new Counter({
      name: 'ferry_compensations_total',
      help: 'Compensations run, by workflow, step and result',
      labelNames: ['workflow', 'step', 'result'] as const,
      registers,
    }),
    evacuationsTotal: new Counter({ name: 'ferry_evacuations_total', help: 'Host evacuations finished, by result', labelNames: ['result'] as const, registers }),
    evacuationVms: new Gauge({ name: 'ferry_evacuation_vms', help: 'VMs of the evacuations running now, by state (moved, in-flight, waiting, failed, left, cancelled)', labelNames: ['state'] as const, registers }),
    hostUtilization: new Gauge({
      name: 'ferry_host_utilization_ratio',
      help: 'Allocated / allocatable capacity per host and resource',
      labelNames: ['host', 'resource'] as const,
      registers,
    }),
    clusterImbalance: new Gauge({ name: 'ferry_cluster_imbalance', help: 'Standard deviation of normalized host load (mean of cpu and memory ratios) over hosts up and not in maintenance, as Rebalance measures it', registers }),
    operationsInFlight: new Gauge({ name: 'ferry_operations_in_flight', help: 'Operations currently running', labelNames: ['kind'] as const, registers }),
    drift: new Gauge({ name: 'ferry_drift', help: 'Open drift between inventory and hypervisors, by kind (Reconcile)', labelNames: ['kind'] as const, registers }),
    activationStuck: new Gauge({
      name: 'ferry_migration_activation_stuck',
      help: 'Migrations past commitment whose activation keeps failing (alert on > 0)',
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
