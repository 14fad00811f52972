// buildApp(deps): the whole HTTP API as a fastify instance that does NOT listen (tests use
// app.inject; api/server.ts listens). Every dependency comes in through `deps`: the database,
// the Temporal client, config, the metrics registry, optionally the simulator.
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { DestinationStream } from 'pino';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Client } from '@temporalio/client';
import type { Registry } from 'prom-client';
import type { FerryConfig } from '../config/index.js';
import type { Db } from '../db/orm.js';
import { controlQueue } from '../workflows/definitions.js';
import { resolveAdminToken, roleTokensFromEnv, installAuth, type RoleTokens } from './auth.js';
import { installIdempotency } from './idempotency.js';
import { installRateLimit, rateLimitFromEnv } from './rate-limit.js';
import { createTokenStore } from './tokens.js';
import type { ApiContext, SimulatorFaults } from './context.js';
import { installErrorHandler } from './errors.js';
import { installInputGuards } from './input.js';
import { createFleetMetrics } from './fleet-metrics.js';
import { runningOperation } from './queries.js';
import { healthRoutes } from './routes/health.js';
import { inventoryRoutes } from './routes/inventory.js';
import { migrationRoutes } from './routes/migrations.js';
import { operationRoutes } from './routes/operations.js';
import { fleetRoutes } from './routes/fleet.js';
import { ensureConfiguredSchedules, rebalanceRoutes } from './routes/rebalance.js';
import { driftRoutes } from './routes/drift.js';
import { tokenRoutes } from './routes/tokens.js';
import { vmRoutes } from './routes/vms.js';
import { consoleRoutes } from './routes/console.js';
import { v2vRoutes } from './routes/v2v.js';

export interface ApiDeps {
  db: Db;
  temporal: Client;
  config: FerryConfig;
  /** fleet metrics are registered here (never prom-client's global registry); it must not already hold them */
  registry: Registry;
  /** task queue prefix, as the workers use (tests isolate ferry instances on one dev server) */
  taskQueuePrefix?: string;
  /** present in the embedded simulator setup: enables /v1/sim/faults */
  simulator?: SimulatorFaults;
  /** fastify request logging (default false) */
  logger?: boolean;
  /** where the request log goes (implies logger; tests capture it) */
  logStream?: DestinationStream;
  /** where FERRY_API_VIEWER_TOKEN / FERRY_API_OPERATOR_TOKEN are read (default process.env) */
  env?: NodeJS.ProcessEnv;
  /** role tokens resolved by the caller (default: resolveAdminToken(config) + env) */
  tokens?: RoleTokens;
  /** called for every route as it is registered (tests enumerate the whole API from it: fuzz, role matrix) */
  onRoute?: (route: RouteOptions) => void;
}

export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const tokens: RoleTokens = deps.tokens ?? { admin: resolveAdminToken(deps.config).token, ...roleTokensFromEnv(deps.env ?? process.env) };
  // read before anything is built: a bad value fails the start naming the variable
  const rateLimit = rateLimitFromEnv(deps.env ?? process.env);
  const namespace = deps.temporal.options?.namespace ?? deps.config.temporalNamespace;

  const app = Fastify({
    // the request serializer logs no headers; redaction is the second line of defence for tokens
    logger:
      deps.logger || deps.logStream
        ? { redact: { paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'token'], censor: '[redacted]' }, ...(deps.logStream ? { stream: deps.logStream } : {}) }
        : false,
    // Bodies are small JSON documents; anything bigger is a mistake (user-data is capped at 64 KiB).
    bodyLimit: 1024 * 1024,
    routerOptions: { ignoreTrailingSlash: true },
  });
  if (deps.onRoute) app.addHook('onRoute', deps.onRoute);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandler(app);
  installInputGuards(app);
  const tokenStore = createTokenStore(deps.db);
  installAuth(app, tokens, tokenStore);
  await installRateLimit(app, rateLimit);
  installIdempotency(app, deps.db);

  const ctx: ApiContext = {
    db: deps.db,
    temporal: deps.temporal,
    config: deps.config,
    prefix: deps.taskQueuePrefix ?? '',
    simulator: deps.simulator,
    t: {
      temporal: deps.temporal,
      namespace,
      webUiBaseUrl: deps.config.webUiBaseUrl,
      taskQueue: controlQueue(deps.taskQueuePrefix ?? ''),
      runningOperationId: async (workflowId) => (await runningOperation(deps.db.em(), workflowId))?.id,
    },
  };
  const fleet = createFleetMetrics(deps.db, deps.registry);

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'ferry', description: 'Provision VMs and move them between hosts, on Temporal workflows.', version: '0.1.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } });
  app.get('/openapi.json', { config: { role: 'public' }, schema: { hide: true } }, async () => app.swagger());

  healthRoutes(app, ctx, fleet);
  inventoryRoutes(app, ctx);
  vmRoutes(app, ctx);
  consoleRoutes(app, ctx);
  v2vRoutes(app, ctx);
  migrationRoutes(app, ctx);
  operationRoutes(app, ctx);
  fleetRoutes(app, ctx);
  rebalanceRoutes(app, ctx);
  // FERRY_REBALANCE_CRON / FERRY_RECONCILE_CRON: the schedules exist once the API listens
  // (idempotent: every replica may do it; a bad expression is named and the API still serves)
  app.addHook('onListen', async () => {
    try {
      const made = await ensureConfiguredSchedules(ctx, deps.env ?? process.env);
      if (made.length) app.log.info(`ferry api: schedules ${made.join(', ')}`);
    } catch (e) {
      app.log.error(`ferry api: FERRY_REBALANCE_CRON / FERRY_RECONCILE_CRON: ${e instanceof Error ? e.message : e}`);
    }
  });
  driftRoutes(app, ctx);
  tokenRoutes(app, tokenStore);
  return app;
}
