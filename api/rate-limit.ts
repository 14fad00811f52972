// Rate limits per principal on mutating routes (@fastify/rate-limit): every method but GET/HEAD
// on an authenticated route counts against the caller's principal (a named token's id, or
// bootstrap-admin / env-operator / env-viewer), never its IP, so two people behind one proxy do
// not share a budget and one token cannot flood the API from many addresses.
// FERRY_API_RATE_LIMIT: requests per minute per principal (default 600); `off` or 0 disables it.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { HttpError } from './errors.js';

export const DEFAULT_RATE_LIMIT_PER_MINUTE = 600;

export interface RateLimitSettings {
  /** requests per window per principal; 0 = no limit */
  max: number;
  windowMs: number;
}

/** FERRY_API_RATE_LIMIT; a bad value throws naming the variable. */
export function rateLimitFromEnv(env: NodeJS.ProcessEnv): RateLimitSettings {
  const raw = env.FERRY_API_RATE_LIMIT?.trim();
  if (raw === undefined || raw === '') return { max: DEFAULT_RATE_LIMIT_PER_MINUTE, windowMs: 60_000 };
  if (raw === 'off') return { max: 0, windowMs: 60_000 };
  if (!/^\d+$/.test(raw)) throw new Error(`FERRY_API_RATE_LIMIT: must be a whole number of requests per minute per token, or "off" (got ${JSON.stringify(raw)})`);
  return { max: Number(raw), windowMs: 60_000 };
}

const counted = (req: FastifyRequest) => req.method !== 'GET' && req.method !== 'HEAD' && req.principal !== undefined;

export async function installRateLimit(app: FastifyInstance, s: RateLimitSettings): Promise<void> {
  if (s.max <= 0) return;
  await app.register(rateLimit, {
    global: true,
    max: s.max,
    timeWindow: s.windowMs,
    // route-level onRequest hooks run after the app's auth hook, so the principal is known here
    hook: 'onRequest',
    keyGenerator: (req) => req.principal?.id ?? req.ip,
    allowList: (req) => !counted(req),
    errorResponseBuilder: (req, ctx) =>
      new HttpError(429, {
        error: 'rate_limited',
        message: `${req.principal?.name ?? 'this caller'} made more than ${ctx.max} mutating requests in ${Math.round(s.windowMs / 1000)} s; retry in ${ctx.after}`,
        limit: ctx.max,
        retryAfterSeconds: Math.ceil(ctx.ttl / 1000),
      }),
  });
}
