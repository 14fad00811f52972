// ferry's workflows on REAL libvirt (TCG) end to end, FERRY_DRIVER=libvirt hosts: the same test
// bodies as on the qemu driver (test/helpers/workflow-suite.ts: provision from the template,
// live migration while the guest dirties memory with its counter continuing on lv2 and back,
// cancel and a killed destination rolling back, the source host agent SIGKILLed mid pre-copy,
// bad names refused), each ending with the invariant checker comparing inventory with
// `virsh list --all` and the pools' volumes on every host. Plus what only libvirt has: a libvirtd
// restarted mid-migration. Skips only when libvirt cannot be installed here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Host, Operation } from '../../db/entities.js';
import { ensureLibvirt } from '../../workers/lab/libvirt-lab.js';
import { guardRouteInstalled } from '../../workers/lab/netns.js';
import { outcome, waitFor } from '../helpers/ferry.js';
import { assertConsistent } from '../helpers/driver-ferry.js';
import { startLibvirtFerry, type LibvirtFerry } from '../helpers/libvirt-ferry.js';
import { liveMigrationSuite } from '../helpers/workflow-suite.js';

const avail = await ensureLibvirt();
const skip: string | false = avail.ok ? false : `libvirt cannot be installed here: ${avail.reason}`;
if (skip) console.log(`# SKIP libvirt workflow tests: ${skip}`);

liveMigrationSuite<LibvirtFerry>({
  title: 'ferry workflows on real libvirt (TCG)',
  skip,
  hosts: { a: 'lv1', b: 'lv2', agentHost: 'lv3' },
  // its own lab (prefix, a part of the libvirt subnet, root): node runs two test files at a time
  start: () => startLibvirtFerry({ hosts: 3, processAgents: ['lv3'], lab: { prefix: 'ferrylvw', subnet: '10.252.0.128/26', root: '/srv/ferrylvw' } }),
  async checkRegisteredHost(f, hostId, agent) {
    const row = await f.db.em().findOneOrFail(Host, { id: hostId });
    assert.equal(row.migrationAddress, f.labHost(hostId).address, 'the address of the p2p migration URI');
    assert.match(agent.output(), new RegExp(`host uuid ${f.labHost(hostId).hostUuid}`));
  },
  extra({ ferry, provisionRunning, assertOnlyOn, inPrecopy, operationOf, migrate, cleanup, SLOW }) {
    test('the lab runs behind its guard route: unreachable <subnet> in the root namespace', async () => {
      assert.equal(await guardRouteInstalled(ferry().lab.subnet), true);
    });

    for (const side of ['source', 'destination'] as const) {
      test(`the ${side} libvirtd restarted mid pre-copy: the migration ends, the VM runs on exactly one host, inventory agrees`, async () => {
        const f = ferry();
        const { vmId } = await provisionRunning('lv1');
        try {
          const h = await migrate({ vmId, targetHostId: 'lv2', ...SLOW });
          await inPrecopy(h);
          await f.lab.restartDaemon(side === 'source' ? 'lv1' : 'lv2');
          const r = await outcome(h);
          const op = await operationOf(h);
          // libvirt ends the job when a daemon goes away under it: the workflow rolls back (or, had
          // it finished first, completed): either way one running copy, where inventory says
          const at = r.ok ? 'lv2' : 'lv1';
          assert.equal(op.state, r.ok ? 'completed' : 'rolled-back', op.error ?? '');
          await waitFor('one copy left', async () => (await f.copies(vmId)).length === 1, 30_000);
          await assertOnlyOn(vmId, at, [at === 'lv1' ? 'lv2' : 'lv1']);
          const before = await f.heartbeat(at, vmId);
          await waitFor(`the guest still counting on ${at}`, async () => (await f.heartbeat(at, vmId)) > before);
          await assertConsistent(f);
          const row = await f.db.em().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
          console.log(`# ${side} libvirtd restarted mid-migration: ${row.state}${row.error ? `: ${row.error}` : ''}`);
        } finally {
          await cleanup(vmId);
        }
      });
    }
  },
});
