// Reconcile on the real dev server with the simulator: the hypervisor is changed behind ferry's
// back (a VM destroyed, one stopped, one defined and started that ferry never made) and Reconcile
// records exactly that as drift (missing-vm, wrong-state, unknown-vm) without changing anything on
// a hypervisor; a second run adds no rows; drift that goes away is resolved 'gone' and reopened
// when it comes back; an operator's adopt / forget / fix-state through the real API (over the
// real Temporal client) fix inventory; a host whose agent does not answer is reported as such and
// its VMs are never called missing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { Allocation, Drift, Host, IpAllocation, Operation, Vm } from '../../db/entities.js';
import type { ReconcileResult } from '../../domain/drift.js';
import { buildApp } from '../../api/app.js';
import { fleetIds } from '../../workflows/definitions.js';
import { outcome, startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';
import { ADMIN, testConfig, VIEWER } from '../helpers/api.js';

const GiB = 1024 ** 3;

describe('reconcile', () => {
  let f: TestFerry;
  let app: FastifyInstance;
  let runs = 0;
  const vm = { gone: 'vm-rc-gone', stopped: 'vm-rc-stopped', flappy: 'vm-rc-flappy', rogue: 'rc-rogue' };

  before(async () => {
    f = await startTestFerry();
    app = await buildApp({
      db: f.db,
      temporal: f.client,
      config: testConfig(f.dir),
      registry: new Registry(),
      taskQueuePrefix: f.prefix,
      env: { FERRY_API_VIEWER_TOKEN: VIEWER },
    });
    await app.ready();
    for (const [name, vmId] of [['rc-gone', vm.gone], ['rc-stopped', vm.stopped], ['rc-flappy', vm.flappy]] as const) {
      await f.provisionRunning({ name, vmId, hostId: 'h1' });
    }
  });
  after(async () => {
    await app?.close();
    await f?.close();
    await stopOwnTemporal();
  });

  /** Reconcile under a per-test workflow id (the shared dev server runs many tests). */
  async function reconcileNow(input: { agentTimeoutMs?: number } = {}): Promise<ReconcileResult> {
    const h = await f.client.workflow.start('reconcile', { taskQueue: f.taskQueue, workflowId: `${fleetIds.reconcile('default')}-${f.prefix}${++runs}`, args: [input] });
    const r = await outcome<ReconcileResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    return r.value;
  }

  /** What every hypervisor runs, as `host:vm:state`. */
  const hypervisors = () =>
    f.sim
      .snapshot()
      .vms.map((v) => `${v.hostId}:${v.vmId}:${v.state}`)
      .sort();

  const api = (method: 'GET' | 'POST', url: string, body?: unknown, token = ADMIN) =>
    app.inject({ method, url, ...(body !== undefined ? { payload: body as object } : {}), headers: { authorization: `Bearer ${token}` } });

  test('records a VM removed, one stopped and one added behind ferry\'s back, and changes no hypervisor', async () => {
    await f.sim.forHost('h1').destroyVm(vm.gone);
    await f.sim.forHost('h1').stopVm(vm.stopped, { timeoutMs: 1000, force: true });
    await f.sim.forHost('h2').defineVm({ vmId: vm.rogue, name: vm.rogue, cpus: 2, memoryBytes: 1 * GiB, disks: [], cpuFeatures: [] });
    await f.sim.forHost('h2').startVm(vm.rogue);
    const before = hypervisors();

    const r = await reconcileNow();
    assert.deepEqual(hypervisors(), before, 'reconcile changes nothing on a hypervisor');
    assert.deepEqual(r.hostsAsked, ['h1', 'h2', 'h3']);
    assert.deepEqual(r.hostsUnanswered, []);
    assert.deepEqual(r.counts, { 'unknown-vm': 1, 'missing-vm': 1, 'wrong-state': 1, 'wrong-host': 0, 'stuck-paused': 0 });
    const ids = [`missing-vm-${vm.gone}`, `unknown-vm-${vm.rogue}`, `wrong-state-${vm.stopped}`];
    assert.deepEqual(r.openDriftIds, ids);
    assert.deepEqual(r.newDriftIds, ids);
    assert.deepEqual(r.utilization.map((u) => u.hostId), ['h1', 'h2', 'h3']);

    const rows = await f.db.em().find(Drift, {}, { orderBy: { id: 'asc' } });
    assert.deepEqual(rows.map((d) => `${d.id}:${d.state}:${d.hostId}`), [`missing-vm-${vm.gone}:open:h1`, `unknown-vm-${vm.rogue}:open:h2`, `wrong-state-${vm.stopped}:open:h1`]);
    const unknown = rows.find((d) => d.kind === 'unknown-vm')!;
    assert.equal(unknown.observed.cpus, 2);
    assert.equal(unknown.observed.memoryBytes, 1 * GiB);
    const wrong = rows.find((d) => d.kind === 'wrong-state')!;
    assert.deepEqual([wrong.expected.state, wrong.observed.state], ['running', 'stopped']);
    const op = await f.db.em().findOneOrFail(Operation, { id: r.operationId });
    assert.equal(op.kind, 'reconcile');
    assert.equal(op.state, 'completed');
    assert.ok(Array.isArray((op.details.result as ReconcileResult).utilization), 'utilization recorded on the operation');
    // inventory untouched
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: vm.gone })).state, 'running');
  });

  test('a second reconcile adds no rows; it only moves lastSeenAt', async () => {
    const first = await f.db.em().find(Drift, {}, { orderBy: { id: 'asc' } });
    const r = await reconcileNow();
    const again = await f.db.em().find(Drift, {}, { orderBy: { id: 'asc' } });
    assert.deepEqual(r.newDriftIds, []);
    assert.deepEqual(again.map((d) => d.id), first.map((d) => d.id));
    for (const [i, d] of again.entries()) {
      assert.equal(d.detectedAt.getTime(), first[i]!.detectedAt.getTime());
      assert.equal(d.operationId, first[i]!.operationId, 'the first finder stays recorded');
      assert.ok(d.lastSeenAt.getTime() >= first[i]!.lastSeenAt.getTime());
    }
  });

  test('drift that goes away is resolved gone; when it comes back it is reopened', async () => {
    await f.sim.forHost('h1').stopVm(vm.flappy, { timeoutMs: 1000, force: true });
    assert.ok((await reconcileNow()).newDriftIds.includes(`wrong-state-${vm.flappy}`));
    await f.sim.forHost('h1').startVm(vm.flappy);
    const r = await reconcileNow();
    assert.deepEqual(r.goneDriftIds, [`wrong-state-${vm.flappy}`]);
    const gone = await f.db.em().findOneOrFail(Drift, { id: `wrong-state-${vm.flappy}` });
    assert.deepEqual([gone.state, gone.resolution, gone.resolvedBy], ['resolved', 'gone', 'reconcile']);
    await f.sim.forHost('h1').stopVm(vm.flappy, { timeoutMs: 1000, force: true });
    assert.deepEqual((await reconcileNow()).reopenedDriftIds, [`wrong-state-${vm.flappy}`]);
    const back = await f.db.em().findOneOrFail(Drift, { id: `wrong-state-${vm.flappy}` });
    assert.deepEqual([back.state, back.resolution, back.resolvedAt], ['open', null, null]);
  });

  test('adopt brings the unknown VM into inventory with its capacity; viewers cannot resolve', async () => {
    const id = `unknown-vm-${vm.rogue}`;
    assert.equal((await api('POST', `/v1/drift/${id}/resolve`, { action: 'adopt' }, VIEWER)).statusCode, 403);
    const wrong = await api('POST', `/v1/drift/${id}/resolve`, { action: 'forget' });
    assert.equal(wrong.statusCode, 409, wrong.body);
    const hostBefore = (await api('GET', '/v1/hosts/h2')).json();

    const res = await api('POST', `/v1/drift/${id}/resolve`, { action: 'adopt' });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().drift.resolution, 'adopt');
    assert.equal(res.json().drift.resolvedBy, 'bootstrap-admin');
    const got = (await api('GET', `/v1/vms/${vm.rogue}`)).json();
    assert.deepEqual([got.name, got.state, got.hostId, got.cpus, got.memoryMiB], [vm.rogue, 'running', 'h2', 2, 1024]);
    const hostAfter = (await api('GET', '/v1/hosts/h2')).json();
    assert.equal(hostAfter.usage.cpus, hostBefore.usage.cpus + 2);
    assert.equal(hostAfter.usage.memoryMiB, hostBefore.usage.memoryMiB + 1024);
    const op = await f.db.em().findOneOrFail(Operation, { id: res.json().operationId });
    assert.deepEqual([op.kind, op.subkind, op.state, op.details.principal], ['drift', 'adopt', 'completed', 'bootstrap-admin']);
    assert.equal((await api('POST', `/v1/drift/${id}/resolve`, { action: 'adopt' })).statusCode, 409, 'already resolved');
  });

  test('forget marks the missing VM lost and frees its capacity and address; fix-state takes the observed state', async () => {
    const forget = await api('POST', `/v1/drift/missing-vm-${vm.gone}/resolve`, { action: 'forget' });
    assert.equal(forget.statusCode, 200, forget.body);
    const lost = await f.db.em().findOneOrFail(Vm, { id: vm.gone });
    assert.deepEqual([lost.state, lost.error, lost.hostId], ['deleted', 'lost: missing on host h1', null]);
    assert.equal(await f.db.em().count(Allocation, { vmId: vm.gone }), 0);
    assert.equal(await f.db.em().count(IpAllocation, { vmId: vm.gone }), 0);

    for (const vmId of [vm.stopped, vm.flappy]) {
      const fix = await api('POST', `/v1/drift/wrong-state-${vmId}/resolve`, { action: 'fix-state' });
      assert.equal(fix.statusCode, 200, fix.body);
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).state, 'stopped');
    }
    const before = hypervisors();
    const r = await reconcileNow();
    assert.deepEqual(r.openDriftIds, [], 'inventory and hypervisors agree after the resolutions');
    assert.deepEqual(hypervisors(), before);
  });

  test('POST /v1/reconcile starts the workflow (202) under the business key', async () => {
    const res = await api('POST', '/v1/reconcile', {});
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().workflowId, `${f.prefix}${fleetIds.reconcile('default')}`);
    const r = await outcome<ReconcileResult>(f.client.workflow.getHandle(res.json().workflowId));
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.state, 'completed');
  });

  test('a host whose agent does not answer is named, and its VMs are not reported missing', async () => {
    const em = f.db.em();
    em.create(Host, { id: 'h9', name: 'h9', cpuModel: 'sim-cpu', cpuFeatures: [], cpus: 8, memoryMiB: 8192, tags: [] });
    em.create(Vm, { id: 'vm-on-h9', name: 'on-h9', state: 'running', hostId: 'h9', cpus: 1, memoryMiB: 512, diskGiB: 1, diskPaths: [], cpuFeatures: [], tags: [] });
    await em.flush();
    try {
      const r = await reconcileNow({ agentTimeoutMs: 1500 });
      assert.deepEqual(r.hostsAnswered, ['h1', 'h2', 'h3']);
      assert.equal(r.hostsUnanswered.length, 1);
      assert.equal(r.hostsUnanswered[0]!.hostId, 'h9');
      assert.match(r.hostsUnanswered[0]!.message, /^host h9 did not answer/);
      assert.equal(await f.db.em().count(Drift, { vmId: 'vm-on-h9' }), 0);
      assert.equal(r.counts['missing-vm'], 0);
    } finally {
      await f.db.em().nativeUpdate(Host, { id: 'h9' }, { state: 'down' });
    }
  });
});
