// ferry's workflows on REAL libvirt (TCG) end to end, FERRY_DRIVER=libvirt hosts: provisionVm makes
// a linked clone of the template on the shared pool and boots it on lv1; liveMigrate moves it to
// lv2 while the guest dirties memory (its counter continues on lv2); a cancel during pre-copy
// rolls back with the VM running on lv1 and nothing on lv2. After each test the invariant: every
// VM defined on exactly one libvirt host (`virsh list --all` on every host) and that host is the
// inventory's. Skips only when libvirt cannot be installed here.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { Host, Operation, Vm } from '../../db/entities.js';
import { migrationProgressQuery, type MigrationProgress, type MigrationResult, type ProvisionResult } from '../../workflows/definitions.js';
import { ensureLibvirt } from '../../workers/lab/libvirt-lab.js';
import { outcome, stopOwnTemporal, waitFor } from '../helpers/ferry.js';
import { startLibvirtFerry, type LibvirtFerry } from '../helpers/libvirt-ferry.js';

const MiB = 1024 ** 2;
const avail = await ensureLibvirt();
const skip: string | false = avail.ok ? false : `libvirt cannot be installed here: ${avail.reason}`;
if (skip) console.log(`# SKIP libvirt workflow tests: ${skip}`);

describe('ferry workflows on real libvirt (TCG)', { skip }, () => {
  let f: LibvirtFerry;
  let n = 0;

  before(async () => {
    // its own lab (prefix, half of the libvirt subnet, root): node runs two test files at a time
    f = await startLibvirtFerry({ hosts: 3, processAgents: ['lv3'], lab: { prefix: 'ferrylvw', subnet: '10.252.0.128/25', root: '/srv/ferrylvw' } });
  });

  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  async function provisionRunning(hostId: string): Promise<{ vmId: string; result: ProvisionResult }> {
    const name = `lvm-${++n}-${f.prefix.slice(1, 5)}`;
    const vmId = `vm-${name}`;
    const r = await outcome<ProvisionResult>(await f.provision({ name, vmId, hostId, memoryMiB: 64 }));
    assert.ok(r.ok, !r.ok ? r.message : '');
    assert.equal(r.value.hostId, hostId);
    return { vmId, result: r.value };
  }

  /** The invariant: defined on exactly `hostId` among all libvirt hosts, running, inventory agrees. */
  async function assertOnlyOn(vmId: string, hostId: string) {
    const uuid = f.driver(hostId).domainUuid(vmId);
    const doms = await f.domains();
    const holders = Object.entries(doms).filter(([, u]) => u.includes(uuid)).map(([h]) => h);
    assert.deepEqual(holders, [hostId], `${vmId} defined on exactly ${hostId}: ${JSON.stringify(doms)}`);
    assert.equal((await f.driver(hostId).vmStatus(vmId))?.state, 'running');
    const vm = await f.db.em().fork().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, hostId);
    assert.equal(vm.state, 'running');
  }

  test('provision from the template on lv1, live-migrate to lv2 while the guest dirties memory', async () => {
    const { vmId, result } = await provisionRunning('lv1');
    try {
      const disk = await f.driver('lv1').diskInfo(result.diskPaths[0]!);
      assert.equal(disk?.backingPath, f.guest.qcow2, 'linked clone of the template image');
      await assertOnlyOn(vmId, 'lv1');
      const first = await f.heartbeat('lv1', vmId);
      const beating = await waitFor('the guest counting on lv1', async () => {
        const v = await f.heartbeat('lv1', vmId);
        return v > first + 5 && v;
      });
      const h = await f.migrate({ vmId, targetHostId: 'lv2', overrides: { maxBandwidthBytesPerSec: 1024 * MiB } });
      const r = await outcome<MigrationResult>(h);
      assert.ok(r.ok, !r.ok ? r.message : '');
      assert.equal(r.value.state, 'completed');
      const onB = await f.heartbeat('lv2', vmId);
      assert.ok(onB >= beating, `counter on lv2 (${onB}) continues from lv1's (${beating})`);
      await waitFor('the counter advancing on lv2', async () => (await f.heartbeat('lv2', vmId)) > onB);
      await assertOnlyOn(vmId, 'lv2');
      const op = await f.db.em().fork().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
      assert.equal(op.state, 'completed');
      const d = op.details as { downtimeMs: number; rounds: number; transferredBytes: number };
      assert.ok(Number.isInteger(d.downtimeMs) && d.downtimeMs > 0, `downtime ${d.downtimeMs} ms from libvirt's completed job`);
      assert.ok(d.rounds >= 2, `rounds ${d.rounds}`);
      console.log(`# libvirt workflow live migration: downtime ${d.downtimeMs} ms, ${d.rounds} rounds, ${(d.transferredBytes / MiB).toFixed(1)} MiB`);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('cancel during pre-copy: running on lv1, nothing on lv2', async () => {
    const { vmId } = await provisionRunning('lv1');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'lv2', policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 2 * MiB, maxRounds: 1000 } });
      await waitFor('pre-copy under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.stage === 'pre-copy' && p.progress.transferredBytes > 0 && p;
      });
      await h.signal('cancel', { reason: 'operator changed their mind' });
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await f.db.em().fork().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
      assert.equal(op.state, 'cancelled');
      await waitFor('nothing on lv2', async () => (await f.domains()).lv2!.length === 0, 15_000);
      await assertOnlyOn(vmId, 'lv1');
      const before = await f.heartbeat('lv1', vmId);
      await waitFor('still counting on lv1', async () => (await f.heartbeat('lv1', vmId)) > before);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('the destination QEMU killed during pre-copy: the migration fails, rolled back to lv1, nothing on lv2', async () => {
    const { vmId } = await provisionRunning('lv1');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'lv2', policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 2 * MiB, maxRounds: 1000 } });
      await waitFor('pre-copy under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.stage === 'pre-copy' && p.progress.transferredBytes > 0 && p;
      });
      // the incoming QEMU's pid file, as libvirtd on lv2 wrote it (domain name = vmId)
      const pid = Number((await readFile(`${f.labHost('lv2').dir}/run/qemu/${vmId}.pid`, 'utf8')).trim());
      assert.ok(pid > 0);
      process.kill(pid, 'SIGKILL');
      const r = await outcome(h);
      assert.equal(r.ok, false);
      const op = await f.db.em().fork().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
      assert.equal(op.state, 'rolled-back', op.error ?? '');
      await waitFor('nothing on lv2', async () => (await f.domains()).lv2!.length === 0, 15_000);
      await assertOnlyOn(vmId, 'lv1');
      const before = await f.heartbeat('lv1', vmId);
      await waitFor('still counting on lv1', async () => (await f.heartbeat('lv1', vmId)) > before);
      console.log(`# destination QEMU killed: ${op.error}`);
    } finally {
      await f.destroyEverywhere(vmId);
    }
  });

  test('the source host agent (workers/libvirt-agent.ts) SIGKILLed during pre-copy and restarted: the migration completes, one domain, running on lv2', async () => {
    // the agent registers its host from what libvirt reports: undo a stale row to see it do so
    await f.db.em().fork().nativeUpdate(Host, { id: 'lv3' }, { cpus: 1, migrationAddress: 'stale' });
    let agent = await f.spawnAgent('lv3');
    const row = await f.db.em().fork().findOneOrFail(Host, { id: 'lv3' });
    assert.equal(row.driver, 'libvirt');
    assert.equal(row.cpus, 4, 'FERRY_LIBVIRT_CPUS reached the Host row');
    assert.equal(row.migrationAddress, f.labHost('lv3').address, 'the address of the p2p migration URI');
    assert.match(agent.output(), new RegExp(`host uuid ${f.labHost('lv3').hostUuid}`));
    const { vmId } = await provisionRunning('lv3');
    try {
      const h = await f.migrate({ vmId, targetHostId: 'lv2', policy: 'converge-or-abort', overrides: { maxBandwidthBytesPerSec: 2 * MiB, maxRounds: 1000 } });
      await waitFor('pre-copy under way', async () => {
        const p: MigrationProgress = await h.query(migrationProgressQuery);
        assert.equal(p.state, 'running', p.error);
        return p.stage === 'pre-copy' && p.progress.transferredBytes > 0 && p;
      });
      await agent.kill('SIGKILL');
      // libvirtd drives the migration and the detached virsh survives its agent: speed it up
      // while no agent watches so it completes unattended (destination held paused by --suspend)
      const uri = f.labHost('lv3').uri;
      const uuid = f.driver('lv3').domainUuid(vmId);
      await execa('virsh', ['-c', uri, 'migrate-setspeed', uuid, '1024']);
      await waitFor('completed with no agent', async () => (await f.driver('lv3').vmStatus(vmId))?.state === 'postmigrate', 60_000);
      assert.equal((await f.driver('lv2').vmStatus(vmId))?.state, 'paused', 'the destination waits for activation');
      agent = await f.spawnAgent('lv3');
      const r = await outcome<MigrationResult>(h);
      assert.ok(r.ok, !r.ok ? r.message : '');
      await assertOnlyOn(vmId, 'lv2');
      const onB = await f.heartbeat('lv2', vmId);
      await waitFor('counting on lv2', async () => (await f.heartbeat('lv2', vmId)) > onB);
      const op = await f.db.em().fork().findOneOrFail(Operation, { workflowId: h.workflowId }, { orderBy: { startedAt: 'desc' } });
      assert.equal(op.state, 'completed');
    } finally {
      await agent.kill('SIGKILL');
      await f.destroyEverywhere(vmId);
    }
  });
});
