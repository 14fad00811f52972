// Unauthenticated probes and the Prometheus scrape endpoint.
import type { FastifyInstance } from 'fastify';
import type { Connection } from '@temporalio/client';
import type { ApiContext } from '../context.js';
import type { FleetMetrics } from '../fleet-metrics.js';
import { withTimeout } from '../temporal.js';

const PROBE_TIMEOUT_MS = 3_000;

export function healthRoutes(app: FastifyInstance, ctx: ApiContext, fleet: FleetMetrics): void {
  const pub = { config: { role: 'public' as const }, schema: { tags: ['health'] } };

  app.get('/healthz', { ...pub, schema: { ...pub.schema, summary: 'The process is up' } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { ...pub, schema: { ...pub.schema, summary: 'The database and Temporal answer (503 names what is down)' } }, async (req, reply) => {
    const checks: Record<string, string> = {};
    const probe = async (name: string, fn: () => Promise<unknown>) => {
      try {
        await withTimeout(PROBE_TIMEOUT_MS, name, fn());
        checks[name] = 'ok';
      } catch (e) {
        checks[name] = `down: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
      }
    };
    await Promise.all([
      probe('database', () => ctx.db.em().getConnection().execute('select 1')),
      probe('temporal', () => {
        const conn = ctx.temporal.connection as Connection;
        return conn.healthService ? conn.healthService.check({}) : conn.workflowService.getSystemInfo({});
      }),
    ]);
    const down = Object.keys(checks).filter((k) => checks[k] !== 'ok');
    if (down.length === 0) return { status: 'ready', checks };
    req.log.warn({ checks }, 'not ready');
    return reply.code(503).send({ status: 'unavailable', error: 'unavailable', message: `${down.join(' and ')} ${down.length > 1 ? 'are' : 'is'} down`, down, checks });
  });

  app.get('/metrics', { ...pub, schema: { ...pub.schema, summary: 'Prometheus metrics (fleet metrics computed from the database at scrape time)' } }, async (_req, reply) => {
    const text = await fleet.render();
    return reply.type(fleet.contentType).send(text);
  });
}
