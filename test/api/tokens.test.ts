// Named tokens (create, list, revoke, expiry), the principal on operations (workflow input, memo,
// Operation record, ?principal= filter, steering), Idempotency-Key (one workflow for a repeated
// request), per-principal rate limits, and request logs without a token in them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { ApiToken, Host, IdempotencyRecord, Operation } from '../../db/entities.js';
import { createOperation } from '../../db/repositories/operations.js';
import { createControlActivities } from '../../activities/control.js';
import { createTokenStore } from '../../api/tokens.js';
import { rateLimitFromEnv } from '../../api/rate-limit.js';
import { addVm, ADMIN, OPERATOR, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

const vmBody = (name: string) => ({ name, cpus: 1, memoryMiB: 256, diskGiB: 4, template: 'small' });

async function mint(t: TestApi, name: string, role: string, over: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
  const res = await t.call('POST', '/v1/tokens', { name, role, ...over });
  assert.equal(res.statusCode, 201, res.body);
  return res.json();
}

const withKey = (t: TestApi, method: 'POST' | 'DELETE', url: string, key: string, body?: unknown, token = OPERATOR) =>
  t.app.inject({ method, url, ...(body !== undefined ? { payload: body as object } : {}), headers: { authorization: `Bearer ${token}`, 'idempotency-key': key } });

describe('named tokens', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
  });
  after(() => t.close());

  it('an admin creates one: 201 with the secret once; only its sha256 is stored', async () => {
    const res = await t.call('POST', '/v1/tokens', { name: 'alice', role: 'operator' });
    assert.equal(res.statusCode, 201, res.body);
    const b = res.json();
    assert.deepEqual(Object.keys(b).sort(), ['createdAt', 'expiresAt', 'id', 'name', 'role', 'token']);
    assert.match(b.token, /^ferry_[A-Za-z0-9_-]{43}$/);
    assert.equal(b.expiresAt, null);
    const row = await t.db.em().findOneOrFail(ApiToken, { id: b.id });
    assert.equal(row.hash, createHash('sha256').update(b.token).digest('hex'));
    assert.ok(!JSON.stringify(row).includes(b.token), 'the secret is not stored');
    assert.equal(row.createdBy, 'bootstrap-admin');
  });

  it('lists tokens without secrets or hashes', async () => {
    const { token } = await mint(t, 'lister', 'viewer');
    const res = await t.call('GET', '/v1/tokens');
    assert.equal(res.statusCode, 200);
    assert.ok(!res.body.includes(token));
    for (const row of await t.db.em().find(ApiToken, {})) assert.ok(!res.body.includes(row.hash));
    const item = res.json().items.find((x: { name: string }) => x.name === 'lister');
    assert.deepEqual([item.role, item.state, item.revokedAt, item.createdBy], ['viewer', 'active', null, 'bootstrap-admin']);
  });

  it('validates: roles, reserved and taken names, expiry in the past; only admins manage tokens', async () => {
    const cases: Array<[unknown, number, string]> = [
      [{ name: 'x', role: 'root' }, 400, 'role'],
      [{ name: '', role: 'viewer' }, 400, 'name'],
      [{ name: 'has space', role: 'viewer' }, 400, 'name'],
      [{ name: 'bootstrap-admin', role: 'admin' }, 422, 'name'],
      [{ name: 'alice', role: 'viewer' }, 409, 'name'],
      [{ name: 'late', role: 'viewer', expiresAt: '2001-01-01T00:00:00Z' }, 422, 'expiresAt'],
      [{ name: 'bad-date', role: 'viewer', expiresAt: 'tomorrow' }, 400, 'expiresAt'],
    ];
    for (const [body, status, field] of cases) {
      const res = await t.call('POST', '/v1/tokens', body);
      assert.equal(res.statusCode, status, `${JSON.stringify(body)}: ${res.body}`);
      assert.ok(res.json().fields?.some((f: { field: string }) => f.field === field) || res.json().field === field, `${JSON.stringify(body)} names ${field}: ${res.body}`);
    }
    for (const token of [OPERATOR, VIEWER]) {
      assert.equal((await t.call('POST', '/v1/tokens', { name: 'nope', role: 'viewer' }, token)).statusCode, 403);
      assert.equal((await t.call('GET', '/v1/tokens', undefined, token)).statusCode, 403);
      assert.equal((await t.call('DELETE', '/v1/tokens/tok-x', undefined, token)).statusCode, 403);
    }
  });

  it('a named token carries its role: viewer reads, operator mutates, admin manages tokens', async () => {
    const viewer = await mint(t, 'v1', 'viewer');
    const op = await mint(t, 'o1', 'operator');
    const admin = await mint(t, 'a1', 'admin');
    assert.equal((await t.call('GET', '/v1/hosts', undefined, viewer.token)).statusCode, 200);
    assert.equal((await t.call('POST', '/v1/vms/none/start', undefined, viewer.token)).statusCode, 403);
    assert.equal((await t.call('POST', '/v1/vms/none/start', undefined, op.token)).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/tokens', undefined, op.token)).statusCode, 403);
    const made = await t.call('POST', '/v1/tokens', { name: 'made-by-a1', role: 'viewer' }, admin.token);
    assert.equal(made.statusCode, 201);
    assert.equal((await t.db.em().findOneOrFail(ApiToken, { name: 'made-by-a1' })).createdBy, 'a1');
    const wrong = await t.call('GET', '/v1/hosts', undefined, `ferry_${'A'.repeat(43)}`);
    assert.equal(wrong.statusCode, 401);
    assert.equal(wrong.json().message, 'invalid bearer token');
  });

  it('revoked: 401 "token revoked" on the very next request; revoking again is 409, an unknown id 404', async () => {
    const { id, token } = await mint(t, 'bob', 'operator');
    assert.equal((await t.call('GET', '/v1/vms', undefined, token)).statusCode, 200);
    assert.equal((await t.call('DELETE', `/v1/tokens/${id}`)).statusCode, 204);
    const next = await t.call('GET', '/v1/vms', undefined, token);
    assert.equal(next.statusCode, 401);
    assert.equal(next.json().message, 'token revoked');
    const again = await t.call('DELETE', `/v1/tokens/${id}`);
    assert.equal(again.statusCode, 409, again.body);
    assert.match(again.json().message, /already revoked/);
    assert.equal((await t.call('DELETE', '/v1/tokens/tok-000000000000')).statusCode, 404);
    const listed = (await t.call('GET', '/v1/tokens')).json().items.find((x: { id: string }) => x.id === id);
    assert.equal(listed.state, 'revoked');
    assert.equal((await t.call('POST', '/v1/tokens', { name: 'bob', role: 'viewer' })).statusCode, 409, 'a revoked name is not reused');
  });

  it('expired: 401 "token expired" once expiresAt has passed', async () => {
    const soon = new Date(Date.now() + 60_000).toISOString();
    const { id, token, expiresAt } = (await t.call('POST', '/v1/tokens', { name: 'carol', role: 'viewer', expiresAt: soon })).json();
    assert.equal(expiresAt, soon);
    assert.equal((await t.call('GET', '/v1/vms', undefined, token)).statusCode, 200);
    await t.db.em().nativeUpdate(ApiToken, { id }, { expiresAt: new Date(Date.now() - 1000) });
    const res = await t.call('GET', '/v1/vms', undefined, token);
    assert.equal(res.statusCode, 401);
    assert.equal(res.json().message, 'token expired');
  });

  it('the lookup is one indexed read per request (no cache), and cheap', async () => {
    const { token } = await mint(t, 'timing', 'viewer');
    const store = createTokenStore(t.db);
    const N = 300;
    const clock = async (fn: () => Promise<unknown>) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < N; i++) await fn();
      return Number(process.hrtime.bigint() - t0) / 1e6 / N;
    };
    await store.check(token);
    // interleaved with the cheapest read there is (a Host by primary key), so a loaded machine slows both alike
    let lookup = 0;
    let baseline = 0;
    for (let round = 0; round < 3; round++) {
      lookup += await clock(async () => assert.equal((await store.check(token))?.ok, true));
      baseline += await clock(() => t.db.em().findOne(Host, { id: 'h1' }));
    }
    console.log(`# named-token lookup ${((lookup / 3) * 1000).toFixed(0)} µs per request; a Host read by primary key ${((baseline / 3) * 1000).toFixed(0)} µs`);
    assert.ok(lookup < baseline * 3, `the lookup (${lookup / 3} ms) costs about one indexed read (${baseline / 3} ms)`);
  });
});

describe('principal on operations', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
  });
  after(() => t.close());

  it('a named token is the principal in the workflow input and memo, on the Operation, and filterable', async () => {
    const { token } = await mint(t, 'deploy-bot', 'operator');
    const res = await t.call('POST', '/v1/vms', vmBody('web-p1'), token);
    assert.equal(res.statusCode, 202, res.body);
    const start = t.temporal.starts.at(-1)!;
    assert.equal((start.args[0] as { principal?: string }).principal, 'deploy-bot');
    assert.deepEqual(start.memo, { principal: 'deploy-bot' });
    // what the workflow does with it: beginOperation({..., principal: input.principal})
    const ctl = createControlActivities({ db: t.db });
    await ctl.beginOperation({ id: start.runId, workflowId: start.workflowId, runId: start.runId, kind: 'provision', vmId: res.json().vmId, principal: 'deploy-bot' });
    await createOperation(t.db, { id: 'other-op', workflowId: 'provision-other', kind: 'provision', principal: 'bootstrap-admin' });

    const mine = (await t.call('GET', '/v1/operations?principal=deploy-bot', undefined, VIEWER)).json().items;
    assert.deepEqual(mine.map((o: { id: string; principal: string }) => [o.id, o.principal]), [[start.runId, 'deploy-bot']]);
    const admins = (await t.call('GET', '/v1/operations?principal=bootstrap-admin', undefined, VIEWER)).json().items;
    assert.deepEqual(admins.map((o: { id: string }) => o.id), ['other-op']);
  });

  it('the environment tokens are bootstrap-admin, env-operator and env-viewer', async () => {
    await addVm(t.db, { id: 'vm-env', name: 'vm-env', state: 'stopped' });
    assert.equal((await t.call('POST', '/v1/vms/vm-env/start', undefined, OPERATOR)).statusCode, 202);
    assert.equal((t.temporal.starts.at(-1)!.args[0] as { principal: string }).principal, 'env-operator');
    t.temporal.finish(t.temporal.starts.at(-1)!.workflowId);
    assert.equal((await t.call('POST', '/v1/rebalance', {}, ADMIN)).statusCode, 202);
    assert.deepEqual(t.temporal.starts.at(-1)!.memo, { principal: 'bootstrap-admin' });
  });

  it('steering records who did it in details.steeredBy', async () => {
    const { token } = await mint(t, 'oncall', 'operator');
    await addVm(t.db, { id: 'vm-m', name: 'vm-m', ip: '10.0.0.11' });
    const res = await t.call('POST', '/v1/vms/vm-m/migrations', { kind: 'live', targetHostId: 'h2' }, token);
    assert.equal(res.statusCode, 202, res.body);
    const start = t.temporal.starts.at(-1)!;
    await createOperation(t.db, { id: start.runId, workflowId: start.workflowId, runId: start.runId, kind: 'migration', vmId: 'vm-m', principal: 'oncall' });
    t.temporal.progress.set(start.workflowId, {} as never);
    assert.equal((await t.call('POST', `/v1/migrations/${start.workflowId}/cancel`, { reason: 'wrong target' }, token)).statusCode, 202);
    assert.equal((await t.call('PATCH', `/v1/migrations/${start.workflowId}`, { maxDowntimeMs: 500 }, OPERATOR)).statusCode, 200);
    assert.match(JSON.stringify(t.temporal.signals.at(-1)!.args), /wrong target/);
    const op = await t.db.em().findOneOrFail(Operation, { id: start.runId });
    const steered = (op.details.steeredBy as Array<Record<string, unknown>>).map((s) => [s.principal, s.action]);
    assert.deepEqual(steered, [
      ['oncall', 'cancel'],
      ['env-operator', 'params'],
    ]);
  });
});

describe('Idempotency-Key', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
  });
  after(() => t.close());

  it('a repeat answers the first answer and starts ONE workflow', async () => {
    const before = t.temporal.starts.length;
    const first = await withKey(t, 'POST', '/v1/vms', 'k-1', vmBody('web-i1'));
    assert.equal(first.statusCode, 202, first.body);
    const again = await withKey(t, 'POST', '/v1/vms', 'k-1', vmBody('web-i1'));
    assert.equal(again.statusCode, 202);
    assert.deepEqual(again.json(), first.json());
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(t.temporal.starts.length, before + 1);
    // body keys in another order are the same request
    const reordered = { template: 'small', diskGiB: 4, memoryMiB: 256, cpus: 1, name: 'web-i1' };
    assert.equal((await withKey(t, 'POST', '/v1/vms', 'k-1', reordered)).statusCode, 202);
    assert.equal(t.temporal.starts.length, before + 1);
  });

  it('the same key on another body or path is 422 naming the header; a malformed key 400', async () => {
    const other = await withKey(t, 'POST', '/v1/vms', 'k-1', vmBody('web-i2'));
    assert.equal(other.statusCode, 422, other.body);
    assert.equal(other.json().fields[0].field, 'Idempotency-Key');
    assert.equal((await withKey(t, 'POST', '/v1/rebalance', 'k-1', {})).statusCode, 422);
    for (const key of ['x'.repeat(129), 'tab\there', 'é']) {
      const res = await t.app.inject({ method: 'POST', url: '/v1/vms', payload: vmBody('web-i3'), headers: { authorization: `Bearer ${OPERATOR}`, 'idempotency-key': key } });
      assert.equal(res.statusCode, 400, `${JSON.stringify(key)}: ${res.body}`);
      assert.equal(res.json().fields[0].field, 'Idempotency-Key');
    }
  });

  it('keys are per principal; a refusal (4xx) is the stored answer too', async () => {
    const n = t.temporal.starts.length;
    const byAdmin = await withKey(t, 'POST', '/v1/vms', 'k-1', vmBody('web-i1'), ADMIN);
    assert.equal(byAdmin.statusCode, 409, 'not the operator\'s stored answer: a fresh request (the name is taken)');
    assert.equal(byAdmin.headers['idempotent-replayed'], undefined);
    const replay = await withKey(t, 'POST', '/v1/vms', 'k-1', vmBody('web-i1'), ADMIN);
    assert.equal(replay.statusCode, 409);
    assert.equal(replay.headers['idempotent-replayed'], 'true');
    assert.equal(t.temporal.starts.length, n);
  });

  it('a 5xx is not kept: the retry with the same key runs again', async () => {
    t.temporal.failNextStart = new Error('temporal down');
    const failed = await withKey(t, 'POST', '/v1/vms', 'k-5xx', vmBody('web-i5'));
    assert.equal(failed.statusCode, 500);
    const retried = await withKey(t, 'POST', '/v1/vms', 'k-5xx', vmBody('web-i5'));
    assert.equal(retried.statusCode, 202, retried.body);
    assert.equal(retried.headers['idempotent-replayed'], undefined);
  });

  it('concurrent duplicates start one workflow: the others get the stored answer or 409 with retry-after', async () => {
    const n = t.temporal.starts.length;
    const answers = await Promise.all([1, 2, 3, 4].map(() => withKey(t, 'POST', '/v1/vms', 'k-race', vmBody('web-race'))));
    assert.equal(t.temporal.starts.length, n + 1);
    for (const a of answers) {
      assert.ok(a.statusCode === 202 || (a.statusCode === 409 && a.headers['retry-after'] === '1'), `${a.statusCode} ${a.body}`);
    }
    assert.equal(answers.filter((a) => a.statusCode === 202 && a.headers['idempotent-replayed'] === undefined).length, 1);
  });

  it('lifecycle and DELETE take it too; routes that start nothing ignore it', async () => {
    await addVm(t.db, { id: 'vm-d', name: 'vm-d', ip: '10.0.0.12', state: 'stopped' });
    const n = t.temporal.starts.length;
    assert.equal((await withKey(t, 'DELETE', '/v1/vms/vm-d', 'k-del')).statusCode, 202);
    t.temporal.finish(t.temporal.starts.at(-1)!.workflowId);
    assert.equal((await withKey(t, 'DELETE', '/v1/vms/vm-d', 'k-del')).statusCode, 202);
    assert.equal(t.temporal.starts.length, n + 1);
    const rows = await t.db.em().count(IdempotencyRecord, { key: 'k-none' });
    await withKey(t, 'POST', '/v1/tokens', 'k-none', { name: 'idem', role: 'viewer' }, ADMIN);
    assert.equal(await t.db.em().count(IdempotencyRecord, { key: 'k-none' }), rows);
  });
});

describe('rate limits and logs', () => {
  it('429 after the configured number of mutating requests per principal; reads and other principals go on', async () => {
    const t = await startTestApi({ deps: { env: { FERRY_API_OPERATOR_TOKEN: OPERATOR, FERRY_API_VIEWER_TOKEN: VIEWER, FERRY_API_RATE_LIMIT: '3' } } });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await t.call('POST', '/v1/vms/none/start', undefined, OPERATOR)).statusCode, 404);
      const limited = await t.call('POST', '/v1/vms/none/start', undefined, OPERATOR);
      assert.equal(limited.statusCode, 429, limited.body);
      assert.equal(limited.json().error, 'rate_limited');
      assert.match(limited.json().message, /env-operator made more than 3 mutating requests/);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      for (let i = 0; i < 5; i++) assert.equal((await t.call('GET', '/v1/vms', undefined, OPERATOR)).statusCode, 200);
      assert.equal((await t.call('POST', '/v1/vms/none/start', undefined, ADMIN)).statusCode, 404);
    } finally {
      await t.close();
    }
  });

  it('FERRY_API_RATE_LIMIT: requests per minute, off, or an error naming it', () => {
    assert.deepEqual(rateLimitFromEnv({}), { max: 600, windowMs: 60_000 });
    assert.deepEqual(rateLimitFromEnv({ FERRY_API_RATE_LIMIT: '42' }), { max: 42, windowMs: 60_000 });
    assert.equal(rateLimitFromEnv({ FERRY_API_RATE_LIMIT: 'off' }).max, 0);
    assert.throws(() => rateLimitFromEnv({ FERRY_API_RATE_LIMIT: 'lots' }), /FERRY_API_RATE_LIMIT/);
  });

  it('request logs never contain a token', async () => {
    let log = '';
    const logStream = new Writable({
      write(chunk, _enc, cb) {
        log += String(chunk);
        cb();
      },
    });
    const t = await startTestApi({ deps: { logStream } });
    try {
      await seedInventory(t.db);
      const { token } = await mint(t, 'logged', 'operator');
      await t.call('GET', '/v1/vms', undefined, token);
      await t.call('GET', '/v1/vms', undefined, 'not-a-real-token-0123456789');
      await t.call('POST', '/v1/tokens', { name: 'x2', role: 'viewer' }, VIEWER);
      t.temporal.failNextStart = new Error('boom');
      await t.call('POST', '/v1/vms', vmBody('web-log'), token);
      assert.ok(log.includes('"statusCode":500') || log.includes('request failed'), 'the log was captured');
      for (const secret of [token, ADMIN, OPERATOR, VIEWER, 'not-a-real-token-0123456789']) assert.ok(!log.includes(secret), `a token leaked into the log: ${secret.slice(0, 8)}…`);
    } finally {
      await t.close();
    }
  });
});
