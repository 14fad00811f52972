// LiveMigrate: an operator's cancel and the convergence controller's abort in the same window.
// The rule (workflows/README.md): a cancel received before the workflow acts on the controller's
// abort wins — the migration ends `cancelled` and the controller's verdict is kept as a decision.
// The window is pinned here, not left to timing: the source host's driver sends the cancel (and
// waits until Temporal has it) from inside the watchPrecopy activity whose result makes the
// controller abort (the round limit reached on a VM that cannot converge). Without the rule the
// workflow acts on that result first and ends `rolled-back`, every time.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Operation, Vm } from '../../db/entities.js';
import type { HypervisorDriver } from '../../drivers/hypervisor.js';
import { migrationProgressQuery } from '../../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, type TestFerry } from '../helpers/ferry.js';

const MiB = 1024 ** 2;
const MAX_ROUNDS = 3;
const RUNS = 4;

describe('LiveMigrate: cancel vs the controller abort', () => {
  let f: TestFerry;
  /** vmId -> sends the operator's cancel; armed per migration, fired once */
  const armed = new Map<string, () => Promise<void>>();
  const fired = new Set<string>();

  before(async () => {
    f = await startTestFerry({
      cluster: smallCluster({ hosts: 2, memoryMiB: 256 * 1024 }),
      timeScale: 100,
      wrapDriver: (d) =>
        new Proxy(d, {
          get(target, prop) {
            if (prop === 'migrationStatus') {
              return async (vmId: string) => {
                const st = await target.migrationStatus(vmId);
                const send = armed.get(vmId);
                // this poll's round has reached the limit: the watch window it belongs to returns a
                // round >= it, and the controller aborts on that result
                if (send && st.status === 'active' && st.round >= MAX_ROUNDS) {
                  armed.delete(vmId);
                  await send();
                  fired.add(vmId);
                }
                return st;
              };
            }
            const v = Reflect.get(target, prop, target) as unknown;
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        }) as HypervisorDriver,
    });
  });
  after(async () => f?.close());

  test(`a cancel received while the aborting watch runs wins: cancelled, ${RUNS} times out of ${RUNS}`, async () => {
    for (let i = 0; i < RUNS; i++) {
      const name = `race-${i}`;
      const vmId = `vm-${name}`;
      // 4 GiB/s of dirtying over a 1 GiB writable set: never converges, every downtime ceiling too low
      await f.provisionRunning({ name, vmId, hostId: 'h1', memoryMiB: 1024, workload: { dirtyRateBytesPerSec: 4000 * MiB, writableWorkingSetBytes: 1024 * MiB } });
      const h = await f.migrate({ vmId, targetHostId: 'h2', policy: 'converge-or-abort', overrides: { maxRounds: MAX_ROUNDS } });
      armed.set(vmId, () => h.signal('cancel', { reason: `operator cancel ${i}` }));
      const r = await outcome(h);
      assert.equal(r.ok, false);
      assert.ok(fired.has(vmId), 'the cancel was sent inside the aborting watch');
      const op = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
      assert.equal(op.state, 'cancelled', `run ${i}: ${op.error}`);
      assert.match(op.error!, new RegExp(`operator cancel ${i}`));
      const decisions = (await h.query(migrationProgressQuery)).decisions;
      const superseded = decisions.find((d) => d.action === 'superseded-by-cancel');
      assert.ok(superseded, `run ${i}: the controller's verdict is recorded (${JSON.stringify(decisions.map((d) => d.action))})`);
      assert.match(superseded.reason, /convergence controller aborted: round \d+ reached the limit of 3 rounds/);
      assert.ok(decisions.some((d) => d.action === 'abort'), 'the abort decision itself is in the log');
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.deepEqual([vm.hostId, vm.state], ['h1', 'running'], 'rolled back to A');
      assert.deepEqual(f.sim.runningHostsOf(vmId), ['h1']);
    }
  });
});
