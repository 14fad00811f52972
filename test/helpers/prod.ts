// The production layout in a test (test/prod/): the cluster `npm run prod:local` starts
// (workers/prod-cluster.ts), on free ports, a fresh data folder and fresh databases on the local
// PostgreSQL (dropped at the end), plus Prometheus scraping every process with the config
// rendered from deploy/prometheus.yml. Skips (with the reason) only when the Temporal server is
// neither installed nor buildable (no Go).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { createDb, type Db } from '../../db/orm.js';
import { Simulator } from '../../drivers/sim/index.js';
import { startProdCluster, type ProdCluster, type ProdPorts } from '../../workers/prod-cluster.js';
import { findOnPath, startPrometheus, type LocalPrometheus } from '../../workers/prometheus-local.js';
import { findGo } from '../../workers/temporal-cli.js';
import { dropTemporalDatabases, findTemporalServer, freeTemporalPorts, temporalDbTarget, type TemporalDbTarget } from '../../workers/temporal-server.js';
import { freePort } from '../../workers/dev-server.js';
import { waitFor } from './ferry.js';

const PG = process.env.FERRY_TEST_PG_BASE ?? 'postgres://postgres@127.0.0.1:5432';

/** Why the tier cannot run here, or undefined when it can. */
export async function prodSkipReason(): Promise<string | undefined> {
  if (!findOnPath('prometheus') || !findOnPath('promtool')) return 'Debian package prometheus (prometheus, promtool) is not installed';
  if (findTemporalServer()) return undefined;
  if (!(await findGo())) return 'temporal-server is not installed and Go is not there to build it (.ci/run builds it)';
  return undefined;
}

export interface TestProd {
  cluster: ProdCluster;
  prometheus: LocalPrometheus;
  /** ferry's database and the shared simulator, opened by the test (invariants, set-up) */
  db: Db;
  sim: Simulator;
  temporalDb: TemporalDbTarget;
  dataDir: string;
  /** an API call on replica `replica` (0 or 1) as admin */
  call(method: string, path: string, body?: unknown, replica?: number): Promise<{ status: number; body: any }>;
  /** polls GET path on `replica` until `done(body)`; every answer must be 200 */
  pollUntil(path: string, done: (b: any) => boolean, opts?: { replica?: number; timeoutMs?: number; onEach?: (b: any) => void }): Promise<any>;
  close(): Promise<void>;
}

async function freeProdPorts(): Promise<ProdPorts> {
  const p = async () => freePort();
  return { temporal: await freeTemporalPorts(), ui: await p(), api: [await p(), await p()], control: [await p(), await p()], agents: await p() };
}

export async function startTestProd(opts: { simTimeScale?: number; log?: (l: string) => void } = {}): Promise<TestProd> {
  const id = randomBytes(4).toString('hex');
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-prod-'));
  const databaseUrl = `${PG}/ferry_prod_${id}`;
  const temporalDb = temporalDbTarget(`${PG}/temporal_prod_${id}`);
  const ports = await freeProdPorts();
  const log = opts.log ?? (() => undefined);
  const dropDatabases = async () => {
    const tool = findTemporalServer()?.sqlTool;
    if (!tool) return;
    await dropTemporalDatabases(tool, temporalDb);
    const u = new URL(databaseUrl);
    await execa(tool, ['--plugin', 'postgres12', '--ep', u.hostname, '-p', u.port || '5432', '-u', u.username || 'postgres', '--db', u.pathname.slice(1), 'drop-database', '-f'], { reject: false });
  };
  let cluster: ProdCluster;
  try {
    cluster = await startProdCluster({ dataDir, databaseUrl, temporalDb, ports, simTimeScale: opts.simTimeScale ?? 5, log });
  } catch (e) {
    await dropDatabases();
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  const host = (u: string) => new URL(u).host;
  const procs = (role: string) => cluster.processes.filter((p) => p.role === role).map((p) => host(p.url));
  let prometheus: LocalPrometheus;
  try {
    prometheus = await startPrometheus({
      dir: join(dataDir, 'prometheus'),
      port: await freePort(),
      interval: '1s',
      targets: { 'ferry-api': procs('api'), 'ferry-control': procs('control'), 'ferry-agents': procs('agents'), temporal: [host(cluster.temporal.metricsUrl)] },
    });
  } catch (e) {
    await cluster.stop();
    await dropDatabases();
    throw e;
  }
  const db = await createDb({ databaseUrl, dataDir, poolMax: 3 });
  const sim = Simulator.open({ path: join(dataDir, 'sim.sqlite'), timeScale: opts.simTimeScale ?? 5 });

  const call: TestProd['call'] = async (method, path, body, replica = 0) => {
    const res = await fetch(cluster.apiUrls[replica] + path, {
      method,
      headers: { authorization: `Bearer ${cluster.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: (await res.json().catch(() => null)) as any };
  };
  return {
    cluster,
    prometheus,
    db,
    sim,
    temporalDb,
    dataDir,
    call,
    async pollUntil(path, done, o = {}) {
      return waitFor(`${path} on replica ${o.replica ?? 0}`, async () => {
        const r = await call('GET', path, undefined, o.replica ?? 0);
        if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
        o.onEach?.(r.body);
        return done(r.body) ? r.body : undefined;
      }, o.timeoutMs ?? 90_000, 100);
    },
    async close() {
      await prometheus.stop().catch(() => undefined);
      await cluster.stop().catch(() => undefined);
      await db.close();
      sim.close();
      await dropDatabases();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
