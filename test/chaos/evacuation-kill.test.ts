// Chaos: SIGKILL of the worker process (control worker + every host agent) in the middle of an
// evacuation, with moves in flight, then a restart: the evacuation finishes, every VM runs on
// exactly one host, and no VM was moved twice (one completed migration each). A sampler watches
// "the guest runs on at most one host" every 20 ms for the whole test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Host, Operation, Vm } from '../../db/entities.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { fleetProgressQuery, workflowIds, type FleetProgress } from '../../workflows/definitions.js';
import { smallCluster, startTestFerry, waitFor, type TestFerry, type WorkerProcess } from '../helpers/ferry.js';
import { assertNoViolations, RunningSampler } from '../helpers/invariants.js';

function cluster(): ClusterSpec {
  const spec = smallCluster({ hosts: 4, memoryMiB: 32 * 1024 });
  const tag = randomUUID().slice(0, 6);
  spec.vms = Array.from({ length: 8 }, (_, i) => ({
    id: `ek${tag}-${i + 1}`,
    name: `ek${tag}-${i + 1}`,
    hostId: 'h1',
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip: `10.0.0.${60 + i}`,
    cpus: 1,
    // ~2 s of transfer each at the default 1 GiB/s link and time scale 1: kills land mid-move
    memoryMiB: 2048,
    diskGiB: 2,
    cpuFeatures: [],
    dirtyRateMiBps: 20,
    writableWorkingSetMiB: 64,
  }));
  return spec;
}

describe('chaos: SIGKILL mid-evacuation', () => {
  let f: TestFerry;
  let w: WorkerProcess;
  before(async () => {
    f = await startTestFerry({ cluster: cluster(), timeScale: 1, workers: 'none' });
    w = await f.spawnWorkerProcess();
  });
  after(async () => {
    await w?.kill('SIGTERM').catch(() => undefined);
    await f?.close();
  });

  test('the evacuation finishes after the restart; every VM on exactly one host, none moved twice', async () => {
    const vmIds = f.cluster.vms!.map((v) => v.id);
    const sampler = new RunningSampler(f.sim, vmIds, 20).start();
    try {
      const h = await f.client.workflow.start('evacuateHost', { taskQueue: f.taskQueue, workflowId: `${workflowIds.evacuate('h1')}-${f.prefix}`, args: [{ hostId: 'h1', maxParallel: 2 }] });
      await waitFor(
        'moves done and in flight',
        async () => {
          const p = await h.query(fleetProgressQuery);
          return p.counts.moved >= 2 && p.counts.inFlight >= 1 ? p : undefined;
        },
        120_000,
        100,
      );
      await w.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 1500));
      w = await f.spawnWorkerProcess();
      const r = (await h.result()) as FleetProgress;
      assert.equal(r.state, 'completed', r.error);
      assert.equal(r.counts.moved, 8, JSON.stringify(r.vms.filter((v) => v.state !== 'moved')));
      const em = f.db.em();
      assert.equal(await em.count(Vm, { hostId: 'h1', state: { $ne: 'deleted' } }), 0, 'h1 is empty');
      assert.equal((await em.findOneOrFail(Host, { id: 'h1' })).maintenance, true);
      const ops = await em.find(Operation, { kind: 'migration', vmId: { $in: vmIds } });
      for (const id of vmIds) {
        const mine = ops.filter((o) => o.vmId === id);
        assert.equal(mine.filter((o) => o.state === 'completed').length, 1, `${id} moved exactly once (${mine.map((o) => o.state).join(', ')})`);
      }
      sampler.assertNeverDoubled();
      await assertNoViolations(f);
    } finally {
      sampler.stop();
    }
  });
});
