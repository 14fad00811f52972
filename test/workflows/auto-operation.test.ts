// kind auto end to end on the simulator (real dev server, real workflows, not a fake client): the
// Operation record the chosen workflow writes states which kind auto chose and why — live for a
// running VM on shared storage, cold for a stopped VM with allowCold — and the migration ends
// where the request said.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp } from '../../api/app.js';
import { Operation, Vm } from '../../db/entities.js';
import { outcome, startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';
import { ADMIN, testConfig } from '../helpers/api.js';

describe('kind auto: the Operation record says which kind and why (simulator)', () => {
  let f: TestFerry;
  let app: FastifyInstance;
  const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object, headers: { authorization: `Bearer ${ADMIN}` } });

  before(async () => {
    f = await startTestFerry();
    app = await buildApp({ db: f.db, temporal: f.client, config: testConfig(f.dir), registry: new Registry(), taskQueuePrefix: f.prefix });
    await app.ready();
  });
  after(async () => {
    await app?.close();
    await f?.close();
    await stopOwnTemporal();
  });

  async function operationOf(workflowId: string) {
    const r = await outcome(f.client.workflow.getHandle(workflowId));
    assert.ok(r.ok, r.ok ? '' : r.message);
    const ops = await f.db.em().fork().find(Operation, { workflowId });
    assert.equal(ops.length, 1, `one Operation for ${workflowId}`);
    return ops[0]!;
  }

  test('running + shared storage: live, and the Operation record carries the choice and its reason', async () => {
    await f.provisionRunning({ name: 'auto-live', vmId: 'vm-auto-live', hostId: 'h1' });
    const res = await post('/v1/vms/vm-auto-live/migrations', { kind: 'auto', targetHostId: 'h2' });
    assert.equal(res.statusCode, 202, res.body);
    const body = res.json();
    assert.equal(body.kind, 'live');
    const op = await operationOf(body.workflowId);
    assert.equal(op.subkind, 'live');
    assert.equal(op.state, 'completed');
    const auto = (op.details as { auto?: { requested: string; chose: string; reason: string } }).auto;
    assert.deepEqual(auto, body.auto);
    assert.equal(auto?.chose, 'live');
    assert.match(auto!.reason, /shared storage/);
    assert.equal((await f.db.em().fork().findOneOrFail(Vm, { id: 'vm-auto-live' })).hostId, 'h2');
  });

  test('stopped with allowCold: cold, and the Operation record carries the choice and its reason', async () => {
    await f.provisionRunning({ name: 'auto-cold', vmId: 'vm-auto-cold', hostId: 'h1' });
    const stop = await post('/v1/vms/vm-auto-cold/stop', { force: true, timeoutMs: 1000 });
    assert.equal(stop.statusCode, 202, stop.body);
    await outcome(f.client.workflow.getHandle(stop.json().workflowId));
    assert.equal((await f.db.em().fork().findOneOrFail(Vm, { id: 'vm-auto-cold' })).state, 'stopped');
    const refused = await post('/v1/vms/vm-auto-cold/migrations', { kind: 'auto', targetHostId: 'h2' });
    assert.equal(refused.statusCode, 422, refused.body);
    const res = await post('/v1/vms/vm-auto-cold/migrations', { kind: 'auto', targetHostId: 'h2', allowCold: true });
    assert.equal(res.statusCode, 202, res.body);
    const body = res.json();
    assert.equal(body.kind, 'cold');
    const op = await operationOf(body.workflowId);
    assert.equal(op.subkind, 'cold');
    assert.equal(op.state, 'completed');
    const auto = (op.details as { request?: { auto?: { chose: string; reason: string } } }).request?.auto;
    assert.deepEqual(auto, body.auto);
    assert.equal(auto?.chose, 'cold');
    assert.match(auto!.reason, /is stopped/);
    assert.equal((await f.db.em().fork().findOneOrFail(Vm, { id: 'vm-auto-cold' })).hostId, 'h2');
  });
});
