// Inventory routes against a real SQLite database: hosts (capacity + usage, maintenance),
// datastores, templates CRUD, networks with pools, operations.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, IpAllocation } from '../../db/entities.js';
import { addOperation, addVm, OPERATOR, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

describe('inventory routes', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    await addVm(t.db, { id: 'vm-a', name: 'a', templateId: 'tpl-small' });
    const em = t.db.em();
    em.create(Allocation, { id: 'al-1', hostId: 'h1', vmId: 'vm-a', kind: 'vm', cpus: 2, memoryMiB: 1024, diskGiB: 4, datastoreId: 'shared' });
    em.create(IpAllocation, { id: 'ip-1', networkId: 'net1', address: '10.0.0.10', vmId: 'vm-a' });
    await em.flush();
  });
  after(() => t.close());

  it('hosts: list with a cursor, one with capacity and usage, 404', async () => {
    const first = (await t.call('GET', '/v1/hosts?limit=2', undefined, VIEWER)).json();
    assert.deepEqual(first.items.map((h: { id: string }) => h.id), ['h1', 'h2']);
    const second = (await t.call('GET', `/v1/hosts?limit=2&cursor=${first.nextCursor}`)).json();
    assert.deepEqual(second.items.map((h: { id: string }) => h.id), ['h3']);
    assert.equal(second.nextCursor, null);
    const h1 = (await t.call('GET', '/v1/hosts/h1')).json();
    assert.deepEqual(h1.capacity, { cpus: 16, memoryMiB: 16384, cpuOvercommit: 4, memoryOvercommit: 1 });
    assert.deepEqual(h1.allocatable, { cpus: 64, memoryMiB: 16384 });
    assert.deepEqual(h1.usage, { cpus: 2, memoryMiB: 1024, diskGiB: 4, vms: 1, reservations: 0 });
    assert.deepEqual(h1.free, { cpus: 62, memoryMiB: 15360 });
    assert.equal((await t.call('GET', '/v1/hosts/h9')).statusCode, 404);
    assert.deepEqual((await t.call('GET', '/v1/hosts?maintenance=true')).json().items.map((h: { id: string }) => h.id), ['h3']);
  });

  it('hosts: register (admin) validates, maintenance toggles', async () => {
    const bad = await t.call('POST', '/v1/hosts', { id: 'Bad_Id', cpuModel: 'x', cpus: 4, memoryMiB: 4096 });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().fields[0].field, 'id');
    const noCpus = await t.call('POST', '/v1/hosts', { id: 'h5', cpuModel: 'x', memoryMiB: 4096 });
    assert.equal(noCpus.json().fields[0].field, 'cpus');
    const ok = await t.call('POST', '/v1/hosts', { id: 'h5', cpuModel: 'x', cpuFeatures: ['avx2'], cpus: 8, memoryMiB: 8192, memoryOvercommit: 1.5 });
    assert.equal(ok.statusCode, 201, ok.body);
    assert.equal(ok.json().allocatable.memoryMiB, 12288);
    assert.equal(ok.json().maxOutgoingMigrations, 2, 'config default');
    const on = await t.call('POST', '/v1/hosts/h5/maintenance', { enabled: true });
    assert.equal(on.statusCode, 200);
    assert.equal(on.json().maintenance, true);
    assert.equal((await t.call('GET', '/v1/hosts/h5')).json().maintenance, true);
    assert.equal((await t.call('POST', '/v1/hosts/h5/maintenance', { enabled: false })).json().maintenance, false);
    const badBody = await t.call('POST', '/v1/hosts/h5/maintenance', { enabled: 'yes' });
    assert.equal(badBody.statusCode, 400);
    assert.equal(badBody.json().fields[0].field, 'enabled');
    assert.equal((await t.call('POST', '/v1/hosts/h77/maintenance', { enabled: true })).statusCode, 404);
  });

  it('datastores with usage', async () => {
    const list = (await t.call('GET', '/v1/datastores')).json();
    assert.equal(list.items.length, 1);
    assert.deepEqual({ id: list.items[0].id, usedGiB: list.items[0].usedGiB, freeGiB: list.items[0].freeGiB }, { id: 'shared', usedGiB: 4, freeGiB: 996 });
    assert.equal((await t.call('GET', '/v1/datastores/nope')).statusCode, 404);
  });

  it('templates: create, get by id or name, patch, filter, delete (409 while used)', async () => {
    const body = { name: 'web-base', os: 'debian-12', imagePath: '/images/web.qcow2', datastoreIds: ['shared'], diskGiB: 8, owner: 'alice', department: 'web', tags: ['web'] };
    const created = await t.call('POST', '/v1/templates', body, OPERATOR);
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json().id;
    assert.match(id, /^tpl-/);
    assert.equal((await t.call('GET', '/v1/templates/web-base')).json().id, id);
    assert.equal((await t.call('POST', '/v1/templates', body)).statusCode, 409, 'name in use');
    const unknownDs = await t.call('POST', '/v1/templates', { ...body, name: 'other', datastoreIds: ['nope'] });
    assert.equal(unknownDs.statusCode, 422);
    assert.equal(unknownDs.json().fields[0].field, 'datastoreIds');
    const relPath = await t.call('POST', '/v1/templates', { ...body, name: 'other', imagePath: 'images/x.qcow2' });
    assert.equal(relPath.json().fields[0].field, 'imagePath');

    const patched = await t.call('PATCH', `/v1/templates/${id}`, { owner: 'bob', tags: ['web', 'gold'] });
    assert.equal(patched.statusCode, 200, patched.body);
    assert.equal(patched.json().owner, 'bob');
    assert.equal((await t.call('PATCH', `/v1/templates/${id}`, {})).statusCode, 400);
    assert.equal((await t.call('PATCH', `/v1/templates/${id}`, { name: 'rename' })).json().fields[0].field, 'name');

    assert.deepEqual((await t.call('GET', '/v1/templates?owner=bob')).json().items.map((x: { id: string }) => x.id), [id]);
    assert.deepEqual((await t.call('GET', '/v1/templates?tag=gold')).json().items.map((x: { id: string }) => x.id), [id]);
    assert.equal((await t.call('GET', '/v1/templates')).json().items.length, 2);

    const inUse = await t.call('DELETE', '/v1/templates/small');
    assert.equal(inUse.statusCode, 409);
    assert.deepEqual(inUse.json().vmIds, ['vm-a']);
    assert.equal((await t.call('DELETE', `/v1/templates/${id}`)).statusCode, 204);
    assert.equal((await t.call('GET', `/v1/templates/${id}`)).statusCode, 404);
    assert.equal((await t.call('DELETE', `/v1/templates/${id}`)).statusCode, 404);
  });

  it('networks: create with pools, list, one with pool usage; bad input names the field', async () => {
    const body = { name: 'net2', cidr: '10.1.0.0/24', gateway: '10.1.0.1', dns: ['10.1.0.2'], vlan: 20, hostIds: ['h1', 'h2'], pools: [{ start: '10.1.0.10', end: '10.1.0.19' }] };
    const created = await t.call('POST', '/v1/networks', body, OPERATOR);
    assert.equal(created.statusCode, 201, created.body);
    assert.deepEqual(created.json().usage, { total: 10, used: 0, free: 10 });
    const net1 = (await t.call('GET', '/v1/networks/net1')).json();
    assert.deepEqual(net1.usage, { total: 200, used: 1, free: 199 });
    assert.equal(net1.pools[0].used, 1);
    assert.equal((await t.call('GET', '/v1/networks')).json().items.length, 2);
    assert.equal((await t.call('POST', '/v1/networks', body)).statusCode, 409);

    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ ...body, name: 'n3', cidr: '10.1.0.0/33' }, 400, 'cidr'],
      [{ ...body, name: 'n3', gateway: '10.9.0.1' }, 400, 'gateway'],
      [{ ...body, name: 'n3', pools: [{ start: '10.1.0.50', end: '10.1.0.40' }] }, 400, 'pools.0.end'],
      [{ ...body, name: 'n3', pools: [{ start: '10.2.0.1', end: '10.2.0.9' }] }, 400, 'pools.0.start'],
      [{ ...body, name: 'n3', pools: [{ start: '10.1.0.10', end: '10.1.0.20' }, { start: '10.1.0.15', end: '10.1.0.30' }] }, 400, 'pools.1'],
      [{ ...body, name: 'n3', vlan: 5000 }, 400, 'vlan'],
      [{ ...body, name: 'n3', hostIds: ['h1', 'nope'] }, 422, 'hostIds'],
    ];
    for (const [b, status, field] of cases) {
      const res = await t.call('POST', '/v1/networks', b);
      assert.equal(res.statusCode, status, `${field}: ${res.body}`);
      assert.equal(res.json().fields[0].field, field, res.body);
    }
    assert.equal((await t.call('GET', '/v1/networks?limit=10')).json().items.length, 2, 'no half-created network');
  });

  it('operations: by id, run id or workflow id, with a Web UI link; 404', async () => {
    await addOperation(t.db, { id: 'provision-a', runId: 'run-p', workflowId: 'provision-a', kind: 'provision', vmId: 'vm-a', state: 'completed' });
    const byRun = await t.call('GET', '/v1/operations/run-p', undefined, VIEWER);
    assert.equal(byRun.statusCode, 200);
    assert.equal(byRun.json().id, 'provision-a');
    assert.equal(byRun.json().webUiUrl, 'http://ui.test:8233/namespaces/default/workflows/provision-a/run-p');
    assert.equal((await t.call('GET', '/v1/operations/provision-a')).json().state, 'completed');
    assert.equal((await t.call('GET', '/v1/operations/nope')).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/operations?kind=provision')).json().items.length, 1);
  });

  // found by test/api/fuzz.test.ts: each was a 500
  it('a NUL (U+0000) in a path id, a query value or a body string is a 400 naming the field', async () => {
    for (const [method, url, body, field] of [
      ['GET', '/v1/hosts/h1%00', undefined, 'id'],
      ['GET', '/v1/templates/a%00b', undefined, 'id'],
      ['GET', '/v1/templates?owner=a%00', undefined, 'owner'],
      ['POST', '/v1/hosts/h1%00/maintenance', { enabled: true }, 'id'],
      ['POST', '/v1/templates', { name: 'nul', os: 'linux\u0000', imagePath: '/i.qcow2', datastoreIds: ['shared'], diskGiB: 1 }, 'os'],
      ['POST', '/v1/networks', { name: 'n', cidr: '10.9.0.0/24', gateway: '10.9.0.1', hostIds: ['h1', 'h\u0000'] }, 'hostIds.1'],
    ] as const) {
      const res = await t.call(method, url, body);
      assert.equal(res.statusCode, 400, `${method} ${url}: ${res.body}`);
      assert.equal(res.json().fields[0].field, field, res.body);
      assert.match(res.json().message, /NUL/);
    }
  });

  it('a forged cursor is a 400 naming cursor, never reaching the query (a time on an id-ordered list, a NUL id, a date out of range)', async () => {
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    for (const url of [
      `/v1/hosts?cursor=${b64({ id: 'x', t: 'yesterday' })}`,
      `/v1/hosts?cursor=${b64({ id: 'x', t: '2020-01-01T00:00:00.000Z' })}`,
      `/v1/networks?cursor=${b64({ id: 'a\u0000' })}`,
      `/v1/operations?cursor=${b64({ id: 'x', t: '-271821-04-20T00:00:00.000Z' })}`,
      `/v1/operations?cursor=${b64({ id: 'x', t: '1' })}`,
    ]) {
      const res = await t.call('GET', url);
      assert.equal(res.statusCode, 400, `${url}: ${res.body}`);
      assert.equal(res.json().fields[0].field, 'cursor');
    }
    const first = (await t.call('GET', '/v1/hosts?limit=1')).json();
    assert.equal((await t.call('GET', `/v1/hosts?limit=1&cursor=${first.nextCursor}`)).statusCode, 200, 'a cursor the API handed out still works');
  });

  it('an empty key in a strict body is named as "" (not as a field called \'\')', async () => {
    const res = await t.call('POST', '/v1/hosts/h1/maintenance', { enabled: true, '': 1 });
    assert.equal(res.statusCode, 400);
    assert.deepEqual(res.json().fields, [{ field: '""', problem: 'is not a known field' }]);
  });
});
