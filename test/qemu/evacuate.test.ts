// EvacuateHost on REAL QEMU (TCG): two VMs provisioned on qa, the host evacuated with
// maxParallel 1; both end running on another qemu host (exactly one QEMU each), qa is empty and
// in maintenance, and the report says where each went and how long it took.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Host, Vm } from '../../db/entities.js';
import { controlQueue, workflowIds, type FleetProgress, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, stopOwnTemporal } from '../helpers/ferry.js';
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

describe('EvacuateHost on real QEMU (TCG)', { skip: qemuSkipReason }, () => {
  let f: QemuFerry;
  before(async () => {
    // a halted guest: two dirtying guests plus their copies would crowd 2 cores
    f = await startQemuFerry({ hosts: ['ea', 'eb', 'ec'], basePort: 48600, guest: { kind: 'halt' } });
  });
  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  test('two real VMs leave ea; each runs on exactly one other host; ea empty and in maintenance', async () => {
    const vmIds: string[] = [];
    for (let i = 1; i <= 2; i++) {
      const name = `evq-${i}-${f.prefix.slice(1, 5)}`;
      const h = await f.provision({ name, vmId: `vm-${name}`, hostId: 'ea', memoryMiB: 64 });
      const r = await outcome<ProvisionResult>(h);
      assert.ok(r.ok, !r.ok ? r.message : '');
      vmIds.push(`vm-${name}`);
    }
    const h = await f.client.workflow.start('evacuateHost', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.evacuate('ea')}-${f.prefix}`, args: [{ hostId: 'ea', maxParallel: 1 }] });
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.state, 'completed', r.error);
    assert.equal(r.counts.moved, 2, JSON.stringify(r.vms));
    for (const v of r.vms) assert.ok(v.durationMs! > 0 && v.to && v.to !== 'ea', `${v.vmName} -> ${v.to} in ${v.durationMs} ms`);
    const em = f.db.em();
    for (const vmId of vmIds) {
      const vm = await em.findOneOrFail(Vm, { id: vmId });
      assert.notEqual(vm.hostId, 'ea');
      assert.equal(vm.state, 'running');
      const procs = await f.qemuProcesses(vmId);
      assert.deepEqual(procs.map((p) => p.hostId), [vm.hostId], `exactly one QEMU for ${vmId}, on ${vm.hostId}`);
    }
    assert.equal((await em.findOneOrFail(Host, { id: 'ea' })).maintenance, true);
    assert.equal(await em.count(Vm, { hostId: 'ea', state: { $ne: 'deleted' } }), 0);
  });
});
