// kind auto and kind storage through the API (app.inject, fake Temporal): auto picks live with
// shared storage, live with a disk copy, or cold when allowed, in the four set-ups, and
// says which and why in the 202 answer and in the workflow's input (the Operation record takes it
// from there); storage needs a reachable targetDatastoreId with room.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Datastore } from '../../db/entities.js';
import { addVm, seedInventory, startTestApi, type TestApi } from '../helpers/api.js';

describe('POST /v1/vms/:id/migrations kind auto and storage', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    const em = t.db.em();
    em.create(Datastore, { id: 'local-h1', name: 'local-h1', shared: false, capacityGiB: 100, throughputMiBps: 500, hostIds: ['h1'] });
    em.create(Datastore, { id: 'local-h2', name: 'local-h2', shared: false, capacityGiB: 100, throughputMiBps: 500, hostIds: ['h2'] });
    em.create(Datastore, { id: 'tiny-h1', name: 'tiny-h1', shared: false, capacityGiB: 1, throughputMiBps: 500, hostIds: ['h1'] });
    await em.flush();
    await addVm(t.db, { id: 'vm-shared', name: 'shared' });
    await addVm(t.db, { id: 'vm-local', name: 'local', datastoreId: 'local-h1' });
    await addVm(t.db, { id: 'vm-off', name: 'off', state: 'stopped' });
    await addVm(t.db, { id: 'vm-odd', name: 'odd', cpuFeatures: ['avx2', 'avx512f'] });
  });
  after(() => t.close());
  beforeEach(() => {
    for (const s of t.temporal.starts) t.temporal.finish(s.workflowId);
    t.temporal.starts.length = 0;
  });

  const post = (vm: string, body: Record<string, unknown>) => t.call('POST', `/v1/vms/${vm}/migrations`, body);

  it('running + shared storage: live, reason names the shared datastore', async () => {
    const res = await post('vm-shared', { kind: 'auto' });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().kind, 'live');
    assert.equal(res.json().auto.chose, 'live');
    assert.match(res.json().auto.reason, /shared storage \(shared\)/);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'liveMigrate');
    assert.equal(s.workflowId, 'migrate-vm-shared');
    assert.deepEqual((s.args[0] as { auto: unknown }).auto, res.json().auto);
    assert.equal((s.args[0] as { targetHostId: string }).targetHostId, 'h2');
  });

  it('running + local disks only: live with disk copy', async () => {
    const res = await post('vm-local', { kind: 'auto', targetHostId: 'h2' });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().kind, 'live');
    assert.match(res.json().auto.reason, /with disk copy/);
    assert.equal(t.temporal.starts[0]!.workflowType, 'liveMigrate');
  });

  it('stopped: cold with allowCold, else 422 naming why', async () => {
    const no = await post('vm-off', { kind: 'auto' });
    assert.equal(no.statusCode, 422, no.body);
    assert.match(no.json().message, /stopped.*allowCold is not set/);
    assert.equal(t.temporal.starts.length, 0);
    const res = await post('vm-off', { kind: 'auto', allowCold: true, policy: 'default' });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().kind, 'cold');
    assert.equal(res.json().auto.chose, 'cold');
    assert.match(res.json().auto.reason, /is stopped/);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'coldMigrate');
    assert.deepEqual((s.args[0] as { auto: unknown }).auto, res.json().auto);
    assert.equal(s.searchAttributes.OperationSummary, 'cold-migrate off (vm-off) h1 → (planner picks) (auto)', 'the Web UI line, as for every start');
  });

  it('CPU-incompatible with every host: cold when allowed, else 422 listing the hosts', async () => {
    const no = await post('vm-odd', { kind: 'auto' });
    assert.equal(no.statusCode, 422, no.body);
    assert.match(no.json().message, /h2: CPU-incompatible \(lacks avx512f\)/);
    const res = await post('vm-odd', { kind: 'auto', allowCold: true });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().kind, 'cold');
    assert.match(res.json().auto.reason, /no host can take vm vm-odd live/);
    assert.equal(t.temporal.starts[0]!.workflowType, 'coldMigrate');
  });

  it('allowCold outside auto is a 400 naming it', async () => {
    const res = await post('vm-shared', { kind: 'live', allowCold: true });
    assert.equal(res.statusCode, 400, res.body);
    assert.ok(res.json().fields.some((f: { field: string }) => f.field === 'allowCold'));
  });

  it('storage: starts storageMigrate under migrate-<vmId> on the same host', async () => {
    const res = await post('vm-shared', { kind: 'storage', targetDatastoreId: 'local-h1', maxBandwidthMiBps: 100 });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().kind, 'storage');
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'storageMigrate');
    assert.equal(s.workflowId, 'migrate-vm-shared');
    assert.deepEqual(s.args, [{ vmId: 'vm-shared', principal: 'bootstrap-admin', targetDatastoreId: 'local-h1', maxBandwidthBytesPerSec: 100 * 1024 * 1024 }]);
    assert.deepEqual(s.searchAttributes, { VmId: 'vm-shared', SourceHost: 'h1', TargetHost: 'h1', MigrationKind: 'storage', OperationSummary: 'storage-migrate shared (vm-shared) on h1 → datastore local-h1' });
  });

  const refusals: Array<[string, Record<string, unknown>, number, string, RegExp]> = [
    ['missing targetDatastoreId', { kind: 'storage' }, 422, 'targetDatastoreId', /needs targetDatastoreId/],
    ['unknown datastore', { kind: 'storage', targetDatastoreId: 'nope' }, 422, 'targetDatastoreId', /does not exist/],
    ['unreachable from the host', { kind: 'storage', targetDatastoreId: 'local-h2' }, 422, 'targetDatastoreId', /not reachable from host h1/],
    ['no space', { kind: 'storage', targetDatastoreId: 'tiny-h1' }, 422, 'targetDatastoreId', /1 GiB free.*needs 4 GiB/],
    ['already there', { kind: 'storage', targetDatastoreId: 'shared' }, 422, 'targetDatastoreId', /already on datastore shared/],
    ['another host', { kind: 'storage', targetDatastoreId: 'local-h1', targetHostId: 'h2' }, 422, 'targetHostId', /keeps vm/],
    ['a live-only knob', { kind: 'storage', targetDatastoreId: 'local-h1', policy: 'default' }, 400, 'policy', /does not apply/],
  ];
  for (const [what, body, status, field, msg] of refusals) {
    it(`storage ${status} naming ${field}: ${what}`, async () => {
      const res = await post('vm-shared', body);
      assert.equal(res.statusCode, status, res.body);
      assert.ok(res.json().fields.some((f: { field: string }) => f.field === field), res.body);
      assert.match(res.json().message, msg);
      assert.equal(t.temporal.starts.length, 0);
    });
  }
});
