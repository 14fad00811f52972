// The role matrix: every route the app registers (collected through buildApp's onRoute, so a new
// route cannot escape) × {no token, wrong token, viewer, operator, admin, revoked, expired}.
// Public routes answer without a token (never 401/403); every other route is 401 without a
// valid token (revoked and expired named tokens included), 403 below its role, and neither at
// or above it. The role a route needs is the one api/auth.ts enforces: its config.role, else
// public for the probe/docs prefixes, viewer for GET/HEAD, operator for the rest.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { RouteOptions } from 'fastify';
import { ApiToken } from '../../db/entities.js';
import { routeRole, type Role, type RouteRole } from '../../api/auth.js';
import { seedInventory, startTestApi, type TestApi } from '../helpers/api.js';

interface RouteRow {
  method: string;
  url: string;
  role: RouteRole;
}

const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };
const CALLERS = ['none', 'wrong', 'viewer', 'operator', 'admin', 'revoked', 'expired'] as const;
type Caller = (typeof CALLERS)[number];

/** a concrete URL for a route pattern: parameters and wildcards become a harmless value */
const concrete = (url: string) => url.replace(/:name\b/g, 'rebalance').replace(/:[A-Za-z]+/g, 'x').replace(/\*/g, 'x');

describe('role matrix over every route of the app', () => {
  let t: TestApi;
  const routes: RouteRow[] = [];
  const tokens: Partial<Record<Caller, string | null>> = { none: null, wrong: 'ferry_wrong-token-0123456789abcdefghijklmnopqrstuvwx' };

  before(async () => {
    t = await startTestApi({
      simulator: true,
      deps: {
        onRoute: (r: RouteOptions) => {
          for (const method of [r.method].flat()) {
            routes.push({ method, url: r.url, role: routeRole(method, r.url, r.config?.role) });
          }
        },
      },
    });
    await seedInventory(t.db);
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      const res = await t.call('POST', '/v1/tokens', { name: `matrix-${role}`, role });
      assert.equal(res.statusCode, 201, res.body);
      tokens[role] = res.json().token;
    }
    for (const which of ['revoked', 'expired'] as const) {
      const res = await t.call('POST', '/v1/tokens', { name: `matrix-${which}`, role: 'admin' });
      tokens[which] = res.json().token;
      if (which === 'revoked') assert.equal((await t.call('DELETE', `/v1/tokens/${res.json().id}`)).statusCode, 204);
      else await t.db.em().nativeUpdate(ApiToken, { id: res.json().id }, { expiresAt: new Date(Date.now() - 1000) });
    }
  });
  after(() => t.close());

  it('collects the whole API from the app', () => {
    const keys = new Set(routes.map((r) => `${r.method} ${r.url}`));
    for (const k of ['POST /v1/vms', 'DELETE /v1/vms/:id', 'POST /v1/tokens', 'GET /v1/tokens', 'DELETE /v1/tokens/:id', 'POST /v1/sim/faults', 'GET /healthz', 'GET /v1/operations']) {
      assert.ok(keys.has(k), `${k} is enumerated`);
    }
    assert.ok(routes.length >= 60, `${routes.length} routes`);
    assert.ok(routes.some((r) => r.role === 'admin') && routes.some((r) => r.role === 'public'));
  });

  it('answers every route × caller as documented', async () => {
    const wrong: string[] = [];
    let calls = 0;
    for (const r of routes) {
      if (r.method === 'OPTIONS') continue;
      const url = concrete(r.url);
      for (const caller of CALLERS) {
        const token = tokens[caller];
        const res = await t.app.inject({
          method: r.method as 'GET',
          url,
          ...(r.method === 'GET' || r.method === 'HEAD' || r.method === 'DELETE' ? {} : { payload: {} }),
          headers: token ? { authorization: `Bearer ${token}` } : {},
        });
        calls++;
        const s = res.statusCode;
        // HEAD answers carry no body: the status alone is checked there
        const body = (): Record<string, unknown> => (r.method === 'HEAD' ? { message: caller === 'revoked' ? 'token revoked' : 'token expired', required: r.role } : res.json());
        let expected: string;
        let ok: boolean;
        if (r.role === 'public') {
          expected = 'neither 401 nor 403 (public)';
          ok = s !== 401 && s !== 403 && s < 500;
        } else if (caller === 'none' || caller === 'wrong' || caller === 'revoked' || caller === 'expired') {
          expected = '401';
          ok = s === 401 && (caller !== 'revoked' || body().message === 'token revoked') && (caller !== 'expired' || body().message === 'token expired');
        } else if (RANK[caller] < RANK[r.role]) {
          expected = '403';
          ok = s === 403 && body().required === r.role;
        } else {
          expected = 'neither 401 nor 403';
          ok = s !== 401 && s !== 403;
        }
        if (!ok) wrong.push(`${r.method} ${r.url} (${url}) as ${caller}: expected ${expected}, got ${s} ${res.body.slice(0, 160)}`);
      }
    }
    assert.deepEqual(wrong, [], `${wrong.length} of ${calls} answers differ from the matrix`);
    console.log(`# role matrix: ${routes.length} routes × ${CALLERS.length} callers = ${calls} requests`);
  });
});
