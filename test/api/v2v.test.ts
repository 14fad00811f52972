// POST /v1/vms/import against a real SQLite database and a fake Temporal client (the host's
// inspectVmPackage answered by the fake): 202 with the VM row and one ImportVm start; an
// Idempotency-Key repeat gets the first answer and starts nothing more; a body the schema refuses
// asks Temporal for nothing; a package the host refuses, or a descriptor no host can run, is a 4xx
// naming why with no Vm row left and the staged package discarded.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { RetryState } from '@temporalio/common';
import { Vm } from '../../db/entities.js';
import { OPERATOR, seedInventory, startTestApi, type TestApi } from '../helpers/api.js';

const opened = (cpus = 2) => ({
  descriptor: { name: 'legacy-db', cpus, memoryMiB: 1024, nics: ['VM Network'] },
  disk: { path: '/staging/import-x/disk.vmdk', format: 'vmdk', virtualBytes: 3 * 1024 ** 3, fileBytes: 1024 ** 3 },
  packageKind: 'ova',
  verifiedFiles: 2,
});

/** The failure the client raises when the host activity refused the package. */
const refusedBy = (message: string) =>
  new WorkflowFailedError('workflow failed', new ActivityFailure('activity failed', 'openVmPackage', '1', RetryState.NON_RETRYABLE_FAILURE, 'agent', ApplicationFailure.nonRetryable(message, 'Refused')), RetryState.NON_RETRYABLE_FAILURE);

describe('POST /v1/vms/import', () => {
  let t: TestApi;
  let inspect: () => unknown;
  before(async () => {
    t = await startTestApi();
    await seedInventory(t.db);
    t.temporal.results.set('inspectVmPackage', () => inspect());
    t.temporal.results.set('discardVmPackage', () => undefined);
  });
  after(() => t.close());
  beforeEach(() => {
    t.temporal.starts.length = 0;
    inspect = () => opened();
  });

  const types = () => t.temporal.starts.map((s) => s.workflowType);
  const vmsNamed = (name: string) => t.db.em().count(Vm, { name });

  it('inspects on the chosen host, then creates the row and starts importVm (202)', async () => {
    const res = await t.call('POST', '/v1/vms/import', { path: '/exports/legacy.ova', name: 'legacy-1', hostId: 'h2', tags: ['imported'] }, OPERATOR);
    assert.equal(res.statusCode, 202, res.body);
    const body = res.json();
    assert.equal(body.hostId, 'h2');
    assert.equal(body.descriptor.diskGiB, 3);
    assert.deepEqual(types(), ['inspectVmPackage', 'importVm']);
    const start = t.temporal.starts[1]!;
    assert.equal(start.workflowId, `import-${body.vmId}`);
    assert.deepEqual((start.args[0] as { provision: { source: unknown } }).provision.source, { kind: 'import', path: '/staging/import-x/disk.vmdk', format: 'vmdk' });
    assert.equal(await vmsNamed('legacy-1'), 1);
  });

  it('a repeat with the same Idempotency-Key answers the first answer and starts nothing more', async () => {
    const send = () =>
      t.app.inject({ method: 'POST', url: '/v1/vms/import', payload: { path: '/exports/legacy.ova', name: 'legacy-2' }, headers: { authorization: `Bearer ${OPERATOR}`, 'idempotency-key': 'import-legacy-2' } });
    const first = await send();
    assert.equal(first.statusCode, 202, first.body);
    const again = await send();
    assert.equal(again.statusCode, 202, again.body);
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.deepEqual(again.json(), first.json());
    assert.deepEqual(types(), ['inspectVmPackage', 'importVm'], 'one inspection and one import');
    assert.equal(await vmsNamed('legacy-2'), 1);
  });

  it('a tag the VM routes refuse is a 400 naming it, before anything is asked of the host', async () => {
    const res = await t.call('POST', '/v1/vms/import', { path: '/exports/legacy.ova', name: 'legacy-3', tags: ['has space'] }, OPERATOR);
    assert.equal(res.statusCode, 400, res.body);
    assert.equal(res.json().fields[0].field, 'tags.0');
    assert.deepEqual(types(), []);
  });

  it("the host's refusal is a 422 with its reason; no Vm row", async () => {
    inspect = () => {
      throw refusedBy('manifest digest of disk1.vmdk does not match');
    };
    const res = await t.call('POST', '/v1/vms/import', { path: '/exports/tampered.ova', name: 'legacy-4' }, OPERATOR);
    assert.equal(res.statusCode, 422, res.body);
    assert.match(res.json().message, /manifest digest/);
    assert.deepEqual(types(), ['inspectVmPackage']);
    assert.equal(await vmsNamed('legacy-4'), 0);
  });

  it('a descriptor asking more vCPUs than the host has is a 422 naming cpus; the package is discarded, no Vm row', async () => {
    inspect = () => opened(1000);
    const res = await t.call('POST', '/v1/vms/import', { path: '/exports/big.ova', name: 'legacy-5', hostId: 'h1' }, OPERATOR);
    assert.equal(res.statusCode, 422, res.body);
    assert.equal(res.json().fields[0].field, 'cpus');
    assert.deepEqual(types(), ['inspectVmPackage', 'discardVmPackage']);
    assert.equal(await vmsNamed('legacy-5'), 0);
  });
});
