// ferry on REAL libvirt for workflow tests: the libvirt lab (workers/lab/libvirt-lab.ts, two or
// three libvirtd hosts in their own namespaces sharing one pool), the inventory seeded with driver
// 'libvirt' from what each driver's hostInfo reports, a template image on the shared pool's path
// (the test guest), the control worker and one in-process host agent per host on a task-queue
// prefix unique to this instance, against the run's Temporal dev server.
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { execa } from 'execa';
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import { createLibvirtDriver, type LibvirtDriver } from '../../drivers/libvirt/index.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { createControlWorker, createHostAgent, runWorkers } from '../../workers/create-worker.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { buildGuest, readHeartbeat, type GuestImages } from '../../workers/lab/guest-images.js';
import { startLibvirtLab, type LibvirtLab, type LibvirtLabHost, type LibvirtLabOptions } from '../../workers/lab/libvirt-lab.js';
import { controlQueue, workflowIds, type LiveMigrateInput, type ProvisionInput } from '../../workflows/definitions.js';
import { startProvision, temporalAddress } from './ferry.js';

const MiB = 1024 ** 2;

export interface LibvirtFerry {
  client: Client;
  db: Db;
  prefix: string;
  lab: LibvirtLab;
  guest: GuestImages;
  templateId: string;
  networkId: string;
  driver(hostId: string): LibvirtDriver;
  labHost(hostId: string): LibvirtLabHost;
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /** `virsh list --all --uuid` of every host: host id -> domain UUIDs (the invariant checker's view) */
  domains(): Promise<Record<string, string[]>>;
  heartbeat(hostId: string, vmId: string): Promise<number>;
  /** starts workers/libvirt-agent.ts for a `processAgents` host; resolves when it polls */
  spawnAgent(hostId: string): Promise<LibvirtAgentProcess>;
  /** destroys and undefines a VM on every host, removes its volumes from the shared pool */
  destroyEverywhere(vmId: string): Promise<void>;
  close(): Promise<void>;
}

export interface LibvirtAgentProcess {
  output(): string;
  /** SIGKILL by default; resolves once the process is gone */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function startLibvirtFerry(opts: { hosts?: number; processAgents?: string[]; lab?: Omit<LibvirtLabOptions, 'hosts'> } = {}): Promise<LibvirtFerry> {
  const processAgents = new Set(opts.processAgents ?? []);
  const address = await temporalAddress();
  const prefix = `l${randomUUID().slice(0, 8)}-`;
  const lab = await startLibvirtLab({ ...opts.lab, hosts: opts.hosts ?? 2 });
  const networkName = 'qnet';
  const drivers = new Map<string, LibvirtDriver>();
  for (const h of lab.hosts) {
    drivers.set(
      h.id,
      createLibvirtDriver({ hostId: h.id, uri: h.uri, migrationUri: h.migrationUri, stateDir: path.join(h.dir, 'ferry-state'), datastores: [{ id: 'lvshared', pool: h.sharedPool, shared: true }], networks: [networkName], cpus: 4, memoryBytes: 4096 * MiB }),
    );
  }
  // the template lives on the shared pool's folder, so every libvirtd reads the same backing file
  const built = await buildGuest({ kind: 'dirty', dirtyBytes: 16 * MiB });
  const tpl = path.join(lab.sharedPath, 'tpl-lvguest.qcow2');
  await fs.copyFile(built.qcow2, tpl);
  const guest: GuestImages = { ...built, qcow2: tpl };
  const root = path.join(lab.root, 'ferry');
  await fs.mkdir(root, { recursive: true });
  const db = await createDb({ databaseUrl: path.join(root, 'ferry.sqlite'), dataDir: root });
  await migrateUp(db);
  const infos = [];
  for (const h of lab.hosts) infos.push(await drivers.get(h.id)!.hostInfo());
  const ids = lab.hosts.map((h) => h.id);
  const templateId = 'tpl-lvguest';
  const networkId = 'net-lv';
  const cluster: ClusterSpec = {
    hosts: infos.map((i) => ({ id: i.hostId, cpuModel: i.cpuModel, cpuFeatures: i.cpuFeatures, cpus: i.cpus, memoryMiB: Math.floor(i.memoryBytes / MiB), driver: 'libvirt' as const, migrationAddress: i.migrationAddress })),
    datastores: [{ id: 'lvshared', shared: true, capacityGiB: 100, throughputMiBps: 500, hostIds: ids }],
    templates: [{ id: templateId, name: templateId, os: 'ferry-test-guest', datastoreIds: ['lvshared'], diskGiB: 1, minMemoryMiB: 64, imagePath: tpl }],
    networks: [{ id: networkId, name: networkName, cidr: '10.9.0.0/24', gateway: '10.9.0.1', dns: ['10.9.0.2'], rangeStart: '10.9.0.10', rangeEnd: '10.9.0.200', hostIds: ids }],
  };
  await seedCluster(db, undefined, cluster);

  const clientConn = await Connection.connect({ address });
  const client = new Client({ connection: clientConn, namespace: 'default' });
  const connection = await NativeConnection.connect({ address });
  const workers: Worker[] = [await createControlWorker({ connection, namespace: 'default', prefix, deps: { db } })];
  for (const d of drivers.values()) if (!processAgents.has(d.hostId)) workers.push(await createHostAgent({ connection, namespace: 'default', prefix, driver: d, pollMs: 100 }));
  const agents: LibvirtAgentProcess[] = [];
  const databaseUrl = path.join(root, 'ferry.sqlite');
  const running = runWorkers(workers);

  const driver = (hostId: string): LibvirtDriver => {
    const d = drivers.get(hostId);
    if (!d) throw new Error(`no libvirt host ${hostId} (hosts: ${ids.join(', ')})`);
    return d;
  };
  const labHost = (hostId: string) => lab.hosts.find((h) => h.id === hostId)!;

  const ferry: LibvirtFerry = {
    client,
    db,
    prefix,
    lab,
    guest,
    templateId,
    networkId,
    driver,
    labHost,
    provision(input) {
      const vmId = input.vmId ?? `vm-${randomUUID().slice(0, 8)}`;
      return startProvision({ client, db, prefix }, { cpus: 1, memoryMiB: 64, diskGiB: 1, source: { kind: 'template', templateId, linked: true }, networkId }, { ...input, vmId });
    },
    migrate(input) {
      return client.workflow.start('liveMigrate', { taskQueue: controlQueue(prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${prefix}-${randomUUID().slice(0, 4)}`, args: [input] });
    },
    async domains() {
      const out: Record<string, string[]> = {};
      for (const h of lab.hosts) {
        const r = await execa('virsh', ['-q', '-c', h.uri, 'list', '--all', '--uuid']);
        out[h.id] = r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
      }
      return out;
    },
    heartbeat(hostId, vmId) {
      const d = driver(hostId);
      return readHeartbeat((c) => d.hmp(vmId, c));
    },
    async spawnAgent(hostId) {
      const h = labHost(hostId);
      if (!processAgents.has(hostId)) throw new Error(`host ${hostId} runs its agent in-process (list it in processAgents)`);
      const child = execa(process.execPath, ['--import', 'tsx', 'workers/libvirt-agent.ts'], {
        cwd: PROJECT_ROOT,
        reject: false,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          FERRY_HOST_ID: h.id,
          FERRY_LIBVIRT_URI: h.uri,
          FERRY_LIBVIRT_MIGRATION_URI: h.migrationUri,
          FERRY_LIBVIRT_STATE_DIR: path.join(h.dir, 'ferry-state'),
          FERRY_LIBVIRT_DATASTORES: JSON.stringify([{ id: 'lvshared', pool: h.sharedPool, shared: true }]),
          FERRY_LIBVIRT_NETWORKS: networkName,
          FERRY_LIBVIRT_CPUS: '4',
          FERRY_LIBVIRT_MEMORY_MIB: '4096',
          FERRY_LIBVIRT_POLL_MS: '100',
          TEMPORAL_ADDRESS: address,
          FERRY_TASK_QUEUE_PREFIX: prefix,
          DATABASE_URL: databaseUrl,
          FERRY_DATA_DIR: root,
          FERRY_WORKER_METRICS: 'off',
          FERRY_LOG_LEVEL: 'WARN',
        },
      });
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 60_000;
      while (!out.includes(' running ')) {
        if (child.exitCode !== null || Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error(`libvirt agent ${hostId} did not start: ${out}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      const proc: LibvirtAgentProcess = {
        output: () => out,
        async kill(signal = 'SIGKILL') {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          await child;
        },
      };
      agents.push(proc);
      return proc;
    },
    async destroyEverywhere(vmId) {
      for (const d of drivers.values()) await d.destroyVm(vmId).catch(() => undefined);
      for (const f of await fs.readdir(lab.sharedPath).catch(() => [] as string[])) {
        if (f.startsWith(`${vmId}-`)) await driver(ids[0]!).deleteDisk(path.join(lab.sharedPath, f)).catch(() => undefined);
      }
    },
    async close() {
      for (const a of agents) await a.kill('SIGKILL').catch(() => undefined);
      await running.stop().catch(() => undefined);
      await connection.close().catch(() => undefined);
      await clientConn.close().catch(() => undefined);
      await db.close();
      await lab.stop();
    },
  };
  return ferry;
}
