// `npm start`: the embedded default. Finds or builds the Temporal CLI, starts a dev server whose
// state lives in <FERRY_DATA_DIR>/temporal.sqlite (so workflows survive a restart) with the Web
// UI, then the control worker, one host agent per simulated host and the API. Ctrl-C stops all.
import { ConfigError, loadConfig, type FerryConfig } from '../config/index.js';
import { startDevServer, type DevServer } from '../workers/dev-server.js';
import { installRuntime, startFerry, type RunningFerry } from '../workers/main.js';
import { join } from 'node:path';

function die(e: unknown, code = 1): never {
  console.error(`ferry: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(e instanceof ConfigError ? 2 : code);
}

let config: FerryConfig;
try {
  config = loadConfig();
} catch (e) {
  die(e);
}

let server: DevServer | undefined;
let ferry: RunningFerry | undefined;
let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  console.log('\nferry: stopping (workers drain in-flight tasks)...');
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
  console.log(`  metrics     ${ferry.apiUrl}/metrics (fleet), :${config.workerMetricsPort}/metrics (workers)`);
  console.log(`  try:        curl -H "Authorization: Bearer ${token.token}" ${ferry.apiUrl}/v1/vms`);
  console.log('Ctrl-C stops everything; the next start keeps the data.');
} catch (e) {
  await ferry?.stop().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  die(e);
}
