// A dry-run plan's predicted makespan against the executed one, on the real dev server with the
// simulator at time scale 1 (transfers take real seconds): three cluster shapes — uniform VMs,
// mixed sizes, and a host behind one slow link — each within 30 % (the calibration and the run can see different load on shared cores; bench 6
// measures the accuracy itself). The per-move overhead is
// learned from the moves this ferry finished before (a first, calibrating evacuation), as it is
// in production; the approved plan runs exactly the predicted moves.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { workflowIds, type EvacuateInput, type FleetProgress } from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { checkInvariants } from '../helpers/invariants.js';
import { smallCluster, startTestFerry, type TestFerry } from '../helpers/ferry.js';

const tag = randomUUID().slice(0, 6);
/** VMs (memory in MiB) per evacuated host; h5..h7 take them. */
const SHAPES: Record<string, number[]> = {
  h1: [1024, 1024, 1024, 1024], // calibration
  h2: [1024, 1024, 1024, 1024, 1024, 1024], // uniform
  h3: [512, 3072, 1024, 2048, 512, 4096], // mixed sizes
  h4: [1024, 1024, 1024, 1024], // behind a slow link
};

function cluster(): ClusterSpec {
  const spec = smallCluster({ hosts: 7, memoryMiB: 64 * 1024, cpus: 32 });
  // the hosts to evacuate take no VMs from each other's evacuations (only h5..h7 do)
  for (const h of spec.hosts) h.maintenance = ['h1', 'h2', 'h3', 'h4'].includes(h.id);
  // h4 reaches the targets at a quarter of the default 1 GiB/s
  spec.links = ['h5', 'h6', 'h7'].map((b) => ({ a: 'h4', b, bandwidthMiBps: 256 }));
  let ip = 100;
  spec.vms = Object.entries(SHAPES).flatMap(([hostId, sizes]) =>
    sizes.map((memoryMiB, i) => ({
      id: `pr${tag}-${hostId}-${i}`,
      name: `pr${tag}-${hostId}-${i}`,
      hostId,
      datastoreId: 'shared',
      templateId: 'tpl-small',
      networkId: 'net1',
      ip: `10.0.0.${ip++}`,
      cpus: 1,
      memoryMiB,
      diskGiB: 2,
      cpuFeatures: [],
      dirtyRateMiBps: 8,
      writableWorkingSetMiB: 32,
    })),
  );
  return spec;
}

async function evacuate(f: TestFerry, input: EvacuateInput, workflowId: string): Promise<FleetProgress> {
  const h = await f.client.workflow.start('evacuateHost', { taskQueue: f.taskQueue, workflowId, args: [input] });
  return (await h.result()) as FleetProgress;
}

/** Executed makespan: first move's start to last move's end, from the report. */
function executedMakespan(r: FleetProgress): number {
  const moved = r.vms.filter((v) => v.state === 'moved');
  return Math.max(...moved.map((v) => v.endedAtMs!)) - Math.min(...moved.map((v) => v.startedAtMs!));
}

describe('evacuation plans predict their makespan', () => {
  let f: TestFerry;
  before(async () => {
    f = await startTestFerry({ cluster: cluster(), timeScale: 1 });
    // calibration: this ferry's own overhead per move, learned from what it finished
    const r = await evacuate(f, { hostId: 'h1', maxParallel: 2 }, `${workflowIds.evacuate('h1')}-${f.prefix}`);
    assert.equal(r.counts.moved, 4);
  });
  after(async () => {
    await f?.close();
  });

  for (const [hostId, shape] of [
    ['h2', 'uniform'],
    ['h3', 'mixed sizes'],
    ['h4', 'one slow link'],
  ] as const) {
    test(`${shape}: the executed makespan is within 30 % of the dry run's prediction`, async () => {
      const planId = `p-${f.prefix}${hostId}`;
      const dry = await evacuate(f, { hostId, maxParallel: 2, dryRun: true, planId }, `plan-${planId}`);
      const predicted = dry.predictedMakespanMs!;
      const r = await evacuate(f, { hostId, planId }, `${workflowIds.evacuate(hostId)}-${f.prefix}`);
      assert.equal(r.counts.moved, SHAPES[hostId].length, JSON.stringify(r.vms.filter((v) => v.state !== 'moved')));
      const executed = executedMakespan(r);
      const error = Math.abs(executed - predicted) / executed;
      assert.ok(error <= 0.3, `${shape}: predicted ${predicted} ms, executed ${executed} ms (${Math.round(error * 100)} % off)`);
    });
  }

  test('nothing is left inconsistent', async () => {
    assert.deepEqual(await checkInvariants(f), []);
  });
});
