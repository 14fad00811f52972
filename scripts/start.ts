// `npm start`: the embedded default. Finds or builds the Temporal CLI, starts a dev server whose
// state lives in <FERRY_DATA_DIR>/temporal.sqlite (so workflows survive a restart) with the Web
// UI, then the control worker, one host agent per simulated host and the API. Ctrl-C stops all.
// FERRY_DRIVER=qemu: the local QEMU lab (workers/lab/qemu-lab.ts) instead of the simulator: one
// agent process per lab host; Ctrl-C stops the agents but not the VMs (QEMU runs daemonized),
// the next start re-attaches; `npm run lab:down` removes the lab.
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { spawnQemuAgent, type AgentProcess } from '../workers/lab/agents.js';
import { agentEnv, describeLab, loadLabConfig, planLab, prepareLab, releaseLab, type LabPlan } from '../workers/lab/qemu-lab.js';
import { startDevServer, type DevServer } from '../workers/dev-server.js';
import { installRuntime, startFerry, type RunningFerry } from '../workers/main.js';
import { join } from 'node:path';

function die(e: unknown, code = 1): never {
  console.error(`ferry: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(e instanceof ConfigError ? 2 : code);
}

let config: FerryConfig;
let lab: LabPlan | undefined;
try {
  config = loadConfig();
  // bad lab settings stop here, before anything starts
  if (config.driver === 'qemu') lab = planLab(loadLabConfig(process.env, config));
} catch (e) {
  die(e);
}
const agents: AgentProcess[] = [];

let server: DevServer | undefined;
let ferry: RunningFerry | undefined;
let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  console.log('\nferry: stopping (workers drain in-flight tasks)...');
  // agents first: their VMs keep running (daemonized QEMU), the next start re-attaches
  await Promise.all(agents.map((a) => a.kill('SIGTERM').catch(() => undefined)));
  if (lab) await releaseLab(lab.root).catch(() => undefined);
  await ferry?.stop().catch((e) => console.error(`ferry: ${e instanceof Error ? e.message : e}`));
  await server?.stop().catch(() => undefined);
  console.log('ferry: stopped');
  process.exit(code);
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());

try {
  let address = config.temporalAddress;
  if (!address) {
    console.log(`ferry: starting the Temporal dev server (state in ${join(config.dataDir, 'temporal.sqlite')})...`);
    server = await startDevServer({
      dbFile: join(config.dataDir, 'temporal.sqlite'),
      port: config.temporalPort,
      uiPort: config.temporalUiPort,
      namespace: config.temporalNamespace,
      cliPath: config.temporalCliPath,
    });
    address = server.address;
  } else {
    console.log(`ferry: using the Temporal cluster at ${address} (TEMPORAL_ADDRESS)`);
  }
  installRuntime(config);
  ferry = await startFerry({ config, role: 'all', temporalAddress: address });
  if (lab) {
    console.log(`ferry: preparing the QEMU lab in ${lab.root}...`);
    await prepareLab(lab, ferry.db, (l) => console.log(l));
    const plan = lab;
    // an agent registers its host, re-attaches to the VMs in its state folder, then polls
    const started = await Promise.allSettled(
      plan.hosts.map((h) => {
        const env = agentEnv(plan, h, { temporalAddress: address, databaseUrl: config.databaseUrl, dataDir: config.dataDir, namespace: config.temporalNamespace });
        return spawnQemuAgent(h.id, env, { onLine: (l) => !l.includes('No workflows registered') && console.log(`[${h.id}] ${l}`) });
      }),
    );
    for (const r of started) if (r.status === 'fulfilled') agents.push(r.value);
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }
  const token = ferry.adminToken!;
  console.log('');
  console.log(`ferry is running on the ${config.driver} driver (${config.databaseUrl.startsWith('postgres') ? 'PostgreSQL' : 'SQLite'}, data in ${config.dataDir})`);
  console.log(`  API         ${ferry.apiUrl}   (docs ${ferry.apiUrl}/docs)`);
  console.log(
    token.generated || token.path
      ? `  admin token ${token.token}   (generated, kept in ${token.path})`
      : `  admin token from FERRY_API_TOKEN`,
  );
  console.log(`  Temporal    ${address}${server?.uiUrl ? `   Web UI ${server.uiUrl}` : ''}`);
  if (lab) for (const l of describeLab(lab)) console.log(l);
  console.log(`  metrics     ${ferry.apiUrl}/metrics (fleet), :${config.workerMetricsPort}/metrics (workers)`);
  console.log(`  try:        curl -H "Authorization: Bearer ${token.token}" ${ferry.apiUrl}/v1/vms`);
  console.log(lab ? 'Ctrl-C stops ferry and its agents, not the VMs (the next start re-attaches); npm run lab:down removes the lab.' : 'Ctrl-C stops everything; the next start keeps the data.');
} catch (e) {
  await Promise.all(agents.map((a) => a.kill('SIGTERM').catch(() => undefined)));
  await ferry?.stop().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  die(e);
}
