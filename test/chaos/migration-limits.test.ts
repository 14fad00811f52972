// Per-host migration limits under load: four live migrations off one host at once, with the
// default of 2 outgoing per host. Sampled throughout: at most 2 hold a slot at any instant (in
// the operation records and in the hypervisor's open transfers, both read atomically, and in
// the workflows' own progress without a sampling race), the others wait in `queued` with a
// reason naming the limit, and all four complete (they wait, they do not fail).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowHandle } from '@temporalio/client';
import { Host, Operation, Vm } from '../../db/entities.js';
import { SLOT_STAGES } from '../../activities/queries.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { controlQueue, migrationProgressQuery, workflowIds, type MigrationProgress, type MigrationResult } from '../../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, type TestFerry } from '../helpers/ferry.js';
import { assertNoViolations, RunningSampler } from '../helpers/invariants.js';

const TARGETS = ['h2', 'h3', 'h4', 'h5'];
const VM_IDS = TARGETS.map((_, i) => `vm-lim-${i}`);

function cluster(): ClusterSpec {
  const base = smallCluster({ hosts: 5, memoryMiB: 64 * 1024 });
  return {
    ...base,
    // 2 GiB over the default 1 GiB/s link at time scale 1: a few seconds each, so they overlap
    vms: VM_IDS.map((id, i) => ({
      id,
      name: id,
      hostId: 'h1',
      datastoreId: 'shared',
      templateId: 'tpl-small',
      networkId: 'net1',
      ip: `10.0.0.${30 + i}`,
      cpus: 1,
      memoryMiB: 2048,
      diskGiB: 2,
      cpuFeatures: [],
      dirtyRateMiBps: 50,
      writableWorkingSetMiB: 128,
    })),
  };
}

/** A workflow holds a slot from the grant (reservation) until it is done (or rolls back). */
const holding = (p: MigrationProgress) => p.state === 'running' && (SLOT_STAGES as string[]).includes(p.stage);

describe('per-host migration limits', () => {
  let f: TestFerry;
  before(async () => (f = await startTestFerry({ cluster: cluster(), timeScale: 1 })));
  after(async () => f?.close());

  test('4 migrations off one host with a limit of 2: at most 2 past queued at any instant, the others queue with the reason, all complete', async () => {
    const em = f.db.em();
    assert.equal((await em.findOneOrFail(Host, { id: 'h1' })).maxOutgoingMigrations, 2, 'the default limit');
    const sampler = new RunningSampler(f.sim, VM_IDS, 20).start();

    const handles: WorkflowHandle[] = await Promise.all(
      VM_IDS.map((vmId, i) =>
        f.client.workflow.start('liveMigrate', {
          taskQueue: controlQueue(f.prefix),
          workflowId: `${workflowIds.migrate(vmId)}-${f.prefix}`,
          args: [{ vmId, targetHostId: TARGETS[i] }],
        }),
      ),
    );
    const results = Promise.all(handles.map((h) => outcome<MigrationResult>(h)));
    let done = false;
    void results.finally(() => (done = true));

    let maxDb = 0;
    let maxSim = 0;
    let sweeps = 0;
    const queueReasons = new Map<string, string>(); // workflow -> a reason it showed while queued
    // per workflow: [answer time of the first "holding" sample, send time of the last one]:
    // it certainly held a slot all through that interval (samples can be late, not early)
    const held = new Map<string, { from: number; to: number }>();
    const seen = new Map<string, Set<string>>();
    try {
      while (!done) {
        // atomic instants: the operation records (what the slots are derived from) ...
        const dbHolding = await f.db.em().count(Operation, { kind: 'migration', state: 'running', sourceHostId: 'h1', stage: { $in: SLOT_STAGES } });
        // ... and the hypervisor's transfers out of h1 that have not ended
        const simOpen = f.sim.migrations().filter((m) => m.sourceHostId === 'h1' && m.endedAtV === undefined).length;
        maxDb = Math.max(maxDb, dbHolding);
        maxSim = Math.max(maxSim, simOpen);
        assert.ok(dbHolding <= 2, `${dbHolding} migrations from h1 hold a slot at once`);
        assert.ok(simOpen <= 2, `${simOpen} transfers from h1 at once`);
        for (const h of handles) {
          const sent = Date.now();
          const p = await h.query(migrationProgressQuery).catch(() => undefined);
          const answered = Date.now();
          if (!p) continue;
          (seen.get(h.workflowId) ?? seen.set(h.workflowId, new Set()).get(h.workflowId)!).add(p.stage);
          if (p.stage === 'queued' && p.queue) queueReasons.set(h.workflowId, p.queue.reason);
          if (holding(p)) {
            const iv = held.get(h.workflowId);
            if (iv) iv.to = sent;
            else held.set(h.workflowId, { from: answered, to: answered });
          }
        }
        sweeps++;
        await new Promise((r) => setTimeout(r, 30));
      }
    } catch (e) {
      sampler.stop();
      // a failed check must not leave the workflows (and the run) waiting for their end
      await Promise.all(handles.map((h) => h.terminate('test failed').catch(() => undefined)));
      throw e;
    }

    const rs = await results;
    sampler.assertNeverDoubled();
    for (const [i, r] of rs.entries()) {
      assert.ok(r.ok, `migration ${i}: ${!r.ok ? r.message : ''}`);
      assert.equal(r.value.state, 'completed');
      assert.deepEqual(f.sim.runningHostsOf(VM_IDS[i]!), [TARGETS[i]]);
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: VM_IDS[i] })).hostId, TARGETS[i]);
    }

    // the sampling saw something: on loaded cores a sweep (4 queries) can take seconds, so only
    // a few; the overlap itself is proven by maxDb and maxSim reaching 2 below
    assert.ok(sweeps >= 3, `sampled ${sweeps} times`);
    assert.equal(maxDb, 2, 'the limit was reached (the migrations overlapped) and never passed');
    assert.equal(maxSim, 2, 'two transfers ran at once, never more');
    // from the workflows' own progress: no instant at which 3 certainly held a slot
    const edges = [...held.values()].filter((iv) => iv.to > iv.from).flatMap((iv) => [{ at: iv.from, d: 1 }, { at: iv.to, d: -1 }]);
    edges.sort((a, b) => a.at - b.at || a.d - b.d);
    let level = 0;
    for (const e of edges) assert.ok((level += e.d) <= 2, `${level} workflows were past queued at once`);
    // the two that waited said why, naming the limit
    assert.ok(queueReasons.size >= 2, `queued: ${JSON.stringify([...seen].map(([k, v]) => [k, [...v]]))}`);
    for (const reason of queueReasons.values()) assert.match(reason, /h1 already sends 2 migration\(s\) \(limit 2\)/);
    const ops = await f.db.em().find(Operation, { kind: 'migration' });
    assert.deepEqual(ops.map((o) => o.state), ['completed', 'completed', 'completed', 'completed'], 'they waited, none failed');
    await assertNoViolations(f);
  });
});
