// Rebalance on the real dev server with the simulator: a deliberately skewed 8-host cluster gets
// its imbalance at least halved in one run within the move cap, and a second run right after
// moves nothing (no ping-pong); a rebalance Temporal Schedule fires on a short interval and is
// listed by `temporal schedule list`.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execa } from 'execa';
import { Operation } from '../../db/entities.js';
import { fleetIds, type FleetProgress, type RebalanceInput } from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { findTemporalCli } from '../../workers/temporal-cli.js';
import { describeSchedule, putSchedule, scheduleId } from '../../api/routes/rebalance.js';
import { checkInvariants } from '../helpers/invariants.js';
import { smallCluster, startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

/** 8 hosts; 12 VMs, 9 of them crowded on h1 and h2. */
function skewedCluster(): ClusterSpec {
  const spec = smallCluster({ hosts: 8, memoryMiB: 16384, cpus: 16 });
  const tag = randomUUID().slice(0, 6);
  const homes = ['h1', 'h1', 'h1', 'h1', 'h1', 'h2', 'h2', 'h2', 'h2', 'h3', 'h4', 'h5'];
  spec.vms = homes.map((hostId, i) => ({
    id: `rb${tag}-${String(i + 1).padStart(2, '0')}`,
    name: `rb${tag}-${String(i + 1).padStart(2, '0')}`,
    hostId,
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip: `10.0.0.${100 + i}`,
    cpus: 4,
    memoryMiB: 2048,
    diskGiB: 2,
    cpuFeatures: ['sse4_2'],
    dirtyRateMiBps: 10,
    writableWorkingSetMiB: 64,
  }));
  return spec;
}

async function run(f: TestFerry, input: Omit<RebalanceInput, 'cluster'>, suffix: string): Promise<FleetProgress> {
  const h = await f.client.workflow.start('rebalance', { taskQueue: f.taskQueue, workflowId: `${fleetIds.rebalance('default')}-${f.prefix}${suffix}`, args: [{ cluster: 'default', ...input }] });
  return (await h.result()) as FleetProgress;
}

describe('Rebalance', () => {
  const ferries: TestFerry[] = [];
  after(async () => {
    for (const f of ferries) await f.close();
  });

  test('a skewed 8-host cluster: imbalance at least halved within the move cap; a second run moves nothing', async () => {
    const f = await startTestFerry({ cluster: skewedCluster() });
    ferries.push(f);
    const dry = await run(f, { dryRun: true, level: 3, maxMoves: 6 }, 'dry');
    assert.equal(dry.state, 'planned');
    assert.ok(dry.counts.waiting > 0 && dry.counts.waiting <= 6, `a plan within the cap (${dry.counts.waiting})`);
    assert.equal(await f.db.em().count(Operation, { kind: 'migration' }), 0, 'a dry run moves nothing');

    const r = await run(f, { level: 3, maxMoves: 6 }, 'one');
    assert.equal(r.state, 'completed', r.error);
    assert.ok(r.counts.moved <= 6);
    assert.equal(r.counts.failed, 0, JSON.stringify(r.vms.filter((v) => v.state === 'failed')));
    assert.ok(r.imbalanceBefore! > 0);
    assert.ok(r.imbalanceAfter! <= r.imbalanceBefore! / 2, `imbalance ${r.imbalanceBefore} -> ${r.imbalanceAfter}: at least halved`);

    const again = await run(f, { level: 3, maxMoves: 6 }, 'two');
    assert.equal(again.counts.moved + again.counts.waiting + again.counts.inFlight, 0, `a second run right after moves nothing (${JSON.stringify(again.vms)})`);
    assert.deepEqual(await checkInvariants(f), []);
  });

  test('a rebalance schedule fires from its Temporal Schedule and shows in `temporal schedule list`', async () => {
    const f = await startTestFerry({ cluster: skewedCluster() });
    ferries.push(f);
    const { created } = await putSchedule(f.client, f.prefix, f.taskQueue, 'rebalance', { cron: '@every 2s', dryRun: true });
    assert.equal(created, true);
    assert.equal((await putSchedule(f.client, f.prefix, f.taskQueue, 'rebalance', { cron: '@every 2s', dryRun: true })).created, false, 'putting the same schedule again updates it');
    try {
      await waitFor('a scheduled rebalance ran', async () => (await f.db.em().count(Operation, { kind: 'rebalance', state: 'completed' })) > 0, 30_000, 250);
      const cli = findTemporalCli();
      assert.ok(cli, 'the temporal CLI is installed');
      const { stdout } = await execa(cli, ['schedule', 'list', '--address', f.address, '--namespace', 'default']);
      assert.match(stdout, new RegExp(scheduleId(f.prefix, 'rebalance')));
      // a cron expression reads back as written, and an update can pause it
      await putSchedule(f.client, f.prefix, f.taskQueue, 'rebalance', { cron: '*/15 * * * *', paused: true, level: 2 });
      const d = await describeSchedule(f.client, f.prefix, 'rebalance');
      assert.equal(d?.cron, '*/15 * * * *');
      assert.equal(d?.paused, true);
      assert.equal(d?.level, 2);
    } finally {
      await f.client.schedule.getHandle(scheduleId(f.prefix, 'rebalance')).delete();
    }
  });
});
