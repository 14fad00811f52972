// GET /v1/vms/:id/console on the simulator through the real path: the API looks the VM's host up
// and runs VmConsole, whose activity runs on that host's agent. tail is checked (1..10000, a 400
// naming it otherwise); unknown VM 404; after a live migration the console comes from the target.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp } from '../../api/app.js';
import { Vm } from '../../db/entities.js';
import { outcome, startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';
import { ADMIN, testConfig } from '../helpers/api.js';

describe('vm console (simulator)', () => {
  let f: TestFerry;
  let app: FastifyInstance;
  const get = (url: string) => app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${ADMIN}` } });

  before(async () => {
    f = await startTestFerry();
    app = await buildApp({ db: f.db, temporal: f.client, config: testConfig(f.dir), registry: new Registry(), taskQueuePrefix: f.prefix });
    await app.ready();
    await f.provisionRunning({ name: 'con-1', vmId: 'vm-con-1', hostId: 'h1' });
  });
  after(async () => {
    await app?.close();
    await f?.close();
    await stopOwnTemporal();
  });

  test('the simulated console, from the host that runs the VM, before and after a live migration', async () => {
    const r = await get('/v1/vms/vm-con-1/console?tail=5');
    assert.equal(r.statusCode, 200, r.body);
    const body = r.json();
    assert.equal(body.vmId, 'vm-con-1');
    assert.equal(body.hostId, 'h1');
    assert.match(body.lines.join('\n'), /simulated/);
    assert.match(body.lines.at(-1), /vm-con-1 running on h1/);
    // by name too, and tail=1 returns exactly the last line
    const one = (await get('/v1/vms/con-1/console?tail=1')).json();
    assert.deepEqual(one.lines, [body.lines.at(-1)]);
    assert.equal(one.truncated, true);

    const m = await outcome(await f.migrate({ vmId: 'vm-con-1', targetHostId: 'h2' }));
    assert.ok(m.ok, m.ok ? '' : m.message);
    const moved = (await get('/v1/vms/vm-con-1/console')).json();
    assert.equal(moved.hostId, 'h2');
    assert.match(moved.lines.at(-1), /vm-con-1 running on h2/);
  });

  test('tail outside 1..10000 or not a number is a 400 naming tail; an unknown VM a 404; a VM on no host a 409', async () => {
    for (const tail of ['0', '10001', '-3', 'abc', '1.5']) {
      const r = await get(`/v1/vms/vm-con-1/console?tail=${tail}`);
      assert.equal(r.statusCode, 400, `tail=${tail}: ${r.body}`);
      assert.match(r.body, /tail/);
    }
    assert.equal((await get('/v1/vms/vm-con-1/console?tail=10000')).statusCode, 200);
    assert.equal((await get('/v1/vms/vm-nope/console')).statusCode, 404);
    const em = f.db.em();
    em.create(Vm, { id: 'vm-con-nohost', name: 'con-nohost', state: 'error', hostId: null, datastoreId: null, networkId: null, ip: null, mac: null, cpus: 1, memoryMiB: 64, diskGiB: 1, templateId: null, tags: [], error: 'test', diskPaths: [], cpuFeatures: [] } as never);
    await em.flush();
    const r = await get('/v1/vms/vm-con-nohost/console');
    assert.equal(r.statusCode, 409, r.body);
    assert.match(r.json().message, /on no host/);
  });
});
