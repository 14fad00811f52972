// The invariant checker itself (test/helpers/invariants.ts), without Temporal: a consistent
// seeded cluster has no violation, and each deliberately broken state is reported by kind,
// naming what is wrong. Guards the chaos tests against a checker that cannot fail.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb, migrateUp, type Db } from '../../db/orm.js';
import { Allocation, IpAllocation, Operation, Vm } from '../../db/entities.js';
import { Simulator } from '../../drivers/sim/index.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { smallCluster } from '../helpers/ferry.js';
import { checkInvariants, RunningSampler, type ViolationKind } from '../helpers/invariants.js';

const GiB = 1024 ** 3;

interface World {
  db: Db;
  sim: Simulator;
  close(): Promise<void>;
}

const worlds: World[] = [];
after(async () => {
  for (const w of worlds) await w.close();
});

/** Two running VMs (a on h1, b on h2), written to both sides the way the demo seeds them. */
async function world(): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-inv-'));
  const db = await createDb({ databaseUrl: join(dir, 'ferry.sqlite'), dataDir: dir });
  await migrateUp(db);
  const sim = Simulator.open({ path: join(dir, 'sim.sqlite'), timeScale: 100 });
  const base = smallCluster({ hosts: 3 });
  const vm = (id: string, hostId: string, ip: string) => ({
    id,
    name: id,
    hostId,
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip,
    cpus: 1,
    memoryMiB: 512,
    diskGiB: 2,
    cpuFeatures: [],
    dirtyRateMiBps: 10,
    writableWorkingSetMiB: 64,
  });
  const spec: ClusterSpec = { ...base, vms: [vm('vm-a', 'h1', '10.0.0.10'), vm('vm-b', 'h2', '10.0.0.11')] };
  await seedCluster(db, sim, spec);
  const w = {
    db,
    sim,
    async close() {
      await db.close();
      sim.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  worlds.push(w);
  return w;
}

async function kinds(w: World, opts?: { atRest?: boolean }): Promise<ViolationKind[]> {
  return [...new Set((await checkInvariants(w, opts)).map((v) => v.kind))].sort();
}

async function setVm(w: World, id: string, patch: Partial<Vm>) {
  const em = w.db.em();
  const vm = await em.findOneOrFail(Vm, { id });
  Object.assign(vm, patch);
  await em.flush();
}

async function operation(w: World, id: string, state: 'running' | 'completed', vmId = 'vm-a') {
  const em = w.db.em();
  em.create(Operation, { id, workflowId: `wf-${id}`, kind: 'migration', subkind: 'live', vmId, state, stage: 'pre-copy', details: {} });
  await em.flush();
}

describe('invariant checker', () => {
  test('a consistent cluster: no violations', async () => {
    const w = await world();
    assert.deepEqual(await checkInvariants(w), []);
  });

  test('a guest running on two hosts', async () => {
    const w = await world();
    const d = w.sim.forHost('h3');
    await d.defineVm({ vmId: 'vm-a', name: 'vm-a', cpus: 1, memoryBytes: 512 * 1024 ** 2, disks: [], cpuFeatures: [] });
    await d.startVm('vm-a');
    const vs = await checkInvariants(w);
    assert.ok(vs.some((v) => v.kind === 'runs-twice' && v.subject === 'vm-a' && /h1, h3/.test(v.message)), JSON.stringify(vs));
    assert.ok(vs.some((v) => v.kind === 'stray-copy' && /h3/.test(v.message)));
    // the double run is reported even while an operation of the VM is in flight
    await operation(w, 'op-1', 'running');
    assert.ok((await kinds(w, { atRest: false })).includes('runs-twice'));
    assert.ok(!(await kinds(w, { atRest: false })).includes('stray-copy'), 'an in-flight migration may hold a second (not running) copy');
  });

  test('inventory names another host than the one running the guest', async () => {
    const w = await world();
    await setVm(w, 'vm-a', { hostId: 'h3' });
    assert.deepEqual(await kinds(w), ['stray-copy', 'wrong-host']);
  });

  test('a paused guest at rest, and a running VM nothing runs', async () => {
    const w = await world();
    await w.sim.forHost('h1').pauseVm('vm-a');
    const vs = await checkInvariants(w);
    assert.deepEqual([...new Set(vs.map((v) => v.kind))].sort(), ['not-running', 'paused-at-rest']);
    assert.match(vs.find((v) => v.kind === 'paused-at-rest')!.message, /vm-a is paused on h1/);
  });

  test('a leftover incoming container on a target and a VM stuck in migrating', async () => {
    const w = await world();
    await w.sim.forHost('h2').prepareIncoming({ vmId: 'vm-a', name: 'vm-a', cpus: 1, memoryBytes: 512 * 1024 ** 2, disks: [], cpuFeatures: [] });
    await setVm(w, 'vm-a', { state: 'migrating' });
    assert.deepEqual(await kinds(w), ['paused-at-rest', 'stray-copy', 'stuck-migrating']);
    // while its migration runs, all of that is expected
    await operation(w, 'op-2', 'running');
    assert.deepEqual(await kinds(w, { atRest: false }), []);
    assert.deepEqual(await kinds(w), ['operation-running', 'paused-at-rest', 'stray-copy', 'stuck-migrating']);
  });

  test('a reservation whose operation ended (or never existed) leaked; one of a running operation did not', async () => {
    const w = await world();
    const em = w.db.em();
    await operation(w, 'op-done', 'completed');
    await operation(w, 'op-live', 'running');
    em.create(Allocation, { id: 'res-done', hostId: 'h2', vmId: 'vm-a', kind: 'reservation', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-done' });
    em.create(Allocation, { id: 'res-none', hostId: 'h3', vmId: 'vm-a', kind: 'reservation', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: null });
    em.create(Allocation, { id: 'res-live', hostId: 'h3', vmId: 'vm-b', kind: 'reservation', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-live' });
    await em.flush();
    const leaked = (await checkInvariants(w, { atRest: false })).filter((v) => v.kind === 'leaked-reservation').map((v) => v.subject);
    assert.deepEqual(leaked.sort(), ['res-done', 'res-none']);
  });

  test('an address held by a VM that does not exist or is in error', async () => {
    const w = await world();
    const em = w.db.em();
    em.create(IpAllocation, { id: 'ip-ghost', networkId: 'net1', address: '10.0.0.50', vmId: 'vm-ghost' });
    await em.flush();
    await setVm(w, 'vm-b', { state: 'error', hostId: null });
    await w.sim.forHost('h2').destroyVm('vm-b');
    const vs = await checkInvariants(w);
    assert.deepEqual(vs.filter((v) => v.kind === 'leaked-ip').map((v) => v.subject).sort(), ['10.0.0.11', '10.0.0.50']);
    assert.match(vs.find((v) => v.subject === '10.0.0.50')!.message, /vm-ghost, which is not in inventory/);
  });

  test('a disk no VM refers to, and a guest inventory does not know', async () => {
    const w = await world();
    const d = w.sim.forHost('h1');
    await d.createDisk({ name: 'lost-root', datastoreId: 'shared', sizeBytes: 1 * GiB, source: { kind: 'blank' } });
    await d.defineVm({ vmId: 'vm-unknown', name: 'vm-unknown', cpus: 1, memoryBytes: 256 * 1024 ** 2, disks: [], cpuFeatures: [] });
    const vs = await checkInvariants(w);
    assert.deepEqual([...new Set(vs.map((v) => v.kind))].sort(), ['orphan-disk', 'unrecorded-guest']);
    assert.equal(vs.find((v) => v.kind === 'orphan-disk')!.subject, 'sim://shared/lost-root.qcow2');
  });

  test('the running sampler records a guest seen on two hosts', async () => {
    const w = await world();
    const s = new RunningSampler(w.sim, ['vm-a', 'vm-b'], 5).start();
    const d = w.sim.forHost('h3');
    await d.defineVm({ vmId: 'vm-b', name: 'vm-b', cpus: 1, memoryBytes: 512 * 1024 ** 2, disks: [], cpuFeatures: [] });
    await d.startVm('vm-b');
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (s.doubles.length > 0 && s.samples >= 3) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    });
    assert.throws(() => s.assertNeverDoubled(1), /two hosts at once.*vm-b/);
    assert.deepEqual(s.doubles[0]!.hosts, ['h2', 'h3']);
  });
});
