// Named API tokens (ARCHITECTURE.md section 4): admins create them for people and systems, each
// with a role and optionally an expiry; they are revocable. The secret (`ferry_` + 32 random bytes,
// base64url) is shown once at creation; the database keeps only its sha256 (ApiToken.hash).
//
// Lookup: the presented token's sha256 is looked up by its UNIQUE hash column, then compared with
// timingSafeEqual. The index lookup does not leak the secret (a caller cannot steer the digest
// towards a stored one), and there is NO cache: every request re-reads the row (one indexed
// SELECT, tens of microseconds on SQLite), so a revocation takes effect on the very next request
// in every API replica. lastUsedAt is written at most once a minute per token, after the answer.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ApiToken, type TokenRole } from '../db/entities.js';
import type { Db } from '../db/orm.js';

export const TOKEN_PREFIX = 'ferry_';
/** principals of the environment tokens (never the name of a named token) */
export const ENV_PRINCIPALS = { admin: 'bootstrap-admin', operator: 'env-operator', viewer: 'env-viewer' } as const;
/** also refused as a token name: principals that workflows record on their own */
const RESERVED_NAMES = new Set<string>([...Object.values(ENV_PRINCIPALS), 'schedule', 'system', 'unknown']);
const LAST_USED_EVERY_MS = 60_000;

export interface Principal {
  /** `tok-<hex>` for a named token; the principal name for the environment tokens */
  id: string;
  name: string;
  role: TokenRole;
}

export type TokenCheck = { ok: true; principal: Principal } | { ok: false; reason: 'token revoked' | 'token expired' } | undefined;

export const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

export function newSecret(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** why a name cannot be a token's name, or undefined */
export function nameProblem(name: string): string | undefined {
  if (RESERVED_NAMES.has(name.toLowerCase())) return `${name} is reserved (the environment tokens and workflows use it)`;
  return undefined;
}

export interface TokenDto {
  id: string;
  name: string;
  role: TokenRole;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  state: 'active' | 'expired' | 'revoked';
}

const iso = (d: Date | null | undefined) => (d ? new Date(d).toISOString() : null);

/** The answer shape of a token: never its secret nor its hash. */
export function tokenDto(t: ApiToken, now = Date.now()): TokenDto {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    createdAt: iso(t.createdAt)!,
    createdBy: t.createdBy,
    expiresAt: iso(t.expiresAt),
    revokedAt: iso(t.revokedAt),
    lastUsedAt: iso(t.lastUsedAt),
    state: t.revokedAt ? 'revoked' : t.expiresAt && new Date(t.expiresAt).getTime() <= now ? 'expired' : 'active',
  };
}

export function createTokenStore(db: Db) {
  const lastWrite = new Map<string, number>();
  return {
    /** Creates a token; the returned secret is not stored anywhere. The name is unique (409 via the db's unique violation). */
    async create(input: { name: string; role: TokenRole; expiresAt?: Date; createdBy: string }): Promise<{ token: ApiToken; secret: string }> {
      const secret = newSecret();
      const em = db.em();
      const token = em.create(ApiToken, {
        id: `tok-${randomBytes(6).toString('hex')}`,
        name: input.name,
        role: input.role,
        hash: sha256Hex(secret),
        createdBy: input.createdBy,
        expiresAt: input.expiresAt ?? null,
        revokedAt: null,
        lastUsedAt: null,
      });
      await em.flush();
      return { token, secret };
    },

    async list(): Promise<ApiToken[]> {
      return db.em().find(ApiToken, {}, { orderBy: { createdAt: 'asc', id: 'asc' } });
    },

    /** 'revoked' now, 'already' when it was revoked before (the row keeps its first revokedAt), or null (no such token). */
    async revoke(id: string): Promise<{ token: ApiToken; result: 'revoked' | 'already' } | null> {
      const em = db.em();
      // conditional update: two concurrent revocations agree on one revokedAt
      const changed = await em.nativeUpdate(ApiToken, { id, revokedAt: null }, { revokedAt: new Date() });
      const token = await db.em().findOne(ApiToken, { id });
      if (!token) return null;
      return { token, result: changed > 0 ? 'revoked' : 'already' };
    },

    /** The principal for a presented secret; undefined when it is no named token. */
    async check(presented: string): Promise<TokenCheck> {
      if (!presented.startsWith(TOKEN_PREFIX)) return undefined;
      const hash = sha256Hex(presented);
      const row = await db.em().findOne(ApiToken, { hash });
      if (!row || !timingSafeEqual(Buffer.from(row.hash, 'hex'), Buffer.from(hash, 'hex'))) return undefined;
      const now = Date.now();
      if (row.revokedAt) return { ok: false, reason: 'token revoked' };
      if (row.expiresAt && new Date(row.expiresAt).getTime() <= now) return { ok: false, reason: 'token expired' };
      if (now - (lastWrite.get(row.id) ?? 0) >= LAST_USED_EVERY_MS) {
        lastWrite.set(row.id, now);
        // best effort, off the request's path: a failed write only leaves lastUsedAt older
        void db
          .em()
          .nativeUpdate(ApiToken, { id: row.id }, { lastUsedAt: new Date(now) })
          .catch(() => lastWrite.delete(row.id));
      }
      return { ok: true, principal: { id: row.id, name: row.name, role: row.role } };
    },
  };
}
export type TokenStore = ReturnType<typeof createTokenStore>;
