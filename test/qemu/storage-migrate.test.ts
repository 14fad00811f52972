// Live storage migration on real QEMU (TCG): the running guest's disk moves from one datastore of
// host qa to the other (blockdev-mirror, ready, block-job-complete pivot); the guest's counter is
// sampled all along and never stalls much longer than the pivot; the disk content on the new
// datastore equals a reference (template + a pattern written through QEMU before the move); the
// old files are gone. Cancel before the pivot leaves the VM on the old datastore, no partial copy.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import type { WorkflowHandle } from '@temporalio/client';
import { Vm } from '../../db/entities.js';
import { controlQueue, migrationProgressQuery, workflowIds, type MigrationProgress, type MigrationResult, type ProvisionResult, type StorageMigrateInput } from '../../workflows/definitions.js';
import { outcome, stopOwnTemporal, waitFor } from '../helpers/ferry.js';
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

const MiB = 1024 ** 2;
/** pivot pause + TCG scheduling and HMP polling on 2 busy cores */
const STALL_ALLOWANCE_MS = 1000;

describe('live storage migration on real QEMU', { skip: qemuSkipReason }, () => {
  let f: QemuFerry;
  let n = 0;
  before(async () => (f = await startQemuFerry({ hosts: ['qa'], storage: 'shared+local', basePort: 48400 })));
  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  async function provision(): Promise<{ vmId: string; r: ProvisionResult; other: string }> {
    const name = `qsm-${++n}-${f.prefix.slice(1, 5)}`;
    const vmId = `vm-${name}`;
    const out = await outcome<ProvisionResult>(await f.provision({ name, vmId, hostId: 'qa', memoryMiB: 64 }));
    assert.ok(out.ok, !out.ok ? out.message : '');
    const other = f.datastoresOf('qa').find((d) => d.id !== out.value.datastoreId)!;
    return { vmId, r: out.value, other: other.id };
  }

  const start = (input: StorageMigrateInput, run = 1): Promise<WorkflowHandle> =>
    f.client.workflow.start('storageMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${f.prefix}-${n}-${run}`, args: [input] });

  async function reference(vmId: string, len: string): Promise<string> {
    await f.driver('qa').hmp(vmId, `qemu-io disk0 "write -P 0xcd 32M ${len}"`);
    await f.driver('qa').hmp(vmId, 'qemu-io disk0 "flush"');
    const ref = path.join(f.root, `ref-${vmId}.qcow2`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', f.guest.qcow2, '-F', 'qcow2', ref, String(1024 * MiB)]);
    await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P 0xcd 32M ${len}`, ref]);
    return ref;
  }
  const dsPath = (id: string) => f.datastoresOf('qa').find((d) => d.id === id)!.path;
  const filesOf = async (id: string, vmId: string) => (await fs.readdir(dsPath(id)).catch(() => [] as string[])).filter((x) => x.includes(vmId));

  test('completes while the guest runs: counter never stalls beyond the pivot, content identical, old files gone', async () => {
    const { vmId, r, other } = await provision();
    try {
      const ref = await reference(vmId, '16M');
      const h = await start({ vmId, targetDatastoreId: other });
      let last = await f.heartbeat('qa', vmId);
      let lastChange = Date.now();
      let worst = 0;
      let done = false;
      const result = outcome<MigrationResult>(h).finally(() => (done = true));
      while (!done) {
        const hb = await f.heartbeat('qa', vmId);
        const now = Date.now();
        if (hb !== last) {
          worst = Math.max(worst, now - lastChange);
          last = hb;
          lastChange = now;
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      const out = await result;
      assert.ok(out.ok, !out.ok ? out.message : '');
      const pivot = out.value.downtimeMs ?? 0;
      assert.ok(worst < pivot + STALL_ALLOWANCE_MS, `worst counter stall ${worst} ms, pivot ${pivot} ms`);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.datastoreId, other);
      assert.ok(vm.diskPaths.every((p) => path.dirname(p) === dsPath(other)), vm.diskPaths.join(', '));
      assert.equal(path.dirname(vm.seedPath ?? ''), dsPath(other));
      const info = await f.driver('qa').qmp<Array<{ device: string; inserted?: { image: { filename: string } } }>>(vmId, 'query-block');
      assert.equal(info.find((b) => b.device === 'disk0')?.inserted?.image.filename, vm.diskPaths[0], 'QEMU runs on the new file');
      const cmp = await execa('qemu-img', ['compare', '-U', vm.diskPaths[0]!, ref], { reject: false });
      assert.equal(cmp.exitCode, 0, cmp.stdout + cmp.stderr);
      for (const p of r.diskPaths) await assert.rejects(fs.access(p), `old ${p} deleted`);
      assert.deepEqual(await filesOf(r.datastoreId, vmId), []);
      const before = await f.heartbeat('qa', vmId);
      await waitFor('the guest still counting', async () => (await f.heartbeat('qa', vmId)) > before);
      // a restart of the VM uses the new paths (spec.json follows the pivot)
      assert.deepEqual((await f.driver('qa').vmStatus(vmId))!.spec.disks, vm.diskPaths);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('a second storage migration of the same VM: there and back again, guest data intact, counting', async () => {
    const { vmId, r, other } = await provision();
    try {
      const ref = await reference(vmId, '16M');
      const there = await outcome<MigrationResult>(await start({ vmId, targetDatastoreId: other }, 1));
      assert.ok(there.ok, !there.ok ? there.message : '');
      const mid = await f.db.em().fork().findOneOrFail(Vm, { id: vmId });
      assert.equal(mid.datastoreId, other);
      // the way back: the VM now runs on the first mirror's target nodes
      const back = await outcome<MigrationResult>(await start({ vmId, targetDatastoreId: r.datastoreId }, 2));
      assert.ok(back.ok, !back.ok ? back.message : '');
      const vm = await f.db.em().fork().findOneOrFail(Vm, { id: vmId });
      assert.deepEqual([vm.datastoreId, vm.state], [r.datastoreId, 'running']);
      assert.ok(vm.diskPaths.every((p) => path.dirname(p) === dsPath(r.datastoreId)), vm.diskPaths.join(', '));
      assert.equal(path.dirname(vm.seedPath ?? ''), dsPath(r.datastoreId));
      const info = await f.driver('qa').qmp<Array<{ device: string; inserted?: { image: { filename: string } } }>>(vmId, 'query-block');
      assert.equal(info.find((b) => b.device === 'disk0')?.inserted?.image.filename, vm.diskPaths[0], 'QEMU runs on the file it came back to');
      const cmp = await execa('qemu-img', ['compare', '-U', vm.diskPaths[0]!, ref], { reject: false });
      assert.equal(cmp.exitCode, 0, cmp.stdout + cmp.stderr);
      assert.deepEqual(await filesOf(other, vmId), [], 'nothing left on the intermediate datastore');
      assert.deepEqual(await f.driver('qa').qmp(vmId, 'query-block-jobs'), []);
      const hb = await f.heartbeat('qa', vmId);
      await waitFor('the guest still counting', async () => (await f.heartbeat('qa', vmId)) > hb);
      // and once more (a third mirror on the same QEMU): node and job names never collide
      const again = await outcome<MigrationResult>(await start({ vmId, targetDatastoreId: other }, 3));
      assert.ok(again.ok, !again.ok ? again.message : '');
      const cmp2 = await execa('qemu-img', ['compare', '-U', (await f.db.em().fork().findOneOrFail(Vm, { id: vmId })).diskPaths[0]!, ref], { reject: false });
      assert.equal(cmp2.exitCode, 0, cmp2.stdout + cmp2.stderr);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('a start interrupted after it recorded its mirror (jobs never created, a stray copy) is cleaned up and run afresh', async () => {
    const { vmId, r, other } = await provision();
    try {
      const ref = await reference(vmId, '8M');
      // the state a start leaves when it dies (or QEMU refuses a command) between writing its
      // record and starting the jobs: a record naming jobs QEMU does not have, a file on the target
      const stray = path.join(dsPath(other), path.basename(r.diskPaths[0]!));
      await fs.mkdir(dsPath(other), { recursive: true });
      await fs.writeFile(stray, 'not a qcow2');
      const rtFile = path.join(f.vmFolder('qa', vmId), 'runtime.json');
      const rt = JSON.parse(await fs.readFile(rtFile, 'utf8'));
      rt.mirror = { kind: 'datastore', datastoreId: other, jobs: [{ job: 'sm1-disk0', device: 'disk0', node: 'sm1-disk0', targetPath: stray, sourcePath: r.diskPaths[0] }] };
      await fs.writeFile(rtFile, JSON.stringify(rt));
      const out = await outcome<MigrationResult>(await start({ vmId, targetDatastoreId: other }));
      assert.ok(out.ok, !out.ok ? out.message : '');
      const vm = await f.db.em().fork().findOneOrFail(Vm, { id: vmId });
      assert.equal(vm.datastoreId, other);
      const cmp = await execa('qemu-img', ['compare', '-U', vm.diskPaths[0]!, ref], { reject: false });
      assert.equal(cmp.exitCode, 0, cmp.stdout + cmp.stderr);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('cancel before the pivot: on the old datastore, no partial copy, no block job', async () => {
    const { vmId, r, other } = await provision();
    try {
      const ref = await reference(vmId, '24M');
      const h = await start({ vmId, targetDatastoreId: other, maxBandwidthBytesPerSec: 4 * MiB });
      await waitFor('mirror under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.disks !== undefined && p.disks.copiedBytes > 0 && !p.disks.inSync && p;
      });
      assert.ok((await filesOf(other, vmId)).length > 0, 'the partial copy exists during the mirror');
      await h.signal('cancel', { reason: 'changed my mind' });
      const out = await outcome(h);
      assert.ok(!out.ok);
      const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
      assert.deepEqual([vm.datastoreId, vm.state], [r.datastoreId, 'running']);
      assert.deepEqual(vm.diskPaths, r.diskPaths);
      assert.deepEqual(await filesOf(other, vmId), [], 'no partial copy');
      assert.deepEqual(await f.driver('qa').qmp(vmId, 'query-block-jobs'), []);
      const cmp = await execa('qemu-img', ['compare', '-U', r.diskPaths[0]!, ref], { reject: false });
      assert.equal(cmp.exitCode, 0, cmp.stdout + cmp.stderr);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });
});
