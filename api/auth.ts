// Bearer-token auth with three roles: viewer < operator < admin.
//
// - admin: FERRY_API_TOKEN (config.apiToken), or when unset a token generated once into
//   `<dataDir>/api-token` (mode 0600) and reused on later starts (resolveAdminToken).
// - operator: FERRY_API_OPERATOR_TOKEN (optional), viewer: FERRY_API_VIEWER_TOKEN (optional).
//   Both are read here (not in config/) because only the API uses them; at least 16 characters.
// - named tokens (api/tokens.ts): created by admins, stored hashed, revocable, optionally expiring.
//
// Every authenticated request carries `req.principal` {id, name, role}: the environment tokens are
// `bootstrap-admin`, `env-operator`, `env-viewer`; a named token is its name. A revoked or expired
// named token is a 401 saying so ("token revoked" / "token expired"): only the holder of the secret
// learns it, so nothing is told about which tokens exist.
//
// Routes declare the role they need in `config.role`; the default is viewer for GET/HEAD and
// operator for everything else. `config.role = 'public'` routes (health, metrics, docs) need none.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { FerryConfig } from '../config/index.js';
import { HttpError } from './errors.js';
import { ENV_PRINCIPALS, type Principal, type TokenStore } from './tokens.js';

export type Role = 'viewer' | 'operator' | 'admin';
export type RouteRole = Role | 'public';
const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

export const TOKEN_FILE = 'api-token';
const MIN_TOKEN_LENGTH = 16;

export interface AdminToken {
  token: string;
  /** true when this call created the token file */
  generated: boolean;
  /** the token file; absent when the token came from FERRY_API_TOKEN */
  path?: string;
}

/**
 * The admin token: config.apiToken when set; else the one in `<dataDir>/api-token`, created
 * (crypto random, mode 0600) the first time. Two processes starting at once agree on one token:
 * the file is created exclusively ('wx') and the loser reads the winner's.
 */
export function resolveAdminToken(config: Pick<FerryConfig, 'apiToken' | 'dataDir'>): AdminToken {
  if (config.apiToken) return { token: config.apiToken, generated: false };
  const path = join(config.dataDir, TOKEN_FILE);
  const existing = readToken(path);
  if (existing !== undefined) return { token: existing, generated: false, path };
  mkdirSync(config.dataDir, { recursive: true });
  const token = randomBytes(32).toString('base64url');
  try {
    writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600); // the umask may have narrowed it further; never wider
    return { token, generated: true, path };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const raced = readToken(path);
    if (raced === undefined) throw new Error(`${path}: token file exists but holds no usable token`);
    return { token: raced, generated: false, path };
  }
}

function readToken(path: string): string | undefined {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const token = raw.trim();
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`${path}: holds a token shorter than ${MIN_TOKEN_LENGTH} characters; delete the file to generate a new one`);
  }
  return token;
}

export interface RoleTokens {
  admin: string;
  operator?: string;
  viewer?: string;
}

/** Reads FERRY_API_OPERATOR_TOKEN / FERRY_API_VIEWER_TOKEN; a bad value throws naming the variable. */
export function roleTokensFromEnv(env: NodeJS.ProcessEnv): { operator?: string; viewer?: string } {
  const out: { operator?: string; viewer?: string } = {};
  for (const [role, name] of [
    ['operator', 'FERRY_API_OPERATOR_TOKEN'],
    ['viewer', 'FERRY_API_VIEWER_TOKEN'],
  ] as const) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (v.length < MIN_TOKEN_LENGTH) throw new Error(`${name}: must be at least ${MIN_TOKEN_LENGTH} characters`);
    out[role] = v;
  }
  return out;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Returns the caller's role for a presented token, or undefined. Constant-time per comparison. */
export function roleOf(tokens: RoleTokens, presented: string): Role | undefined {
  const p = digest(presented);
  let found: Role | undefined;
  // Check every token (no early exit) so timing does not tell which role matched.
  for (const role of ['admin', 'operator', 'viewer'] as const) {
    const t = tokens[role];
    if (t !== undefined && timingSafeEqual(p, digest(t)) && found === undefined) found = role;
  }
  return found;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    role?: RouteRole;
  }
  interface FastifyRequest {
    role?: Role;
    principal?: Principal;
  }
}

/** Who is asking, as recorded on operations: the principal's name (`bootstrap-admin`, a token's name). */
export function principalOf(req: FastifyRequest): string {
  return req.principal?.name ?? `${req.role ?? 'unknown'}-token`;
}

const PUBLIC_PREFIXES = ['/docs', '/openapi.json', '/healthz', '/readyz', '/metrics'];

/** The role a route needs: its declared `config.role`, else public for the probe/docs prefixes, viewer for reads, operator otherwise. */
export function routeRole(method: string, url: string, declared?: RouteRole): RouteRole {
  if (declared) return declared;
  const path = url.split('?')[0]!;
  if (PUBLIC_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`))) return 'public';
  return method === 'GET' || method === 'HEAD' ? 'viewer' : 'operator';
}

const requiredRole = (req: FastifyRequest): RouteRole => routeRole(req.method, req.url, req.routeOptions.config?.role);

export function installAuth(app: FastifyInstance, tokens: RoleTokens, named?: TokenStore): void {
  app.decorateRequest('role', undefined);
  app.decorateRequest('principal', undefined);
  app.addHook('onRequest', async (req, reply) => {
    const needed = requiredRole(req);
    if (needed === 'public') return;
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) {
      reply.header('www-authenticate', 'Bearer realm="ferry"');
      throw new HttpError(401, { error: 'unauthorized', message: 'missing bearer token (Authorization: Bearer <token>)' });
    }
    const principal = await principalFor(tokens, named, m[1]!);
    if (!principal || 'reason' in principal) {
      const message = principal?.reason ?? 'invalid bearer token';
      reply.header('www-authenticate', `Bearer realm="ferry", error="invalid_token", error_description="${message}"`);
      throw new HttpError(401, { error: 'unauthorized', message });
    }
    const role = principal.role;
    if (RANK[role] < RANK[needed]) {
      throw new HttpError(403, { error: 'forbidden', message: `this call needs the ${needed} role; the token has ${role}`, role, required: needed });
    }
    req.role = role;
    req.principal = principal;
  });
}

async function principalFor(tokens: RoleTokens, named: TokenStore | undefined, presented: string): Promise<Principal | { reason: string } | undefined> {
  const role = roleOf(tokens, presented);
  if (role) return { id: ENV_PRINCIPALS[role], name: ENV_PRINCIPALS[role], role };
  const found = await named?.check(presented);
  if (!found) return undefined;
  return found.ok ? found.principal : { reason: found.reason };
}
