// Entrypoint: startApiServer(deps) listens on config.apiHost:config.apiPort and returns
// {url, close}. Run directly (`tsx api/server.ts`) it is the standalone API process of the
// production layout: it builds its own dependencies from the environment (composition root).
import { pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { Registry } from 'prom-client';
import { ConfigError, loadConfig } from '../config/index.js';
import { createDb } from '../db/orm.js';
import { buildApp, type ApiDeps } from './app.js';
import { resolveAdminToken, roleTokensFromEnv } from './auth.js';

export { resolveAdminToken } from './auth.js';
export type { ApiDeps } from './app.js';

export interface ApiServer {
  url: string;
  close(): Promise<void>;
}

export async function startApiServer(deps: ApiDeps & { log?: (line: string) => void }): Promise<ApiServer> {
  const log = deps.log ?? ((l: string) => console.error(l));
  let tokens = deps.tokens;
  if (!tokens) {
    const admin = resolveAdminToken(deps.config);
    if (admin.generated) log(`ferry api: generated the admin token ${admin.token} (saved in ${admin.path}; set FERRY_API_TOKEN to choose one)`);
    else if (admin.path) log(`ferry api: admin token read from ${admin.path}`);
    tokens = { admin: admin.token, ...roleTokensFromEnv(deps.env ?? process.env) };
  }
  const app = await buildApp({ ...deps, tokens });
  await app.listen({ host: deps.config.apiHost, port: deps.config.apiPort });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : deps.config.apiPort;
  const host = deps.config.apiHost === '0.0.0.0' || deps.config.apiHost === '::' ? '127.0.0.1' : deps.config.apiHost;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  log(`ferry api: listening on ${url} (docs at ${url}/docs)`);
  return { url, close: () => app.close() };
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(2);
    }
    throw e;
  }
  const db = await createDb({ databaseUrl: process.env.DATABASE_URL, dataDir: config.dataDir });
  const address = config.temporalAddress ?? `127.0.0.1:${config.temporalPort}`;
  const connection = await Connection.connect({ address });
  const temporal = new Client({ connection, namespace: config.temporalNamespace });
  const server = await startApiServer({ db, temporal, config, registry: new Registry(), logger: true });
  const stop = async () => {
    await server.close();
    await connection.close();
    await db.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
