// Chaos: SIGKILL of the worker process (control worker + every host agent) in each stage of a
// live migration, then a restart (ARCHITECTURE.md section 6: the operation finishes or
// compensates; no VM lost, doubled or left paused). Real dev server, simulator driver, one
// migration per stage, run in sequence on one test ferry whose workers live in a child process.
// Each stage is held long enough to kill in it, with no activity attempt in flight on the killed
// process (else its start-to-close timeout would dominate the run):
//   pre-migration  the worker process runs without A's agent: A's status check waits for it
//   reservation    B is unreachable (retryable fault): startDestinationContainer waits for a retry
//   pre-copy       approveSwitchover holds the rounds until the operator's switchover update
//   stop-and-copy  a slow A-B link: the source sits paused for ~4 s while the rest goes over
//   commitment     the worker process runs without B's agent: B's image check waits for it
//   activation     resuming on B fails (activation retries everything, forever)
// The fault is cleared, or the missing agent brought back, by the restart. A background sampler
// watches "the guest runs on at most one host" every 20 ms for the whole test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowHandle } from '@temporalio/client';
import { optionalTsToDate } from '@temporalio/common/lib/time.js';
import { Allocation, Host, Vm } from '../../db/entities.js';
import type { ClusterSpec } from '../../workers/cluster-spec.js';
import {
  migrationProgressQuery,
  switchoverUpdate,
  type MigrationProgress,
  type MigrationResult,
} from '../../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, waitFor, type TestFerry, type WorkerProcess } from '../helpers/ferry.js';
import { assertNoViolations, RunningSampler } from '../helpers/invariants.js';

/** How long a killed migration may take to end after the restart before the test calls it stuck. */
const SETTLE_LIMIT_MS = 240_000;

/** One seeded, running VM per scenario (all on h1), so scenarios do not share state. */
const VMS = {
  'pre-migration': { id: 'vm-k0', memoryMiB: 1024, dirtyRateMiBps: 50, writableWorkingSetMiB: 128 },
  reservation: { id: 'vm-k1', memoryMiB: 1024, dirtyRateMiBps: 50, writableWorkingSetMiB: 128 },
  'pre-copy': { id: 'vm-k2', memoryMiB: 2048, dirtyRateMiBps: 100, writableWorkingSetMiB: 256 },
  // dirties faster than the slow h1-h3 link carries: ~1 GiB left for a 4 s stop-and-copy
  'stop-and-copy': { id: 'vm-k3', memoryMiB: 1024, dirtyRateMiBps: 1024, writableWorkingSetMiB: 1024 },
  commitment: { id: 'vm-k4', memoryMiB: 1024, dirtyRateMiBps: 50, writableWorkingSetMiB: 128 },
  activation: { id: 'vm-k5', memoryMiB: 1024, dirtyRateMiBps: 50, writableWorkingSetMiB: 128 },
  'pre-copy-unattended': { id: 'vm-k6', memoryMiB: 2048, dirtyRateMiBps: 50, writableWorkingSetMiB: 128 },
} as const;
const ALL_VMS = Object.values(VMS).map((v) => v.id);

function chaosCluster(): ClusterSpec {
  const base = smallCluster({ hosts: 3, memoryMiB: 64 * 1024 });
  return {
    ...base,
    links: [{ a: 'h1', b: 'h3', bandwidthMiBps: 256 }],
    vms: Object.values(VMS).map((v, i) => ({
      id: v.id,
      name: v.id,
      hostId: 'h1',
      datastoreId: 'shared',
      templateId: 'tpl-small',
      networkId: 'net1',
      ip: `10.0.0.${20 + i}`,
      cpus: 1,
      memoryMiB: v.memoryMiB,
      diskGiB: 2,
      cpuFeatures: [],
      dirtyRateMiBps: v.dirtyRateMiBps,
      writableWorkingSetMiB: v.writableWorkingSetMiB,
    })),
  };
}


async function progressOf(h: WorkflowHandle): Promise<MigrationProgress> {
  return h.query(migrationProgressQuery);
}

/**
 * Waits until the workflow's pending activity `activityType` has failed and waits for a retry at
 * least `minWaitMs` away: no attempt runs, so the killed worker holds none (no start-to-close
 * timeout to sit out) and the retry goes to the restarted worker.
 */
async function waitForRetryBackoff(h: WorkflowHandle, activityType: string, minWaitMs = 300): Promise<number> {
  return waitFor(
    `${activityType} waiting for its next attempt`,
    async () => {
      const d = await h.describe();
      for (const a of d.raw.pendingActivities ?? []) {
        const next = optionalTsToDate(a.nextAttemptScheduleTime);
        // state 1 = PENDING_ACTIVITY_STATE_SCHEDULED: waiting for a retry, on no worker
        if (a.activityType?.name === activityType && a.state === 1 && next && next.getTime() - Date.now() >= minWaitMs) return a.attempt ?? 1;
      }
      return undefined;
    },
    60_000,
    20,
  );
}

type Outcome = 'completed' | 'rolled-back';

describe('LiveMigrate survives SIGKILL of its workers in every stage', () => {
  let f: TestFerry;
  let w: WorkerProcess;
  before(async () => {
    f = await startTestFerry({ cluster: chaosCluster(), timeScale: 1, workers: 'none' });
    w = await f.spawnWorkerProcess();
  });
  after(async () => {
    await w?.kill('SIGTERM').catch(() => undefined);
    await f?.close();
  });

  /**
   * Replaces the worker process (SIGKILL), optionally without one host's agent: the process
   * starts an agent for every host whose inventory row names its driver, so the row is
   * switched away for the moment of the start and switched back right after.
   */
  async function restart(opts: { withoutAgentOf?: string } = {}): Promise<number> {
    const t0 = Date.now();
    if (w.child.exitCode === null) await w.kill('SIGKILL');
    const setDriver = async (driver: 'sim' | 'qemu') => {
      const em = f.db.em();
      const host = await em.findOneOrFail(Host, { id: opts.withoutAgentOf! });
      host.driver = driver;
      await em.flush();
    };
    if (opts.withoutAgentOf) await setDriver('qemu');
    try {
      w = await f.spawnWorkerProcess();
    } finally {
      if (opts.withoutAgentOf) await setDriver('sim');
    }
    return Date.now() - t0;
  }

  /** Waits until `activityType` is scheduled and handed to no worker (no agent polls its queue). */
  async function waitForUnclaimed(h: WorkflowHandle, activityType: string) {
    await waitFor(`${activityType} waiting for an agent`, async () => {
      const d = await h.describe();
      // state 1 = PENDING_ACTIVITY_STATE_SCHEDULED
      return (d.raw.pendingActivities ?? []).some((a) => a.activityType?.name === activityType && a.state === 1);
    });
  }

  /** The contract after the migration ended: exactly one host runs the guest, inventory agrees, nothing leaks. */
  async function assertSettled(t: { diagnostic(msg: string): void }, label: string, h: WorkflowHandle, vmId: string, target: string, allowed: Outcome[], killedAt: number) {
    // liveness bound (not a speed check): a migration that never ends is the failure to report
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const worker = w.child.exitCode === null ? `worker process ${w.child.pid} alive` : `worker process exited ${w.child.exitCode}`;
        void progressOf(h)
          .then((q) => `stage ${q.stage}, state ${q.state}`, (e: Error) => e.message)
          .then((where) => reject(new Error(`${label}: the migration did not end within ${SETTLE_LIMIT_MS} ms of the kill (${where}; ${worker}; its last output: ${w.output().slice(-2000)})`)));
      }, SETTLE_LIMIT_MS);
    });
    const r = await Promise.race([outcome<MigrationResult>(h), stuck]).finally(() => clearTimeout(timer));
    const p = await progressOf(h);
    const state = r.ok ? r.value.state : p.state;
    t.diagnostic(`${label}: ${state} ${Date.now() - killedAt} ms after the kill${r.ok ? '' : ` (${r.message})`}`);
    assert.ok((allowed as string[]).includes(state), `ended ${state}${r.ok ? '' : `: ${r.message}`}; allowed ${allowed.join(' or ')}`);
    const home = state === 'completed' ? target : 'h1';
    assert.deepEqual(f.sim.runningHostsOf(vmId), [home], 'runs on exactly one host');
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, home, 'inventory says where it runs');
    assert.equal(vm.state, 'running');
    const copies = f.sim.snapshot().vms.filter((v) => v.vmId === vmId);
    assert.deepEqual(copies.map((c) => `${c.hostId}:${c.state}`), [`${home}:running`], 'no other copy, none paused');
    const allocs = await f.db.em().find(Allocation, { vmId });
    assert.deepEqual(allocs.map((a) => `${a.hostId}:${a.kind}`), [`${home}:vm`], 'one allocation on its host, no reservation left');
  }

  /** Runs `body` with the double-run sampler going, then checks the sampler and every invariant. */
  async function chaos(body: () => Promise<void>) {
    const sampler = new RunningSampler(f.sim, ALL_VMS, 20).start();
    try {
      await body();
      sampler.assertNeverDoubled();
      await assertNoViolations(f);
    } finally {
      sampler.stop();
      f.sim.clearFaults();
    }
  }

  test('SIGKILL while the source check waits for the source agent (overlapping reservation): ends with the guest on one host', async (t) => {
    const vmId = VMS['pre-migration'].id;
    await chaos(async () => {
      await restart({ withoutAgentOf: 'h1' });
      const h = await f.migrate({ vmId, targetHostId: 'h2' });
      await waitForUnclaimed(h, 'vmStatus');
      // the stage-0 source check runs while stage 1 reserves B and starts its container
      // (patch 'source-check-overlaps-reservation'): it waits there for the absent agent
      assert.equal((await progressOf(h)).stage, 'reservation');
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      await restart();
      await assertSettled(t, 'pre-migration', h, vmId, 'h2', ['completed', 'rolled-back'], killedAt);
    });
  });

  test('SIGKILL in reservation (B unreachable, retrying): ends with the guest on one host', async (t) => {
    const vmId = VMS.reservation.id;
    await chaos(async () => {
      // retryable (UNREACHABLE): startDestinationContainer waits in its retry backoff
      f.sim.injectFault({ id: 'hold-b', kind: 'destination-crash', hostId: 'h2', vmId, stage: 1, count: -1 });
      const h = await f.migrate({ vmId, targetHostId: 'h2' });
      await waitForRetryBackoff(h, 'startDestinationContainer');
      assert.equal((await progressOf(h)).stage, 'reservation');
      assert.equal(await f.db.em().count(Allocation, { vmId, kind: 'reservation', hostId: 'h2' }), 1, 'B is reserved');
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).state, 'migrating');
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      f.sim.clearFaults({ id: 'hold-b' });
      await restart();
      await assertSettled(t, 'reservation', h, vmId, 'h2', ['completed', 'rolled-back'], killedAt);
    });
  });

  test('SIGKILL in pre-copy (held for approval): the source keeps running; approved after the restart, ends on one host', async (t) => {
    const vmId = VMS['pre-copy'].id;
    await chaos(async () => {
      const h = await f.migrate({ vmId, targetHostId: 'h2', overrides: { approveSwitchover: true } });
      await waitFor('a few pre-copy rounds', async () => {
        const p = await progressOf(h);
        return p.stage === 'pre-copy' && p.progress.round >= 2;
      });
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      assert.deepEqual(f.sim.runningHostsOf(vmId), ['h1'], 'the source keeps running while ferry is down');
      await restart();
      await h.executeUpdate(switchoverUpdate);
      await assertSettled(t, 'pre-copy', h, vmId, 'h2', ['completed', 'rolled-back'], killedAt);
    });
  });

  test('SIGKILL in pre-copy (switchover pre-approved): the hypervisor completes alone, the restart commits and activates', async (t) => {
    const vmId = VMS['pre-copy-unattended'].id;
    await chaos(async () => {
      const h = await f.migrate({ vmId, targetHostId: 'h2' });
      await waitFor('pre-copy under way', async () => {
        const p = await progressOf(h);
        return p.stage === 'pre-copy' && p.progress.transferredBytes > 0;
      });
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      await waitFor('the hypervisor finished the transfer on its own', () => f.sim.migrations(vmId).at(-1)?.stats.status === 'completed');
      assert.deepEqual(f.sim.runningHostsOf(vmId), [], 'transfer done: nothing resumed before the commit');
      await restart();
      await assertSettled(t, 'pre-copy (unattended)', h, vmId, 'h2', ['completed'], killedAt);
    });
  });

  test('SIGKILL in stop-and-copy (source paused, slow link): ends with the guest on one host', async (t) => {
    const vmId = VMS['stop-and-copy'].id;
    await chaos(async () => {
      const h = await f.migrate({ vmId, targetHostId: 'h3', overrides: { approveSwitchover: true } });
      await waitFor('a first pre-copy round', async () => (await progressOf(h)).progress.round >= 1);
      await h.executeUpdate(switchoverUpdate);
      await waitFor(
        'stop-and-copy with the source paused',
        async () => (await progressOf(h)).stage === 'stop-and-copy' && f.sim.snapshot().vms.some((v) => v.vmId === vmId && v.hostId === 'h1' && v.state === 'paused'),
        30_000,
        20,
      );
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      const copies = f.sim.snapshot().vms.filter((v) => v.vmId === vmId);
      assert.ok(copies.every((c) => c.state !== 'running'), `killed inside the downtime: ${copies.map((c) => `${c.hostId}:${c.state}`).join(' ')}`);
      await restart();
      await assertSettled(t, 'stop-and-copy', h, vmId, 'h3', ['completed', 'rolled-back'], killedAt);
    });
  });

  test('SIGKILL in commitment (waiting for the destination agent), after a SIGKILL in pre-copy: ends with the guest on one host', async (t) => {
    const vmId = VMS.commitment.id;
    await chaos(async () => {
      const h = await f.migrate({ vmId, targetHostId: 'h2', overrides: { approveSwitchover: true } });
      await waitFor('pre-copy rounds', async () => (await progressOf(h)).progress.round >= 1);
      // first kill (pre-copy); the next process lacks B's agent, so the migration stops at
      // commitment's first step (B confirms its image) with nothing in flight
      await w.kill('SIGKILL');
      await restart({ withoutAgentOf: 'h2' });
      await h.executeUpdate(switchoverUpdate);
      await waitForUnclaimed(h, 'confirmDestinationImage');
      assert.equal((await progressOf(h)).stage, 'commitment');
      assert.deepEqual(
        f.sim.snapshot().vms.filter((v) => v.vmId === vmId).map((v) => `${v.hostId}:${v.state}`),
        ['h1:postmigrate', 'h2:paused'],
        'the transfer is complete; the guest runs nowhere until the commit',
      );
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).hostId, 'h1', 'not committed yet');
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      await restart();
      await assertSettled(t, 'commitment', h, vmId, 'h2', ['completed', 'rolled-back'], killedAt);
    });
  });

  test('SIGKILL in activation (resume on B failing, retried): completes on B, never back on A', async (t) => {
    const vmId = VMS.activation.id;
    await chaos(async () => {
      f.sim.injectFault({ id: 'hold-act', kind: 'fail-stage', stage: 5, vmId, count: -1 });
      const h = await f.migrate({ vmId, targetHostId: 'h2' });
      await waitForRetryBackoff(h, 'activateOnTarget');
      assert.equal((await progressOf(h)).stage, 'activation');
      assert.equal((await f.db.em().findOneOrFail(Vm, { id: vmId })).hostId, 'h2', 'committed');
      const killedAt = Date.now();
      await w.kill('SIGKILL');
      f.sim.clearFaults({ id: 'hold-act' });
      await restart();
      await assertSettled(t, 'activation', h, vmId, 'h2', ['completed'], killedAt);
    });
  });
});
