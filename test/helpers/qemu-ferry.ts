// ferry on REAL QEMU for workflow tests and the qemu benchmark: two or three qemu "hosts" (each a
// short state folder on this machine) that reach one SHARED datastore folder under the same id and
// path (so a live migration moves no disk), a template qcow2 built from the test guest, the
// inventory seeded with driver 'qemu' and the CPU features the qemu driver reports, the control
// worker and one host agent per host — in this process, or for hosts listed in `processAgents` as
// a child process running workers/qemu-agent.ts (SIGKILL-able) — on a task-queue prefix unique to
// this instance, against the run's Temporal dev server (test/helpers/ferry.ts temporalAddress()).
// The wiring is driver-ferry.ts's startFerryRig (shared with libvirt-ferry.ts); the QemuFerry is
// also a WorkflowFerry, the face the shared workflow test bodies (workflow-suite.ts) use.
import type { Client, WorkflowHandle } from '@temporalio/client';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Db } from '../../db/orm.js';
import { createQemuConsole, createQemuDriver, QmpClient, type QemuDatastoreConfig, type QemuDriver } from '../../drivers/qemu/index.js';
import { readPidFile } from '../../drivers/qemu/process.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { spawnQemuAgent, type AgentProcess } from '../../workers/lab/agents.js';
import type { LiveMigrateInput, ProvisionInput } from '../../workflows/definitions.js';
import { buildGuest, readHeartbeat, type GuestImages, type GuestKind } from '../../workers/lab/guest-images.js';
import { driverClusterSpec, forgetVm, reportedHost, startFerryRig, type WorkflowFerry } from './driver-ferry.js';
import type { HypervisorView } from './invariants.js';
import { filesUnder, pidsMentioning, sweep, tempRoot, waitFor } from './qemu-env.js';
import assert from 'node:assert/strict';

const MiB = 1024 ** 2;

export interface QemuHost {
  id: string;
  stateDir: string;
  portRange: [number, number];
  agent: 'in-process' | 'process';
}

export type { AgentProcess } from '../../workers/lab/agents.js';

export interface QemuFerryOptions {
  /** host ids (default qa, qb) */
  hosts?: string[];
  /** hosts whose agent runs as a child process (workers/qemu-agent.ts) instead of in-process */
  processAgents?: string[];
  /** the template's guest (default: dirtying 16 MiB of memory) */
  guest?: GuestKind;
  /** a template image of its own instead (e.g. workers/lab/linux-guest.ts's real Linux) */
  templateImage?: string;
  /** first port of the incoming-migration ranges; each host gets the next 100 (default 47600) */
  basePort?: number;
  /** how often host activities poll QEMU (default 20 ms) */
  pollMs?: number;
  /**
   * shared (default): one datastore every host reaches; local: only a datastore of its own per
   * host (`qlocal-<hostId>`, live migration must copy the disks); shared+local: both
   */
  storage?: 'shared' | 'local' | 'shared+local';
  /** in-process (default), or none: the caller runs the control worker (a process it can SIGKILL) */
  controlWorker?: 'in-process' | 'none';
}

export interface QemuFerry extends WorkflowFerry {
  readonly kind: 'qemu';
  client: Client;
  db: Db;
  address: string;
  prefix: string;
  root: string;
  databaseUrl: string;
  hosts: QemuHost[];
  /** the shared datastore (same id and path on every host; unused with storage local) */
  datastore: QemuDatastoreConfig;
  /** the datastores a host reaches */
  datastoresOf(hostId: string): QemuDatastoreConfig[];
  guest: GuestImages;
  templateId: string;
  networkId: string;
  /** the network's name (what the drivers offer) */
  networkName: string;
  cluster: ClusterSpec;
  /** the in-process agent's driver of a host (the one the agent uses: QMP is one client per VM) */
  driver(hostId: string): QemuDriver;
  host(hostId: string): QemuHost;
  /** writes the Vm row (state provisioning) and starts provisionVm, as startTestFerry's provision() */
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /** starts workers/qemu-agent.ts for a `processAgents` host; resolves when it polls */
  spawnAgent(hostId: string): Promise<AgentProcess>;
  /** live QEMU processes of a VM on every host (pid files and /proc command lines) */
  qemuProcesses(vmId: string): Promise<Array<{ hostId: string; pid: number }>>;
  /** the guest's heartbeat counter through the host's in-process driver */
  heartbeat(hostId: string, vmId: string): Promise<number>;
  /** every file left for a VM on a host (its state folder) */
  vmFolder(hostId: string, vmId: string): string;
  /** kills a VM's QEMU on every host and removes its folders and disks (test clean-up) */
  destroyEverywhere(vmId: string): Promise<void>;
  close(): Promise<void>;
}

/** The cluster spec for qemu hosts as the drivers report them. */
export function qemuClusterSpec(hosts: Array<{ id: string; cpuModel: string; cpuFeatures: string[]; cpus: number; memoryMiB: number }>, opts: { datastoreId: string; templateId: string; imagePath: string; networkId: string; networkName: string; datastores?: Array<{ id: string; shared: boolean; hostIds: string[] }> }): ClusterSpec {
  const datastores = opts.datastores ?? [{ id: opts.datastoreId, shared: true, hostIds: hosts.map((h) => h.id) }];
  return driverClusterSpec('qemu', hosts.map((h) => ({ ...h, migrationAddress: '127.0.0.1' })), { ...opts, datastores });
}

export async function startQemuFerry(opts: QemuFerryOptions = {}): Promise<QemuFerry> {
  // short: QMP socket paths must stay under 108 bytes
  const root = await tempRoot('fqf-');
  const hostIds = opts.hosts ?? ['qa', 'qb'];
  const processAgents = new Set(opts.processAgents ?? []);
  const basePort = opts.basePort ?? 47600;
  const hosts: QemuHost[] = hostIds.map((id, i) => ({
    id,
    stateDir: path.join(root, id),
    portRange: [basePort + i * 100, basePort + i * 100 + 99],
    agent: processAgents.has(id) ? 'process' : 'in-process',
  }));
  const datastore: QemuDatastoreConfig = { id: 'qshared', path: path.join(root, 'shared'), shared: true };
  const storage = opts.storage ?? 'shared';
  const localOf = (id: string): QemuDatastoreConfig => ({ id: `qlocal-${id}`, path: path.join(root, `${id}-ds`), shared: false });
  const datastoresOf = (id: string): QemuDatastoreConfig[] => [...(storage === 'local' ? [] : [datastore]), ...(storage === 'shared' ? [] : [localOf(id)])];
  const allDatastores = [...(storage === 'local' ? [] : [{ ...datastore, hostIds: hostIds }]), ...(storage === 'shared' ? [] : hostIds.map((id) => ({ ...localOf(id), hostIds: [id] })))];
  const networkName = 'qnet';
  const guest = await buildGuest(opts.guest ?? { kind: 'dirty', dirtyBytes: 16 * MiB });
  const databaseUrl = path.join(root, 'ferry.sqlite');

  const driverOptions = (h: QemuHost) => ({ hostId: h.id, stateDir: h.stateDir, datastores: datastoresOf(h.id), networks: [networkName], portRange: h.portRange, cpus: 4, memoryBytes: 4096 * MiB });
  const drivers = new Map<string, QemuDriver>();
  for (const h of hosts) if (h.agent === 'in-process') drivers.set(h.id, createQemuDriver(driverOptions(h)));
  // the inventory holds what the driver reports (CPU model and features in particular)
  const infos = [];
  for (const h of hosts) {
    const d = drivers.get(h.id) ?? createQemuDriver(driverOptions(h));
    infos.push(await reportedHost(d));
    if (!drivers.has(h.id)) await d.close();
  }
  const templateId = 'tpl-qguest';
  const networkId = 'net-q';
  const cluster = qemuClusterSpec(infos, { datastoreId: datastore.id, templateId, imagePath: opts.templateImage ?? guest.qcow2, networkId, networkName, datastores: allDatastores.map((d) => ({ id: d.id, shared: d.shared, hostIds: d.hostIds })) });
  const rig = await startFerryRig({
    prefixLetter: 'q',
    databaseUrl,
    dataDir: root,
    cluster,
    templateId,
    networkId,
    controlWorker: opts.controlWorker ?? 'in-process',
    agents: hosts.filter((h) => drivers.has(h.id)).map((h) => ({ driver: drivers.get(h.id)!, pollMs: opts.pollMs ?? 20, console: createQemuConsole(h.id, h.stateDir) })),
  });
  const { client, db, address, prefix } = rig;
  const agents: AgentProcess[] = [];
  const touchedVms = new Set<string>();

  const hostOf = (hostId: string): QemuHost => {
    const h = hosts.find((x) => x.id === hostId);
    if (!h) throw new Error(`no qemu host ${hostId} in this ferry (hosts: ${hostIds.join(', ')})`);
    return h;
  };
  const vmFolder = (hostId: string, vmId: string) => path.join(hostOf(hostId).stateDir, 'vms', vmId);

  async function qemuProcesses(vmId: string): Promise<Array<{ hostId: string; pid: number }>> {
    const out: Array<{ hostId: string; pid: number }> = [];
    for (const h of hosts) {
      const dir = path.join(h.stateDir, 'vms', vmId) + path.sep;
      // /proc command lines (QEMU's argv names its QMP socket inside the VM's folder), so a
      // process whose pid file was removed still counts; the pid file must agree with them
      const pids = new Set(await pidsMentioning(dir));
      const fromFile = await readPidFile(path.join(dir, 'qemu.pid'));
      if (fromFile !== undefined && pids.size > 0 && !pids.has(fromFile)) throw new Error(`pid file of ${vmId} on ${h.id} says ${fromFile}, /proc says ${[...pids].join(', ')}`);
      for (const pid of pids) out.push({ hostId: h.id, pid });
    }
    return out;
  }

  const ferry: QemuFerry = {
    kind: 'qemu',
    client,
    db,
    address,
    prefix,
    root,
    databaseUrl,
    hosts,
    hostIds,
    datastore,
    datastoresOf,
    guest,
    templateId,
    networkId,
    networkName,
    cluster,
    driver(hostId) {
      const d = drivers.get(hostId);
      if (!d) throw new Error(`host ${hostId} runs its agent in a child process: its QMP sockets belong to that agent`);
      return d;
    },
    host: hostOf,
    provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle> {
      if (input.vmId) touchedVms.add(input.vmId);
      return rig.provision(input);
    },
    async migrate(input: LiveMigrateInput) {
      touchedVms.add(input.vmId);
      return rig.migrate(input);
    },
    async spawnAgent(hostId) {
      const h = hostOf(hostId);
      if (h.agent !== 'process') throw new Error(`host ${hostId} runs its agent in-process (list it in processAgents)`);
      const proc = await spawnQemuAgent(h.id, {
        FERRY_HOST_ID: h.id,
        FERRY_QEMU_STATE_DIR: h.stateDir,
        FERRY_QEMU_DATASTORES: JSON.stringify(datastoresOf(h.id)),
        FERRY_QEMU_NETWORKS: networkName,
        FERRY_QEMU_PORT_RANGE: `${h.portRange[0]}-${h.portRange[1]}`,
        FERRY_QEMU_CPUS: '4',
        FERRY_QEMU_MEMORY_MIB: '4096',
        FERRY_QEMU_POLL_MS: String(opts.pollMs ?? 20),
        ...rig.agentEnv(),
      });
      agents.push(proc);
      return proc;
    },
    qemuProcesses,
    async copies(vmId) {
      return (await qemuProcesses(vmId)).map((p) => p.hostId);
    },
    async assertNothingOn(hostId, vmId) {
      assert.deepEqual(await filesUnder(vmFolder(hostId, vmId)), [], `nothing of ${vmId} left in ${hostId}'s state folder`);
      assert.deepEqual(await pidsMentioning(hostOf(hostId).stateDir + path.sep), [], `no QEMU at all on ${hostId}`);
      for (const ds of datastoresOf(hostId).filter((d) => !d.shared)) {
        const left = (await fs.readdir(ds.path).catch(() => [] as string[])).filter((x) => x.includes(vmId));
        assert.deepEqual(left, [], `no file of ${vmId} on ${hostId}'s datastore ${ds.id}`);
      }
    },
    async killQemu(hostId, vmId) {
      const procs = (await qemuProcesses(vmId)).filter((p) => p.hostId === hostId);
      assert.equal(procs.length, 1, `one QEMU of ${vmId} on ${hostId}: ${JSON.stringify(procs)}`);
      process.kill(procs[0]!.pid, 'SIGKILL');
    },
    async guestDiskIo(hostId, vmId, command) {
      const out = await ferry.driver(hostId).hmp(vmId, `qemu-io disk0 "${command}"`);
      // HMP answers errors as text; qemu-io's own output goes to QEMU's stdout
      if (out.trim()) throw new Error(`qemu-io ${command} on ${vmId}: ${out.trim()}`);
    },
    async assertNoDiskJobs(hostId, vmId) {
      assert.deepEqual(await ferry.driver(hostId).qmp(vmId, 'query-block-jobs'), [], 'no block job left on the VM');
    },
    async convergeWithoutAgent(hostId, vmId) {
      // the agent's QMP session died with it: a client of our own on the VM's socket. Once the
      // remainder fits, QEMU pauses the source at pre-switchover and waits for a continue that only
      // the agent's event handler sends: the restarted agent must notice and continue
      const qmp = await QmpClient.connect(path.join(vmFolder(hostId, vmId), 'qmp.sock'), { connectTimeoutMs: 5000 });
      try {
        assert.equal((await qmp.execute<{ status: string }>('query-migrate')).status, 'active');
        await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * MiB, 'downtime-limit': 500 });
        await waitFor('the source paused at pre-switchover with no agent', async () => (await qmp.execute<{ status: string }>('query-migrate')).status === 'pre-switchover', 60_000);
      } finally {
        qmp.close();
      }
    },
    async view(): Promise<HypervisorView> {
      const vms: HypervisorView['vms'] = [];
      for (const h of hosts) {
        for (const vmId of await fs.readdir(path.join(h.stateDir, 'vms')).catch(() => [] as string[])) {
          const pids = await pidsMentioning(path.join(h.stateDir, 'vms', vmId) + path.sep);
          // a live QEMU counts as running (its run state needs the agent's QMP session); a folder
          // without one is a VM defined here and stopped
          for (const _ of pids) vms.push({ vmId, hostId: h.id, state: 'running' });
          if (pids.length === 0) vms.push({ vmId, hostId: h.id, state: 'stopped' });
        }
      }
      const disks: HypervisorView['disks'] = [];
      for (const ds of allDatastores) {
        for (const f of await fs.readdir(ds.path).catch(() => [] as string[])) disks.push({ path: path.join(ds.path, f), datastoreId: ds.id, kind: f.includes('-seed') ? 'seed' : 'disk' });
      }
      return { vms, disks };
    },
    heartbeat(hostId, vmId) {
      const d = ferry.driver(hostId);
      return readHeartbeat((c) => d.hmp(vmId, c));
    },
    vmFolder,
    async destroyEverywhere(vmId) {
      for (const h of hosts) {
        const d = drivers.get(h.id);
        if (d) await d.destroyVm(vmId).catch(() => undefined);
        for (const pid of await pidsMentioning(path.join(h.stateDir, 'vms', vmId) + path.sep)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        await fs.rm(path.join(h.stateDir, 'vms', vmId), { recursive: true, force: true });
      }
      for (const ds of allDatastores) {
        for (const f of await fs.readdir(ds.path).catch(() => [] as string[])) {
          if (f.startsWith(`${vmId}-`) || f.startsWith(`.${vmId}-`)) await fs.rm(path.join(ds.path, f), { force: true });
        }
      }
      await forgetVm(db, vmId);
    },
    async close() {
      for (const a of agents) await a.kill('SIGKILL').catch(() => undefined);
      for (const vmId of touchedVms) await ferry.destroyEverywhere(vmId).catch(() => undefined);
      await rig.close();
      for (const d of drivers.values()) await d.close();
      // anything still running under the root (a QEMU the test lost track of) dies here
      await sweep(root);
    },
  };
  return ferry;
}
