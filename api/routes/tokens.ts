// Named API tokens (admin): create (the secret is in this answer only), list (never a secret or a
// hash), revoke. A revoked token stays listed: operations name it as their principal, and its
// name is never given to another token.
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { TOKEN_ROLES } from '../../db/entities.js';
import { isUniqueViolation } from '../../db/repositories/util.js';
import { principalOf } from '../auth.js';
import { conflict, invalid, notFound } from '../errors.js';
import { ErrorSchema, idParams } from '../schemas/index.js';
import { nameProblem, tokenDto, type TokenStore } from '../tokens.js';

const TokenCreate = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, 'letters, digits, . _ @ - (1 to 64, starting with a letter or digit)')
    .describe('who or what holds it; recorded as the principal of the operations it starts'),
  role: z.enum(TOKEN_ROLES),
  expiresAt: z.iso.datetime({ offset: true }).optional().describe('ISO 8601; absent: never expires'),
});

const TokenCreated = z.object({
  id: z.string(),
  name: z.string(),
  role: z.enum(TOKEN_ROLES),
  expiresAt: z.string().nullable(),
  createdAt: z.string(),
  token: z.string().describe('the secret: shown only in this answer, stored only as its sha256'),
});

const TokenSchema = z.object({
  id: z.string(),
  name: z.string(),
  role: z.enum(TOKEN_ROLES),
  createdAt: z.string(),
  createdBy: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
  state: z.enum(['active', 'expired', 'revoked']),
});

export function tokenRoutes(app: FastifyInstance, store: TokenStore): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const admin = { role: 'admin' as const };

  r.post(
    '/v1/tokens',
    { config: admin, schema: { tags: ['tokens'], summary: 'Create a named token (admin); the secret is shown once', body: TokenCreate, response: { 201: TokenCreated, 400: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema } } },
    async (req, reply) => {
      const b = req.body;
      const reserved = nameProblem(b.name);
      if (reserved) throw invalid('name', reserved);
      const expiresAt = b.expiresAt !== undefined ? new Date(b.expiresAt) : undefined;
      if (expiresAt && expiresAt.getTime() <= Date.now()) throw invalid('expiresAt', 'must be in the future');
      try {
        const { token, secret } = await store.create({ name: b.name, role: b.role, expiresAt, createdBy: principalOf(req) });
        const dto = tokenDto(token);
        return reply.code(201).send({ id: dto.id, name: dto.name, role: dto.role, expiresAt: dto.expiresAt, createdAt: dto.createdAt, token: secret });
      } catch (e) {
        if (isUniqueViolation(e)) throw conflict(`a token named ${b.name} exists (names are never reused, even after a revocation)`, { field: 'name' });
        throw e;
      }
    },
  );

  r.get('/v1/tokens', { config: admin, schema: { tags: ['tokens'], summary: 'Named tokens (admin): never their secrets', response: { 200: z.object({ items: z.array(TokenSchema), nextCursor: z.null() }) } } }, async () => {
    const now = Date.now();
    return { items: (await store.list()).map((t) => tokenDto(t, now)), nextCursor: null };
  });

  r.delete(
    '/v1/tokens/:id',
    { config: admin, schema: { tags: ['tokens'], summary: 'Revoke a token (admin): its next request is a 401. Revoked already: 409', params: idParams, response: { 204: z.null(), 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema } } },
    async (req, reply) => {
      const res = await store.revoke(req.params.id);
      if (!res) throw notFound('token', req.params.id);
      // 409, not 404: the token still exists (listed, with its revokedAt); revoking is a state change that already happened
      if (res.result === 'already') throw conflict(`token ${res.token.id} (${res.token.name}) was already revoked at ${tokenDto(res.token).revokedAt}`, { tokenId: res.token.id, state: 'revoked' });
      return reply.code(204).send(null);
    },
  );
}
