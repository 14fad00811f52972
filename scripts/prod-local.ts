// `npm run prod:local`: ferry's production layout on this machine, no Docker. The real Temporal
// server (built on first use) on the local PostgreSQL, two control workers, the simulated host
// agents, two API replicas on PostgreSQL, the standalone Web UI, and Prometheus when Debian's
// `prometheus` is installed. Ctrl-C stops everything; the next start finds the same workflows
// (Temporal's databases), inventory (ferry's database) and simulated hosts (the data folder).
//
// Environment: FERRY_DATA_DIR (default ./data/prod), DATABASE_URL (ferry's database, default
// postgres://postgres@127.0.0.1:5432/ferry), FERRY_TEMPORAL_DB_URL (default
// postgres://postgres@127.0.0.1:5432/temporal; visibility goes to <name>_visibility),
// FERRY_TEMPORAL_PORT (17233), FERRY_TEMPORAL_UI_PORT (18233), FERRY_API_PORT (18080, and +1),
// FERRY_WORKER_METRICS_PORT (19464..19466), FERRY_PROMETHEUS_PORT (19090).
import { resolve } from 'node:path';
import { defaultProdPorts, startProdCluster, type ProdCluster } from '../workers/prod-cluster.js';
import { findOnPath, startPrometheus, type LocalPrometheus } from '../workers/prometheus-local.js';
import { temporalDbTarget } from '../workers/temporal-server.js';
import { join } from 'node:path';

const env = process.env;
const dataDir = resolve(env.FERRY_DATA_DIR || './data/prod');
const databaseUrl = env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/ferry';
const ports = defaultProdPorts(env);

let cluster: ProdCluster | undefined;
let prometheus: LocalPrometheus | undefined;
let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  console.log('\nferry: stopping (API replicas, then the workers drain, then Temporal)...');
  await prometheus?.stop().catch(() => undefined);
  await cluster?.stop().catch((e) => console.error(`ferry: ${e instanceof Error ? e.message : e}`));
  console.log('ferry: stopped');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());

try {
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw new Error(`DATABASE_URL: prod:local runs ferry on PostgreSQL, got "${databaseUrl}"`);
  const t0 = Date.now();
  cluster = await startProdCluster({ dataDir, databaseUrl, temporalDb: temporalDbTarget(env.FERRY_TEMPORAL_DB_URL || undefined), ports });
  const p = (name: string) => cluster!.byName(name);
  const promPort = Number(env.FERRY_PROMETHEUS_PORT || 19090);
  if (findOnPath('prometheus')) {
    const host = (u: string) => new URL(u).host;
    prometheus = await startPrometheus({
      dir: join(dataDir, 'prometheus'),
      port: promPort,
      targets: {
        'ferry-api': cluster.apiUrls.map(host),
        'ferry-control': [host(p('control-1').url), host(p('control-2').url)],
        'ferry-agents': [host(p('agents').url)],
        temporal: [host(cluster.temporal.metricsUrl)],
      },
    });
  }
  const t = cluster.adminToken;
  console.log('');
  console.log(`ferry (production layout) is running, up in ${((Date.now() - t0) / 1000).toFixed(1)} s; data in ${dataDir}`);
  console.log(`  API         ${cluster.apiUrls.join('  ')}   (docs ${cluster.apiUrls[0]}/docs)`);
  console.log(`  admin token ${t}   (kept in ${join(dataDir, 'api-token')})`);
  console.log(`  Temporal    ${cluster.temporal.address} (temporal-server on PostgreSQL)   Web UI ${cluster.ui?.url ?? '(off)'}`);
  console.log(`  metrics     ${cluster.apiUrls.map((u) => `${u}/metrics`).join(' ')} (fleet); ${['control-1', 'control-2', 'agents'].map((n) => p(n).metricsUrl).join(' ')} (workers); ${cluster.temporal.metricsUrl} (Temporal)`);
  console.log(`  Prometheus  ${prometheus ? prometheus.url : '(not installed: apt-get install prometheus)'}`);
  console.log(`  try:        curl -H "Authorization: Bearer ${t}" ${cluster.apiUrls[0]}/v1/vms`);
  console.log('Ctrl-C stops everything; the next start keeps the data.');
} catch (e) {
  console.error(`ferry: ${e instanceof Error ? e.message : String(e)}`);
  await prometheus?.stop().catch(() => undefined);
  await cluster?.stop().catch(() => undefined);
  process.exit(1);
}
