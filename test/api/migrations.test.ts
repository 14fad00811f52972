// Migration routes against a real SQLite database and a fake Temporal client: what liveMigrate
// is started with, every refusal (4xx naming the field, nothing started), 409 for a second
// migration of a VM, the section-4 shape while running (progress query) and once finished
// (Operation record), and steering (cancel signal, switchover and setParams updates).
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { MigrationProgress } from '../../workflows/definitions.js';
import { addOperation, addVm, OPERATOR, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

const MiB = 1024 * 1024;

function liveProgress(over: Partial<MigrationProgress> = {}): MigrationProgress {
  return {
    migrationId: 'migrate-vm-a',
    vmId: 'vm-a',
    kind: 'live',
    state: 'running',
    stage: 'pre-copy',
    stageIndex: 2,
    sourceHostId: 'h1',
    targetHostId: 'h2',
    policy: 'default',
    awaitingApproval: false,
    progress: {
      round: 3,
      transferredBytes: 900 * MiB,
      remainingBytes: 100 * MiB,
      totalBytes: 1024 * MiB,
      dirtyRateBytesPerSec: 10 * MiB,
      transferRateBytesPerSec: 100 * MiB,
      expectedDowntimeMs: 40,
      percent: 90,
      verdict: 'converging',
      downtimeLimitMs: 50,
      throttlePct: 0,
    },
    decisions: [],
    stageTimingsMs: { 'pre-migration': 5 },
    compensations: [],
    ...over,
  };
}

/** The start's search attributes without OperationSummary (a one-line summary, asserted non-empty). */
function withoutSummary(sa: Record<string, unknown>): Record<string, unknown> {
  const { OperationSummary, ...rest } = sa;
  assert.ok(typeof OperationSummary === 'string' && OperationSummary.length > 0, 'every start carries its summary');
  return rest;
}

describe('POST /v1/vms/:id/migrations', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    await addVm(t.db, { id: 'vm-a', name: 'a' });
    await addVm(t.db, { id: 'vm-b', name: 'b' });
    await addVm(t.db, { id: 'vm-stopped', name: 'stopped', state: 'stopped' });
    await addVm(t.db, { id: 'vm-moving', name: 'moving', state: 'migrating' });
    await addVm(t.db, { id: 'vm-feat', name: 'feat', cpuFeatures: ['avx2', 'avx512f'] });
    await addOperation(t.db, { id: 'run-moving', runId: 'run-moving', workflowId: 'migrate-vm-moving', kind: 'migration', subkind: 'live', vmId: 'vm-moving', state: 'running' });
  });
  after(() => t.close());
  beforeEach(() => {
    t.temporal.starts.length = 0;
  });

  it('starts liveMigrate with LiveMigrateInput and search attributes; 202 shape', async () => {
    const res = await t.call(
      'POST',
      '/v1/vms/vm-a/migrations',
      { kind: 'live', targetHostId: 'h2', maxBandwidthMiBps: 100, maxDowntimeMs: 300, policy: 'minimal-downtime', approveSwitchover: false, onStall: 'abort' },
      OPERATOR,
    );
    assert.equal(res.statusCode, 202, res.body);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'liveMigrate');
    assert.equal(s.workflowId, 'migrate-vm-a');
    assert.equal(s.taskQueue, 'tapi-ferry-control');
    assert.deepEqual(s.args, [
      {
        vmId: 'vm-a',
        principal: 'env-operator',
        targetHostId: 'h2',
        policy: 'minimal-downtime',
        overrides: { onStall: 'abort', maxDowntimeMs: 300, maxBandwidthBytesPerSec: 100 * MiB, approveSwitchover: false },
      },
    ]);
    assert.deepEqual(withoutSummary(s.searchAttributes), { VmId: 'vm-a', SourceHost: 'h1', TargetHost: 'h2', MigrationKind: 'live' });
    const b = res.json();
    assert.equal(b.migrationId, 'migrate-vm-a');
    assert.equal(b.workflowId, 'migrate-vm-a');
    assert.equal(b.operationId, s.runId);
    assert.equal(b.webUiUrl, 'http://ui.test:8233/namespaces/default/workflows/migrate-vm-a');
  });

  it('409 with the running workflow for a second migration of the same VM', async () => {
    const res = await t.call('POST', '/v1/vms/vm-a/migrations', { kind: 'live' });
    assert.equal(res.statusCode, 409, res.body);
    assert.equal(res.json().workflowId, 'migrate-vm-a');
    assert.equal(t.temporal.starts.length, 0);
    const moving = await t.call('POST', '/v1/vms/vm-moving/migrations', { kind: 'live' });
    assert.equal(moving.statusCode, 409);
    assert.equal(moving.json().workflowId, 'migrate-vm-moving');
    assert.equal(moving.json().operationId, 'run-moving');
  });

  it('lets the placement choose when no target is given (no TargetHost attribute)', async () => {
    const res = await t.call('POST', '/v1/vms/b/migrations', { kind: 'live' });
    assert.equal(res.statusCode, 202, res.body);
    assert.deepEqual(t.temporal.starts[0]!.args, [{ vmId: 'vm-b', principal: 'bootstrap-admin' }]);
    assert.deepEqual(withoutSummary(t.temporal.starts[0]!.searchAttributes), { VmId: 'vm-b', SourceHost: 'h1', MigrationKind: 'live' });
    t.temporal.finish('migrate-vm-b');
  });

  const refusals: Array<[string, string, Record<string, unknown>, number, string]> = [
    ['cold with a live-only knob', 'vm-b', { kind: 'cold', maxDowntimeMs: 300 }, 400, 'maxDowntimeMs'],
    ['storage without targetDatastoreId', 'vm-b', { kind: 'storage' }, 422, 'targetDatastoreId'],
    ['unknown kind', 'vm-b', { kind: 'teleport' }, 400, 'kind'],
    ['missing kind', 'vm-b', {}, 400, 'kind'],
    ['unknown policy', 'vm-b', { kind: 'live', policy: 'yolo' }, 400, 'policy'],
    ['bad knob value', 'vm-b', { kind: 'live', throttleMaxPct: 150 }, 400, 'throttleMaxPct'],
    ['knob relation', 'vm-b', { kind: 'live', throttleInitialPct: 50, throttleMaxPct: 30 }, 400, 'throttleMaxPct'],
    ['negative bandwidth', 'vm-b', { kind: 'live', maxBandwidthMiBps: -1 }, 400, 'maxBandwidthMiBps'],
    ['unknown field', 'vm-b', { kind: 'live', target: 'h2' }, 400, 'target'],
    ['unknown target host', 'vm-b', { kind: 'live', targetHostId: 'h9' }, 422, 'targetHostId'],
    ['target is the source', 'vm-b', { kind: 'live', targetHostId: 'h1' }, 422, 'targetHostId'],
    ['target in maintenance', 'vm-b', { kind: 'live', targetHostId: 'h3' }, 422, 'targetHostId'],
    ['target lacks CPU features', 'vm-feat', { kind: 'live', targetHostId: 'h2' }, 422, 'targetHostId'],
    ['targetDatastoreId with live', 'vm-b', { kind: 'live', targetDatastoreId: 'shared' }, 422, 'targetDatastoreId'],
  ];
  for (const [what, vm, body, status, field] of refusals) {
    it(`${status} naming ${field}: ${what}; starts nothing`, async () => {
      const res = await t.call('POST', `/v1/vms/${vm}/migrations`, body);
      assert.equal(res.statusCode, status, res.body);
      assert.ok(res.json().fields.some((f: { field: string }) => f.field === field), res.body);
      assert.equal(t.temporal.starts.length, 0);
    });
  }

  it('names the missing CPU features', async () => {
    const res = await t.call('POST', '/v1/vms/vm-feat/migrations', { kind: 'live', targetHostId: 'h2' });
    assert.deepEqual(res.json().missingCpuFeatures, ['avx512f']);
    assert.match(res.json().message, /avx512f/);
  });

  it('409 naming the state when the VM is not running; 404 for an unknown VM', async () => {
    const res = await t.call('POST', '/v1/vms/vm-stopped/migrations', { kind: 'live' });
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().state, 'stopped');
    assert.match(res.json().message, /stopped/);
    assert.equal((await t.call('POST', '/v1/vms/vm-nope/migrations', { kind: 'live' })).statusCode, 404);
    assert.equal(t.temporal.starts.length, 0);
  });

  it('viewers may not migrate', async () => {
    assert.equal((await t.call('POST', '/v1/vms/vm-b/migrations', { kind: 'live' }, VIEWER)).statusCode, 403);
  });
});

describe('GET and steering /v1/migrations', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    await addVm(t.db, { id: 'vm-a', name: 'a' });
    await addVm(t.db, { id: 'vm-old', name: 'old' });
    const t0 = new Date('2026-01-01T00:00:00Z');
    await addOperation(t.db, {
      id: 'run-done',
      runId: 'run-done',
      workflowId: 'migrate-vm-old',
      kind: 'migration',
      subkind: 'live',
      vmId: 'vm-old',
      state: 'completed',
      stage: 'done',
      sourceHostId: 'h1',
      targetHostId: 'h2',
      startedAt: t0,
      endedAt: new Date(t0.getTime() + 4000),
      details: { downtimeMs: 42, durationMs: 4000, rounds: 5, transferredBytes: 2048, policy: 'default' },
    });
    await addOperation(t.db, {
      id: 'run-failed',
      runId: 'run-failed',
      workflowId: 'migrate-vm-old',
      kind: 'migration',
      subkind: 'live',
      vmId: 'vm-old',
      state: 'rolled-back',
      sourceHostId: 'h1',
      targetHostId: 'h2',
      startedAt: new Date(t0.getTime() - 60_000),
      endedAt: new Date(t0.getTime() - 50_000),
      error: 'destination crashed in stage 2',
      details: { rounds: 2, transferredBytes: 1024 },
    });
    // a running one: started through the API so the fake knows its run
    const res = await t.call('POST', '/v1/vms/vm-a/migrations', { kind: 'live', targetHostId: 'h2' });
    assert.equal(res.statusCode, 202);
    const runId = t.temporal.starts[0]!.runId;
    await addOperation(t.db, { id: runId, runId, workflowId: 'migrate-vm-a', kind: 'migration', subkind: 'live', vmId: 'vm-a', state: 'running', stage: 'pre-copy', sourceHostId: 'h1', targetHostId: 'h2', startedAt: new Date(t0.getTime() + 60_000) });
    t.temporal.progress.set('migrate-vm-a', liveProgress());
  });
  after(() => t.close());

  it('answers a running migration from the progress query merged with the record', async () => {
    const res = await t.call('GET', '/v1/migrations/migrate-vm-a', undefined, VIEWER);
    assert.equal(res.statusCode, 200, res.body);
    const m = res.json();
    assert.equal(m.workflowId, 'migrate-vm-a');
    assert.equal(m.vmId, 'vm-a');
    assert.equal(m.kind, 'live');
    assert.equal(m.state, 'running');
    assert.equal(m.stage, 'pre-copy');
    assert.equal(m.sourceHostId, 'h1');
    assert.equal(m.targetHostId, 'h2');
    assert.equal(m.progress.round, 3);
    assert.equal(m.progress.remainingBytes, 100 * MiB);
    assert.equal(m.progress.expectedDowntimeMs, 40);
    assert.equal(typeof m.durationMs, 'number');
    assert.equal(m.downtimeMs, null);
    assert.deepEqual(t.temporal.queries.at(-1), { workflowId: 'migrate-vm-a', name: 'progress' });
    // by operation id (= run id) too
    const byRun = await t.call('GET', `/v1/migrations/${m.id}`);
    assert.equal(byRun.json().progress.round, 3);
  });

  it('answers a finished migration from its Operation record', async () => {
    const q = t.temporal.queries.length;
    const m = (await t.call('GET', '/v1/migrations/run-done')).json();
    assert.deepEqual(
      { id: m.id, vmId: m.vmId, kind: m.kind, state: m.state, stage: m.stage, sourceHostId: m.sourceHostId, targetHostId: m.targetHostId, downtimeMs: m.downtimeMs, durationMs: m.durationMs },
      { id: 'run-done', vmId: 'vm-old', kind: 'live', state: 'completed', stage: 'done', sourceHostId: 'h1', targetHostId: 'h2', downtimeMs: 42, durationMs: 4000 },
    );
    assert.equal(m.progress.transferredBytes, 0, 'no live progress for a finished record');
    const failed = (await t.call('GET', '/v1/migrations/run-failed')).json();
    assert.equal(failed.state, 'rolled-back');
    assert.equal(failed.error, 'destination crashed in stage 2');
    assert.equal(failed.durationMs, 10_000);
    const latest = (await t.call('GET', '/v1/migrations/migrate-vm-old')).json();
    assert.equal(latest.id, 'run-done', 'a workflow id means its latest run');
    assert.equal(t.temporal.queries.length, q, 'finished migrations are not queried');
  });

  it('404 for an unknown migration', async () => {
    assert.equal((await t.call('GET', '/v1/migrations/nope')).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/migrations/migrate-vm-nope')).statusCode, 404);
  });

  it('lists migrations newest first with a cursor', async () => {
    const first = (await t.call('GET', '/v1/migrations?limit=2')).json();
    assert.equal(first.items.length, 2);
    assert.equal(first.items[0].workflowId, 'migrate-vm-a');
    assert.equal(first.items[1].id, 'run-done');
    assert.ok(first.nextCursor);
    const second = (await t.call('GET', `/v1/migrations?limit=2&cursor=${first.nextCursor}`)).json();
    assert.deepEqual(second.items.map((m: { id: string }) => m.id), ['run-failed']);
    assert.equal(second.nextCursor, null);
    const rolled = (await t.call('GET', '/v1/migrations?state=rolled-back')).json();
    assert.deepEqual(rolled.items.map((m: { id: string }) => m.id), ['run-failed']);
  });

  it('PATCH converts MiB/s to bytes/s and runs the setParams update', async () => {
    const res = await t.call('PATCH', '/v1/migrations/migrate-vm-a', { maxBandwidthMiBps: 50, maxDowntimeMs: 200 }, OPERATOR);
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(t.temporal.updates.at(-1), { workflowId: 'migrate-vm-a', runId: t.temporal.starts[0]!.runId, name: 'setParams', args: [{ maxBandwidthBytesPerSec: 50 * MiB, maxDowntimeMs: 200 }] });
    assert.equal(res.json().progress.round, 3);
    const empty = await t.call('PATCH', '/v1/migrations/migrate-vm-a', {});
    assert.equal(empty.statusCode, 400);
    assert.equal(empty.json().fields[0].field, 'maxBandwidthMiBps');
  });

  it('switchover runs the switchover update; a refusal is a 409 with the reason', async () => {
    const ok = await t.call('POST', '/v1/migrations/migrate-vm-a/switchover');
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(t.temporal.updates.at(-1)!.name, 'switchover');
    t.temporal.refuseUpdates = 'past commitment';
    const refused = await t.call('POST', '/v1/migrations/migrate-vm-a/switchover');
    t.temporal.refuseUpdates = undefined;
    assert.equal(refused.statusCode, 409);
    assert.match(refused.json().message, /past commitment/);
  });

  it('cancel sends the cancel signal', async () => {
    const res = await t.call('POST', '/v1/migrations/migrate-vm-a/cancel', { reason: 'change of plan' }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    assert.deepEqual(t.temporal.signals.at(-1), { workflowId: 'migrate-vm-a', runId: t.temporal.starts[0]!.runId, name: 'cancel', args: [{ reason: 'change of plan' }] });
    assert.equal(res.json().workflowId, 'migrate-vm-a');
  });

  it('409 when steering a migration that is not running', async () => {
    t.temporal.finish('migrate-vm-a');
    const n = t.temporal.updates.length + t.temporal.signals.length;
    for (const [method, url, body] of [
      ['POST', '/v1/migrations/migrate-vm-a/cancel', {}],
      ['POST', '/v1/migrations/migrate-vm-a/switchover', undefined],
      ['PATCH', '/v1/migrations/migrate-vm-a', { maxDowntimeMs: 100 }],
    ] as const) {
      const res = await t.call(method, url, body);
      assert.equal(res.statusCode, 409, `${method} ${url}: ${res.body}`);
    }
    assert.equal(t.temporal.updates.length + t.temporal.signals.length, n);
    assert.equal((await t.call('POST', '/v1/migrations/nope/cancel', {})).statusCode, 404);
  });

  it('viewers may read but not steer', async () => {
    assert.equal((await t.call('GET', '/v1/migrations', undefined, VIEWER)).statusCode, 200);
    assert.equal((await t.call('POST', '/v1/migrations/migrate-vm-a/cancel', {}, VIEWER)).statusCode, 403);
  });
});
