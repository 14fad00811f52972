// One place for what workflow tests need: the run's Temporal dev server, a fresh database, a
// simulated cluster, and ferry's workers on task queues unique to the test. Later features reuse
// these helpers instead of wiring their own.
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import type { HypervisorDriver } from '../../drivers/hypervisor.js';
import { Simulator } from '../../drivers/sim/index.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { createControlWorker, createHostAgent, runWorkers } from '../../workers/create-worker.js';
import { simFaultHook } from '../../workers/main.js';
import { startDevServer, type DevServer } from '../../workers/dev-server.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { controlQueue, workflowIds, type LiveMigrateInput, type ProvisionInput, type ProvisionResult } from '../../workflows/definitions.js';
import { Vm } from '../../db/entities.js';

// Workers log state changes at INFO; tests only want warnings and errors.
try {
  Runtime.install({ logger: new DefaultLogger('WARN') });
} catch {
  /* already installed by another helper in this process */
}

let ownServer: Promise<DevServer> | undefined;

/** The run's dev server (started once by `npm test`), or one for this test file when run alone. */
export async function temporalAddress(): Promise<string> {
  const fromRunner = process.env.FERRY_TEST_TEMPORAL_ADDRESS;
  if (fromRunner) return fromRunner;
  ownServer ??= startDevServer({ headless: true, log: () => undefined }).then((s) => {
    process.once('exit', () => void s.stop());
    return s;
  });
  return (await ownServer).address;
}

/**
 * Stops the dev server temporalAddress() started for this process (a test file run alone, a
 * benchmark), so the process can exit; a no-op under `npm test`, whose runner owns the server.
 */
export async function stopOwnTemporal(): Promise<void> {
  const s = ownServer;
  ownServer = undefined;
  if (s) await (await s).stop();
}

const GiB = 1024 ** 3;

/** A small cluster: `n` identical hosts, a shared datastore, one template, one /24 network. */
export function smallCluster(opts: { hosts?: number; memoryMiB?: number; cpus?: number; poolSize?: number; features?: string[][] } = {}): ClusterSpec {
  const n = opts.hosts ?? 3;
  const ids = Array.from({ length: n }, (_, i) => `h${i + 1}`);
  const last = 10 + (opts.poolSize ?? 200) - 1;
  return {
    hosts: ids.map((id, i) => ({
      id,
      rack: `r${(i % 2) + 1}`,
      cpuModel: 'sim-cpu',
      cpuFeatures: opts.features?.[i] ?? ['sse4_2', 'avx', 'avx2'],
      cpus: opts.cpus ?? 16,
      memoryMiB: opts.memoryMiB ?? 16384,
    })),
    datastores: [{ id: 'shared', shared: true, capacityGiB: 10_000, throughputMiBps: 2000, hostIds: ids }],
    templates: [{ id: 'tpl-small', name: 'small', os: 'test-os', datastoreIds: ['shared'], diskGiB: 2, minMemoryMiB: 64, requiredCpuFeatures: [] }],
    networks: [{ id: 'net1', name: 'net1', cidr: '10.0.0.0/24', gateway: '10.0.0.1', dns: ['10.0.0.2'], vlan: 10, rangeStart: '10.0.0.10', rangeEnd: `10.0.0.${last}`, hostIds: ids }],
  };
}

export interface TestFerry {
  client: Client;
  db: Db;
  sim: Simulator;
  prefix: string;
  dir: string;
  databaseUrl: string;
  address: string;
  taskQueue: string;
  cluster: ClusterSpec;
  /** starts the in-process workers (done by default) */
  startWorkers(): Promise<void>;
  stopWorkers(): Promise<void>;
  /** runs the workers in a child process instead (SIGKILL-able) */
  spawnWorkerProcess(): Promise<WorkerProcess>;
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  /** provision() and wait: the result, or an error carrying the failure's message */
  provisionRunning(input: Partial<ProvisionInput> & { name: string }): Promise<ProvisionResult>;
  /** starts liveMigrate with the workflow id `migrate-<vmId>-<prefix>` */
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  close(): Promise<void>;
}

export interface WorkerProcess {
  kill(signal?: NodeJS.Signals): Promise<void>;
  child: ResultPromise;
  /** everything it printed so far (stdout and stderr) */
  output(): string;
}

export async function startTestFerry(
  opts: {
    cluster?: ClusterSpec;
    timeScale?: number;
    workers?: 'in-process' | 'none';
    databaseUrl?: string;
    /** wraps a host agent's driver (a test steps in at a driver call, e.g. to signal at an exact moment) */
    wrapDriver?: (driver: HypervisorDriver) => HypervisorDriver;
  } = {},
): Promise<TestFerry> {
  const address = await temporalAddress();
  const prefix = `t${randomUUID().slice(0, 8)}-`;
  const dir = mkdtempSync(join(tmpdir(), 'ferry-test-'));
  const databaseUrl = opts.databaseUrl ?? join(dir, 'ferry.sqlite');
  const db = await createDb({ databaseUrl, dataDir: dir });
  await migrateUp(db);
  const timeScale = opts.timeScale ?? 50;
  const sim = Simulator.open({ path: join(dir, 'sim.sqlite'), timeScale });
  const cluster = opts.cluster ?? smallCluster();
  await seedCluster(db, sim, cluster);
  const clientConn = await Connection.connect({ address });
  const client = new Client({ connection: clientConn, namespace: 'default' });
  let connection: NativeConnection | undefined;
  let running: ReturnType<typeof runWorkers> | undefined;
  const children: WorkerProcess[] = [];

  const ferry: TestFerry = {
    client,
    db,
    sim,
    prefix,
    dir,
    databaseUrl,
    address,
    taskQueue: controlQueue(prefix),
    cluster,
    async startWorkers() {
      connection ??= await NativeConnection.connect({ address });
      const workers: Worker[] = [await createControlWorker({ connection, namespace: 'default', prefix, deps: { db, faults: simFaultHook(sim), prediction: { timeScale } } })];
      for (const h of cluster.hosts) workers.push(await createHostAgent({ connection, namespace: 'default', prefix, driver: opts.wrapDriver ? opts.wrapDriver(sim.forHost(h.id)) : sim.forHost(h.id), pollMs: 20 }));
      running = runWorkers(workers);
    },
    async stopWorkers() {
      await running?.stop();
      running = undefined;
    },
    async spawnWorkerProcess() {
      const child = execa(process.execPath, ['--import', 'tsx', 'workers/main.ts'], {
        cwd: PROJECT_ROOT,
        reject: false,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          FERRY_ROLE: 'workers',
          FERRY_DATA_DIR: dir,
          DATABASE_URL: databaseUrl,
          TEMPORAL_ADDRESS: address,
          FERRY_TASK_QUEUE_PREFIX: prefix,
          FERRY_SIM_TIME_SCALE: String(timeScale),
          FERRY_WORKER_METRICS: 'off',
        },
      });
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      // ready when it says so (workers polling)
      // loading tsx and ferry's modules takes seconds, over a minute on CI's busiest moments
      const deadline = Date.now() + 180_000;
      while (!out.includes('running')) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`worker process did not start: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // a worker process that dies on its own leaves every later step of a test waiting: say so,
      // with what it printed, instead of a timeout somewhere else
      let killed = false;
      void child.then((r) => {
        if (!killed) console.error(`worker process ${child.pid} exited on its own (code ${r.exitCode}, signal ${r.signal ?? 'none'}); its last output:\n${out.slice(-4000)}`);
      });
      const proc: WorkerProcess = {
        child,
        output: () => out,
        async kill(signal = 'SIGKILL') {
          killed = true;
          child.kill(signal);
          await child;
        },
      };
      children.push(proc);
      return proc;
    },
    async provisionRunning(input) {
      const r = await outcome<ProvisionResult>(await ferry.provision(input));
      if (!r.ok) throw new Error(`set-up provision of ${input.name} failed: ${r.message}`);
      return r.value;
    },
    migrate(input) {
      return client.workflow.start('liveMigrate', { taskQueue: controlQueue(prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${prefix}`, args: [input] });
    },
    provision(input) {
      return startProvision({ client, db, prefix }, { cpus: 1, memoryMiB: 512, diskGiB: 2, source: { kind: 'template', templateId: cluster.templates[0].id }, networkId: cluster.networks[0].id }, input);
    },
    async close() {
      for (const c of children) if (c.child.exitCode === null) await c.kill('SIGKILL');
      await running?.stop();
      await connection?.close();
      await clientConn.close();
      await db.close();
      sim.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if ((opts.workers ?? 'in-process') === 'in-process') await ferry.startWorkers();
  return ferry;
}

/**
 * Starts provisionVm the way the API does: the Vm row first (state provisioning), then the
 * workflow (id `provision-<name>-<prefix>`, unique per test), with per-harness defaults.
 */
export async function startProvision(
  ctx: { client: Client; db: Db; prefix: string },
  defaults: Omit<ProvisionInput, 'vmId' | 'name'>,
  input: Partial<ProvisionInput> & { name: string },
): Promise<WorkflowHandle> {
  const full: ProvisionInput = { vmId: input.vmId ?? `vm-${randomUUID().slice(0, 8)}`, ...defaults, ...input } as ProvisionInput;
  const em = ctx.db.em();
  em.create(Vm, {
    id: full.vmId,
    name: full.name,
    state: 'provisioning',
    cpus: full.cpus,
    memoryMiB: full.memoryMiB,
    diskGiB: full.diskGiB,
    diskPaths: [],
    cpuFeatures: [],
    tags: full.tags ?? [],
    workload: full.workload ?? null,
  });
  await em.flush();
  return ctx.client.workflow.start('provisionVm', { taskQueue: controlQueue(ctx.prefix), workflowId: `${workflowIds.provision(full.name)}-${ctx.prefix}`, args: [full] });
}

/** Awaits a workflow's result, or returns the failure (for tests that expect one). */
export async function outcome<T>(handle: WorkflowHandle): Promise<{ ok: true; value: T } | { ok: false; error: WorkflowFailedError; message: string }> {
  try {
    return { ok: true, value: (await handle.result()) as T };
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      let msg = e.message;
      let c: unknown = e.cause;
      while (c && typeof c === 'object') {
        msg = (c as Error).message ?? msg;
        c = (c as Error).cause;
      }
      return { ok: false, error: e, message: msg };
    }
    throw e;
  }
}

/** Polls `fn` until it returns a truthy value (tests wait on conditions, not sleeps). */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 60_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export { GiB };
