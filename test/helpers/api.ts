// API-tier test helpers: a real test database (SQLite file, migrated), a FAKE Temporal client
// that records what the API asks of Temporal, and buildApp wired to both. The fake tests the
// API's own logic (validation, status codes, what it starts with which arguments); real
// workflow runs are covered by test/workflows against a dev server.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { Registry } from 'prom-client';
import type { FerryConfig } from '../../config/index.js';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import { Datastore, Host, IpPool, Network, Operation, Template, Vm } from '../../db/entities.js';
import { buildApp, type ApiDeps } from '../../api/app.js';
import type { MigrationProgress } from '../../workflows/definitions.js';

export interface StartCall {
  workflowType: string;
  workflowId: string;
  taskQueue: string;
  args: unknown[];
  searchAttributes: Record<string, unknown>;
  runId: string;
  memo?: Record<string, unknown>;
}

type Named = string | { name: string };
const nameOf = (d: Named) => (typeof d === 'string' ? d : d.name);

interface FakeRun {
  workflowId: string;
  runId: string;
  workflowType: string;
  status: 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED' | 'TERMINATED';
}

/** A stand-in for @temporalio/client's Client covering what api/ uses. */
export class FakeTemporal {
  readonly starts: StartCall[] = [];
  readonly signals: Array<{ workflowId: string; runId?: string; name: string; args: unknown[] }> = [];
  readonly updates: Array<{ workflowId: string; runId?: string; name: string; args: unknown[] }> = [];
  readonly queries: Array<{ workflowId: string; name: string }> = [];
  readonly runs = new Map<string, FakeRun>();
  /** thrown by the next workflow.start (then cleared) */
  failNextStart?: Error;
  /** thrown by every health check while set */
  healthError?: Error;
  /** answers of the `progress` query by workflow id */
  progress = new Map<string, MigrationProgress>();
  /** an update handler refusing: thrown as WorkflowUpdateFailedError */
  refuseUpdates?: string;
  /**
   * results of workflow.execute (a run that completes at once) by workflow type; VmConsole
   * answers an empty console of the host it was asked about
   */
  results = new Map<string, (args: unknown[]) => unknown>([
    ['vmConsole', (args) => {
      const i = args[0] as { vmId: string; hostId: string };
      return { vmId: i.vmId, hostId: i.hostId, lines: [], size: 0, truncated: false };
    }],
  ]);
  readonly options = { namespace: 'default' };

  readonly connection = {
    healthService: {
      check: async () => {
        if (this.healthError) throw this.healthError;
        return { status: 1 };
      },
    },
  };

  readonly workflow = {
    start: async (workflowType: string, opts: { workflowId: string; taskQueue: string; args?: unknown[]; typedSearchAttributes?: Array<{ key: { name: string }; value: unknown }>; memo?: Record<string, unknown> }) => {
      if (this.failNextStart) {
        const e = this.failNextStart;
        this.failNextStart = undefined;
        throw e;
      }
      const existing = this.runs.get(opts.workflowId);
      if (existing?.status === 'RUNNING') {
        throw new WorkflowExecutionAlreadyStartedError('Workflow execution already started', opts.workflowId, workflowType);
      }
      const runId = randomUUID();
      const searchAttributes = Object.fromEntries((opts.typedSearchAttributes ?? []).map((p) => [p.key.name, p.value]));
      this.starts.push({ workflowType, workflowId: opts.workflowId, taskQueue: opts.taskQueue, args: opts.args ?? [], searchAttributes, runId, ...(opts.memo ? { memo: opts.memo } : {}) });
      this.runs.set(opts.workflowId, { workflowId: opts.workflowId, runId, workflowType, status: 'RUNNING' });
      return { workflowId: opts.workflowId, firstExecutionRunId: runId };
    },
    execute: async (workflowType: string, opts: { workflowId: string; taskQueue: string; args?: unknown[]; typedSearchAttributes?: Array<{ key: { name: string }; value: unknown }>; memo?: Record<string, unknown> }) => {
      await this.workflow.start(workflowType, opts);
      this.finish(opts.workflowId);
      const answer = this.results.get(workflowType);
      if (!answer) throw new Error(`fake: no ${workflowType} result`);
      return answer(opts.args ?? []);
    },
    getHandle: (workflowId: string, runId?: string) => {
      const run = () => {
        const r = this.runs.get(workflowId);
        if (!r || (runId && r.runId !== runId)) throw new WorkflowNotFoundError(`workflow ${workflowId} not found`, workflowId, runId);
        return r;
      };
      return {
        workflowId,
        describe: async () => ({ workflowId, runId: run().runId, status: { name: run().status } }),
        query: async (def: Named) => {
          run();
          this.queries.push({ workflowId, name: nameOf(def) });
          const p = this.progress.get(workflowId);
          if (!p) throw new Error(`fake: no ${nameOf(def)} answer for ${workflowId}`);
          return p;
        },
        signal: async (def: Named, ...args: unknown[]) => {
          run();
          this.signals.push({ workflowId, runId, name: nameOf(def), args });
        },
        executeUpdate: async (def: Named, opts?: { args?: unknown[] }) => {
          run();
          this.updates.push({ workflowId, runId, name: nameOf(def), args: opts?.args ?? [] });
          if (this.refuseUpdates) {
            const cause = new Error(this.refuseUpdates);
            throw new WorkflowUpdateFailedError('Workflow Update failed', cause);
          }
          return this.progress.get(workflowId) ?? {};
        },
      };
    },
  };

  /** marks a started workflow finished (a later start with the same id is allowed) */
  finish(workflowId: string, status: FakeRun['status'] = 'COMPLETED'): void {
    const r = this.runs.get(workflowId);
    if (r) r.status = status;
  }

  asClient(): Client {
    return this as unknown as Client;
  }
}

export const ADMIN = 'admin-token-0123456789abcdef';
export const OPERATOR = 'operator-token-0123456789abcdef';
export const VIEWER = 'viewer-token-0123456789abcdef';

export function testConfig(dataDir: string, over: Partial<FerryConfig> = {}): FerryConfig {
  return {
    dataDir,
    apiPort: 0,
    apiHost: '127.0.0.1',
    apiToken: ADMIN,
    driver: 'sim',
    simTimeScale: 10,
    workerMetricsPort: 9464,
    databaseUrl: join(dataDir, 'ferry.sqlite'),
    temporalNamespace: 'default',
    temporalUiPort: 8233,
    temporalPort: 7233,
    webUiBaseUrl: 'http://ui.test:8233',
    maxOutgoingMigrations: 2,
    maxIncomingMigrations: 2,
    ...over,
  };
}

export interface TestApi {
  app: FastifyInstance;
  db: Db;
  temporal: FakeTemporal;
  config: FerryConfig;
  registry: Registry;
  dir: string;
  faults: unknown[];
  /** app.inject with the given token (default admin); `token: null` sends none */
  call(method: InjectOptions['method'], url: string, body?: unknown, token?: string | null): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

/** A migrated SQLite database in a fresh temp folder. */
export async function createApiTestDb(): Promise<{ db: Db; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-api-test-'));
  const db = await createDb({ databaseUrl: join(dir, 'ferry.sqlite'), dataDir: dir });
  await migrateUp(db);
  return { db, dir };
}

export async function startTestApi(opts: { simulator?: boolean; config?: Partial<FerryConfig>; deps?: Partial<ApiDeps> } = {}): Promise<TestApi> {
  const { db, dir } = await createApiTestDb();
  const temporal = new FakeTemporal();
  const config = testConfig(dir, opts.config);
  const registry = opts.deps?.registry ?? new Registry();
  const faults: unknown[] = [];
  const simulator = opts.simulator
    ? {
        injectFault: (f: unknown) => {
          const fault = { id: `f${faults.length + 1}`, ...(f as object) };
          faults.push(fault);
          return fault;
        },
        listFaults: () => faults,
      }
    : undefined;
  const app = await buildApp({
    db,
    temporal: temporal.asClient(),
    config,
    registry,
    taskQueuePrefix: 'tapi-',
    simulator,
    env: { FERRY_API_OPERATOR_TOKEN: OPERATOR, FERRY_API_VIEWER_TOKEN: VIEWER },
    logger: process.env.FERRY_TEST_API_LOG === '1',
    ...opts.deps,
  });
  await app.ready();
  return {
    app,
    db,
    temporal,
    config,
    registry,
    dir,
    faults,
    call(method, url, body, token = ADMIN) {
      return app.inject({
        method,
        url,
        ...(body !== undefined ? { payload: body as InjectOptions['payload'] } : {}),
        headers: token === null ? {} : { authorization: `Bearer ${token}` },
      });
    },
    async close() {
      await app.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A small inventory written straight to the database: hosts h1, h2 (avx2) and h3 (no avx2, in
 * maintenance), a shared datastore, template `small`, network `net1` with a pool, and VMs.
 */
export async function seedInventory(db: Db): Promise<void> {
  const em = db.em();
  const host = (id: string, over: Partial<Host> = {}) =>
    em.create(Host, { id, name: id, cpuModel: 'sim-cpu', cpuFeatures: ['sse4_2', 'avx', 'avx2'], cpus: 16, memoryMiB: 16384, tags: [], ...over });
  host('h1');
  host('h2');
  host('h3', { cpuFeatures: ['sse4_2'], maintenance: true });
  em.create(Datastore, { id: 'shared', name: 'shared', shared: true, capacityGiB: 1000, throughputMiBps: 2000, hostIds: ['h1', 'h2', 'h3'] });
  em.create(Template, {
    id: 'tpl-small',
    name: 'small',
    os: 'test-os',
    imagePath: '/images/small.qcow2',
    datastoreIds: ['shared'],
    diskGiB: 2,
    minMemoryMiB: 64,
    requiredCpuFeatures: [],
    tags: ['base'],
  });
  em.create(Network, { id: 'net1', name: 'net1', cidr: '10.0.0.0/24', gateway: '10.0.0.1', dns: ['10.0.0.2'], hostIds: ['h1', 'h2', 'h3'] });
  em.create(IpPool, { id: 'net1-pool-0', networkId: 'net1', rangeStart: '10.0.0.10', rangeEnd: '10.0.0.209' });
  await em.flush();
}

export async function addVm(db: Db, over: Partial<Vm> & { id: string; name: string }): Promise<void> {
  const em = db.em();
  em.create(Vm, {
    state: 'running',
    hostId: 'h1',
    datastoreId: 'shared',
    networkId: 'net1',
    ip: '10.0.0.10',
    cpus: 2,
    memoryMiB: 1024,
    diskGiB: 4,
    diskPaths: [],
    cpuFeatures: ['avx2'],
    tags: [],
    ...over,
  });
  await em.flush();
}

export async function addOperation(db: Db, over: Partial<Operation> & { id: string; workflowId: string; kind: Operation['kind'] }): Promise<void> {
  const em = db.em();
  em.create(Operation, { details: {}, ...over });
  await em.flush();
}

export const vmCount = async (db: Db, where: Record<string, unknown> = {}) => db.em().count(Vm, where);
