// POST /v1/vms and the VM lifecycle routes against a real SQLite database and a fake Temporal
// client: validation names the field, starts nothing and leaves no Vm row; 202 shapes; 409s.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { Vm } from '../../db/entities.js';
import { addOperation, addVm, OPERATOR, seedInventory, startTestApi, vmCount, VIEWER, type TestApi } from '../helpers/api.js';

const good = { name: 'web-1', cpus: 2, memoryMiB: 1024, diskGiB: 4, template: 'small' };

/** The start's search attributes without OperationSummary (a one-line summary, asserted non-empty). */
function withoutSummary(sa: Record<string, unknown>): Record<string, unknown> {
  const { OperationSummary, ...rest } = sa;
  assert.ok(typeof OperationSummary === 'string' && OperationSummary.length > 0, 'every start carries its summary');
  return rest;
}

describe('POST /v1/vms', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
  });
  after(() => t.close());
  beforeEach(() => {
    t.temporal.starts.length = 0;
  });

  it('starts provisionVm with a ProvisionInput and answers 202 with ids and a Web UI link', async () => {
    const res = await t.call('POST', '/v1/vms', {
      ...good,
      name: 'web-ok',
      sshKeys: ['ssh-ed25519 AAAAC3Nza test@x'],
      tags: ['web'],
      linkedClone: true,
      extraVolumesGiB: [1, 2],
      antiAffinityTag: 'web',
      userData: '#cloud-config\n',
    }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    const body = res.json();
    assert.match(body.vmId, /^vm-[0-9a-f]{12}$/);
    assert.equal(body.workflowId, 'provision-web-ok');
    assert.equal(t.temporal.starts.length, 1);
    const s = t.temporal.starts[0]!;
    assert.equal(body.operationId, s.runId);
    assert.equal(body.webUiUrl, 'http://ui.test:8233/namespaces/default/workflows/provision-web-ok');
    assert.equal(s.workflowType, 'provisionVm');
    assert.equal(s.taskQueue, 'tapi-ferry-control');
    assert.deepEqual(withoutSummary(s.searchAttributes), { VmId: body.vmId });
    assert.deepEqual(s.args, [
      {
        vmId: body.vmId,
        principal: 'env-operator',
        name: 'web-ok',
        cpus: 2,
        memoryMiB: 1024,
        diskGiB: 4,
        source: { kind: 'template', templateId: 'tpl-small', linked: true },
        networkId: 'net1',
        sshKeys: ['ssh-ed25519 AAAAC3Nza test@x'],
        userData: '#cloud-config\n',
        tags: ['web'],
        extraVolumesGiB: [1, 2],
        antiAffinityTag: 'web',
      },
    ]);
    const row = await t.db.em().findOneOrFail(Vm, { id: body.vmId });
    assert.equal(row.state, 'provisioning');
    assert.equal(row.name, 'web-ok');
    assert.equal(row.networkId, 'net1');

    const got = await t.call('GET', `/v1/vms/${body.vmId}`, undefined, VIEWER);
    assert.equal(got.statusCode, 200);
    assert.equal(got.json().state, 'provisioning');
    assert.equal((await t.call('GET', '/v1/vms/web-ok', undefined, VIEWER)).json().id, body.vmId, 'by name too');
  });

  it('maps each source kind onto ProvisionInput.source', async () => {
    await addVm(t.db, { id: 'vm-src', name: 'src', state: 'stopped' });
    const cases: Array<[Record<string, unknown>, unknown]> = [
      [{ cloneOf: 'src' }, { kind: 'clone', sourceVmId: 'vm-src' }],
      [{ import: { path: '/import/disk.vmdk', format: 'vmdk' } }, { kind: 'import', path: '/import/disk.vmdk', format: 'vmdk' }],
      [{ iso: '/iso/debian.iso' }, { kind: 'iso', isoPath: '/iso/debian.iso' }],
    ];
    for (const [i, [src, expected]] of cases.entries()) {
      const { template: _t, ...rest } = good;
      const res = await t.call('POST', '/v1/vms', { ...rest, name: `src-kind-${i}`, network: 'net1', hostId: 'h2', ...src });
      assert.equal(res.statusCode, 202, res.body);
      const input = t.temporal.starts.at(-1)!.args[0] as { source: unknown; hostId?: string };
      assert.deepEqual(input.source, expected);
      assert.equal(input.hostId, 'h2');
      assert.deepEqual(withoutSummary(t.temporal.starts.at(-1)!.searchAttributes), { VmId: res.json().vmId, HostId: 'h2' });
    }
  });

  const invalid: Array<[string, Record<string, unknown>, number, string]> = [
    ['bad name', { ...good, name: 'Web_1' }, 400, 'name'],
    ['name too long', { ...good, name: 'a'.repeat(64) }, 400, 'name'],
    ['name with trailing dash', { ...good, name: 'web-' }, 400, 'name'],
    ['cpus zero', { ...good, cpus: 0 }, 400, 'cpus'],
    ['cpus fractional', { ...good, cpus: 1.5 }, 400, 'cpus'],
    ['memory as string', { ...good, memoryMiB: '1024' }, 400, 'memoryMiB'],
    ['missing diskGiB', { name: 'x1', cpus: 1, memoryMiB: 512, template: 'small' }, 400, 'diskGiB'],
    ['no source', { name: 'x2', cpus: 1, memoryMiB: 512, diskGiB: 4 }, 400, 'template'],
    ['two sources', { ...good, iso: '/iso/a.iso' }, 400, 'iso'],
    ['linkedClone without template', { name: 'x3', cpus: 1, memoryMiB: 512, diskGiB: 4, iso: '/iso/a.iso', linkedClone: true }, 400, 'linkedClone'],
    ['import with a bad format', { name: 'x4', cpus: 1, memoryMiB: 512, diskGiB: 4, import: { path: '/a.ova', format: 'ova' } }, 400, 'import.format'],
    ['import with a relative path', { name: 'x5', cpus: 1, memoryMiB: 512, diskGiB: 4, import: { path: 'a.vmdk', format: 'vmdk' } }, 400, 'import.path'],
    ['iso with ..', { name: 'x6', cpus: 1, memoryMiB: 512, diskGiB: 4, iso: '/iso/../etc/shadow' }, 400, 'iso'],
    ['unknown field', { ...good, memoryMb: 5 }, 400, 'memoryMb'],
    ['bad ssh key', { ...good, sshKeys: ['not a key'] }, 400, 'sshKeys.0'],
    ['bad extra volume', { ...good, extraVolumesGiB: [0] }, 400, 'extraVolumesGiB.0'],
    ['unknown template', { ...good, template: 'nope' }, 422, 'template'],
    ['unknown cloneOf', { name: 'x7', cpus: 1, memoryMiB: 512, diskGiB: 4, cloneOf: 'nope' }, 422, 'cloneOf'],
    ['unknown network', { ...good, network: 'nope' }, 422, 'network'],
    ['unknown host', { ...good, hostId: 'h9' }, 422, 'hostId'],
    ['host in maintenance', { ...good, hostId: 'h3' }, 422, 'hostId'],
    ['more memory than any host', { ...good, memoryMiB: 16385 }, 422, 'memoryMiB'],
    ['more cpus than any host', { ...good, cpus: 65 }, 422, 'cpus'],
    ['disk smaller than the template', { ...good, diskGiB: 1 }, 422, 'diskGiB'],
    ['disk larger than any datastore', { ...good, diskGiB: 1001 }, 422, 'diskGiB'],
  ];
  for (const [what, body, status, field] of invalid) {
    it(`${status} naming ${field}: ${what}; starts nothing, leaves no Vm row`, async () => {
      const before = await vmCount(t.db);
      const res = await t.call('POST', '/v1/vms', body);
      assert.equal(res.statusCode, status, res.body);
      const err = res.json();
      assert.equal(err.error, 'validation');
      assert.ok(err.fields.some((f: { field: string }) => f.field === field), `fields name ${field}: ${res.body}`);
      assert.ok(err.message.length > 0);
      assert.equal(t.temporal.starts.length, 0);
      assert.equal(await vmCount(t.db), before);
    });
  }

  it('says no host can ever fit a VM larger than every host', async () => {
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'huge', memoryMiB: 1_000_000 });
    assert.equal(res.statusCode, 422);
    assert.match(res.json().message, /no host can ever fit 1000000 MiB/);
  });

  it('refuses malformed JSON with 400, not 500', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/vms', payload: '{"name": ', headers: { authorization: 'Bearer admin-token-0123456789abcdef', 'content-type': 'application/json' } });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().error, 'validation');
    assert.equal(t.temporal.starts.length, 0);
  });

  it('409 for a name already in use, without starting a workflow', async () => {
    await addVm(t.db, { id: 'vm-taken', name: 'taken' });
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'taken' });
    assert.equal(res.statusCode, 409, res.body);
    assert.equal(res.json().error, 'conflict');
    assert.equal(res.json().vmId, 'vm-taken');
    assert.equal(t.temporal.starts.length, 0);
    assert.equal(await vmCount(t.db, { name: 'taken' }), 1);
  });

  it('concurrent requests for one name: exactly one 202, the rest 409, one workflow', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, () => t.call('POST', '/v1/vms', { ...good, name: 'race' })));
    const codes = results.map((r) => r.statusCode).sort();
    assert.deepEqual(codes, [202, 409, 409, 409, 409, 409], results.map((r) => r.body).join('\n'));
    assert.equal(t.temporal.starts.length, 1);
    assert.equal(await vmCount(t.db, { name: 'race' }), 1);
  });

  it('409 when the provision workflow is already running; the new Vm row is removed', async () => {
    t.temporal.failNextStart = new WorkflowExecutionAlreadyStartedError('already started', 'provision-dup', 'provisionVm');
    await addOperation(t.db, { id: 'op-dup', workflowId: 'provision-dup', kind: 'provision' });
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'dup' });
    assert.equal(res.statusCode, 409, res.body);
    assert.equal(res.json().workflowId, 'provision-dup');
    assert.equal(res.json().operationId, 'op-dup');
    assert.equal(await vmCount(t.db, { name: 'dup' }), 0);
  });

  it('removes the Vm row when Temporal cannot be reached, and answers 500 without leaking details', async () => {
    t.temporal.failNextStart = new Error('14 UNAVAILABLE: connection refused');
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'unreachable' });
    assert.equal(res.statusCode, 500);
    assert.equal(res.json().error, 'internal');
    assert.equal(await vmCount(t.db, { name: 'unreachable' }), 0);
  });

  it('defaults the network to the first one', async () => {
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'default-net' });
    assert.equal(res.statusCode, 202);
    assert.equal((t.temporal.starts[0]!.args[0] as { networkId: string }).networkId, 'net1');
  });

  it('viewers may not provision (403)', async () => {
    const res = await t.call('POST', '/v1/vms', { ...good, name: 'as-viewer' }, VIEWER);
    assert.equal(res.statusCode, 403);
    assert.equal(t.temporal.starts.length, 0);
  });
});

describe('GET /v1/vms', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    for (let i = 0; i < 5; i++) await addVm(t.db, { id: `vm-l${i}`, name: `list-${i}`, hostId: i % 2 ? 'h2' : 'h1', state: i === 4 ? 'stopped' : 'running' });
    await addVm(t.db, { id: 'vm-gone', name: 'gone', state: 'deleted' });
  });
  after(() => t.close());

  it('pages with a cursor and filters by state and host', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await t.call('GET', `/v1/vms?limit=2${cursor ? `&cursor=${cursor}` : ''}`, undefined, VIEWER);
      assert.equal(res.statusCode, 200, res.body);
      const page = res.json() as { items: Array<{ id: string }>; nextCursor: string | null };
      assert.ok(page.items.length <= 2);
      seen.push(...page.items.map((v) => v.id));
      cursor = page.nextCursor;
    } while (cursor);
    assert.deepEqual(seen.sort(), ['vm-l0', 'vm-l1', 'vm-l2', 'vm-l3', 'vm-l4'], 'every VM once, deleted ones hidden');
    assert.deepEqual((await t.call('GET', '/v1/vms?state=stopped')).json().items.map((v: { id: string }) => v.id), ['vm-l4']);
    assert.deepEqual((await t.call('GET', '/v1/vms?hostId=h2')).json().items.map((v: { id: string }) => v.id).sort(), ['vm-l1', 'vm-l3']);
  });

  it('400 naming the bad query field or cursor; 404 for an unknown VM', async () => {
    const bad = await t.call('GET', '/v1/vms?state=flying');
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().fields[0].field, 'state');
    const limit = await t.call('GET', '/v1/vms?limit=0');
    assert.equal(limit.json().fields[0].field, 'limit');
    const cur = await t.call('GET', '/v1/vms?cursor=garbage');
    assert.equal(cur.statusCode, 400);
    assert.equal(cur.json().fields[0].field, 'cursor');
    assert.equal((await t.call('GET', '/v1/vms/vm-nope')).statusCode, 404);
    assert.equal((await t.call('GET', '/v1/vms/vm-gone')).statusCode, 404);
  });
});

describe('VM lifecycle', () => {
  let t: TestApi;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    await addVm(t.db, { id: 'vm-run', name: 'run' });
    await addVm(t.db, { id: 'vm-stopped', name: 'stopped', state: 'stopped' });
    await addVm(t.db, { id: 'vm-mig', name: 'mig', state: 'migrating' });
    await addVm(t.db, { id: 'vm-prov', name: 'prov', state: 'provisioning' });
    await addVm(t.db, { id: 'vm-err', name: 'err', state: 'error' });
    await addVm(t.db, { id: 'vm-busy', name: 'busy', state: 'running' });
    await addOperation(t.db, { id: 'op-busy', workflowId: 'migrate-vm-busy', kind: 'migration', vmId: 'vm-busy', state: 'running' });
  });
  after(() => t.close());

  it('stop starts vmLifecycle with a LifecycleInput; 202 shape', async () => {
    const res = await t.call('POST', '/v1/vms/vm-run/stop', { force: true, timeoutMs: 5000 }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    const s = t.temporal.starts.at(-1)!;
    assert.equal(s.workflowType, 'vmLifecycle');
    assert.equal(s.workflowId, 'vm-stop-vm-run');
    assert.deepEqual(s.args, [{ vmId: 'vm-run', action: 'stop', principal: 'env-operator', force: true, timeoutMs: 5000 }]);
    assert.deepEqual(withoutSummary(s.searchAttributes), { VmId: 'vm-run' });
    const b = res.json();
    assert.equal(b.workflowId, 'vm-stop-vm-run');
    assert.equal(b.operationId, s.runId);
    assert.equal(b.webUiUrl, 'http://ui.test:8233/namespaces/default/workflows/vm-stop-vm-run');
  });

  it('409 when the same action is already running', async () => {
    const res = await t.call('POST', '/v1/vms/vm-run/stop', {});
    assert.equal(res.statusCode, 409, res.body);
    assert.equal(res.json().workflowId, 'vm-stop-vm-run');
  });

  it('start, reboot and delete map to their actions and states', async () => {
    const n = t.temporal.starts.length;
    assert.equal((await t.call('POST', '/v1/vms/stopped/start')).statusCode, 202);
    assert.deepEqual(t.temporal.starts.at(-1)!.args, [{ vmId: 'vm-stopped', action: 'start', principal: 'bootstrap-admin' }]);
    assert.equal((await t.call('POST', '/v1/vms/vm-run/reboot')).statusCode, 202);
    assert.equal(t.temporal.starts.at(-1)!.workflowId, 'vm-reboot-vm-run');
    assert.equal((await t.call('DELETE', '/v1/vms/vm-run?force=true')).statusCode, 202);
    assert.deepEqual(t.temporal.starts.at(-1)!.args, [{ vmId: 'vm-run', action: 'delete', principal: 'bootstrap-admin', force: true }]);
    assert.equal(t.temporal.starts.length, n + 3);
  });

  it('409 naming the state when the state forbids the action; nothing starts', async () => {
    const n = t.temporal.starts.length;
    for (const [url, state] of [
      ['/v1/vms/vm-run/start', 'running'],
      ['/v1/vms/vm-stopped/reboot', 'stopped'],
      ['/v1/vms/vm-mig/stop', 'migrating'],
      ['/v1/vms/vm-prov/reboot', 'provisioning'],
      ['/v1/vms/vm-err/start', 'error'],
    ] as const) {
      const res = await t.call('POST', url);
      assert.equal(res.statusCode, 409, `${url}: ${res.body}`);
      assert.equal(res.json().state, state);
    }
    assert.equal((await t.call('DELETE', '/v1/vms/vm-prov')).statusCode, 409);
    assert.equal(t.temporal.starts.length, n);
  });

  it('409 with the running operation when another operation holds the VM', async () => {
    const res = await t.call('POST', '/v1/vms/vm-busy/reboot');
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().operationId, 'op-busy');
    assert.equal(res.json().workflowId, 'migrate-vm-busy');
  });

  it('400 for a bad stop body, 404 for an unknown VM', async () => {
    const bad = await t.call('POST', '/v1/vms/vm-run/stop', { timeoutMs: -1 });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().fields[0].field, 'timeoutMs');
    assert.equal((await t.call('POST', '/v1/vms/vm-nope/start')).statusCode, 404);
  });

  it('POST /v1/vms/:id/templates starts createTemplateFromVm', async () => {
    const res = await t.call('POST', '/v1/vms/vm-stopped/templates', { name: 'golden', owner: 'alice', department: 'web', tags: ['gold'] });
    assert.equal(res.statusCode, 202, res.body);
    const s = t.temporal.starts.at(-1)!;
    assert.equal(s.workflowType, 'createTemplateFromVm');
    assert.equal(s.workflowId, 'template-golden');
    const input = s.args[0] as Record<string, unknown>;
    assert.equal(input.templateId, res.json().templateId);
    assert.deepEqual({ ...input, templateId: undefined }, {
      templateId: undefined,
      name: 'golden',
      vmId: 'vm-stopped',
      principal: 'bootstrap-admin',
      owner: 'alice',
      department: 'web',
      tags: ['gold'],
      requiredCpuFeatures: ['avx2'],
    });
    const dup = await t.call('POST', '/v1/vms/vm-stopped/templates', { name: 'small' });
    assert.equal(dup.statusCode, 409, 'template name in use');
    const busy = await t.call('POST', '/v1/vms/vm-prov/templates', { name: 'from-prov' });
    assert.equal(busy.statusCode, 409);
    assert.equal(busy.json().state, 'provisioning');
    const bad = await t.call('POST', '/v1/vms/vm-stopped/templates', { name: 'Bad Name' });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().fields[0].field, 'name');
  });
});
