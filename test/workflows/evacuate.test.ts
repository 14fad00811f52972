// EvacuateHost on the real dev server with the simulator: a 12-VM evacuation within its
// parallelism (asserted from the migrations' recorded timestamps), capacity and anti-affinity
// sampled while it runs; a VM nobody can take is reported, not forgotten; pause and resume;
// cancel; dry run, approval of exactly that plan, and a stale plan refused with nothing done.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { Allocation, Host, Operation, Plan, Vm } from '../../db/entities.js';
import {
  cancelFleetSignal,
  fleetProgressQuery,
  pauseFleetSignal,
  resumeFleetSignal,
  workflowIds,
  type EvacuateInput,
  type FleetProgress,
} from '../../workflows/definitions.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import { Registry } from 'prom-client';
import { createFleetMetrics } from '../../api/fleet-metrics.js';
import { checkInvariants } from '../helpers/invariants.js';
import { smallCluster, startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

interface VmShape {
  memoryMiB?: number;
  cpus?: number;
  antiAffinityTag?: string;
  tags?: string[];
  cpuFeatures?: string[];
}

/** `hosts` identical hosts; `vms` running on h1 (ids unique to this test: children are migrate-<vmId>). */
function evacuationCluster(opts: { hosts: number; vms: VmShape[]; h1MemoryMiB?: number; memoryMiB?: number }): ClusterSpec {
  const spec = smallCluster({ hosts: opts.hosts, memoryMiB: opts.memoryMiB ?? 8192, cpus: 16 });
  spec.hosts[0].memoryMiB = opts.h1MemoryMiB ?? spec.hosts[0].memoryMiB;
  const tag = randomUUID().slice(0, 6);
  spec.vms = opts.vms.map((v, i) => ({
    id: `ev${tag}-${String(i + 1).padStart(2, '0')}`,
    name: `ev${tag}-${String(i + 1).padStart(2, '0')}`,
    hostId: 'h1',
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip: `10.0.0.${100 + i}`,
    cpus: v.cpus ?? 2,
    memoryMiB: v.memoryMiB ?? 1024,
    diskGiB: 2,
    cpuFeatures: v.cpuFeatures ?? ['sse4_2'],
    dirtyRateMiBps: 20,
    writableWorkingSetMiB: 64,
    tags: v.tags ?? (v.antiAffinityTag ? [v.antiAffinityTag] : []),
    antiAffinityTag: v.antiAffinityTag,
  }));
  return spec;
}

function evacuate(f: TestFerry, input: EvacuateInput, id = `${workflowIds.evacuate(input.hostId)}-${f.prefix}`): Promise<WorkflowHandle> {
  return f.client.workflow.start('evacuateHost', { taskQueue: f.taskQueue, workflowId: id, args: [input] });
}

/** Largest number of the given intervals open at one instant. */
function maxOverlap(intervals: Array<[number, number]>): number {
  const points = intervals.flatMap(([s, e]) => [[s, 1] as const, [e, -1] as const]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let max = 0;
  for (const [, d] of points) max = Math.max(max, (cur += d));
  return max;
}

/** Samples capacity and anti-affinity while `until` is pending; returns every violation seen. */
async function sample(f: TestFerry, until: Promise<unknown>): Promise<string[]> {
  const problems: string[] = [];
  let done = false;
  void until.finally(() => (done = true)).catch(() => undefined);
  while (!done) {
    const em = f.db.em();
    const [hosts, allocs, vms] = await Promise.all([em.find(Host, {}), em.find(Allocation, {}), em.find(Vm, { state: { $ne: 'deleted' } })]);
    for (const h of hosts) {
      const mine = allocs.filter((a) => a.hostId === h.id);
      const mem = mine.reduce((s, a) => s + a.memoryMiB, 0);
      if (mem > h.memoryMiB * h.memoryOvercommit) problems.push(`${h.id} holds ${mem} MiB of ${h.memoryMiB * h.memoryOvercommit}`);
    }
    // an anti-affine VM occupies every host it holds an allocation on (in flight: source and target)
    const where = new Map<string, Set<string>>();
    for (const a of allocs) {
      if (!where.has(a.vmId)) where.set(a.vmId, new Set());
      where.get(a.vmId)!.add(a.hostId);
    }
    const tagged = vms.filter((v) => v.antiAffinityTag);
    for (let i = 0; i < tagged.length; i++) {
      for (let j = i + 1; j < tagged.length; j++) {
        const a = tagged[i];
        const b = tagged[j];
        if (a.antiAffinityTag !== b.antiAffinityTag) continue;
        const shared = [...(where.get(a.id) ?? [])].filter((h) => where.get(b.id)?.has(h) && h !== 'h1');
        if (shared.length) problems.push(`${a.name} and ${b.name} (anti-affine) both on ${shared.join(',')}`);
      }
    }
    const inv = await checkInvariants(f, { atRest: false });
    for (const v of inv.filter((x) => x.kind === 'runs-twice')) problems.push(v.message);
    await new Promise((r) => setTimeout(r, 100));
  }
  return problems;
}

async function migrationIntervals(f: TestFerry, vmIds: string[]): Promise<Array<[number, number]>> {
  const ops = await f.db.em().find(Operation, { kind: 'migration', vmId: { $in: vmIds } });
  return ops.filter((o) => o.endedAt).map((o) => [new Date(o.startedAt).getTime(), new Date(o.endedAt!).getTime()]);
}

describe('EvacuateHost', () => {
  const ferries: TestFerry[] = [];
  after(async () => {
    for (const f of ferries) await f.close();
  });
  const start = async (spec: ClusterSpec) => {
    const f = await startTestFerry({ cluster: spec });
    ferries.push(f);
    return f;
  };

  test('12 VMs, maxParallel 3: all moved, never more than 3 in flight, capacity and anti-affinity held throughout', async () => {
    const shapes: VmShape[] = Array.from({ length: 12 }, (_, i) => ({ memoryMiB: 512 + (i % 4) * 512, antiAffinityTag: i < 4 ? 'db' : undefined }));
    const f = await start(evacuationCluster({ hosts: 5, vms: shapes, h1MemoryMiB: 32768 }));
    const vmIds = f.cluster.vms!.map((v) => v.id);
    const h = await evacuate(f, { hostId: 'h1', maxParallel: 3 });
    // ferry_evacuation_vms{state} (scraped from the database while it runs) accounts for all 12
    const fleet = createFleetMetrics(f.db, new Registry());
    let scrapedTotal = 0;
    const scraping = (async () => {
      for (let i = 0; i < 200 && scrapedTotal !== 12; i++) {
        const text = await fleet.render();
        const states = [...text.matchAll(/^ferry_evacuation_vms\{state="[^"]+"\} (\d+)/gm)].map((m) => Number(m[1]));
        scrapedTotal = states.reduce((a, b) => a + b, 0);
        await new Promise((res) => setTimeout(res, 50));
      }
    })();
    const problems = await sample(f, h.result());
    await scraping;
    assert.equal(scrapedTotal, 12, 'ferry_evacuation_vms counted every VM of the running evacuation');
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.state, 'completed', r.error);
    assert.equal(r.counts.moved, 12, JSON.stringify(r.vms.filter((v) => v.state !== 'moved')));
    assert.ok(r.maxInFlightSeen <= 3, `at most 3 in flight (saw ${r.maxInFlightSeen})`);
    assert.ok(maxOverlap(await migrationIntervals(f, vmIds)) <= 3, 'recorded migration intervals never overlap more than 3 deep');
    assert.deepEqual(problems, []);
    const em = f.db.em();
    assert.equal((await em.findOneOrFail(Host, { id: 'h1' })).maintenance, true, 'host stays in maintenance');
    assert.equal(await em.count(Vm, { hostId: 'h1', state: { $ne: 'deleted' } }), 0, 'host is empty');
    // the anti-affine four sit on four different hosts at the end too
    const db = await em.find(Vm, { antiAffinityTag: 'db' });
    assert.equal(new Set(db.map((v) => v.hostId)).size, 4);
    assert.deepEqual(await checkInvariants(f), []);
    const op = await em.findOneOrFail(Operation, { kind: 'evacuation', workflowId: h.workflowId });
    assert.equal(op.state, 'completed');
    assert.ok(await em.findOne(Operation, { kind: 'maintenance', subkind: 'enter', sourceHostId: 'h1' }), 'entering maintenance is on the Operation log');
  });

  test('a VM no host can take: the others move, the report names it and why', async () => {
    const shapes: VmShape[] = [...Array.from({ length: 11 }, () => ({ memoryMiB: 512 })), { memoryMiB: 12288 }];
    const f = await start(evacuationCluster({ hosts: 4, vms: shapes, h1MemoryMiB: 32768, memoryMiB: 8192 }));
    const big = f.cluster.vms![11];
    const h = await evacuate(f, { hostId: 'h1', maxParallel: 3 });
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.counts.moved, 11);
    assert.equal(r.vms.length, 12, 'every VM is in the report');
    const left = r.vms.find((v) => v.vmId === big.id)!;
    assert.equal(left.state, 'left');
    assert.match(left.reason!, /memory/);
    const op = await f.db.em().findOneOrFail(Operation, { kind: 'evacuation', workflowId: h.workflowId });
    assert.equal(op.state, 'failed', 'an evacuation that left a VM behind does not say completed');
    assert.match(op.error!, new RegExp(big.name));
    assert.equal((await f.db.em().findOneOrFail(Vm, { id: big.id })).hostId, 'h1', 'the VM still runs where it was');
    assert.deepEqual(await checkInvariants(f), []);
  });

  test('pause: no move starts while paused, running ones finish; resume finishes the rest', async () => {
    const f = await start(evacuationCluster({ hosts: 4, vms: Array.from({ length: 6 }, () => ({ memoryMiB: 1024 })), h1MemoryMiB: 32768 }));
    const h = await evacuate(f, { hostId: 'h1', maxParallel: 1 });
    await waitFor('a first VM moved', async () => ((await h.query(fleetProgressQuery)).counts.moved >= 1 ? true : undefined), 30_000);
    await h.signal(pauseFleetSignal);
    // what was in flight when the pause arrived finishes; then nothing moves
    const settled = await waitFor('the move in flight at the pause finished', async () => {
      const p = await h.query(fleetProgressQuery);
      return p.counts.inFlight === 0 ? p : undefined;
    }, 30_000);
    assert.equal(settled.state, 'paused');
    const movedAtPause = settled.counts.moved;
    await new Promise((r) => setTimeout(r, 2500));
    const later = await h.query(fleetProgressQuery);
    assert.equal(later.counts.moved, movedAtPause, 'nothing moved while paused');
    assert.equal(later.counts.inFlight, 0, 'nothing started while paused');
    await h.signal(resumeFleetSignal);
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.counts.moved, 6);
    assert.deepEqual(await checkInvariants(f), []);
  });

  test('cancel: nothing new starts, the report is complete', async () => {
    const f = await start(evacuationCluster({ hosts: 4, vms: Array.from({ length: 6 }, () => ({ memoryMiB: 1024 })), h1MemoryMiB: 32768 }));
    const h = await evacuate(f, { hostId: 'h1', maxParallel: 1 });
    await waitFor('a first VM moved', async () => ((await h.query(fleetProgressQuery)).counts.moved >= 1 ? true : undefined), 30_000);
    await h.signal(cancelFleetSignal, { reason: 'window over' });
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.state, 'cancelled');
    assert.equal(r.vms.length, 6);
    assert.ok(r.counts.moved >= 1 && r.counts.moved < 6, `some moved before the cancel (${r.counts.moved})`);
    assert.equal(r.counts.moved + r.counts.cancelled + r.counts.failed, 6);
    for (const v of r.vms.filter((x) => x.state === 'cancelled')) assert.match(v.reason!, /window over/);
    const ops = await f.db.em().find(Operation, { kind: 'migration', vmId: { $in: f.cluster.vms!.map((v) => v.id) } });
    assert.equal(ops.length, r.counts.moved + r.counts.failed, 'no migration started after the cancel');
    assert.deepEqual(await checkInvariants(f), []);
  });

  test('a target that enters maintenance mid-evacuation takes no further moves; they go elsewhere', async () => {
    const f = await start(evacuationCluster({ hosts: 4, vms: Array.from({ length: 6 }, () => ({ memoryMiB: 1024 })), h1MemoryMiB: 32768 }));
    const h = await evacuate(f, { hostId: 'h1', maxParallel: 1 });
    const first = await waitFor('a first VM moved', async () => {
      const p = await h.query(fleetProgressQuery);
      return p.counts.moved >= 1 ? p : undefined;
    }, 30_000);
    // a host some later move was planned for goes into maintenance now
    const later = first.vms.find((v) => v.state === 'waiting')!;
    const closed = later.to!;
    const em = f.db.em();
    const host = await em.findOneOrFail(Host, { id: closed });
    host.maintenance = true;
    await em.flush();
    const closedAt = Date.now();
    const r = (await h.result()) as FleetProgress;
    assert.equal(r.counts.moved, 6, JSON.stringify(r.vms.filter((v) => v.state !== 'moved')));
    for (const v of r.vms.filter((x) => x.startedAtMs! > closedAt + 1000)) assert.notEqual(v.to, closed, `${v.vmName} started after ${closed} closed and still went there`);
    const retried = r.vms.find((v) => v.vmId === later.vmId)!;
    assert.notEqual(retried.to, closed, 'the move planned for the closed host went elsewhere');
    assert.deepEqual(await checkInvariants(f), []);
  });

  test('dry run stores a plan and touches nothing; approving it runs exactly its moves; a stale plan is refused', async () => {
    const f = await start(evacuationCluster({ hosts: 3, vms: Array.from({ length: 4 }, () => ({ memoryMiB: 1024 })), h1MemoryMiB: 32768 }));
    const planId = `p-${f.prefix}a`;
    const dry = (await (await evacuate(f, { hostId: 'h1', dryRun: true, planId }, `plan-${planId}`)).result()) as FleetProgress;
    assert.equal(dry.state, 'planned');
    assert.equal(dry.counts.waiting, 4);
    assert.ok(dry.predictedMakespanMs! > 0);
    const em = f.db.em();
    assert.equal((await em.findOneOrFail(Host, { id: 'h1' })).maintenance, false, 'a dry run does not enter maintenance');
    assert.equal(await em.count(Operation, { kind: 'migration' }), 0, 'a dry run moves nothing');
    const stored = await em.findOneOrFail(Plan, { id: planId });
    const planned = (stored.plan as { moves: Array<{ vmId: string; to: string }> }).moves.map((m) => `${m.vmId}>${m.to}`).sort();

    const r = (await (await evacuate(f, { hostId: 'h1', planId })).result()) as FleetProgress;
    assert.equal(r.counts.moved, 4);
    const landed = (await f.db.em().find(Vm, { id: { $in: f.cluster.vms!.map((v) => v.id) } })).map((v) => `${v.id}>${v.hostId}`).sort();
    assert.deepEqual(landed, planned, 'exactly the planned targets');
    assert.equal((await f.db.em().findOneOrFail(Plan, { id: planId })).state, 'approved');

    // a second plan, then a capacity change: approval refuses it, nothing changes
    const f2 = await start(evacuationCluster({ hosts: 3, vms: Array.from({ length: 4 }, () => ({ memoryMiB: 1024 })), h1MemoryMiB: 32768 }));
    const stalePlan = `p-${f2.prefix}b`;
    await (await evacuate(f2, { hostId: 'h1', dryRun: true, planId: stalePlan }, `plan-${stalePlan}`)).result();
    const em2 = f2.db.em();
    const h3 = await em2.findOneOrFail(Host, { id: 'h3' });
    h3.maintenance = true;
    await em2.flush();
    const refused = await evacuate(f2, { hostId: 'h1', planId: stalePlan });
    await assert.rejects(refused.result(), (e: Error) => /stale/.test(String((e as { cause?: Error }).cause?.message ?? e.message)));
    assert.equal((await f2.db.em().findOneOrFail(Plan, { id: stalePlan })).state, 'refused');
    assert.equal((await f2.db.em().findOneOrFail(Host, { id: 'h1' })).maintenance, false, 'a refused plan does not even enter maintenance');
    assert.equal(await f2.db.em().count(Operation, { kind: 'migration' }), 0, 'nothing moved');
  });
});
