// vmLifecycle on the real dev server with the simulator: stop (graceful), start, reboot and delete
// keep the hypervisor and the inventory agreeing; delete leaves no allocation, address, disk,
// seed or guest behind and frees the name; refusals change nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { Allocation, IpAllocation, Operation, Vm } from '../../db/entities.js';
import { controlQueue, workflowIds, type LifecycleAction, type LifecycleInput, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';

let seq = 0;
function lifecycle(f: TestFerry, input: LifecycleInput): Promise<WorkflowHandle> {
  return f.client.workflow.start('vmLifecycle', {
    taskQueue: controlQueue(f.prefix),
    workflowId: `${workflowIds.lifecycle(input.vmId, input.action)}-${f.prefix}${++seq}`,
    args: [input],
  });
}

async function run(f: TestFerry, vmId: string, action: LifecycleAction, extra: Partial<LifecycleInput> = {}) {
  const h = await lifecycle(f, { vmId, action, ...extra });
  return { h, r: await outcome<{ vmId: string; state: string }>(h) };
}

async function provisionRunning(f: TestFerry, name: string, extra: { extraVolumesGiB?: number[] } = {}): Promise<ProvisionResult> {
  return f.provisionRunning({ name, vmId: `vm-${name}`, ...extra });
}

/** The guest as the simulator sees it: `host:state` per copy, and its generation (reboots bump it). */
function simView(f: TestFerry, vmId: string) {
  const vms = f.sim.snapshot().vms.filter((v) => v.vmId === vmId);
  return { copies: vms.map((v) => `${v.hostId}:${v.state}`), generation: vms[0]?.generation };
}

async function dbVm(f: TestFerry, vmId: string) {
  return f.db.em().findOneOrFail(Vm, { id: vmId });
}

/** Activities the workflow scheduled, with their decoded first argument. */
async function activityCalls(h: WorkflowHandle): Promise<Array<{ type: string; input: Record<string, unknown> }>> {
  const history = await h.fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const a = e.activityTaskScheduledEventAttributes;
    return a ? [{ type: a.activityType?.name ?? '', input: defaultPayloadConverter.fromPayload(a.input!.payloads![0]) as Record<string, unknown> }] : [];
  });
}

/** ApplicationFailure types of the activities that failed (the workflow's own failure is LifecycleFailed). */
async function activityFailureTypes(h: WorkflowHandle): Promise<string[]> {
  const history = await h.fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const t = e.activityTaskFailedEventAttributes?.failure?.applicationFailureInfo?.type;
    return t ? [t] : [];
  });
}

describe('vmLifecycle', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry()));
  after(async () => {
    await f?.close();
    await stopOwnTemporal(); // run alone, this file owns a dev server; a no-op under npm test
  });

  test('stop (graceful) -> stopped; start -> running; reboot -> running again, on the same host', async () => {
    const p = await provisionRunning(f, 'life-1');
    const vmId = p.vmId;
    const gen0 = simView(f, vmId).generation!;

    const stop = await run(f, vmId, 'stop');
    assert.ok(stop.r.ok, !stop.r.ok ? stop.r.message : '');
    assert.equal(stop.r.value.state, 'stopped');
    assert.deepEqual(simView(f, vmId).copies, [`${p.hostId}:stopped`]);
    assert.deepEqual(f.sim.runningHostsOf(vmId), []);
    const stopped = await dbVm(f, vmId);
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.hostId, p.hostId, 'a stopped VM keeps its home');
    assert.deepEqual(
      (await activityCalls(stop.h)).filter((c) => c.type === 'stopVm').map((c) => c.input.force),
      [false],
      'graceful: one stopVm without force',
    );
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: stop.h.workflowId });
    assert.deepEqual([op.kind, op.subkind, op.state], ['lifecycle', 'stop', 'completed']);

    const start = await run(f, vmId, 'start');
    assert.ok(start.r.ok, !start.r.ok ? start.r.message : '');
    assert.equal(start.r.value.state, 'running');
    assert.deepEqual(simView(f, vmId).copies, [`${p.hostId}:running`]);
    assert.equal((await dbVm(f, vmId)).state, 'running');
    const gen1 = simView(f, vmId).generation!;
    assert.ok(gen1 > gen0, 'the guest booted again');

    const reboot = await run(f, vmId, 'reboot');
    assert.ok(reboot.r.ok, !reboot.r.ok ? reboot.r.message : '');
    assert.equal(reboot.r.value.state, 'running');
    assert.deepEqual(simView(f, vmId).copies, [`${p.hostId}:running`]);
    assert.ok(simView(f, vmId).generation! > gen1, 'the guest rebooted');
    const vm = await dbVm(f, vmId);
    assert.deepEqual([vm.state, vm.hostId, vm.ip], ['running', p.hostId, p.ip]);
    assert.deepEqual((await f.db.em().find(Allocation, { vmId })).map((a) => `${a.hostId}:${a.kind}`), [`${p.hostId}:vm`]);
  });

  test('delete: state deleted, no allocation, address, disk, seed or guest left; the name can be used again', async () => {
    const p = await provisionRunning(f, 'life-del', { extraVolumesGiB: [1] });
    const vmId = p.vmId;
    const before = await dbVm(f, vmId);
    const files = [...before.diskPaths, before.seedPath!];
    assert.equal(files.length, 3, 'root disk, extra volume and seed');
    for (const path of files) assert.ok(f.sim.snapshot().disks.some((d) => d.path === path), `${path} exists before the delete`);

    const del = await run(f, vmId, 'delete');
    assert.ok(del.r.ok, !del.r.ok ? del.r.message : '');
    assert.equal(del.r.value.state, 'deleted');
    const vm = await dbVm(f, vmId);
    assert.deepEqual([vm.state, vm.hostId, vm.ip], ['deleted', null, null]);
    const em = f.db.em();
    assert.equal(await em.count(Allocation, { vmId }), 0, 'no allocation');
    assert.equal(await em.count(IpAllocation, { vmId }), 0, 'no IP');
    const disks = f.sim.snapshot().disks.map((d) => d.path);
    assert.deepEqual(files.filter((path) => disks.includes(path)), [], 'no disk or seed');
    assert.deepEqual(disks.filter((path) => path.includes(vmId)), [], 'nothing named after the VM');
    assert.deepEqual(simView(f, vmId).copies, [], 'the guest is gone from every host');

    // the name is free again: a new VM of the same name provisions and runs
    const again = await outcome<ProvisionResult>(await f.provision({ name: 'life-del', vmId: 'vm-life-del-2' }));
    assert.ok(again.ok, !again.ok ? again.message : '');
    assert.equal((await dbVm(f, 'vm-life-del-2')).name, 'life-del');
    assert.deepEqual(f.sim.runningHostsOf('vm-life-del-2'), [again.value.hostId]);
  });

  test('delete of a stopped VM cleans up the same way', async () => {
    const p = await provisionRunning(f, 'life-del-stopped');
    const { r: stopped } = await run(f, p.vmId, 'stop');
    assert.ok(stopped.ok, !stopped.ok ? stopped.message : '');
    const { r } = await run(f, p.vmId, 'delete');
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal((await dbVm(f, p.vmId)).state, 'deleted');
    assert.equal(await f.db.em().count(Allocation, { vmId: p.vmId }), 0);
    assert.equal(await f.db.em().count(IpAllocation, { vmId: p.vmId }), 0);
    assert.deepEqual(f.sim.snapshot().disks.filter((d) => d.path.includes(p.vmId)), []);
    assert.deepEqual(simView(f, p.vmId).copies, []);
  });

  test('start of a running VM changes nothing (the workflow tolerates it as a retry; the API answers 409)', async () => {
    const p = await provisionRunning(f, 'life-run');
    const before = simView(f, p.vmId);
    const { h, r } = await run(f, p.vmId, 'start');
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.state, 'running');
    assert.deepEqual(simView(f, p.vmId), before, 'no second boot, no second copy');
    const vm = await dbVm(f, p.vmId);
    assert.deepEqual([vm.state, vm.hostId, vm.ip], ['running', p.hostId, p.ip]);
    assert.deepEqual(await activityFailureTypes(h), []);
  });

  test('an action the state forbids is refused with Conflict and changes nothing (reboot of a stopped VM)', async () => {
    const p = await provisionRunning(f, 'life-conflict');
    assert.ok((await run(f, p.vmId, 'stop')).r.ok);
    const before = simView(f, p.vmId);
    const { h, r } = await run(f, p.vmId, 'reboot');
    assert.equal(r.ok, false);
    assert.match(r.message, /cannot reboot VM life-conflict: it is stopped/);
    assert.deepEqual(await activityFailureTypes(h), ['Conflict'], 'refused once, not retried');
    assert.deepEqual((await activityCalls(h)).map((c) => c.type), ['beginOperation', 'getVmForLifecycle', 'finishOperation'], 'no host was asked to do anything');
    assert.deepEqual(simView(f, p.vmId), before);
    assert.equal((await dbVm(f, p.vmId)).state, 'stopped');
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
    assert.equal(op.state, 'failed');
    assert.match(op.error!, /it is stopped/);
  });

  test('an unknown VM is NotFound, for every action', async () => {
    const snapshotBefore = f.sim.snapshot();
    for (const action of ['start', 'stop', 'reboot', 'delete'] as const) {
      const { h, r } = await run(f, 'vm-nope', action);
      assert.equal(r.ok, false, action);
      assert.match(r.message, /VM vm-nope does not exist/, action);
      assert.deepEqual(await activityFailureTypes(h), ['NotFound'], action);
    }
    const after = f.sim.snapshot();
    assert.deepEqual(after.vms, snapshotBefore.vms);
    assert.deepEqual(after.disks.map((d) => d.path), snapshotBefore.disks.map((d) => d.path));
  });
});
