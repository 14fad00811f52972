// Reconcile on REAL QEMU (TCG): a guest provisioned by ferry whose QEMU process is killed by hand
// is reported as wrong-state (running in inventory, `crashed` on the host), and a guest defined and
// started through the qemu driver directly, behind ferry's back, is reported as unknown-vm and can
// be adopted into inventory with its capacity.
//
// Why wrong-state and not missing-vm for a killed process: the qemu driver keeps a VM's definition
// (spec.json, runtime.json) in its state folder independently of the process, so listVms still
// reports the VM, and vmStatus maps "no live pid while expectRunning" to `crashed`. The VM is
// known to the host, just not running: wrong-state, and fix-state records it as stopped (ferry's
// start then spawns a fresh process). missing-vm is for a VM the host no longer knows at all
// (undefined / its folder removed), checked here too.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Allocation, Drift, Vm } from '../../db/entities.js';
import { resolveDrift } from '../../db/repositories/drift.js';
import type { ReconcileResult } from '../../domain/drift.js';
import { fleetIds, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, stopOwnTemporal } from '../helpers/ferry.js';
import { qemuSkipReason, waitFor } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

const MiB = 1024 ** 2;

describe('reconcile on real QEMU (TCG)', { skip: qemuSkipReason }, () => {
  let f: QemuFerry;
  let runs = 0;
  const rogue = 'qrogue';

  before(async () => {
    // the halting guest: no CPU burnt while the tests look at it
    f = await startQemuFerry({ hosts: ['qa', 'qb'], guest: { kind: 'halt' }, basePort: 47900 });
  });
  after(async () => {
    await f?.destroyEverywhere(rogue).catch(() => undefined);
    await f?.close();
    await stopOwnTemporal();
  });

  async function reconcileNow(): Promise<ReconcileResult> {
    const h = await f.client.workflow.start('reconcile', { taskQueue: `${f.prefix}ferry-control`, workflowId: `${fleetIds.reconcile('default')}-${f.prefix}${++runs}`, args: [{}] });
    const r = await outcome<ReconcileResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    return r.value;
  }

  test('a QEMU killed by hand is wrong-state (crashed); one started by hand is unknown-vm and can be adopted', async () => {
    const name = `qrc-${f.prefix.slice(1, 5)}`;
    const vmId = `vm-${name}`;
    const p = await outcome<ProvisionResult>(await f.provision({ name, vmId, hostId: 'qa', memoryMiB: 64 }));
    assert.ok(p.ok, !p.ok ? p.message : '');
    assert.deepEqual((await reconcileNow()).openDriftIds, [], 'a freshly provisioned VM agrees with inventory');

    // kill the guest's QEMU behind ferry's back
    const procs = await f.qemuProcesses(vmId);
    assert.equal(procs.length, 1);
    process.kill(procs[0]!.pid, 'SIGKILL');
    await waitFor('the QEMU to die', async () => (await f.qemuProcesses(vmId)).length === 0);

    // define and start a guest through the driver directly, not through ferry
    const d = f.driver('qb');
    const disk = await d.createDisk({ name: `${rogue}-root`, datastoreId: f.datastore.id, sizeBytes: 1024 * MiB, source: { kind: 'template', imagePath: f.guest.qcow2, linked: true } });
    await d.defineVm({ vmId: rogue, name: rogue, cpus: 1, memoryBytes: 64 * MiB, disks: [disk.path], cpuFeatures: [] });
    await d.startVm(rogue);

    const r = await reconcileNow();
    assert.deepEqual(r.hostsUnanswered, []);
    assert.deepEqual(r.openDriftIds, [`unknown-vm-${rogue}`, `wrong-state-${vmId}`]);
    const wrong = await f.db.em().findOneOrFail(Drift, { id: `wrong-state-${vmId}` });
    assert.deepEqual([wrong.hostId, wrong.expected.state, wrong.observed.state], ['qa', 'running', 'crashed']);
    assert.equal((await d.vmStatus(rogue))?.state, 'running', 'reconcile left the unknown guest running');
    assert.equal((await f.driver('qa').vmStatus(vmId))?.state, 'crashed', 'and did not restart the killed one');

    const adopted = await resolveDrift(f.db, { id: `unknown-vm-${rogue}`, action: 'adopt', principal: 'test' });
    assert.deepEqual([adopted.vm.hostId, adopted.vm.state, adopted.vm.cpus, adopted.vm.memoryMiB], ['qb', 'running', 1, 64]);
    assert.deepEqual(
      (await f.db.em().find(Allocation, { vmId: rogue })).map((a) => `${a.hostId}:${a.kind}:${a.cpus}:${a.memoryMiB}`),
      ['qb:vm:1:64'],
    );
    await resolveDrift(f.db, { id: `wrong-state-${vmId}`, action: 'fix-state', principal: 'test' });
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).state, 'stopped');

    // undefined on the host altogether: now it is missing
    await f.driver('qa').destroyVm(vmId);
    const last = await reconcileNow();
    assert.deepEqual(last.openDriftIds, [`missing-vm-${vmId}`]);
  });
});
