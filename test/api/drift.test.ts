// Drift routes against a real SQLite database and a fake Temporal client: listing with filters
// and cursor pages, 400 naming the bad query field, 404 for an unknown drift, 409 for an action
// that does not fit the kind and for an already resolved drift, roles (401 without a token, 403
// for a viewer resolving), forget and fix-state in inventory, POST /v1/reconcile (202, 409 while
// one runs), and ferry_drift{kind} on /metrics computed from the database.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, Drift, Vm } from '../../db/entities.js';
import { addVm, OPERATOR, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

async function addDrift(t: TestApi, over: Partial<Drift> & { id: string; kind: Drift['kind']; vmId: string }, detectedAt: Date): Promise<void> {
  const em = t.db.em();
  em.create(Drift, { hostId: 'h1', state: 'open', expected: {}, observed: {}, detectedAt, lastSeenAt: detectedAt, ...over });
  await em.flush();
}

/** Two VMs, one of them with an allocation, and four drift records a second apart (one resolved). */
async function seedDrift(t: TestApi): Promise<void> {
  await seedInventory(t.db);
  await addVm(t.db, { id: 'vm-lost', name: 'lost' });
  await addVm(t.db, { id: 'vm-off', name: 'off', ip: '10.0.0.11' });
  const em = t.db.em();
  em.create(Allocation, { id: 'alloc-lost', hostId: 'h1', vmId: 'vm-lost', kind: 'vm', cpus: 2, memoryMiB: 1024, diskGiB: 4, datastoreId: 'shared', operationId: 'op-lost' });
  await em.flush();
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  await addDrift(t, { id: 'missing-vm-vm-lost', kind: 'missing-vm', vmId: 'vm-lost', expected: { hostId: 'h1', state: 'running' }, observed: { hostId: 'h1', state: 'absent' } }, new Date(t0));
  await addDrift(t, { id: 'wrong-state-vm-off', kind: 'wrong-state', vmId: 'vm-off', expected: { hostId: 'h1', state: 'running' }, observed: { hostId: 'h1', state: 'crashed' } }, new Date(t0 + 1000));
  await addDrift(t, { id: 'unknown-vm-stray', kind: 'unknown-vm', vmId: 'stray', hostId: 'h2', observed: { hostId: 'h2', state: 'running', cpus: 1, memoryBytes: 512 * 1024 ** 2 } }, new Date(t0 + 2000));
  await addDrift(t, { id: 'stuck-paused-vm-old', kind: 'stuck-paused', vmId: 'vm-old', state: 'resolved', resolution: 'gone', resolvedBy: 'reconcile', resolvedAt: new Date(t0 + 4000) }, new Date(t0 + 3000));
}

describe('drift routes', () => {
  let t: TestApi;
  before(async () => seedDrift((t = await startTestApi())));
  after(() => t.close());

  it('lists newest first, filters by state and kind, pages with a cursor', async () => {
    const all = await t.call('GET', '/v1/drift', undefined, VIEWER);
    assert.equal(all.statusCode, 200, all.body);
    assert.deepEqual(all.json().items.map((d: Drift) => d.id), ['stuck-paused-vm-old', 'unknown-vm-stray', 'wrong-state-vm-off', 'missing-vm-vm-lost']);
    assert.equal(all.json().nextCursor, null);
    const open = (await t.call('GET', '/v1/drift?state=open')).json();
    assert.deepEqual(open.items.map((d: Drift) => d.id), ['unknown-vm-stray', 'wrong-state-vm-off', 'missing-vm-vm-lost']);
    const missing = (await t.call('GET', '/v1/drift?kind=missing-vm&state=open')).json();
    assert.deepEqual(missing.items.map((d: Drift) => d.id), ['missing-vm-vm-lost']);
    assert.deepEqual(missing.items[0].expected, { hostId: 'h1', state: 'running' });

    const p1 = (await t.call('GET', '/v1/drift?state=open&limit=2')).json();
    assert.equal(p1.items.length, 2);
    assert.ok(p1.nextCursor);
    const p2 = (await t.call('GET', `/v1/drift?state=open&limit=2&cursor=${p1.nextCursor}`)).json();
    assert.deepEqual(p2.items.map((d: Drift) => d.id), ['missing-vm-vm-lost']);
    assert.equal(p2.nextCursor, null);
  });

  it('a bad query is a 400 naming the field', async () => {
    for (const [q, field] of [
      ['state=broken', 'state'],
      ['kind=lost-vm', 'kind'],
      ['limit=0', 'limit'],
      ['cursor=nonsense', 'cursor'],
    ] as const) {
      const res = await t.call('GET', `/v1/drift?${q}`);
      assert.equal(res.statusCode, 400, `${q}: ${res.body}`);
      assert.ok(res.json().fields.some((f: { field: string }) => f.field === field), `${q}: ${res.body}`);
    }
  });

  it('GET one; unknown ids are 404', async () => {
    const one = await t.call('GET', '/v1/drift/wrong-state-vm-off', undefined, VIEWER);
    assert.equal(one.statusCode, 200);
    assert.equal(one.json().observed.state, 'crashed');
    assert.equal((await t.call('GET', '/v1/drift/nope')).statusCode, 404);
    assert.equal((await t.call('POST', '/v1/drift/nope/resolve', { action: 'forget' })).statusCode, 404);
  });

  it('needs a token; a viewer reads but cannot resolve or start a reconcile', async () => {
    assert.equal((await t.call('GET', '/v1/drift', undefined, null)).statusCode, 401);
    assert.equal((await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'forget' }, null)).statusCode, 401);
    assert.equal((await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'forget' }, VIEWER)).statusCode, 403);
    assert.equal((await t.call('POST', '/v1/reconcile', {}, VIEWER)).statusCode, 403);
    assert.equal((await t.db.em().findOneOrFail(Drift, { id: 'missing-vm-vm-lost' })).state, 'open', 'nothing resolved');
  });

  it('an action that does not fit the kind is 409 naming why; a bad action is 400', async () => {
    const res = await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'adopt' }, OPERATOR);
    assert.equal(res.statusCode, 409, res.body);
    assert.match(res.json().message, /adopt does not fit a missing-vm drift \(use forget\)/);
    const bad = await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'delete' }, OPERATOR);
    assert.equal(bad.statusCode, 400, bad.body);
    assert.equal(bad.json().fields[0].field, 'action');
    const extra = await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'forget', force: true }, OPERATOR);
    assert.equal(extra.statusCode, 400, extra.body);
    assert.equal(extra.json().fields[0].field, 'force');
    assert.equal((await t.call('POST', '/v1/drift/stuck-paused-vm-old/resolve', { action: 'fix-state' }, OPERATOR)).statusCode, 409, 'already resolved');
  });

  it('forget marks the VM lost and releases its allocation; fix-state takes the observed state', async () => {
    const res = await t.call('POST', '/v1/drift/missing-vm-vm-lost/resolve', { action: 'forget' }, OPERATOR);
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual([res.json().drift.state, res.json().drift.resolution, res.json().drift.resolvedBy], ['resolved', 'forget', 'env-operator']);
    const lost = await t.db.em().findOneOrFail(Vm, { id: 'vm-lost' });
    assert.deepEqual([lost.state, lost.error], ['deleted', 'lost: missing on host h1']);
    assert.equal(await t.db.em().count(Allocation, { vmId: 'vm-lost' }), 0);
    assert.equal((await t.call('GET', '/v1/vms/vm-lost')).statusCode, 404);
    const op = (await t.call('GET', `/v1/operations/${res.json().operationId}`)).json();
    assert.deepEqual([op.kind, op.subkind, op.state], ['drift', 'forget', 'completed']);

    const fix = await t.call('POST', '/v1/drift/wrong-state-vm-off/resolve', { action: 'fix-state' }, OPERATOR);
    assert.equal(fix.statusCode, 200, fix.body);
    assert.equal(fix.json().vm.state, 'stopped', 'a crashed guest is stopped in inventory');
  });

  it('POST /v1/reconcile starts the workflow under its business key; a second while it runs is 409', async () => {
    const res = await t.call('POST', '/v1/reconcile', {}, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().workflowId, 'tapi-reconcile-default');
    assert.ok(res.json().webUiUrl.includes('tapi-reconcile-default'));
    const start = t.temporal.starts.at(-1)!;
    assert.equal(start.workflowType, 'reconcile');
    assert.deepEqual(start.args, [{ principal: 'env-operator' }]);
    const again = await t.call('POST', '/v1/reconcile', {}, OPERATOR);
    assert.equal(again.statusCode, 409, again.body);
    assert.equal(again.json().workflowId, 'tapi-reconcile-default');
    assert.equal((await t.call('POST', '/v1/reconcile', { agentTimeoutMs: 5 }, OPERATOR)).statusCode, 400);
    t.temporal.finish('tapi-reconcile-default');
  });

  it('/metrics shows open drift by kind and host utilization, from the database', async () => {
    const text = (await t.call('GET', '/metrics', undefined, null)).body;
    assert.match(text, /ferry_drift\{kind="unknown-vm"\} 1/);
    assert.match(text, /ferry_drift\{kind="missing-vm"\} 0/);
    assert.match(text, /ferry_drift\{kind="stuck-paused"\} 0/);
    assert.match(text, /ferry_host_utilization_ratio\{host="h1",resource="cpu"\}/);
  });
});
