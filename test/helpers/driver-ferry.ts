// What ferry on a REAL driver looks like to the workflow tests, whichever driver it is (qemu-ferry.ts,
// libvirt-ferry.ts): `WorkflowFerry`, the face the shared test bodies (workflow-suite.ts) use, and
// `startFerryRig`, the wiring both helpers share: the inventory database seeded from what the
// drivers report, the Temporal client, the control worker and the in-process host agents on a
// task-queue prefix unique to the instance, provision/migrate as the API starts them.
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import type { ConsoleReader } from '../../activities/console.js';
import { Vm } from '../../db/entities.js';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import * as capacity from '../../db/repositories/capacity.js';
import * as ipam from '../../db/repositories/ipam.js';
import type { HypervisorDriver } from '../../drivers/hypervisor.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { createControlWorker, createHostAgent, runWorkers } from '../../workers/create-worker.js';
import type { AgentProcess } from '../../workers/lab/agents.js';
import type { GuestImages } from '../../workers/lab/guest-images.js';
import { controlQueue, workflowIds, type LiveMigrateInput, type ProvisionInput } from '../../workflows/definitions.js';
import { startProvision, temporalAddress } from './ferry.js';
import { formatViolations, checkInvariants, type HypervisorView, type Violation } from './invariants.js';
import assert from 'node:assert/strict';

const MiB = 1024 ** 2;

/** A datastore as the tests see it: inventory id and the folder its files are in. */
export interface TestDatastore {
  id: string;
  path: string;
  shared: boolean;
}

/** ferry on real hypervisors, as the shared workflow test bodies use it. */
export interface WorkflowFerry {
  readonly kind: 'qemu' | 'libvirt';
  client: Client;
  db: Db;
  prefix: string;
  /** the template's guest (its qcow2 is the template image) */
  guest: GuestImages;
  templateId: string;
  /** every host, in order */
  hostIds: string[];
  /** the datastores a host reaches (shared first) */
  datastoresOf(hostId: string): TestDatastore[];
  /** the driver of an in-process agent (the one its agent uses) */
  driver(hostId: string): HypervisorDriver;
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /** the guest's heartbeat counter through the host's in-process driver */
  heartbeat(hostId: string, vmId: string): Promise<number>;
  /** the hosts that hold a copy of the VM (qemu: a live QEMU process; libvirt: a domain in `virsh list --all`) */
  copies(vmId: string): Promise<string[]>;
  /** nothing of the VM is left on the host: no copy, no state file, no disk copy on its own datastores */
  assertNothingOn(hostId: string, vmId: string): Promise<void>;
  /** SIGKILLs the VM's QEMU process on the host (a destination that dies) */
  killQemu(hostId: string, vmId: string): Promise<void>;
  /** guest-disk I/O through the running QEMU's own drive (HMP qemu-io: `write -P 0xab 64M 8M`, `flush`) */
  guestDiskIo(hostId: string, vmId: string, command: string): Promise<void>;
  /** no block job left on the VM (a disk mirror or copy that was rolled back) */
  assertNoDiskJobs(hostId: string, vmId: string): Promise<void>;
  /** starts the host agent as a process (a `processAgents` host); resolves when it polls */
  spawnAgent(hostId: string): Promise<AgentProcess>;
  /**
   * With the source's agent dead during pre-copy: speeds the migration up through the hypervisor
   * itself and waits until it sits where only a (restarted) agent takes it further.
   */
  convergeWithoutAgent(sourceHostId: string, vmId: string): Promise<void>;
  /** the hypervisors' side of the invariant checker (test/helpers/invariants.ts) */
  view(): Promise<HypervisorView>;
  /** kills a VM everywhere, removes its files and forgets it in inventory (test clean-up) */
  destroyEverywhere(vmId: string): Promise<void>;
  close(): Promise<void>;
}

/** The invariant checker at rest: inventory against the hypervisors' own view; fails listing every violation. */
export async function assertConsistent(f: Pick<WorkflowFerry, 'db' | 'view'>): Promise<void> {
  const vs: Violation[] = await checkInvariants({ db: f.db, view: () => f.view() });
  assert.equal(vs.length, 0, `invariant violations:\n${formatViolations(vs)}`);
}

/**
 * Test clean-up in inventory: the VM that destroyEverywhere removed from the hypervisors becomes
 * deleted (reservations and its address released), as a delete would leave it.
 */
export async function forgetVm(db: Db, vmId: string): Promise<void> {
  await db.em().transactional(async (tx) => {
    const vm = await tx.findOne(Vm, { id: vmId });
    if (!vm || vm.state === 'deleted') return;
    await capacity.release(tx, { vmId });
    if (vm.networkId) await ipam.releaseIp(tx, { vmId, networkId: vm.networkId });
    Object.assign(vm, { state: 'deleted', hostId: null, ip: null, name: `${vm.name}.deleted.${vm.id}`.slice(0, 250) });
  });
}

/** A cluster spec for test hosts as their drivers report them. */
export function driverClusterSpec(
  driver: 'qemu' | 'libvirt',
  hosts: Array<{ id: string; cpuModel: string; cpuFeatures: string[]; cpus: number; memoryMiB: number; migrationAddress: string }>,
  opts: { templateId: string; imagePath: string; networkId: string; networkName: string; datastores: Array<{ id: string; shared: boolean; hostIds: string[] }> },
): ClusterSpec {
  const ids = hosts.map((h) => h.id);
  return {
    hosts: hosts.map((h) => ({ ...h, driver })),
    datastores: opts.datastores.map((d) => ({ ...d, capacityGiB: 100, throughputMiBps: 500 })),
    templates: [{ id: opts.templateId, name: opts.templateId, os: 'ferry-test-guest', datastoreIds: opts.datastores.map((d) => d.id), diskGiB: 1, minMemoryMiB: 64, imagePath: opts.imagePath }],
    networks: [{ id: opts.networkId, name: opts.networkName, cidr: '10.9.0.0/24', gateway: '10.9.0.1', dns: ['10.9.0.2'], rangeStart: '10.9.0.10', rangeEnd: '10.9.0.200', hostIds: ids }],
  };
}

/** hostInfo of a driver as a cluster-spec host row. */
export async function reportedHost(d: HypervisorDriver): Promise<{ id: string; cpuModel: string; cpuFeatures: string[]; cpus: number; memoryMiB: number; migrationAddress: string }> {
  const i = await d.hostInfo();
  return { id: i.hostId, cpuModel: i.cpuModel, cpuFeatures: i.cpuFeatures, cpus: i.cpus, memoryMiB: Math.floor(i.memoryBytes / MiB), migrationAddress: i.migrationAddress };
}

export interface FerryRig {
  client: Client;
  db: Db;
  address: string;
  prefix: string;
  databaseUrl: string;
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /** what every host agent process of this rig needs in its environment (Temporal, queues, database) */
  agentEnv(): Record<string, string>;
  /** stops the workers, closes the connections and the database */
  close(): Promise<void>;
}

/**
 * The database at `databaseUrl` seeded with `cluster`, the Temporal client, the control worker
 * (unless 'none') and one in-process host agent per entry of `agents`, on a fresh task-queue
 * prefix starting with `prefixLetter`.
 */
export async function startFerryRig(o: {
  prefixLetter: string;
  databaseUrl: string;
  dataDir: string;
  cluster: ClusterSpec;
  templateId: string;
  networkId: string;
  agents: Array<{ driver: HypervisorDriver; pollMs: number; console?: ConsoleReader }>;
  controlWorker?: 'in-process' | 'none';
}): Promise<FerryRig> {
  const address = await temporalAddress();
  const prefix = `${o.prefixLetter}${randomUUID().slice(0, 8)}-`;
  const db = await createDb({ databaseUrl: o.databaseUrl, dataDir: o.dataDir });
  await migrateUp(db);
  await seedCluster(db, undefined, o.cluster);
  const clientConn = await Connection.connect({ address });
  const client = new Client({ connection: clientConn, namespace: 'default' });
  const connection = await NativeConnection.connect({ address });
  const workers: Worker[] = o.controlWorker === 'none' ? [] : [await createControlWorker({ connection, namespace: 'default', prefix, deps: { db } })];
  for (const a of o.agents) workers.push(await createHostAgent({ connection, namespace: 'default', prefix, driver: a.driver, pollMs: a.pollMs, ...(a.console ? { console: a.console } : {}) }));
  const running = runWorkers(workers);
  return {
    client,
    db,
    address,
    prefix,
    databaseUrl: o.databaseUrl,
    provision(input) {
      const vmId = input.vmId ?? `vm-${randomUUID().slice(0, 8)}`;
      return startProvision({ client, db, prefix }, { cpus: 1, memoryMiB: 64, diskGiB: 1, source: { kind: 'template', templateId: o.templateId, linked: true }, networkId: o.networkId }, { ...input, vmId });
    },
    agentEnv() {
      return {
        TEMPORAL_ADDRESS: address,
        FERRY_TASK_QUEUE_PREFIX: prefix,
        DATABASE_URL: o.databaseUrl,
        FERRY_DATA_DIR: o.dataDir,
        // the agents share the machine with the control worker's metrics port
        FERRY_WORKER_METRICS: 'off',
        FERRY_LOG_LEVEL: 'WARN',
      };
    },
    migrate(input) {
      return client.workflow.start('liveMigrate', { taskQueue: controlQueue(prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${prefix}-${randomUUID().slice(0, 4)}`, args: [input] });
    },
    async close() {
      await running.stop().catch(() => undefined);
      await connection.close().catch(() => undefined);
      await clientConn.close().catch(() => undefined);
      await db.close();
    },
  };
}
