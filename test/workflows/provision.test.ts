// ProvisionVm on the real dev server with the simulator: every method, a fault in every step,
// cancellation, a crowd of concurrent provisions, and a worker killed mid-copy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, IpAllocation, Operation, Vm } from '../../db/entities.js';
import { provisionProgressQuery, type ProvisionProgress, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

async function leftovers(f: TestFerry, vmId: string) {
  const em = f.db.em();
  return {
    allocations: await em.count(Allocation, { vmId }),
    ips: await em.count(IpAllocation, { vmId }),
    disks: f.sim.snapshot().disks.filter((d) => d.path.includes(vmId)).map((d) => d.path),
    vms: f.sim.snapshot().vms.filter((v) => v.vmId === vmId).map((v) => `${v.hostId}:${v.state}`),
  };
}

describe('ProvisionVm', () => {
  let f: TestFerry;
  before(async () => {
    f = await startTestFerry();
    // an image from another platform, waiting to be imported
    f.sim.upsertImage({ path: 'sim://shared/imports/legacy-app.vmdk', datastoreId: 'shared', sizeBytes: 3 * 1024 ** 3, format: 'vmdk' });
    f.sim.upsertImage({ path: 'sim://shared/iso/debian-netinst.iso', datastoreId: 'shared', sizeBytes: 600 * 1024 ** 2, format: 'raw' });
  });
  after(async () => f?.close());

  test('from a template (linked clone): running with an IP from the pool, steps in order', async () => {
    const h = await f.provision({ name: 'web-1', vmId: 'vm-web-1' });
    const r = await outcome<ProvisionResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    const vm = await f.db.em().findOneOrFail(Vm, { id: 'vm-web-1' });
    assert.equal(vm.state, 'running');
    assert.match(vm.ip!, /^10\.0\.0\.\d+$/);
    assert.equal(vm.hostId, r.value.hostId);
    assert.equal(f.sim.runningHostsOf('vm-web-1').join(), r.value.hostId);
    const alloc = await f.db.em().find(Allocation, { vmId: 'vm-web-1' });
    assert.deepEqual(alloc.map((a) => a.kind), ['vm']);
    const progress = await h.query(provisionProgressQuery);
    assert.equal(progress.state, 'completed');
    assert.deepEqual(Object.keys(progress.stepTimingsMs), ['select', 'load-software', 'customize', 'start']);
    const disk = f.sim.snapshot().disks.find((d) => d.path === vm.diskPaths[0]);
    assert.ok(disk?.ready);
    const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
    assert.equal(op.state, 'completed');
    assert.ok((op.details as { placement?: unknown }).placement, 'placement decision recorded');
  });

  test('full copy, clone of an existing VM, import from vmdk, and manual install from an ISO', async () => {
    const runs = [
      { name: 'full-1', vmId: 'vm-full-1', source: { kind: 'template' as const, templateId: 'tpl-small', linked: false } },
      { name: 'clone-1', vmId: 'vm-clone-1', source: { kind: 'clone' as const, sourceVmId: 'vm-web-1' } },
      { name: 'import-1', vmId: 'vm-import-1', source: { kind: 'import' as const, path: 'sim://shared/imports/legacy-app.vmdk', format: 'vmdk' as const } },
      { name: 'iso-1', vmId: 'vm-iso-1', source: { kind: 'iso' as const, isoPath: 'sim://shared/iso/debian-netinst.iso' } },
    ];
    for (const run of runs) {
      const r = await outcome<ProvisionResult>(await f.provision(run));
      assert.ok(r.ok, `${run.name}: ${!r.ok ? r.message : ''}`);
      const vm = await f.db.em().findOneOrFail(Vm, { id: run.vmId });
      assert.equal(vm.state, 'running', run.name);
      assert.ok(vm.ip, run.name);
    }
    const ips = (await f.db.em().find(Vm, { state: 'running' })).map((v) => v.ip);
    assert.equal(new Set(ips).size, ips.length, 'no address twice');
  });

  for (const [step, fault] of [
    [1, { kind: 'fail-step' as const, step: 'reserveCapacity' }],
    [2, { kind: 'fail-step' as const, step: 'createDisk' }],
    [3, { kind: 'fail-step' as const, step: 'writeSeed' }],
    [4, { kind: 'fail-step' as const, step: 'startVm' }],
  ] as const) {
    test(`a fault in step ${step} leaves nothing behind and compensates in reverse order`, async () => {
      const vmId = `vm-fault-${step}`;
      f.sim.injectFault({ ...fault, vmId, count: -1 });
      try {
        const h = await f.provision({ name: `fault-${step}`, vmId, extraVolumesGiB: [1] });
        const r = await outcome(h);
        assert.equal(r.ok, false);
        const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
        assert.equal(vm.state, 'error');
        assert.match(vm.error!, new RegExp(`step ${step}`));
        assert.deepEqual(await leftovers(f, vmId), { allocations: 0, ips: 0, disks: [], vms: [] });
        const progress: ProvisionProgress = await h.query(provisionProgressQuery);
        const expected = ['stop-undefine', 'delete-volume-1', 'delete-seed', 'release-ip', 'delete-disk', 'release-reservation'];
        // registered up to and including the failed step, run newest first
        const registeredThrough: Record<number, number> = { 1: 1, 2: 2, 3: 4, 4: 6 };
        assert.deepEqual(
          progress.compensations.map((c) => c.name),
          expected.slice(expected.length - registeredThrough[step]),
        );
        assert.ok(progress.compensations.every((c) => c.ok));
        const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId });
        assert.equal(op.state, 'failed');
      } finally {
        f.sim.clearFaults();
      }
    });
  }

  test('cancelling a provision in the middle of step 2 compensates the same way', async () => {
    const vmId = 'vm-cancel-1';
    f.sim.injectFault({ kind: 'slow-disk', hostId: undefined, datastoreId: 'shared', value: 100_000 });
    try {
      const h = await f.provision({ name: 'cancel-1', vmId, source: { kind: 'template', templateId: 'tpl-small', linked: false } });
      await waitFor('step 2', async () => (await h.query(provisionProgressQuery)).step === 2);
      await waitFor('disk being copied', () => f.sim.snapshot().disks.some((d) => d.path.includes(vmId)));
      await h.cancel();
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const progress = await h.query(provisionProgressQuery);
      assert.equal(progress.state, 'cancelled');
      assert.deepEqual(progress.compensations.map((c) => c.name), ['delete-disk', 'release-reservation']);
      assert.deepEqual(await leftovers(f, vmId), { allocations: 0, ips: 0, disks: [], vms: [] });
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).state, 'error');
    } finally {
      f.sim.clearFaults();
    }
  });
});

describe('ProvisionVm under contention', () => {
  let f: TestFerry;
  // 3 hosts x 4 GiB = room for 12 VMs of 1 GiB; 30 ask at once
  before(async () => (f = await startTestFerry({ cluster: smallCluster({ hosts: 3, memoryMiB: 4096, cpus: 8 }) })));
  after(async () => f?.close());

  test('30 concurrent provisions on room for 12: exactly 12 placed, no host overcommitted, no IP twice', async () => {
    const handles = await Promise.all(Array.from({ length: 30 }, (_, i) => f.provision({ name: `crowd-${i}`, vmId: `vm-crowd-${i}`, memoryMiB: 1024 })));
    const results = await Promise.all(handles.map((h) => outcome(h)));
    const ok = results.filter((r) => r.ok);
    const failed = results.filter((r): r is Extract<typeof r, { ok: false }> => !r.ok);
    assert.equal(ok.length, 12);
    assert.equal(failed.length, 18);
    for (const r of failed) assert.match(r.message, /memory/, 'the capacity error names the resource');
    const em = f.db.em();
    const running = await em.find(Vm, { state: 'running' });
    assert.equal(running.length, 12);
    assert.equal(new Set(running.map((v) => v.ip)).size, 12);
    for (const h of f.cluster.hosts) {
      const used = (await em.find(Allocation, { hostId: h.id })).reduce((s, a) => s + a.memoryMiB, 0);
      assert.ok(used <= h.memoryMiB, `${h.id} holds ${used} MiB of ${h.memoryMiB}`);
    }
    assert.equal(await em.count(Allocation, { kind: 'reservation' }), 0, 'no reservation leaked');
    assert.equal(await em.count(IpAllocation, {}), 12);
  });
});

describe('ProvisionVm survives its worker', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry({ workers: 'none' })));
  after(async () => f?.close());

  test('SIGKILL of the worker process during step 2, then a restart: completes with one disk', async () => {
    const vmId = 'vm-crash-1';
    // a full copy that takes a while of wall time (slow datastore)
    f.sim.injectFault({ kind: 'slow-disk', datastoreId: 'shared', value: 200 });
    let w = await f.spawnWorkerProcess();
    const h = await f.provision({ name: 'crash-1', vmId, source: { kind: 'template', templateId: 'tpl-small', linked: false } });
    await waitFor('disk copy started', () => f.sim.snapshot().disks.some((d) => d.path.includes(`${vmId}-root`)));
    await w.kill('SIGKILL');
    f.sim.clearFaults();
    w = await f.spawnWorkerProcess();
    const r = await outcome<ProvisionResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    const disks = f.sim.snapshot().disks.filter((d) => d.path.includes(`${vmId}-root`));
    assert.equal(disks.length, 1, 'one disk, not two');
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).state, 'running');
    await w.kill('SIGTERM');
  });
});
