// Auth (401/403/200 per role, the generated admin token), /healthz, /readyz (503 naming what is
// down), /metrics (strict Prometheus text parse, fleet metrics from Operation records), OpenAPI,
// and one real listening server on port 0.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createMetrics } from '../../metrics/index.js';
import { resolveAdminToken, roleTokensFromEnv } from '../../api/auth.js';
import { startApiServer } from '../../api/server.js';
import { Allocation } from '../../db/entities.js';
import { addOperation, addVm, ADMIN, createApiTestDb, FakeTemporal, OPERATOR, seedInventory, startTestApi, testConfig, VIEWER, type TestApi } from '../helpers/api.js';

// ---------------------------------------------------------------- Prometheus text parser
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Strict parse of the text exposition format; throws naming the line on anything malformed. */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sampleRe = new RegExp(`^(${NAME})(\\{(.*)\\})? (-?(?:[0-9.]+(?:e[+-]?[0-9]+)?|NaN|\\+Inf|-Inf))( -?[0-9]+)?$`);
  const labelRe = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/;
  assert.ok(text.endsWith('\n'), 'ends with a newline');
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const where = `line ${i + 1}: ${line}`;
    if (line.startsWith('#')) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.+)$`).exec(line);
      assert.ok(m, `malformed comment, ${where}`);
      if (m[1] === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!), `unknown type, ${where}`);
        assert.ok(!types.has(m[2]!), `second TYPE for ${m[2]}`);
        assert.ok(!samples.some((s) => s.name === m[2] || s.name.startsWith(`${m[2]}_`)), `TYPE after samples of ${m[2]}`);
        types.set(m[2]!, m[3]!);
      } else {
        assert.ok(!helps.has(m[2]!), `second HELP for ${m[2]}`);
        helps.add(m[2]!);
      }
      continue;
    }
    const m = sampleRe.exec(line);
    assert.ok(m, `malformed sample, ${where}`);
    const labels: Record<string, string> = {};
    let rest = m[3] ?? '';
    while (rest.length) {
      const l = labelRe.exec(rest);
      assert.ok(l, `malformed labels, ${where}`);
      assert.ok(!(l[1]! in labels), `duplicate label ${l[1]}, ${where}`);
      labels[l[1]!] = l[2]!;
      rest = rest.slice(l[0].length);
    }
    const name = m[1]!;
    const family = [...types.keys()].find((f) => name === f || (['histogram', 'summary'].includes(types.get(f)!) && /^_(bucket|sum|count)$/.test(name.slice(f.length)) && name.startsWith(f)));
    assert.ok(family, `sample without a TYPE line, ${where}`);
    assert.ok(helps.has(family), `sample without a HELP line, ${where}`);
    if (types.get(family) === 'histogram' && name.endsWith('_bucket')) assert.ok('le' in labels, `bucket without le, ${where}`);
    samples.push({ name, labels, value: Number(m[4]) });
  }
  return { samples, types };
}

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

// ---------------------------------------------------------------- tests
describe('resolveAdminToken', () => {
  it('uses FERRY_API_TOKEN when set', () => {
    assert.deepEqual(resolveAdminToken({ apiToken: ADMIN, dataDir: '/nonexistent' }), { token: ADMIN, generated: false });
  });

  it('generates one token into <dataDir>/api-token with mode 0600 and reuses it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-token-'));
    try {
      const dataDir = join(dir, 'data');
      const first = resolveAdminToken({ dataDir });
      assert.equal(first.generated, true);
      assert.equal(first.path, join(dataDir, 'api-token'));
      assert.ok(first.token.length >= 32);
      assert.equal(statSync(first.path!).mode & 0o777, 0o600);
      assert.equal(readFileSync(first.path!, 'utf8').trim(), first.token);
      const second = resolveAdminToken({ dataDir });
      assert.deepEqual(second, { token: first.token, generated: false, path: first.path });
      writeFileSync(first.path!, 'short\n');
      assert.throws(() => resolveAdminToken({ dataDir }), /shorter than 16/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses short role tokens naming the variable', () => {
    assert.throws(() => roleTokensFromEnv({ FERRY_API_VIEWER_TOKEN: 'abc' }), /FERRY_API_VIEWER_TOKEN/);
    assert.deepEqual(roleTokensFromEnv({ FERRY_API_OPERATOR_TOKEN: OPERATOR }), { operator: OPERATOR });
  });
});

describe('auth, probes, metrics, docs', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi({ simulator: true });
    await seedInventory(t.db);
    await addVm(t.db, { id: 'vm-a', name: 'a' });
    const em = t.db.em();
    em.create(Allocation, { id: 'al-1', hostId: 'h1', vmId: 'vm-a', kind: 'vm', cpus: 8, memoryMiB: 8192, diskGiB: 4, datastoreId: 'shared' });
    em.create(Allocation, { id: 'al-2', hostId: 'h2', vmId: 'vm-b', kind: 'reservation', cpus: 4, memoryMiB: 4096, diskGiB: 0 });
    await em.flush();
    const t0 = new Date('2026-01-01T00:00:00Z');
    const at = (s: number) => new Date(t0.getTime() + s * 1000);
    await addOperation(t.db, { id: 'm1', workflowId: 'migrate-vm-a', kind: 'migration', subkind: 'live', state: 'completed', startedAt: at(0), endedAt: at(4), details: { downtimeMs: 30, rounds: 4, transferredBytes: 1000, compensations: [] } });
    await addOperation(t.db, { id: 'm2', workflowId: 'migrate-vm-a', kind: 'migration', subkind: 'live', state: 'completed', startedAt: at(10), endedAt: at(12), details: { downtimeMs: 70, rounds: 2, transferredBytes: 500 } });
    await addOperation(t.db, {
      id: 'm3',
      workflowId: 'migrate-vm-a',
      kind: 'migration',
      subkind: 'live',
      state: 'rolled-back',
      startedAt: at(20),
      endedAt: at(21),
      details: { compensations: [{ name: 'release-reservation', ok: true, attempts: 1 }, { name: 'destroy-incoming', ok: false, attempts: 3 }] },
    });
    await addOperation(t.db, { id: 'm4', workflowId: 'migrate-vm-x', kind: 'migration', subkind: 'live', state: 'running', stage: 'pre-copy', startedAt: at(30) });
    await addOperation(t.db, { id: 'p1', workflowId: 'provision-a', kind: 'provision', state: 'completed', startedAt: at(0), endedAt: at(3), details: { stepTimingsMs: { select: 100, start: 900 } } });
    await addOperation(t.db, { id: 'p2', workflowId: 'provision-b', kind: 'provision', state: 'failed', startedAt: at(0), endedAt: at(1) });
    await addOperation(t.db, { id: 'p3', workflowId: 'provision-c', kind: 'provision', state: 'running', startedAt: at(40) });
  });
  after(() => t.close());

  it('401 without a token or with a bad one, 403 for a low role, 200 for enough', async () => {
    const none = await t.call('GET', '/v1/hosts', undefined, null);
    assert.equal(none.statusCode, 401);
    assert.equal(none.json().error, 'unauthorized');
    assert.match(String(none.headers['www-authenticate']), /Bearer/);
    assert.equal((await t.call('GET', '/v1/hosts', undefined, 'wrong-token-0123456789')).statusCode, 401);
    const basic = await t.app.inject({ method: 'GET', url: '/v1/hosts', headers: { authorization: `Basic ${ADMIN}` } });
    assert.equal(basic.statusCode, 401);
    for (const token of [VIEWER, OPERATOR, ADMIN]) assert.equal((await t.call('GET', '/v1/hosts', undefined, token)).statusCode, 200);

    const host = { id: 'h9', cpuModel: 'x', cpus: 4, memoryMiB: 4096 };
    assert.equal((await t.call('POST', '/v1/hosts', host, VIEWER)).statusCode, 403);
    const op = await t.call('POST', '/v1/hosts', host, OPERATOR);
    assert.equal(op.statusCode, 403, 'registering a host needs admin');
    assert.equal(op.json().required, 'admin');
    assert.equal((await t.call('POST', '/v1/hosts/h1/maintenance', { enabled: true }, OPERATOR)).statusCode, 403);
    assert.equal((await t.call('POST', '/v1/sim/faults', { kind: 'link-cut', hostId: 'h1' }, OPERATOR)).statusCode, 403);
    assert.equal((await t.call('POST', '/v1/hosts', host, ADMIN)).statusCode, 201);
    assert.equal((await t.call('POST', '/v1/hosts', host, ADMIN)).statusCode, 409, 'same host id twice');
  });

  it('/healthz, /readyz, /metrics, /docs and /openapi.json need no token', async () => {
    for (const url of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs/']) {
      const res = await t.call('GET', url, undefined, null);
      assert.equal(res.statusCode, 200, `${url}: ${res.statusCode}`);
    }
  });

  it('/readyz is 503 naming Temporal when its health check fails', async () => {
    t.temporal.healthError = new Error('14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:7233');
    try {
      const res = await t.call('GET', '/readyz', undefined, null);
      assert.equal(res.statusCode, 503);
      const b = res.json();
      assert.deepEqual(b.down, ['temporal']);
      assert.match(b.message, /temporal is down/);
      assert.equal(b.checks.database, 'ok');
      assert.match(b.checks.temporal, /ECONNREFUSED/);
    } finally {
      t.temporal.healthError = undefined;
    }
    assert.equal((await t.call('GET', '/readyz', undefined, null)).json().status, 'ready');
  });

  it('/metrics is valid Prometheus text with fleet metrics from the Operation records', async () => {
    const res = await t.call('GET', '/metrics', undefined, null);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const { samples, types } = parseProm(res.body);
    assert.equal(types.get('ferry_migrations_total'), 'counter');
    assert.equal(types.get('ferry_migration_downtime_seconds'), 'histogram');
    assert.equal(value(samples, 'ferry_migrations_total', { kind: 'live', result: 'completed' }), 2);
    assert.equal(value(samples, 'ferry_migrations_total', { kind: 'live', result: 'rolled-back' }), 1);
    assert.equal(value(samples, 'ferry_provisions_total', { result: 'completed' }), 1);
    assert.equal(value(samples, 'ferry_provisions_total', { result: 'failed' }), 1);
    assert.equal(value(samples, 'ferry_operations_in_flight', { kind: 'migration' }), 1);
    assert.equal(value(samples, 'ferry_operations_in_flight', { kind: 'provision' }), 1);
    assert.equal(value(samples, 'ferry_operations_in_flight', { kind: 'evacuation' }), 0);
    assert.equal(value(samples, 'ferry_migration_downtime_seconds_count'), 2);
    assert.ok(Math.abs(value(samples, 'ferry_migration_downtime_seconds_sum')! - 0.1) < 1e-9);
    assert.equal(value(samples, 'ferry_migration_downtime_seconds_bucket', { le: '0.05' }), 1);
    assert.equal(value(samples, 'ferry_migration_duration_seconds_count', { kind: 'live' }), 3);
    assert.equal(value(samples, 'ferry_migration_duration_seconds_sum', { kind: 'live' }), 7);
    assert.equal(value(samples, 'ferry_migration_precopy_rounds_sum'), 6);
    assert.equal(value(samples, 'ferry_migration_bytes_total', { kind: 'live' }), 1500);
    assert.equal(value(samples, 'ferry_provision_step_duration_seconds_sum', { step: 'start' }), 0.9);
    assert.equal(value(samples, 'ferry_compensations_total', { workflow: 'migration', step: 'destroy-incoming', result: 'failed' }), 1);
    // h1: 8 of 64 vCPUs (16 x overcommit 4), 8192 of 16384 MiB; h2 holds a reservation
    assert.equal(value(samples, 'ferry_host_utilization_ratio', { host: 'h1', resource: 'cpu' }), 0.125);
    assert.equal(value(samples, 'ferry_host_utilization_ratio', { host: 'h1', resource: 'memory' }), 0.5);
    assert.equal(value(samples, 'ferry_host_utilization_ratio', { host: 'h2', resource: 'memory' }), 0.25);
    // stddev of the normalized loads (mean of cpu and memory ratios) of the hosts taking
    // placements: h1 (0.125+0.5)/2, h2 (0.0625+0.25)/2, h9 (registered by the auth test above) 0;
    // h3 is in maintenance
    const loads = [0.3125, 0.15625, 0];
    const mean = loads.reduce((a, b) => a + b, 0) / loads.length;
    const sigma = Math.sqrt(loads.reduce((a, x) => a + (x - mean) ** 2, 0) / loads.length);
    assert.ok(Math.abs(value(samples, 'ferry_cluster_imbalance')! - sigma) < 1e-9);
  });

  it('/metrics is recomputed on every scrape, not accumulated', async () => {
    const a = parseProm((await t.call('GET', '/metrics', undefined, null)).body).samples;
    await addOperation(t.db, { id: 'm5', workflowId: 'migrate-vm-z', kind: 'migration', subkind: 'live', state: 'cancelled', endedAt: new Date() });
    const [r1, r2] = await Promise.all([t.call('GET', '/metrics', undefined, null), t.call('GET', '/metrics', undefined, null)]);
    for (const r of [r1, r2]) {
      const b = parseProm(r.body).samples;
      assert.equal(value(b, 'ferry_migrations_total', { kind: 'live', result: 'completed' }), value(a, 'ferry_migrations_total', { kind: 'live', result: 'completed' }));
      assert.equal(value(b, 'ferry_migrations_total', { kind: 'live', result: 'cancelled' }), 1);
    }
  });

  it('the parser check itself rejects malformed exposition text', () => {
    assert.throws(() => parseProm('ferry_x 1\n'), /without a TYPE/);
    assert.throws(() => parseProm('# HELP a b\n# TYPE a gauge\na{x="1" 2\n'), /malformed/);
    assert.throws(() => parseProm('# HELP a b\n# TYPE a gauge\na one\n'), /malformed sample/);
    assert.throws(() => parseProm('# HELP a b\n# TYPE a gauge\n# TYPE a gauge\na 1\n'), /second TYPE/);
  });

  it('serves an OpenAPI document describing the routes and their schemas', async () => {
    const doc = (await t.call('GET', '/openapi.json', undefined, null)).json();
    assert.equal(doc.openapi, '3.0.3');
    for (const p of ['/v1/vms', '/v1/vms/{id}', '/v1/vms/{id}/migrations', '/v1/migrations/{id}', '/v1/hosts', '/v1/templates', '/v1/networks', '/v1/sim/faults']) {
      assert.ok(doc.paths[p], `documents ${p}`);
    }
    const body = doc.paths['/v1/vms'].post.requestBody.content['application/json'].schema;
    assert.deepEqual([...body.required].sort(), ['cpus', 'diskGiB', 'memoryMiB', 'name']);
    assert.ok(body.properties.name.pattern);
  });

  it('unknown routes are 404 (after auth)', async () => {
    assert.equal((await t.call('GET', '/v1/nothing')).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/nothing', undefined, null)).statusCode, 401);
  });

  it('simulator faults: admin injects, validated, listed', async () => {
    const ok = await t.call('POST', '/v1/sim/faults', { kind: 'fail-stage', stage: 2, hostId: 'h1' });
    assert.equal(ok.statusCode, 201, ok.body);
    assert.equal(ok.json().kind, 'fail-stage');
    for (const [body, field] of [
      [{ kind: 'fail-stage', hostId: 'h1' }, 'stage'],
      [{ kind: 'fail-stage', hostId: 'h1', stage: 4 }, 'stage'],
      [{ kind: 'fail-step', step: 'rm -rf' }, 'step'],
      [{ kind: 'dirty-rate', vmId: 'vm-a' }, 'value'],
      [{ kind: 'link-cut' }, 'hostId'],
      [{ kind: 'meteor' }, 'kind'],
      [{ kind: 'link-cut', hostId: 'h1', count: 0 }, 'count'],
    ] as const) {
      const res = await t.call('POST', '/v1/sim/faults', body);
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.ok(res.json().fields.some((f: { field: string }) => f.field === field), `${JSON.stringify(body)} -> ${res.body}`);
    }
    const list = (await t.call('GET', '/v1/sim/faults', undefined, VIEWER)).json();
    assert.equal(list.items.length, 1);
  });
});

describe('a registry that already holds ferry metrics', () => {
  it('is reused (the all-in-one process registers createMetrics itself)', async () => {
    const registry = new Registry();
    createMetrics(registry, { defaultMetrics: true });
    const t = await startTestApi({ deps: { registry } });
    try {
      await addOperation(t.db, { id: 'm1', workflowId: 'migrate-vm-a', kind: 'migration', subkind: 'live', state: 'completed', endedAt: new Date() });
      const { samples, types } = parseProm((await t.call('GET', '/metrics', undefined, null)).body);
      assert.equal(value(samples, 'ferry_migrations_total', { kind: 'live', result: 'completed' }), 1);
      assert.ok([...types.keys()].some((k) => k.startsWith('ferry_process_')), 'default metrics still there');
    } finally {
      await t.close();
    }
  });
});

describe('without a simulator', () => {
  it('has no /v1/sim/faults', async () => {
    const t = await startTestApi();
    try {
      assert.equal((await t.call('POST', '/v1/sim/faults', { kind: 'link-cut', hostId: 'h1' })).statusCode, 404);
      assert.equal((await t.call('GET', '/v1/sim/faults')).statusCode, 404);
    } finally {
      await t.close();
    }
  });
});

describe('a real listening server', () => {
  it('answers /healthz and /metrics over HTTP on port 0, with a generated admin token', async () => {
    const { db, dir } = await createApiTestDb();
    const lines: string[] = [];
    const server = await startApiServer({
      db,
      temporal: new FakeTemporal().asClient(),
      config: testConfig(dir, { apiToken: undefined }),
      registry: new Registry(),
      env: {},
      log: (l) => lines.push(l),
    });
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const health = await fetch(`${server.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      const metrics = await fetch(`${server.url}/metrics`);
      assert.equal(metrics.status, 200);
      const { types } = parseProm(await metrics.text());
      assert.ok(types.has('ferry_migrations_total'));
      const token = readFileSync(join(dir, 'api-token'), 'utf8').trim();
      assert.ok(lines.some((l) => l.includes('generated the admin token') && l.includes(token)));
      assert.equal((await fetch(`${server.url}/v1/vms`)).status, 401);
      const vms = await fetch(`${server.url}/v1/vms`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(vms.status, 200);
      assert.deepEqual(await vms.json(), { items: [], nextCursor: null });
    } finally {
      await server.close();
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
