/**
 * ferry's inventory and audit schema, as MikroORM `defineEntity` schemas (no decorators, no
 * reflect-metadata: works under tsx/esbuild). Ids are strings chosen by the caller (`host-a`,
 * `vm-<uuid>`) so an activity retried after a crash can pass the same id and find its own row.
 * References between rows are plain id columns (no ORM relations): activities pass ids across
 * the workflow boundary anyway, and every lookup is explicit in the repositories.
 *
 * Changing anything here needs a new migration for BOTH dialects: see db/README.md.
 */
import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

export const HOST_STATES = ['up', 'down'] as const;
export type HostState = (typeof HOST_STATES)[number];
export const HOST_DRIVERS = ['sim', 'qemu', 'libvirt'] as const;
export type HostDriver = (typeof HOST_DRIVERS)[number];
export const VM_STATES = ['provisioning', 'running', 'stopped', 'paused', 'migrating', 'error', 'deleted'] as const;
export type VmState = (typeof VM_STATES)[number];
export const ALLOCATION_KINDS = ['vm', 'reservation'] as const;
export type AllocationKind = (typeof ALLOCATION_KINDS)[number];
export const OPERATION_KINDS = ['provision', 'migration', 'evacuation', 'lifecycle', 'template', 'rebalance', 'maintenance', 'reconcile', 'drift'] as const;
export type OperationKind = (typeof OPERATION_KINDS)[number];
export const OPERATION_STATES = ['running', 'completed', 'failed', 'cancelled', 'rolled-back'] as const;
export type OperationState = (typeof OPERATION_STATES)[number];

/** Simulator knobs for a guest's memory behaviour (ignored by real drivers). */
export interface VmWorkload {
  dirtyRateBytesPerSec: number;
  writableWorkingSetBytes: number;
  /** simulator: bytes/s the guest writes to its disks (storage migration) */
  diskWriteRateBytesPerSec?: number;
}

/** Free-form, JSON-serialisable audit detail of an operation (merged by updateOperation). */
export type OperationDetails = Record<string, unknown>;

// Doubles come back from PostgreSQL as strings unless the runtime type says number.
const ratio = () => p.double().runtimeType('number').$type<number>();
const createdAt = () => p.datetime().onCreate(() => new Date());
const updatedAt = () => p.datetime().onCreate(() => new Date()).onUpdate(() => new Date());

export const Host = defineEntity({
  name: 'Host',
  tableName: 'host',
  properties: {
    id: p.string().primary(),
    name: p.string(),
    rack: p.string().nullable(),
    cpuModel: p.string(),
    cpuFeatures: p.json<string[]>(),
    cpus: p.integer(),
    memoryMiB: p.integer().name('memory_mib'),
    cpuOvercommit: ratio().default(4),
    memoryOvercommit: ratio().default(1),
    maintenance: p.boolean().default(false),
    state: p.string().$type<HostState>().default('up'),
    driver: p.string().$type<HostDriver>().default('sim'),
    migrationAddress: p.string().nullable(),
    tags: p.json<string[]>(),
    maxOutgoingMigrations: p.integer().default(2),
    maxIncomingMigrations: p.integer().default(2),
    version: p.integer().version(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
});
export type Host = InferEntity<typeof Host>;

export const Datastore = defineEntity({
  name: 'Datastore',
  tableName: 'datastore',
  properties: {
    id: p.string().primary(),
    name: p.string().unique(),
    shared: p.boolean().default(false),
    capacityGiB: p.integer().name('capacity_gib'),
    throughputMiBps: p.integer().name('throughput_mibps'),
    /** Hosts that reach this datastore (a local datastore lists one host). */
    hostIds: p.json<string[]>(),
    /** Bumped by every reservation that uses this datastore: serialises disk accounting. */
    version: p.integer().version(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
});
export type Datastore = InferEntity<typeof Datastore>;

export const Template = defineEntity({
  name: 'Template',
  tableName: 'template',
  properties: {
    id: p.string().primary(),
    name: p.string().unique(),
    os: p.string(),
    imagePath: p.string(),
    /** Datastores that hold a copy of the image (placement filters on it). */
    datastoreIds: p.json<string[]>(),
    diskGiB: p.integer().name('disk_gib'),
    minMemoryMiB: p.integer().name('min_memory_mib'),
    requiredCpuFeatures: p.json<string[]>(),
    owner: p.string().nullable(),
    department: p.string().nullable(),
    tags: p.json<string[]>(),
    sourceVmId: p.string().nullable(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
});
export type Template = InferEntity<typeof Template>;

export const Network = defineEntity({
  name: 'Network',
  tableName: 'network',
  properties: {
    id: p.string().primary(),
    name: p.string().unique(),
    vlan: p.integer().nullable(),
    cidr: p.string(),
    gateway: p.string(),
    dns: p.json<string[]>(),
    /** Hosts where this network is bridged. */
    hostIds: p.json<string[]>(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
});
export type Network = InferEntity<typeof Network>;

export const IpPool = defineEntity({
  name: 'IpPool',
  tableName: 'ip_pool',
  properties: {
    id: p.string().primary(),
    networkId: p.string().index(),
    rangeStart: p.string(),
    rangeEnd: p.string(),
    createdAt: createdAt(),
  },
});
export type IpPool = InferEntity<typeof IpPool>;

export const IpAllocation = defineEntity({
  name: 'IpAllocation',
  tableName: 'ip_allocation',
  // The database, not the application, forbids a double allocation: concurrent allocators in
  // different processes race on INSERT and the loser moves on to the next address.
  uniques: [
    { name: 'ip_allocation_network_address_unique', properties: ['networkId', 'address'] },
    { name: 'ip_allocation_network_vm_unique', properties: ['networkId', 'vmId'] },
  ],
  properties: {
    id: p.string().primary(),
    networkId: p.string(),
    address: p.string(),
    vmId: p.string().index(),
    createdAt: createdAt(),
  },
});
export type IpAllocation = InferEntity<typeof IpAllocation>;

export const Vm = defineEntity({
  name: 'Vm',
  tableName: 'vm',
  indexes: [{ name: 'vm_host_id_index', properties: ['hostId'] }],
  properties: {
    id: p.string().primary(),
    name: p.string().unique(),
    state: p.string().$type<VmState>().default('provisioning'),
    hostId: p.string().nullable(),
    datastoreId: p.string().nullable(),
    ip: p.string().nullable(),
    networkId: p.string().nullable(),
    mac: p.string().nullable(),
    cpus: p.integer(),
    memoryMiB: p.integer().name('memory_mib'),
    diskGiB: p.integer().name('disk_gib'),
    templateId: p.string().nullable(),
    diskPaths: p.json<string[]>(),
    seedPath: p.string().nullable(),
    /** CPU features the guest was started with (a live-migration target must offer them all). */
    cpuFeatures: p.json<string[]>(),
    tags: p.json<string[]>(),
    /** never on one host with another VM carrying this tag (placement and every fleet plan) */
    antiAffinityTag: p.string().nullable(),
    /** kept on one host with the other VMs carrying this tag */
    affinityTag: p.string().nullable(),
    /** end of the VM's last completed migration (rebalance cool-down: no ping-pong) */
    lastMigratedAt: p.datetime().nullable(),
    workload: p.json<VmWorkload>().nullable(),
    error: p.text().nullable(),
    version: p.integer().version(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
});
export type Vm = InferEntity<typeof Vm>;

export const Allocation = defineEntity({
  name: 'Allocation',
  tableName: 'allocation',
  // Idempotency key of reserve(): a retried activity finds its own allocation. NULL operation ids
  // (allocations recorded outside a workflow) never collide with each other.
  uniques: [{ name: 'allocation_operation_host_vm_unique', properties: ['operationId', 'hostId', 'vmId'] }],
  indexes: [
    { name: 'allocation_host_id_index', properties: ['hostId'] },
    { name: 'allocation_vm_id_index', properties: ['vmId'] },
    { name: 'allocation_datastore_id_index', properties: ['datastoreId'] },
  ],
  properties: {
    id: p.string().primary(),
    hostId: p.string(),
    vmId: p.string(),
    kind: p.string().$type<AllocationKind>(),
    cpus: p.integer(),
    memoryMiB: p.integer().name('memory_mib'),
    diskGiB: p.integer().name('disk_gib'),
    datastoreId: p.string().nullable(),
    /** Workflow/operation that made it. */
    operationId: p.string().nullable(),
    createdAt: createdAt(),
  },
});
export type Allocation = InferEntity<typeof Allocation>;

export const Operation = defineEntity({
  name: 'Operation',
  tableName: 'operation',
  indexes: [
    { name: 'operation_workflow_id_index', properties: ['workflowId'] },
    { name: 'operation_vm_id_index', properties: ['vmId'] },
    { name: 'operation_principal_index', properties: ['principal'] },
    { name: 'operation_started_at_id_index', properties: ['startedAt', 'id'] },
  ],
  properties: {
    id: p.string().primary(),
    workflowId: p.string(),
    runId: p.string().nullable(),
    kind: p.string().$type<OperationKind>(),
    subkind: p.string().nullable(),
    vmId: p.string().nullable(),
    state: p.string().$type<OperationState>().default('running'),
    stage: p.string().nullable(),
    sourceHostId: p.string().nullable(),
    targetHostId: p.string().nullable(),
    details: p.json<OperationDetails>(),
    /** who started it: an API token's name (`bootstrap-admin`, `env-operator`, a named token), `schedule`, … */
    principal: p.string().nullable(),
    error: p.text().nullable(),
    startedAt: p.datetime().onCreate(() => new Date()),
    endedAt: p.datetime().nullable(),
    version: p.integer().version(),
    updatedAt: updatedAt(),
  },
});
export type Operation = InferEntity<typeof Operation>;

export const PLAN_KINDS = ['evacuation', 'rebalance'] as const;
export type PlanKind = (typeof PLAN_KINDS)[number];
export const PLAN_STATES = ['proposed', 'approved', 'refused'] as const;
export type PlanState = (typeof PLAN_STATES)[number];

/**
 * A stored dry-run plan (evacuation or rebalance). Approving it executes exactly its moves after
 * re-checking them against the inventory of that moment; a stale plan is refused, never half run.
 */
export const Plan = defineEntity({
  name: 'Plan',
  tableName: 'plan',
  properties: {
    id: p.string().primary(),
    kind: p.string().$type<PlanKind>(),
    /** evacuation: the host; rebalance: the cluster name */
    subject: p.string(),
    state: p.string().$type<PlanState>().default('proposed'),
    /** the request the plan answers (EvacuationRequest / RebalanceRequest) */
    request: p.json<Record<string, unknown>>(),
    /** the FleetPlan itself (domain/plan-types.ts) */
    plan: p.json<Record<string, unknown>>(),
    /** workflow that executes it once approved */
    workflowId: p.string().nullable(),
    refusal: p.text().nullable(),
    createdAt: createdAt(),
    decidedAt: p.datetime().nullable(),
    version: p.integer().version(),
  },
});
export type Plan = InferEntity<typeof Plan>;

export const DRIFT_KINDS = ['unknown-vm', 'missing-vm', 'wrong-state', 'wrong-host', 'stuck-paused'] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];
export const DRIFT_STATES = ['open', 'resolved'] as const;
export type DriftState = (typeof DRIFT_STATES)[number];

/**
 * A disagreement between inventory and what a hypervisor reports, found by Reconcile. The id is
 * `<kind>-<vmId>` (one open record per VM and kind): a later reconcile that finds the same drift
 * updates lastSeenAt instead of adding a row. Reconcile never acts on it; an operator resolves it.
 */
export const Drift = defineEntity({
  name: 'Drift',
  tableName: 'drift',
  indexes: [{ name: 'drift_state_index', properties: ['state'] }],
  properties: {
    id: p.string().primary(),
    kind: p.string().$type<DriftKind>(),
    vmId: p.string(),
    /** host the hypervisor report came from (or the inventory's host for missing-vm) */
    hostId: p.string(),
    state: p.string().$type<DriftState>().default('open'),
    /** what inventory says and what the hypervisor says */
    expected: p.json<Record<string, unknown>>(),
    observed: p.json<Record<string, unknown>>(),
    /** the Reconcile operation that found it first */
    operationId: p.string().nullable(),
    resolution: p.string().nullable(),
    resolvedBy: p.string().nullable(),
    detectedAt: createdAt(),
    lastSeenAt: p.datetime().onCreate(() => new Date()),
    resolvedAt: p.datetime().nullable(),
    version: p.integer().version(),
  },
});
export type Drift = InferEntity<typeof Drift>;

export const TOKEN_ROLES = ['viewer', 'operator', 'admin'] as const;
export type TokenRole = (typeof TOKEN_ROLES)[number];

/**
 * A named API token (api/tokens.ts). Only the sha256 of the secret is stored: the secret is shown
 * once, at creation. Revoking sets revokedAt (the row stays: operations name it as their principal).
 */
export const ApiToken = defineEntity({
  name: 'ApiToken',
  tableName: 'api_token',
  properties: {
    id: p.string().primary(),
    name: p.string().unique(),
    role: p.string().$type<TokenRole>(),
    /** hex sha256 of the secret; unique so a lookup by hash finds at most one row */
    hash: p.string().unique(),
    createdAt: createdAt(),
    createdBy: p.string(),
    expiresAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
    lastUsedAt: p.datetime().nullable(),
  },
});
export type ApiToken = InferEntity<typeof ApiToken>;

/**
 * The first answer to a request that carried an Idempotency-Key (api/idempotency.ts). The key is
 * scoped to the principal; method, path and body hash tell a repeat from a different request
 * reusing the key. status NULL: the first request is still being answered.
 */
export const IdempotencyRecord = defineEntity({
  name: 'IdempotencyRecord',
  tableName: 'idempotency_record',
  uniques: [{ name: 'idempotency_record_principal_key_unique', properties: ['principal', 'key'] }],
  properties: {
    id: p.string().primary(),
    principal: p.string(),
    key: p.string(),
    method: p.string(),
    path: p.text(),
    bodyHash: p.string(),
    status: p.integer().nullable(),
    response: p.json<unknown>().nullable(),
    createdAt: createdAt(),
  },
});
export type IdempotencyRecord = InferEntity<typeof IdempotencyRecord>;

export const entities = [Host, Datastore, Template, Network, IpPool, IpAllocation, Vm, Allocation, Operation, Plan, Drift, ApiToken, IdempotencyRecord];
