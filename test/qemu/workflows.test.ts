// ferry's workflows on REAL QEMU (TCG) end to end: provisionVm makes a linked clone of the test
// guest's template and boots it on host qa; liveMigrate moves it to qb while the guest dirties
// memory; cancellation, a killed destination QEMU and a SIGKILLed source host agent roll back or
// complete with exactly one QEMU left; a bad VM name is refused. The Temporal dev server is the
// run's (test/helpers/ferry.ts); every QEMU started here is killed in `after` (sweep of the root).
//
// CPU (2 cores): the dirtying guest takes a full core while it runs, so each test destroys its VM
// when done and at most two guests (source + receiving destination) are busy at any time.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { Registry } from 'prom-client';
import { Allocation, Host, Operation, Vm } from '../../db/entities.js';
import { QmpClient } from '../../drivers/qemu/index.js';
import { migrationProgressQuery, type MigrationProgress, type MigrationResult, type ProvisionResult } from '../../workflows/definitions.js';
import { outcome, stopOwnTemporal, waitFor } from '../helpers/ferry.js';
import { ADMIN, testConfig } from '../helpers/api.js';
import { buildApp } from '../../api/app.js';
import { filesUnder, pidsMentioning, qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

const MiB = 1024 ** 2;

/**
 * Downtime bound for the happy path: QEMU's own `downtime` is the pause of the source from the
 * stop of round N until the destination has everything. It includes (notes/qemu-facts.md) the time
 * spent paused at pre-switchover until the host agent's QMP event handler sends migrate-continue:
 * one event on the socket, a runtime.json read and one command, a few ms when idle but up to
 * hundreds under TCG on 2 busy cores. So: the downtime limit in force + 1 s of switchover latency.
 */
const SWITCHOVER_LATENCY_ALLOWANCE_MS = 1000;

async function operationOf(f: QemuFerry, h: WorkflowHandle) {
  return f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
}

describe('ferry workflows on real QEMU (TCG)', { skip: qemuSkipReason }, () => {
  let f: QemuFerry;
  let n = 0;

  before(async () => {
    f = await startQemuFerry({ hosts: ['qa', 'qb', 'qc'], processAgents: ['qc'] });
  });

  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  /** provisionVm on `hostId` through the workflow; returns once the VM runs there. */
  async function provisionRunning(hostId: string, memoryMiB = 64): Promise<{ vmId: string; result: ProvisionResult }> {
    const name = `qvm-${++n}-${f.prefix.slice(1, 5)}`;
    const vmId = `vm-${name}`;
    const h = await f.provision({ name, vmId, hostId, memoryMiB });
    const r = await outcome<ProvisionResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.hostId, hostId);
    return { vmId, result: r.value };
  }

  async function queryStatus(hostId: string, vmId: string): Promise<string> {
    return (await f.driver(hostId).qmp<{ status: string }>(vmId, 'query-status')).status;
  }

  /** The rollback invariant: the VM runs on `hostId` only (one QEMU, running), inventory agrees. */
  async function assertOnlyOn(vmId: string, hostId: string, others: string[]) {
    const procs = await f.qemuProcesses(vmId);
    assert.deepEqual(procs.map((p) => p.hostId), [hostId], `exactly one QEMU for ${vmId}, on ${hostId}: ${JSON.stringify(procs)}`);
    assert.equal(await queryStatus(hostId, vmId), 'running');
    for (const o of others) {
      assert.deepEqual(await filesUnder(f.vmFolder(o, vmId)), [], `nothing of ${vmId} left on ${o}`);
      assert.deepEqual(await pidsMentioning(f.host(o).stateDir + path.sep), [], `no QEMU at all on ${o}`);
    }
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, hostId);
    assert.equal(vm.state, 'running');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), [`${hostId}:vm`], 'one allocation, on the host it runs on');
  }

  test('provision from the template (linked clone) on qa, live-migrate to qb while the guest dirties memory, and back', async () => {
    const { vmId, result } = await provisionRunning('qa');
    try {
      // the disk is a linked clone of the template on the shared datastore
      const disk = await f.driver('qa').diskInfo(result.diskPaths[0]!);
      assert.equal(disk?.backingPath, f.guest.qcow2, 'linked clone of the template image');
      assert.equal(path.dirname(result.diskPaths[0]!), f.datastore.path);
      assert.equal(await queryStatus('qa', vmId), 'running');
      const first = await f.heartbeat('qa', vmId);
      const beating = await waitFor('the guest counting on qa', async () => {
        const v = await f.heartbeat('qa', vmId);
        return v > first + 10 && v;
      });
      assert.ok(beating > 0);

      // the default policy with a bandwidth cap the 2-core machine can carry (QEMU's default 128
      // MiB/s at a 50 ms limit is below this guest's dirty rate: it would not converge)
      const h = await f.migrate({ vmId, targetHostId: 'qb', overrides: { maxBandwidthBytesPerSec: 1024 * MiB } });
      // read A's counter until A stops answering (paused at switchover, then destroyed)
      let lastOnA = beating;
      let reading = true;
      const reader = (async () => {
        while (reading) {
          try {
            const st = await queryStatus('qa', vmId);
            if (st !== 'running') break;
            lastOnA = Math.max(lastOnA, await f.heartbeat('qa', vmId));
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
      assert.equal(await queryStatus('qb', vmId), 'running');
      const onB = await f.heartbeat('qb', vmId);
      assert.ok(onB >= lastOnA, `counter on qb (${onB}) continues from the last one read on qa (${lastOnA})`);
      await waitFor('the counter advancing on qb', async () => (await f.heartbeat('qb', vmId)) > onB);
      // A's process and files are gone; inventory says qb
      assert.deepEqual((await f.qemuProcesses(vmId)).map((p) => p.hostId), ['qb']);
      assert.deepEqual(await filesUnder(f.vmFolder('qa', vmId)), []);
      assert.equal(await f.driver('qa').vmStatus(vmId), null);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.hostId, 'qb');
      assert.equal(vm.state, 'running');

      // the audit record carries QEMU's own numbers (query-migrate on the source at completion)
      const op = await operationOf(f, h);
      assert.equal(op.kind, 'migration');
      assert.equal(op.state, 'completed');
      const d = op.details as { downtimeMs: number; rounds: number; transferredBytes: number; hypervisorTotalTimeMs: number };
      assert.equal(d.downtimeMs, r.value.downtimeMs);
      assert.equal(d.rounds, r.value.rounds);
      assert.equal(d.transferredBytes, r.value.transferredBytes);
      assert.ok(Number.isInteger(d.downtimeMs) && d.downtimeMs > 0, `downtime ${d.downtimeMs} ms is QEMU's integer ms`);
      assert.ok(Number.isInteger(d.rounds) && d.rounds >= 2, `rounds ${d.rounds}: QEMU's dirty-sync-count (bulk + at least one dirty pass)`);
      // the guest rewrites 16 MiB; every page of it went over at least once
      assert.ok(d.transferredBytes >= 16 * MiB, `transferred ${d.transferredBytes} bytes`);
      assert.ok(d.hypervisorTotalTimeMs >= d.downtimeMs, `total-time ${d.hypervisorTotalTimeMs} >= downtime ${d.downtimeMs}`);
      const progress: MigrationProgress = await h.query(migrationProgressQuery);
      const limit = progress.progress.downtimeLimitMs;
      assert.ok(
        d.downtimeMs <= limit + SWITCHOVER_LATENCY_ALLOWANCE_MS,
        `downtime ${d.downtimeMs} ms within the limit ${limit} ms + ${SWITCHOVER_LATENCY_ALLOWANCE_MS} ms switchover latency`,
      );
      console.log(`# qemu live migration: downtime ${d.downtimeMs} ms (limit ${limit} ms), ${d.rounds} rounds, ${(d.transferredBytes / MiB).toFixed(1)} MiB, QEMU total ${d.hypervisorTotalTimeMs} ms`);

      // and back: a VM that arrived by migration leaves again (its QEMU still reports the incoming
      // migration as "completed", which must not read as an outgoing one)
      const atB = await f.heartbeat('qb', vmId);
      const back = await outcome<MigrationResult>(await f.migrate({ vmId, targetHostId: 'qa', overrides: { maxBandwidthBytesPerSec: 1024 * MiB } }));
      assert.ok(back.ok, !back.ok ? back.message : '');
      assert.deepEqual((await f.qemuProcesses(vmId)).map((p) => p.hostId), ['qa']);
      assert.equal(await queryStatus('qa', vmId), 'running');
      assert.ok((await f.heartbeat('qa', vmId)) >= atB, 'the counter continues on qa');
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).hostId, 'qa');
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  /** A migration that does not converge on its own: 4 MiB/s for a guest that rewrites 16 MiB. */
  const SLOW = { policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 4 * MiB, maxRounds: 1000 } } as const;

  async function inPrecopy(h: WorkflowHandle): Promise<MigrationProgress> {
    return waitFor('pre-copy under way', async () => {
      const p: MigrationProgress = await h.query(migrationProgressQuery);
      assert.equal(p.state, 'running', p.error);
      return p.stage === 'pre-copy' && p.progress.transferredBytes > 0 && p;
    });
  }

  test('cancel during pre-copy: the VM keeps running on qa, qb has no process and no files', async () => {
    const { vmId } = await provisionRunning('qa');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'qb', ...SLOW });
      await inPrecopy(h);
      assert.equal((await f.qemuProcesses(vmId)).length, 2, 'source and destination QEMU during pre-copy');
      await h.signal('cancel', { reason: 'operator changed their mind' });
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await operationOf(f, h);
      assert.equal(op.state, 'cancelled');
      assert.match(op.error ?? '', /changed their mind/);
      await assertOnlyOn(vmId, 'qa', ['qb']);
      const before = await f.heartbeat('qa', vmId);
      await waitFor('the guest still counting on qa', async () => (await f.heartbeat('qa', vmId)) > before);
      assert.equal(await f.db.em().count(Allocation, { vmId, kind: 'reservation' }), 0);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('a killed destination QEMU during pre-copy: rolled back, running on qa, nothing left on qb', async () => {
    const { vmId } = await provisionRunning('qa');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'qb', ...SLOW });
      await inPrecopy(h);
      const dst = (await f.qemuProcesses(vmId)).filter((p) => p.hostId === 'qb');
      assert.equal(dst.length, 1, 'one destination QEMU');
      process.kill(dst[0]!.pid, 'SIGKILL');
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await operationOf(f, h);
      assert.equal(op.state, 'rolled-back', op.error ?? '');
      assert.match(op.error ?? '', /pre-copy failed|Connection reset|socket|no QEMU process/i);
      await assertOnlyOn(vmId, 'qa', ['qb']);
      const before = await f.heartbeat('qa', vmId);
      await waitFor('the guest still counting on qa', async () => (await f.heartbeat('qa', vmId)) > before);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('the source host agent SIGKILLed during pre-copy and restarted: one QEMU at the end, running, inventory agrees', async () => {
    // the agent registers its host from driver.hostInfo(): undo a stale row to see it do so
    await f.db.em().nativeUpdate(Host, { id: 'qc' }, { cpus: 1, cpuFeatures: ['stale'] });
    let agent = await f.spawnAgent('qc');
    const qc = await f.db.em().findOneOrFail(Host, { id: 'qc' });
    assert.equal(qc.cpus, 4, 'FERRY_QEMU_CPUS reached the Host row');
    assert.deepEqual(qc.cpuFeatures, f.cluster.hosts.find((h) => h.id === 'qa')!.cpuFeatures, 'the features the qemu driver reports');
    assert.equal(qc.driver, 'qemu');
    const { vmId } = await provisionRunning('qc');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'qb', ...SLOW });
      await inPrecopy(h);
      await agent.kill('SIGKILL');
      // QEMU outlives its agent: the source still runs and the transfer goes on
      const srcPid = (await f.qemuProcesses(vmId)).find((p) => p.hostId === 'qc')?.pid;
      assert.ok(srcPid, 'the source QEMU survived its agent');
      // while no agent watches, let the migration converge (as a guest that calms down would):
      // QEMU then pauses the source at pre-switchover and waits for someone to continue, the
      // agent's event handler died with it, so the restarted agent must notice and continue
      const qmp = await QmpClient.connect(path.join(f.vmFolder('qc', vmId), 'qmp.sock'), { connectTimeoutMs: 5000 });
      try {
        assert.equal((await qmp.execute<{ status: string }>('query-migrate')).status, 'active');
        await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * MiB, 'downtime-limit': 500 });
        await waitFor('the source paused at pre-switchover with no agent', async () => (await qmp.execute<{ status: string }>('query-migrate')).status === 'pre-switchover');
      } finally {
        qmp.close();
      }
      agent = await f.spawnAgent('qc');
      const r = await outcome<MigrationResult>(h);
      assert.ok(r.ok, !r.ok ? r.message : '');
      const procs = await f.qemuProcesses(vmId);
      assert.deepEqual(procs.map((p) => p.hostId), ['qb'], `exactly one QEMU for the VM: ${JSON.stringify(procs)}`);
      assert.equal(await queryStatus('qb', vmId), 'running', 'the VM is not paused');
      const onB = await f.heartbeat('qb', vmId);
      await waitFor('the guest counting on qb', async () => (await f.heartbeat('qb', vmId)) > onB);
      assert.deepEqual(await filesUnder(f.vmFolder('qc', vmId)), [], 'the source folder is cleaned up');
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.hostId, 'qb');
      assert.equal(vm.state, 'running');
      const op = await operationOf(f, h);
      assert.equal(op.state, 'completed');
      console.log(`# agent restart: downtime ${r.value.downtimeMs} ms (the source sat paused at pre-switchover until the restarted agent continued)`);
    } finally {
      await agent.kill('SIGKILL');
      await f.destroyEverywhere(vmId);
    }
  });

  test('a VM name with shell metacharacters is refused: the API answers 400, the workflow fails naming it, no QEMU, no disk', async () => {
    const bad = 'evil;touch /tmp/x$(id)';
    // API: refused by the schema before any row, workflow or process
    const dir = f.root;
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
    }

    // workflow started directly (the API bypassed): fails with the problem named, nothing left
    const vmId = `vm-badname-${f.prefix.slice(1, 5)}`;
    const h = await f.provision({ name: bad, vmId, hostId: 'qa' });
    const r = await outcome(h);
    assert.equal(r.ok, false);
    assert.match(r.message, /hostname|name/);
    assert.ok(r.message.includes(bad), r.message);
    assert.deepEqual(await f.qemuProcesses(vmId), []);
    for (const host of f.hosts) assert.deepEqual(await filesUnder(f.vmFolder(host.id, vmId)), []);
    assert.deepEqual((await filesUnder(f.datastore.path)).filter((x) => x.includes(vmId)), [], 'no disk or seed left');
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.state, 'error');
    assert.equal(await f.db.em().count(Allocation, { vmId }), 0);
  });

  test(
    'a bad VM name is refused before placement, also when a valid hostname is given (no disk, no QEMU ever)',
    async () => {
      const vmId = `vm-badname2-${f.prefix.slice(1, 5)}`;
      try {
        const h = await f.provision({ name: 'also;bad`id`', vmId, hostId: 'qa', hostname: 'fine-host' });
        const r = await outcome(h);
        assert.equal(r.ok, false, 'refused');
        assert.match(r.message, /name/);
        // refused before step 1: no operation was even begun, so no disk was made and undone
        assert.equal(await f.db.em().count(Operation, { workflowId: h.workflowId }), 0);
        assert.deepEqual((await filesUnder(f.datastore.path)).filter((x) => x.includes(vmId)), [], 'no disk or seed ever made');
        assert.deepEqual(await f.qemuProcesses(vmId), []);
      } finally {
        await f.destroyEverywhere(vmId);
      }
    },
  );
});
