// The workflow tests every real driver must pass, written once and run per driver
// (test/qemu/workflows.test.ts, test/libvirt/workflows.test.ts; the copyDisks ones are in
// copy-disks-suite.ts): provision from a template, live migration while the guest dirties memory
// with its counter continuing on the target (and back), cancel and a killed destination rolling
// back to the source, the source host agent SIGKILLed mid pre-copy, bad names refused. Every test ends with the invariant checker comparing
// inventory with the hypervisors' own view (driver-ferry.ts assertConsistent) while its VM still
// exists; the suite's `after` checks once more with everything cleaned up.
//
// CPU (2 cores): the dirtying guest takes most of a core while it runs, so each test destroys its
// VM when done and at most two guests (source + receiving destination) are busy at any time.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { Registry } from 'prom-client';
import { buildApp } from '../../api/app.js';
import { Allocation, Host, Operation, Vm } from '../../db/entities.js';
import type { AgentProcess } from '../../workers/lab/agents.js';
import { migrationProgressQuery, type LiveMigrateInput, type MigrationProgress, type MigrationResult, type ProvisionResult } from '../../workflows/definitions.js';
import { ADMIN, testConfig } from './api.js';
import { assertConsistent, type WorkflowFerry } from './driver-ferry.js';
import { outcome, stopOwnTemporal, waitFor } from './ferry.js';

const MiB = 1024 ** 2;

/**
 * Downtime bound for the happy path: the hypervisor's own downtime is the pause of the source from
 * the stop of the last round until the destination has everything. On QEMU it includes
 * (notes/qemu-facts.md) the time spent paused at pre-switchover until the host agent's QMP event
 * handler sends migrate-continue: one event on the socket, a runtime.json read and one command, a
 * few ms when idle but up to hundreds under TCG on 2 busy cores. So: the downtime limit in force +
 * 1 s of switchover latency.
 */
const SWITCHOVER_LATENCY_ALLOWANCE_MS = 1000;

/** A migration that does not converge on its own: 4 MiB/s for a guest that rewrites 16 MiB. */
const SLOW = { policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 4 * MiB, maxRounds: 1000 } } as const;

export interface SuiteContext<F extends WorkflowFerry> {
  ferry(): F;
  /** f.migrate, remembered so that `cleanup` can end a migration a failed test left running */
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /**
   * A test's clean-up: a migration of the VM still running (the test failed) is terminated and its
   * Operation closed as failed, so the next test's invariant check starts clean; then the VM is
   * destroyed everywhere and forgotten in inventory.
   */
  cleanup(vmId: string): Promise<void>;
  /** provisionVm on `hostId` through the workflow; returns once the VM runs there */
  provisionRunning(hostId: string, memoryMiB?: number): Promise<{ vmId: string; result: ProvisionResult }>;
  /** the rollback invariant: the VM runs on `hostId` only, nothing of it on `others`, inventory agrees */
  assertOnlyOn(vmId: string, hostId: string, others: string[]): Promise<void>;
  inPrecopy(h: WorkflowHandle): Promise<MigrationProgress>;
  operationOf(h: WorkflowHandle): Promise<Operation>;
  SLOW: typeof SLOW;
}

export function suiteContext<F extends WorkflowFerry>(get: () => F, tag: string): SuiteContext<F> {
  let n = 0;
  const started = new Map<string, WorkflowHandle[]>();
  const ctx: SuiteContext<F> = {
    ferry: get,
    async migrate(input) {
      const h = await get().migrate(input);
      started.set(input.vmId, [...(started.get(input.vmId) ?? []), h]);
      return h;
    },
    async cleanup(vmId) {
      const f = get();
      for (const h of started.get(vmId) ?? []) {
        const d = await h.describe().catch(() => undefined);
        if (d?.status.name !== 'RUNNING') continue;
        await h.terminate('test clean-up: the test failed with the migration still running').catch(() => undefined);
        await f.db.em().nativeUpdate(Operation, { workflowId: h.workflowId, state: 'running' }, { state: 'failed', error: 'terminated by the test clean-up', endedAt: new Date() });
      }
      started.delete(vmId);
      await f.destroyEverywhere(vmId);
    },
    async provisionRunning(hostId, memoryMiB = 64) {
      const f = get();
      const name = `${tag}-${++n}-${f.prefix.slice(1, 5)}`;
      const vmId = `vm-${name}`;
      const r = await outcome<ProvisionResult>(await f.provision({ name, vmId, hostId, memoryMiB }));
      assert.ok(r.ok, !r.ok ? r.message : '');
      assert.equal(r.value.hostId, hostId);
      return { vmId, result: r.value };
    },
    async assertOnlyOn(vmId, hostId, others) {
      const f = get();
      assert.deepEqual(await f.copies(vmId), [hostId], `exactly one copy of ${vmId}, on ${hostId}`);
      assert.equal((await f.driver(hostId).vmStatus(vmId))?.state, 'running');
      for (const o of others) await f.assertNothingOn(o, vmId);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.hostId, hostId);
      assert.equal(vm.state, 'running');
      const allocs = await f.db.em().find(Allocation, { vmId });
      assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), [`${hostId}:vm`], 'one allocation, on the host it runs on');
    },
    inPrecopy(h) {
      // generous: on a loaded 2-core machine a workflow task alone can take seconds
      return waitFor('pre-copy under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.stage === 'pre-copy' && p.progress.transferredBytes > 0 && p;
      }, 180_000);
    },
    operationOf(h) {
      return get().db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
    },
    SLOW,
  };
  return ctx;
}

/** Files of a VM on every datastore of every host (disks, seed, partial copies). */
async function datastoreFiles(f: WorkflowFerry, vmId: string): Promise<string[]> {
  const dirs = new Set(f.hostIds.flatMap((h) => f.datastoresOf(h).map((d) => d.path)));
  const out: string[] = [];
  for (const d of dirs) for (const x of await fs.readdir(d).catch(() => [] as string[])) if (x.includes(vmId)) out.push(path.join(d, x));
  return out;
}

/**
 * The live-migration suite on shared storage: hosts `a` (source), `b` (destination) and `agentHost`
 * (its agent a child process, SIGKILLed mid pre-copy).
 */
export function liveMigrationSuite<F extends WorkflowFerry>(o: {
  title: string;
  skip: string | false;
  hosts: { a: string; b: string; agentHost: string };
  start: () => Promise<F>;
  /** what the driver's agent registers beyond cpus, features and driver (checked after its start) */
  checkRegisteredHost?: (f: F, hostId: string, agent: AgentProcess) => Promise<void>;
  /** the driver's own tests, sharing this suite's ferry */
  extra?: (ctx: SuiteContext<F>) => void;
}): void {
  const { a, b, agentHost: c } = o.hosts;
  describe(o.title, { skip: o.skip }, () => {
    let f: F;
    const ctx = suiteContext(() => f, 'wvm');
    const { provisionRunning, assertOnlyOn, inPrecopy, operationOf, cleanup } = ctx;
    const migrate = ctx.migrate;
    const running = async (hostId: string, vmId: string) => (await f.driver(hostId).vmStatus(vmId))?.state === 'running';

    before(async () => {
      f = await o.start();
    });

    after(async () => {
      // everything each test made is gone again: no domain or process, no file, nothing in flight
      if (f) await assertConsistent(f);
      await f?.close();
      await stopOwnTemporal();
    });

    test(`provision from the template (linked clone) on ${a}, live-migrate to ${b} while the guest dirties memory, and back`, async () => {
      const { vmId, result } = await provisionRunning(a);
      try {
        // the disk is a linked clone of the template on the shared datastore
        const disk = await f.driver(a).diskInfo(result.diskPaths[0]!);
        assert.equal(disk?.backingPath, f.guest.qcow2, 'linked clone of the template image');
        assert.equal(path.dirname(result.diskPaths[0]!), f.datastoresOf(a).find((d) => d.shared)!.path);
        assert.ok(await running(a, vmId));
        await assertConsistent(f);
        const first = await f.heartbeat(a, vmId);
        const beating = await waitFor(`the guest counting on ${a}`, async () => {
          const v = await f.heartbeat(a, vmId);
          return v > first + 10 && v;
        });

        // the default policy with a bandwidth cap the 2-core machine can carry (QEMU's default 128
        // MiB/s at a 50 ms limit is below this guest's dirty rate: it would not converge)
        const h = await migrate({ vmId, targetHostId: b, overrides: { maxBandwidthBytesPerSec: 1024 * MiB } });
        // read A's counter until A stops answering (paused at switchover, then gone)
        let lastOnA = beating;
        let reading = true;
        const reader = (async () => {
          while (reading) {
            try {
              if (!(await running(a, vmId))) break;
              lastOnA = Math.max(lastOnA, await f.heartbeat(a, vmId));
            } catch {
              break;
            }
            await new Promise((r) => setTimeout(r, 5));
          }
        })();
        const r = await outcome<MigrationResult>(h);
        reading = false;
        await reader;
        assert.ok(r.ok, !r.ok ? r.message : '');
        assert.equal(r.value.state, 'completed');

        // B runs the guest and its counter continues from A's
        assert.ok(await running(b, vmId));
        const onB = await f.heartbeat(b, vmId);
        assert.ok(onB >= lastOnA, `counter on ${b} (${onB}) continues from the last one read on ${a} (${lastOnA})`);
        await waitFor(`the counter advancing on ${b}`, async () => (await f.heartbeat(b, vmId)) > onB);
        // A's copy and files are gone; inventory says B
        assert.deepEqual(await f.copies(vmId), [b]);
        await f.assertNothingOn(a, vmId);
        assert.equal(await f.driver(a).vmStatus(vmId), null);
        const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
        assert.equal(vm.hostId, b);
        assert.equal(vm.state, 'running');

        // the audit record carries the hypervisor's own numbers (its job at completion)
        const op = await operationOf(h);
        assert.equal(op.kind, 'migration');
        assert.equal(op.state, 'completed');
        const d = op.details as { downtimeMs: number; rounds: number; transferredBytes: number; hypervisorTotalTimeMs: number };
        assert.equal(d.downtimeMs, r.value.downtimeMs);
        assert.equal(d.rounds, r.value.rounds);
        assert.equal(d.transferredBytes, r.value.transferredBytes);
        assert.ok(Number.isInteger(d.downtimeMs) && d.downtimeMs > 0, `downtime ${d.downtimeMs} ms is the hypervisor's integer ms`);
        assert.ok(Number.isInteger(d.rounds) && d.rounds >= 2, `rounds ${d.rounds}: the bulk pass and at least one dirty pass`);
        // the guest rewrites 16 MiB; every page of it went over at least once
        assert.ok(d.transferredBytes >= 16 * MiB, `transferred ${d.transferredBytes} bytes`);
        assert.ok(d.hypervisorTotalTimeMs >= d.downtimeMs, `total-time ${d.hypervisorTotalTimeMs} >= downtime ${d.downtimeMs}`);
        const progress: MigrationProgress = await h.query(migrationProgressQuery);
        const limit = progress.progress.downtimeLimitMs;
        assert.ok(d.downtimeMs <= limit + SWITCHOVER_LATENCY_ALLOWANCE_MS, `downtime ${d.downtimeMs} ms within the limit ${limit} ms + ${SWITCHOVER_LATENCY_ALLOWANCE_MS} ms switchover latency`);
        console.log(`# ${f.kind} live migration: downtime ${d.downtimeMs} ms (limit ${limit} ms), ${d.rounds} rounds, ${(d.transferredBytes / MiB).toFixed(1)} MiB, hypervisor total ${d.hypervisorTotalTimeMs} ms`);
        await assertConsistent(f);

        // and back: a VM that arrived by migration leaves again (QEMU still reports the incoming
        // migration as "completed", which must not read as an outgoing one)
        const atB = await f.heartbeat(b, vmId);
        const back = await outcome<MigrationResult>(await migrate({ vmId, targetHostId: a, overrides: { maxBandwidthBytesPerSec: 1024 * MiB } }));
        assert.ok(back.ok, !back.ok ? back.message : '');
        assert.deepEqual(await f.copies(vmId), [a]);
        assert.ok(await running(a, vmId));
        assert.ok((await f.heartbeat(a, vmId)) >= atB, `the counter continues on ${a}`);
        assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).hostId, a);
        await assertConsistent(f);
      } finally {
        await cleanup(vmId);
      }
    });

    test(`cancel during pre-copy: the VM keeps running on ${a}, ${b} holds nothing of it`, async () => {
      const { vmId } = await provisionRunning(a);
      try {
        const h = await migrate({ vmId, targetHostId: b, ...SLOW });
        await inPrecopy(h);
        assert.deepEqual((await f.copies(vmId)).sort(), [a, b].sort(), 'source and destination during pre-copy');
        await h.signal('cancel', { reason: 'operator changed their mind' });
        const r = await outcome(h);
        assert.equal(r.ok, false);
        const op = await operationOf(h);
        assert.equal(op.state, 'cancelled');
        assert.match(op.error ?? '', /changed their mind/);
        await waitFor(`nothing on ${b}`, async () => (await f.copies(vmId)).length === 1, 15_000);
        await assertOnlyOn(vmId, a, [b]);
        const before = await f.heartbeat(a, vmId);
        await waitFor(`the guest still counting on ${a}`, async () => (await f.heartbeat(a, vmId)) > before);
        assert.equal(await f.db.em().count(Allocation, { vmId, kind: 'reservation' }), 0);
        await assertConsistent(f);
      } finally {
        await cleanup(vmId);
      }
    });

    test(`a killed destination QEMU during pre-copy: rolled back, running on ${a}, nothing left on ${b}`, async () => {
      const { vmId } = await provisionRunning(a);
      try {
        const h = await migrate({ vmId, targetHostId: b, ...SLOW });
        await inPrecopy(h);
        await f.killQemu(b, vmId);
        const r = await outcome(h);
        assert.equal(r.ok, false);
        const op = await operationOf(h);
        assert.equal(op.state, 'rolled-back', op.error ?? '');
        assert.match(op.error ?? '', /pre-copy failed|Connection reset|socket|no QEMU process/i);
        await waitFor(`nothing on ${b}`, async () => (await f.copies(vmId)).length === 1, 15_000);
        await assertOnlyOn(vmId, a, [b]);
        const before = await f.heartbeat(a, vmId);
        await waitFor(`the guest still counting on ${a}`, async () => (await f.heartbeat(a, vmId)) > before);
        await assertConsistent(f);
        console.log(`# ${f.kind}: destination QEMU killed: ${op.error}`);
      } finally {
        await cleanup(vmId);
      }
    });

    test(`the source host agent (a process) SIGKILLed during pre-copy and restarted: one copy at the end, running on ${b}, inventory agrees`, async () => {
      // the agent registers its host from driver.hostInfo(): undo a stale row to see it do so
      await f.db.em().nativeUpdate(Host, { id: c }, { cpus: 1, cpuFeatures: ['stale'] });
      let agent = await f.spawnAgent(c);
      const row = await f.db.em().findOneOrFail(Host, { id: c });
      assert.equal(row.cpus, 4, 'the agent\'s cpus override reached the Host row');
      assert.deepEqual(row.cpuFeatures, (await f.db.em().findOneOrFail(Host, { id: a })).cpuFeatures, `the features the ${f.kind} driver reports`);
      assert.equal(row.driver, f.kind);
      await o.checkRegisteredHost?.(f, c, agent);
      const { vmId } = await provisionRunning(c);
      try {
        const h = await migrate({ vmId, targetHostId: b, ...SLOW });
        await inPrecopy(h);
        await agent.kill('SIGKILL');
        // the hypervisor outlives its agent: the source still runs and the transfer goes on
        assert.ok((await f.copies(vmId)).includes(c), 'the source survived its agent');
        await f.convergeWithoutAgent(c, vmId);
        agent = await f.spawnAgent(c);
        const r = await outcome<MigrationResult>(h);
        assert.ok(r.ok, !r.ok ? r.message : '');
        assert.deepEqual(await f.copies(vmId), [b], 'exactly one copy of the VM');
        assert.ok(await running(b, vmId), 'the VM is not paused');
        const onB = await f.heartbeat(b, vmId);
        await waitFor(`the guest counting on ${b}`, async () => (await f.heartbeat(b, vmId)) > onB);
        await f.assertNothingOn(c, vmId);
        const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
        assert.equal(vm.hostId, b);
        assert.equal(vm.state, 'running');
        const op = await operationOf(h);
        assert.equal(op.state, 'completed');
        await assertConsistent(f);
        console.log(`# ${f.kind} agent restart: downtime ${r.value.downtimeMs} ms`);
      } finally {
        await agent.kill('SIGKILL');
        await cleanup(vmId);
      }
    });

    test('a VM name with shell metacharacters is refused: the API answers 400, the workflow fails naming it, no copy, no disk', async () => {
      const bad = 'evil;touch /tmp/x$(id)';
      // API: refused by the schema before any row, workflow or process
      const dir = await mkdtemp(path.join(os.tmpdir(), 'fws-'));
      const app = await buildApp({ db: f.db, temporal: f.client, config: testConfig(dir), registry: new Registry(), taskQueuePrefix: f.prefix, tokens: { admin: ADMIN } });
      try {
        const res = await app.inject({
          method: 'POST',
          url: '/v1/vms',
          headers: { authorization: `Bearer ${ADMIN}` },
          payload: { name: bad, cpus: 1, memoryMiB: 64, diskGiB: 1, template: f.templateId },
        });
        assert.equal(res.statusCode, 400, res.body);
        const body = res.json() as { fields?: Array<{ field: string; problem: string }> };
        assert.ok(body.fields?.some((x) => x.field === 'name'), res.body);
        assert.equal(await f.db.em().count(Vm, { name: bad }), 0);
      } finally {
        await app.close();
        await rm(dir, { recursive: true, force: true });
      }

      // workflow started directly (the API bypassed): fails with the problem named, nothing left
      const vmId = `vm-badname-${f.prefix.slice(1, 5)}`;
      try {
        const h = await f.provision({ name: bad, vmId, hostId: a });
        const r = await outcome(h);
        assert.equal(r.ok, false);
        assert.match(r.message, /hostname|name/);
        assert.ok(r.message.includes(bad), r.message);
        assert.deepEqual(await f.copies(vmId), []);
        for (const host of f.hostIds) await f.assertNothingOn(host, vmId);
        assert.deepEqual(await datastoreFiles(f, vmId), [], 'no disk or seed left');
        const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
        assert.equal(vm.state, 'error');
        assert.equal(await f.db.em().count(Allocation, { vmId }), 0);
        await assertConsistent(f);
      } finally {
        await cleanup(vmId);
      }
    });

    test('a bad VM name is refused before placement, also when a valid hostname is given (no disk, no copy ever)', async () => {
      const vmId = `vm-badname2-${f.prefix.slice(1, 5)}`;
      try {
        const h = await f.provision({ name: 'also;bad`id`', vmId, hostId: a, hostname: 'fine-host' });
        const r = await outcome(h);
        assert.equal(r.ok, false, 'refused');
        assert.match(r.message, /name/);
        // refused before step 1: no operation was even begun, so no disk was made and undone
        assert.equal(await f.db.em().count(Operation, { workflowId: h.workflowId }), 0);
        assert.deepEqual(await datastoreFiles(f, vmId), [], 'no disk or seed ever made');
        assert.deepEqual(await f.copies(vmId), []);
      } finally {
        await cleanup(vmId);
      }
    });

    o.extra?.(ctx);
  });
}
