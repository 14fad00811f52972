// createTemplateFromVm on the real dev server with the simulator: a stopped VM's disk becomes a
// template with its owner, department and tags, stored on a datastore; a new VM provisioned from
// it runs, and the template outlives its source VM. Refusals leave no disk and no open audit record.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowHandle } from '@temporalio/client';
import { Operation, Template, Vm } from '../../db/entities.js';
import { controlQueue, workflowIds, type CreateTemplateInput, type LifecycleInput, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';

function createTemplate(f: TestFerry, input: CreateTemplateInput): Promise<WorkflowHandle> {
  return f.client.workflow.start('createTemplateFromVm', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.template(input.name)}-${f.prefix}`, args: [input] });
}

async function lifecycle(f: TestFerry, input: LifecycleInput): Promise<void> {
  const h = await f.client.workflow.start('vmLifecycle', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.lifecycle(input.vmId, input.action)}-${f.prefix}`, args: [input] });
  const r = await outcome(h);
  assert.ok(r.ok, !r.ok ? r.message : '');
}

async function provisionRunning(f: TestFerry, name: string, source?: { kind: 'template'; templateId: string; linked?: boolean }): Promise<ProvisionResult> {
  return f.provisionRunning({ name, vmId: `vm-${name}`, ...(source ? { source } : {}) });
}

describe('createTemplateFromVm', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry()));
  after(async () => {
    await f?.close();
    await stopOwnTemporal(); // run alone, this file owns a dev server; a no-op under npm test
  });

  test('from a stopped VM: a template with owner, department and tags on a datastore; a VM provisioned from it runs', async () => {
    const src = await provisionRunning(f, 'golden-src');
    await lifecycle(f, { vmId: src.vmId, action: 'stop' });
    const srcVm = await f.db.em().findOneOrFail(Vm, { id: src.vmId });
    assert.equal(srcVm.state, 'stopped');

    const h = await createTemplate(f, { templateId: 'tpl-golden', name: 'golden', vmId: src.vmId, owner: 'alice', department: 'web', tags: ['gold', 'nginx'], os: 'test-os' });
    const r = await outcome<{ templateId: string; imagePath: string }>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.templateId, 'tpl-golden');

    const t = await f.db.em().findOneOrFail(Template, { id: 'tpl-golden' });
    assert.deepEqual(
      { name: t.name, owner: t.owner, department: t.department, tags: t.tags, sourceVmId: t.sourceVmId, imagePath: t.imagePath, diskGiB: t.diskGiB },
      { name: 'golden', owner: 'alice', department: 'web', tags: ['gold', 'nginx'], sourceVmId: src.vmId, imagePath: r.value.imagePath, diskGiB: srcVm.diskGiB },
    );
    assert.deepEqual(t.datastoreIds, [src.datastoreId]);
    // the image is a file of its own on that datastore, complete, and not the source VM's disk
    const image = f.sim.snapshot().disks.find((d) => d.path === t.imagePath);
    assert.ok(image, `${t.imagePath} exists in the simulator`);
    assert.equal(image.datastoreId, src.datastoreId);
    assert.ok(image.ready, 'the copy has finished');
    assert.ok(!srcVm.diskPaths.includes(t.imagePath), 'a copy, not the source disk itself');
    // the source VM is untouched
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: src.vmId })).state, 'stopped');
    assert.deepEqual(f.sim.snapshot().vms.filter((v) => v.vmId === src.vmId).map((v) => `${v.hostId}:${v.state}`), [`${src.hostId}:stopped`]);
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
    assert.deepEqual([op.kind, op.state], ['template', 'completed']);

    // a new VM from the template (linked clone, the default) runs
    const vm = await provisionRunning(f, 'from-golden', { kind: 'template', templateId: 'tpl-golden' });
    assert.deepEqual(f.sim.runningHostsOf(vm.vmId), [vm.hostId]);
    const row = await f.db.em().findOneOrFail(Vm, { id: vm.vmId });
    assert.equal(row.state, 'running');
    assert.ok(f.sim.snapshot().disks.some((d) => d.path === row.diskPaths[0]), 'its root disk exists');

    // and a full copy too, after the source VM is gone: the template does not depend on it
    await lifecycle(f, { vmId: src.vmId, action: 'delete' });
    assert.ok(f.sim.snapshot().disks.some((d) => d.path === t.imagePath), 'the image outlives its source VM');
    const full = await provisionRunning(f, 'from-golden-full', { kind: 'template', templateId: 'tpl-golden', linked: false });
    assert.deepEqual(f.sim.runningHostsOf(full.vmId), [full.hostId]);
  });

  test('from a running VM (crash-consistent copy): the VM keeps running', async () => {
    const src = await provisionRunning(f, 'live-src');
    const r = await outcome<{ imagePath: string }>(await createTemplate(f, { templateId: 'tpl-live', name: 'live', vmId: src.vmId, owner: 'bob', department: 'db', tags: [] }));
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.deepEqual(f.sim.runningHostsOf(src.vmId), [src.hostId]);
    const t = await f.db.em().findOneOrFail(Template, { id: 'tpl-live' });
    assert.deepEqual([t.owner, t.department, t.tags], ['bob', 'db', []]);
  });

  test('refused for an unknown VM and for a VM that is not stopped or running: no template, no disk, the audit record closed', async () => {
    const bad = await f.db.em().findOneOrFail(Vm, { id: (await provisionRunning(f, 'tpl-bad-state')).vmId });
    // an errored VM (e.g. a failed provision) has nothing safe to capture
    bad.state = 'error';
    await f.db.em().persistAndFlush(bad);
    for (const [vmId, re] of [
      ['vm-nope', /VM vm-nope does not exist/],
      [bad.id, /cannot template VM tpl-bad-state: it is error/],
    ] as const) {
      const name = `refused-${vmId}`;
      const h = await createTemplate(f, { templateId: `tpl-${name}`, name, vmId, owner: 'eve' });
      const r = await outcome(h);
      assert.equal(r.ok, false, vmId);
      assert.match(r.message, re);
      assert.equal(await f.db.em().count(Template, { id: `tpl-${name}` }), 0, 'no template');
      assert.deepEqual(f.sim.snapshot().disks.filter((d) => d.path.includes(name)), [], 'no disk');
      const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
      assert.equal(op.state, 'failed', `${vmId}: the operation record is closed, not left running`);
    }
  });
});
