// Fleet routes against a real SQLite database and a fake Temporal client: what EvacuateHost and
// Rebalance are started with, every refusal (4xx naming the field, nothing started), 409 for a
// second evacuation of a host, steering only a running evacuation, plan approval refusals, and
// schedule input checks.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Plan } from '../../db/entities.js';
import { addOperation, OPERATOR, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

describe('fleet routes', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
  });
  after(() => t.close());
  beforeEach(() => {
    t.temporal.starts.length = 0;
    t.temporal.signals.length = 0;
  });

  it('POST /v1/hosts/:id/evacuate starts evacuateHost under evacuate-<host>; a second one is 409', async () => {
    const res = await t.call('POST', '/v1/hosts/h1/evacuate', { maxParallel: 3, allowCold: true, policy: 'minimal-downtime' }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'evacuateHost');
    assert.equal(s.workflowId, 'tapi-evacuate-h1');
    const { principal: _p1, ...evac } = s.args[0] as Record<string, unknown>;
    assert.deepEqual(evac, { hostId: 'h1', maxParallel: 3, allowCold: true, includeStopped: undefined, policy: 'minimal-downtime' });
    assert.equal(res.json().evacuationId, 'tapi-evacuate-h1');
    const again = await t.call('POST', '/v1/hosts/h1/evacuate', {}, OPERATOR);
    assert.equal(again.statusCode, 409, again.body);
    assert.equal(t.temporal.starts.length, 1, 'nothing started twice');
    t.temporal.finish('tapi-evacuate-h1');
  });

  it('bad evacuation input is a 4xx naming the field; nothing starts', async () => {
    for (const [body, field] of [
      [{ maxParallel: 0 }, 'maxParallel'],
      [{ maxParallel: 'three' }, 'maxParallel'],
      [{ maxParallel: 101 }, 'maxParallel'],
      [{ allowCold: 'yes' }, 'allowCold'],
      [{ policy: 'fastest' }, 'policy'],
      [{ dryrun: true }, 'dryrun'],
    ] as const) {
      const res = await t.call('POST', '/v1/hosts/h1/evacuate', body, OPERATOR);
      assert.equal(res.statusCode, 400, `${JSON.stringify(body)}: ${res.body}`);
      assert.match(res.body, new RegExp(field), `${JSON.stringify(body)} names ${field}: ${res.body}`);
    }
    const unknown = await t.call('POST', '/v1/hosts/nope/evacuate', {}, OPERATOR);
    assert.equal(unknown.statusCode, 404);
    const viewer = await t.call('POST', '/v1/hosts/h1/evacuate', {}, VIEWER);
    assert.equal(viewer.statusCode, 403);
    assert.equal(t.temporal.starts.length, 0);
  });

  it('pause / resume / cancel signal a running evacuation; a finished one is 409; an unknown one 404', async () => {
    await t.call('POST', '/v1/hosts/h2/evacuate', {}, OPERATOR);
    await addOperation(t.db, { id: 'run-ev-h2', runId: t.temporal.starts[0]!.runId, workflowId: 'tapi-evacuate-h2', kind: 'evacuation', sourceHostId: 'h2', state: 'running' });
    for (const action of ['pause', 'resume', 'cancel'] as const) {
      const res = await t.call('POST', `/v1/evacuations/tapi-evacuate-h2/${action}`, action === 'cancel' ? { reason: 'window over', abortRunning: true } : undefined, OPERATOR);
      assert.equal(res.statusCode, 202, res.body);
    }
    assert.deepEqual(t.temporal.signals.map((x) => x.name), ['pause', 'resume', 'cancel']);
    assert.deepEqual(t.temporal.signals[2]!.args, [{ reason: 'window over', abortRunning: true }]);
    const badCancel = await t.call('POST', '/v1/evacuations/tapi-evacuate-h2/cancel', { abortRunning: 'yes' }, OPERATOR);
    assert.equal(badCancel.statusCode, 400);
    t.temporal.finish('tapi-evacuate-h2');
    const late = await t.call('POST', '/v1/evacuations/tapi-evacuate-h2/pause', undefined, OPERATOR);
    assert.equal(late.statusCode, 409, late.body);
    assert.equal((await t.call('POST', '/v1/evacuations/evacuate-nowhere/pause', undefined, OPERATOR)).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/evacuations/evacuate-nowhere')).statusCode, 404);
  });

  it('approving: an unknown plan is 404, a decided one 409 with its state; nothing starts', async () => {
    assert.equal((await t.call('POST', '/v1/plans/plan-nope/approve', undefined, OPERATOR)).statusCode, 404);
    const em = t.db.em();
    em.create(Plan, { id: 'plan-old', kind: 'evacuation', subject: 'h1', state: 'refused', request: {}, plan: {}, workflowId: null, refusal: 'stale: h3 in maintenance', decidedAt: new Date() });
    await em.flush();
    const res = await t.call('POST', '/v1/plans/plan-old/approve', undefined, OPERATOR);
    assert.equal(res.statusCode, 409);
    assert.match(res.body, /refused: stale: h3 in maintenance/);
    assert.equal(t.temporal.starts.length, 0);
  });

  it('POST /v1/rebalance starts rebalance-default; bad level / moves are 400 naming the field', async () => {
    const res = await t.call('POST', '/v1/rebalance', { level: 4, maxMoves: 3, cooldownMinutes: 30 }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'rebalance');
    assert.equal(s.workflowId, 'tapi-rebalance-default');
    const { principal: _p2, ...reb } = s.args[0] as Record<string, unknown>;
    assert.deepEqual(reb, { cluster: 'default', level: 4, maxMoves: 3, maxParallel: undefined, cooldownMs: 30 * 60_000 });
    t.temporal.finish('tapi-rebalance-default');
    for (const [body, field] of [
      [{ level: 0 }, 'level'],
      [{ level: 6 }, 'level'],
      [{ maxMoves: -1 }, 'maxMoves'],
      [{ cooldownMinutes: 'soon' }, 'cooldownMinutes'],
    ] as const) {
      const bad = await t.call('POST', '/v1/rebalance', body, OPERATOR);
      assert.equal(bad.statusCode, 400, bad.body);
      assert.match(bad.body, new RegExp(field));
    }
    assert.equal(t.temporal.starts.length, 1);
  });

  it('schedules: an unknown name and a malformed cron are 400 naming them', async () => {
    const name = await t.call('PUT', '/v1/schedules/defrag', { cron: '@every 5m' }, OPERATOR);
    assert.equal(name.statusCode, 400);
    assert.match(name.body, /name/);
    for (const cron of ['every day', '* * *', '@every 0s', '@every 5 minutes', '*/5 * * * * *']) {
      const res = await t.call('PUT', '/v1/schedules/rebalance', { cron }, OPERATOR);
      assert.equal(res.statusCode, 400, `${cron}: ${res.body}`);
      assert.match(res.body, /cron/);
    }
    const onlyRebalance = await t.call('PUT', '/v1/schedules/reconcile', { cron: '@every 5m', level: 2 }, OPERATOR);
    assert.equal(onlyRebalance.statusCode, 400);
    assert.match(onlyRebalance.body, /level/);
  });
});
