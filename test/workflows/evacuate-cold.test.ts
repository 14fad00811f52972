// EvacuateHost's cold fallback on the real dev server with the simulator: a VM whose CPU features
// no other host offers cannot move live; with allowCold it is cold-migrated (a child ColdMigrate
// under migrate-<vmId>) and the evacuation completes; without allowCold it is left with the reason.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Vm } from '../../db/entities.js';
import { workflowIds, type EvacuateInput, type FleetProgress } from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { smallCluster, startTestFerry, type TestFerry } from '../helpers/ferry.js';

/** h1 offers avx512, h2/h3 do not; one VM uses avx512 (only cold can move it), one does not. */
function cluster(): { spec: ClusterSpec; coldVm: string; liveVm: string } {
  const spec = smallCluster({ hosts: 3, memoryMiB: 8192, features: [['sse4_2', 'avx', 'avx2', 'avx512f'], ['sse4_2', 'avx', 'avx2'], ['sse4_2', 'avx', 'avx2']] });
  const tag = randomUUID().slice(0, 6);
  const vm = (i: number, cpuFeatures: string[]) => ({
    id: `evc${tag}-${i}`,
    name: `evc${tag}-${i}`,
    hostId: 'h1',
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip: `10.0.0.${120 + i}`,
    cpus: 2,
    memoryMiB: 1024,
    diskGiB: 2,
    cpuFeatures,
    dirtyRateMiBps: 20,
    writableWorkingSetMiB: 64,
  });
  spec.vms = [vm(1, ['sse4_2', 'avx512f']), vm(2, ['sse4_2'])];
  return { spec, coldVm: spec.vms[0]!.id, liveVm: spec.vms[1]!.id };
}

async function evacuate(f: TestFerry, input: EvacuateInput): Promise<FleetProgress> {
  const h = await f.client.workflow.start('evacuateHost', { taskQueue: f.taskQueue, workflowId: `${workflowIds.evacuate(input.hostId)}-${f.prefix}`, args: [input] });
  return (await h.result()) as FleetProgress;
}

describe('EvacuateHost cold fallback', () => {
  const ferries: TestFerry[] = [];
  after(async () => {
    for (const f of ferries) await f.close();
  });

  test('allowCold: the CPU-incompatible VM is cold-migrated and the evacuation completes', async () => {
    const c = cluster();
    const f = await startTestFerry({ cluster: c.spec, timeScale: 100 });
    ferries.push(f);
    const r = await evacuate(f, { hostId: 'h1', allowCold: true, maxParallel: 2 });
    assert.equal(r.state, 'completed', JSON.stringify(r.vms));
    const cold = r.vms.find((v) => v.vmId === c.coldVm)!;
    const live = r.vms.find((v) => v.vmId === c.liveVm)!;
    assert.equal(cold.kind, 'cold');
    assert.equal(cold.state, 'moved', cold.reason);
    assert.equal(cold.migrationId, workflowIds.migrate(c.coldVm));
    assert.equal(live.kind, 'live');
    assert.equal(live.state, 'moved', live.reason);
    for (const id of [c.coldVm, c.liveVm]) {
      const vm = await f.db.em().findOneOrFail(Vm, { id });
      assert.notEqual(vm.hostId, 'h1');
      assert.equal(vm.state, 'running');
      const onSim = f.sim.snapshot().vms.filter((v) => v.vmId === id);
      assert.deepEqual(onSim.map((v) => `${v.hostId}:${v.state}`), [`${vm.hostId}:running`], 'defined once, running on its new host');
    }
    const coldRow = await f.db.em().findOneOrFail(Vm, { id: c.coldVm });
    assert.ok(!coldRow.cpuFeatures.includes('avx512f'), 'the guest booted on the target CPU: its features are what the target offers');
  });

  test('without allowCold it is left with the reason', async () => {
    const c = cluster();
    const f = await startTestFerry({ cluster: c.spec, timeScale: 100 });
    ferries.push(f);
    const r = await evacuate(f, { hostId: 'h1', maxParallel: 2 });
    const cold = r.vms.find((v) => v.vmId === c.coldVm)!;
    assert.equal(cold.state, 'left');
    assert.match(cold.reason ?? '', /avx512f|CPU|cold/i);
    assert.equal(r.vms.find((v) => v.vmId === c.liveVm)!.state, 'moved');
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: c.coldVm })).hostId, 'h1');
  });
});
