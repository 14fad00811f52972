// The libvirt driver against REAL libvirt 9 + QEMU (TCG): two libvirtd "hosts" of the libvirt lab
// (workers/lab/libvirt-lab.ts: each in its own network, mount and UTS namespace, distinct host
// UUIDs, a shared pool and a local pool each; the guard route checked while it runs). Lifecycle,
// disks and seed as volumes, a live migration lv1 -> lv2 over p2p TCP between the namespaces while
// the guest dirties memory (its counter continues on lv2, the domain ends on exactly one daemon),
// live storage migration (blockcopy), live migration without shared storage (--copy-storage-all
// onto lv2's local pool: cancel removes the copies; the move carries disk content, seed and
// counter), a cancel during pre-copy (domjobabort) and a source libvirtd restarted mid pre-copy
// that leave it running on lv1 with nothing on lv2; last, the tear-down with a VM still running
// leaves no daemon, QEMU, namespace, route, pool or file. Skips only when libvirt cannot be
// installed here.
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { after, before, describe, test } from 'node:test';
import { DriverError, type VmSpec } from '../../domain/hypervisor.js';
import { createLibvirtDriver, type LibvirtDriver } from '../../drivers/libvirt/index.js';
import { buildGuest, readHeartbeat, type GuestImages } from '../../workers/lab/guest-images.js';
import { ensureLibvirt, startLibvirtLab, type LibvirtLab, type LibvirtLabHost } from '../../workers/lab/libvirt-lab.js';
import { guardRouteInstalled, labNamespacesPresent } from '../../workers/lab/netns.js';
import { alive, pidsMentioning, readPid } from '../../workers/lab/procs.js';
import { promises as fs } from 'node:fs';

const MiB = 1024 ** 2;
const avail = await ensureLibvirt();
const skip: string | false = avail.ok ? false : `libvirt cannot be installed here: ${avail.reason}`;
if (skip) console.log(`# SKIP libvirt tests: ${skip}`);

async function domainsOn(h: LibvirtLabHost): Promise<string[]> {
  const r = await execa('virsh', ['-q', '-c', h.uri, 'list', '--all', '--uuid']);
  return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

const waitFor = async <T>(what: string, f: () => Promise<T | false>, ms = 30_000): Promise<T> => {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe('libvirt driver on real libvirtd (TCG), two hosts in namespaces', { skip }, () => {
  let lab: LibvirtLab;
  let a: LibvirtDriver;
  let b: LibvirtDriver;
  let guest: GuestImages;
  let n = 0;

  const driverFor = (h: LibvirtLabHost) =>
    createLibvirtDriver({
      hostId: h.id,
      uri: h.uri,
      migrationUri: h.migrationUri,
      stateDir: `${h.dir}/ferry-state`,
      datastores: [{ id: 'lvshared', pool: h.sharedPool, shared: true }, { id: `local-${h.id}`, pool: h.localPool, shared: false }],
      networks: ['qnet'],
    });

  before(async () => {
    // its own lab (prefix, half of the libvirt subnet, root): node runs two test files at a time
    lab = await startLibvirtLab({ hosts: 2, prefix: 'ferrylvd', subnet: '10.252.0.0/25', root: '/srv/ferrylvd' });
    a = driverFor(lab.hosts[0]!);
    b = driverFor(lab.hosts[1]!);
    guest = await buildGuest({ kind: 'dirty', dirtyBytes: 16 * MiB });
  });

  after(async () => {
    await lab?.stop();
    if (lab) {
      assert.equal(await guardRouteInstalled(lab.subnet), false, 'guard route removed');
      assert.deepEqual(await labNamespacesPresent(lab.prefix), [], 'namespaces removed');
    }
  });

  /** A VM from the template on the shared pool with its seed, defined and started on `d`. */
  async function running(d: LibvirtDriver, datastoreId = 'lvshared'): Promise<VmSpec> {
    const vmId = `vm-lv${++n}`;
    const disk = await d.createDisk({ name: `${vmId}-root`, datastoreId, sizeBytes: 64 * MiB, source: { kind: 'template', imagePath: guest.qcow2, linked: true } });
    const seed = await d.writeSeed(vmId, datastoreId, { instanceId: vmId, hostname: vmId, sshAuthorizedKeys: [] });
    const spec: VmSpec = { vmId, name: vmId, cpus: 1, memoryBytes: 64 * MiB, disks: [disk.path], seedPath: seed.path, network: 'qnet', mac: '52:54:00:00:00:0' + n, cpuFeatures: [] };
    await d.defineVm(spec);
    assert.equal((await d.startVm(vmId)).state, 'running');
    return spec;
  }

  async function cleanup(spec: VmSpec): Promise<void> {
    await a.destroyVm(spec.vmId);
    await b.destroyVm(spec.vmId);
    for (const p of [...spec.disks, spec.seedPath!]) await a.deleteDisk(p);
  }

  const beat = (d: LibvirtDriver, vmId: string) => readHeartbeat((c) => d.hmp(vmId, c));

  test('the lab: guard route while it runs, distinct host UUIDs, pools reported as datastores', async () => {
    assert.equal(await guardRouteInstalled(lab.subnet), true, `unreachable ${lab.subnet} in the root namespace`);
    const [ua, ub] = [await a.hostUuid(), await b.hostUuid()];
    assert.equal(ua, lab.hosts[0]!.hostUuid);
    assert.notEqual(ua, ub);
    const info = await a.hostInfo();
    assert.equal(info.migrationAddress, lab.hosts[0]!.address);
    assert.deepEqual(info.datastores.map((d) => [d.id, d.path, d.shared]), [['lvshared', lab.sharedPath, true], ['local-lv1', lab.hosts[0]!.localPath, false]]);
    assert.ok(info.cpus >= 1 && info.memoryBytes > 0);
  });

  test('define / start / stop / undefine, idempotent, with the spec read back from libvirt', async () => {
    const spec = await running(a);
    try {
      const disk = await a.diskInfo(spec.disks[0]!);
      assert.equal(disk?.backingPath, guest.qcow2, 'linked clone of the template');
      assert.equal(disk?.datastoreId, 'lvshared');
      assert.equal((await a.defineVm(spec)).state, 'running', 'a retried define finds its domain');
      await assert.rejects(a.defineVm({ ...spec, cpus: 2 }), (e: unknown) => e instanceof DriverError && e.code === 'INVALID_STATE' && /different spec/.test(e.message));
      assert.equal((await a.startVm(spec.vmId)).state, 'running', 'starting a running VM is a no-op');
      const st = await a.vmStatus(spec.vmId);
      assert.deepEqual(st?.spec, spec);
      const h0 = await beat(a, spec.vmId);
      await waitFor('the guest counting', async () => (await beat(a, spec.vmId)) > h0);
      assert.deepEqual((await a.listVms()).map((v) => v.vmId), [spec.vmId]);
      assert.equal((await a.pauseVm(spec.vmId)).state, 'paused');
      assert.equal((await a.resumeVm(spec.vmId)).state, 'running');
      // the test guest ignores ACPI: forced after the timeout
      await assert.rejects(a.stopVm(spec.vmId, { timeoutMs: 300, force: false }), (e: unknown) => e instanceof DriverError && e.code === 'TIMEOUT');
      assert.equal((await a.stopVm(spec.vmId, { timeoutMs: 300, force: true })).state, 'stopped');
      assert.equal((await a.startVm(spec.vmId)).state, 'running');
      await a.destroyVm(spec.vmId);
      assert.equal(await a.vmStatus(spec.vmId), null);
      await a.destroyVm(spec.vmId); // idempotent
      assert.deepEqual(await domainsOn(lab.hosts[0]!), []);
      assert.ok(await a.diskInfo(spec.disks[0]!), 'destroy keeps disks');
    } finally {
      await cleanup(spec);
    }
    assert.equal(await a.diskInfo(spec.disks[0]!), null);
  });

  test('bad input is refused with a clear error before anything starts', async () => {
    await assert.rejects(a.defineVm({ vmId: 'Bad Name;', name: 'x', cpus: 1, memoryBytes: 64 * MiB, disks: [], cpuFeatures: [] }), (e: unknown) => e instanceof DriverError && e.code === 'INVALID_ARGUMENT');
    await assert.rejects(a.defineVm({ vmId: 'vm-x', name: 'x', cpus: 1, memoryBytes: 64 * MiB, disks: ['relative.qcow2'], cpuFeatures: [] }), /must be an absolute path/);
    await assert.rejects(a.defineVm({ vmId: 'vm-x', name: 'x', cpus: 1, memoryBytes: 64 * MiB, disks: [], cpuFeatures: ['avx512f'] }), /does not offer avx512f/);
    await assert.rejects(a.startVm('vm-nothere'), (e: unknown) => e instanceof DriverError && e.code === 'NOT_FOUND');
    await assert.rejects(a.createDisk({ name: 'vm-x-root', datastoreId: 'nope', sizeBytes: MiB, source: { kind: 'blank' } }), /not a datastore of host "lv1"/);
    assert.deepEqual(await domainsOn(lab.hosts[0]!), []);
  });

  test('live migration lv1 -> lv2 (shared pool, p2p): the counter continues on lv2, the domain ends on one daemon', async () => {
    const spec = await running(a);
    try {
      const before = await waitFor('counting on lv1', async () => {
        const v = await beat(a, spec.vmId);
        return v > 5 && v;
      });
      await assert.rejects(a.startMigration(spec.vmId, { uri: 'qemu+unix:///system?socket=/x', hold: false }), /p2p URI/);
      await assert.rejects(a.startMigration(spec.vmId, { uri: lab.hosts[1]!.migrationUri, hold: true }), /hold .* not supported by the libvirt driver/);
      const inc = await b.prepareIncoming(spec);
      assert.equal(inc.uri, lab.hosts[1]!.migrationUri);
      await a.startMigration(spec.vmId, { uri: inc.uri, maxBandwidthBytesPerSec: 8 * MiB });
      await a.startMigration(spec.vmId, { uri: inc.uri, maxBandwidthBytesPerSec: 8 * MiB }); // idempotent
      const active = await waitFor('pre-copy progress', async () => {
        const s = await a.migrationStatus(spec.vmId);
        assert.notEqual(s.status, 'failed', s.error);
        return s.status === 'active' && s.transferredBytes > 0 && s;
      });
      assert.ok(active.round >= 1 && active.totalBytes >= 64 * MiB && active.remainingBytes > 0, JSON.stringify(active));
      await a.setMigrationParams(spec.vmId, { maxBandwidthBytesPerSec: 512 * MiB, downtimeLimitMs: 500 });
      await a.continueSwitchover(spec.vmId);
      const done = await a.migrationStatus(spec.vmId);
      assert.equal(done.status, 'completed');
      assert.ok(Number.isInteger(done.downtimeMs) && done.downtimeMs! > 0 && done.round >= 2, JSON.stringify(done));
      assert.equal((await a.vmStatus(spec.vmId))?.state, 'postmigrate');
      assert.equal((await b.vmStatus(spec.vmId))?.state, 'paused', 'destination held paused until activation (--suspend)');
      await assert.rejects(a.resumeVm(spec.vmId, { afterCompletedMigration: true }), /cannot be resumed here/);
      assert.equal((await b.activateIncoming(spec.vmId)).state, 'running');
      const onB = await beat(b, spec.vmId);
      assert.ok(onB >= before, `counter on lv2 (${onB}) continues from lv1's (${before})`);
      await waitFor('the counter advancing on lv2', async () => (await beat(b, spec.vmId)) > onB);
      await a.destroyVm(spec.vmId); // cleanupSource
      const uuid = a.domainUuid(spec.vmId);
      assert.deepEqual(await domainsOn(lab.hosts[0]!), []);
      assert.deepEqual(await domainsOn(lab.hosts[1]!), [uuid]);
      assert.equal((await b.vmStatus(spec.vmId))?.spec.vmId, spec.vmId, 'persistent on lv2 with ferry metadata');
      console.log(`# libvirt live migration: downtime ${done.downtimeMs} ms, ${done.round} rounds, ${(done.transferredBytes / MiB).toFixed(1)} MiB, libvirt job ${done.totalTimeMs} ms`);
    } finally {
      await cleanup(spec);
    }
  });

  test('live storage migration (blockcopy --transient-job, pivot): shared pool -> local pool, counter continues; cancel removes the copy', async () => {
    const spec = await running(a);
    const moved: string[] = [];
    try {
      const target = { kind: 'datastore' as const, datastoreId: 'local-lv1' };
      await assert.rejects(a.startDiskMirror!(spec.vmId, { kind: 'nbd', host: '10.252.0.2', port: 10809, exports: [] }), /not supported by the libvirt driver/);
      // cancel first: the VM stays on its disk, the partial copy goes
      await a.startDiskMirror!(spec.vmId, { ...target, speedBytesPerSec: 1 * MiB });
      const copy = `${lab.hosts[0]!.localPath}/${spec.disks[0]!.split('/').pop()}`;
      assert.ok((await a.diskMirrorStatus!(spec.vmId)).status !== 'none');
      await a.cancelDiskMirror!(spec.vmId);
      assert.equal((await a.diskMirrorStatus!(spec.vmId)).status, 'none');
      assert.equal(await a.diskInfo(copy), null, 'partial copy deleted');
      assert.deepEqual((await a.vmStatus(spec.vmId))?.spec.disks, spec.disks);
      // then the real move
      await a.startDiskMirror!(spec.vmId, target);
      await a.startDiskMirror!(spec.vmId, target); // idempotent
      const ready = await waitFor('mirror in sync', async () => {
        const s = await a.diskMirrorStatus!(spec.vmId);
        assert.notEqual(s.status, 'failed', s.error);
        return s.inSync && s;
      });
      assert.ok(ready.totalBytes > 0);
      const h = await beat(a, spec.vmId);
      const done = await a.completeDiskMirror!(spec.vmId);
      moved.push(...(done.diskPaths ?? []));
      assert.deepEqual(done.diskPaths, [copy]);
      const st = await a.vmStatus(spec.vmId);
      assert.equal(st?.state, 'running');
      assert.deepEqual(st?.spec.disks, [copy], 'the spec follows the pivot');
      assert.equal((await a.diskInfo(copy))?.datastoreId, 'local-lv1');
      assert.equal(await a.diskInfo(spec.disks[0]!), null, 'the old disk is deleted');
      await waitFor('counting on the copy', async () => (await beat(a, spec.vmId)) > h);
    } finally {
      await cleanup(spec);
      for (const p of moved) await a.deleteDisk(p);
    }
  });

  test('live migration without shared storage (copyDisks: --copy-storage-all onto lv2\'s local pool): cancel removes the copies; then the disk content, the seed and the counter arrive on lv2', async () => {
    const spec = await running(a, 'local-lv1');
    const copies: string[] = [];
    try {
      // a pattern written through the guest's own disk (HMP qemu-io on the device's QOM path: libvirt's
      // -blockdev disks have no named backend); HMP answers errors as text, qemu-io prints elsewhere
      for (const c of ['write -P 0xab 32M 4M', 'flush']) assert.equal((await a.hmp(spec.vmId, `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${c}"`)).trim(), '');
      const pattern = await execa('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0xab 32M 4M', spec.disks[0]!], { reject: false });
      assert.doesNotMatch(pattern.stdout, /verification failed/, 'the pattern is on the source disk');
      const disks = [];
      for (const p of [...spec.disks, spec.seedPath!]) {
        const d = (await a.diskInfo(p))!;
        disks.push({ sourcePath: d.path, virtualSizeBytes: d.virtualSizeBytes, format: d.format });
      }
      const copyDisks = { datastoreId: 'local-lv2', disks };
      await assert.rejects(b.prepareIncoming(spec), /not in any storage pool of destination host "lv2"/, 'without copyDisks the local disk is refused');
      await assert.rejects(b.prepareIncoming(spec, { copyDisks: { ...copyDisks, datastoreId: 'nope' } }), /not a datastore of host "lv2"/);
      const inc = await b.prepareIncoming(spec, { copyDisks });
      const lv2 = lab.hosts[1]!.localPath;
      assert.ok(inc.diskPaths?.every((p) => p.startsWith(`${lv2}/`)) && inc.seedPath?.startsWith(`${lv2}/`), JSON.stringify(inc));
      copies.push(...inc.diskPaths!, inc.seedPath!);
      assert.deepEqual(await b.prepareIncoming(spec, { copyDisks }), inc, 'prepareIncoming is idempotent');
      await assert.rejects(a.startMigration(spec.vmId, { uri: inc.uri }), /start the migration with copyDisks/);
      await assert.rejects(a.startMigration(spec.vmId, { uri: lab.hosts[1]!.migrationUri, copyDisks: true }), /names no disk copies/);

      // cancel while the disk is being copied: running on lv1 on its own disk, lv2 holds nothing
      await a.startMigration(spec.vmId, { uri: inc.uri, copyDisks: true, maxBandwidthBytesPerSec: 1 * MiB });
      const copying = await waitFor('the disk copy under way', async () => {
        const st = await a.migrationStatus(spec.vmId);
        assert.notEqual(st.status, 'failed', st.error);
        return !!st.disk && st.disk.copiedBytes > 0 && st;
      });
      assert.ok(copying.disk!.totalBytes >= 64 * MiB && !copying.disk!.inSync, JSON.stringify(copying));
      await a.cancelMigration(spec.vmId);
      assert.equal((await a.vmStatus(spec.vmId))?.state, 'running');
      await b.destroyVm(spec.vmId); // the workflow's rollback of the destination
      await waitFor('lv2 empty', async () => (await domainsOn(lab.hosts[1]!)).length === 0, 10_000);
      for (const p of copies) assert.equal(await b.diskInfo(p), null, `copy ${p} removed`);

      // the real move
      const inc2 = await b.prepareIncoming(spec, { copyDisks });
      assert.deepEqual(inc2, inc);
      const before = await beat(a, spec.vmId);
      await a.startMigration(spec.vmId, { uri: inc2.uri, copyDisks: true, maxBandwidthBytesPerSec: 512 * MiB });
      await a.continueSwitchover(spec.vmId);
      const done = await a.migrationStatus(spec.vmId);
      assert.equal(done.status, 'completed');
      assert.ok(done.disk?.status === 'completed' && done.disk.totalBytes >= 64 * MiB, JSON.stringify(done.disk));
      assert.equal((await b.activateIncoming(spec.vmId)).state, 'running');
      const st = await b.vmStatus(spec.vmId);
      assert.deepEqual(st?.spec.disks, inc.diskPaths, 'the VM runs on its copies on lv2');
      assert.equal(st?.spec.seedPath, inc.seedPath);
      const onB = await beat(b, spec.vmId);
      assert.ok(onB >= before, `counter on lv2 (${onB}) continues from lv1's (${before})`);
      await waitFor('the counter advancing on lv2', async () => (await beat(b, spec.vmId)) > onB);
      // the guest-visible content arrived (the source's shut-off disk against the running copy)
      const cmp = await execa('qemu-img', ['compare', '-U', spec.disks[0]!, inc.diskPaths![0]!], { reject: false });
      assert.equal(cmp.exitCode, 0, `${cmp.stdout} ${cmp.stderr}`);
      const { readFile } = await import('node:fs/promises');
      assert.ok((await readFile(inc.seedPath!)).equals(await readFile(spec.seedPath!)), 'the seed bytes arrived');
      await a.destroyVm(spec.vmId); // cleanupSource
      assert.deepEqual(await domainsOn(lab.hosts[0]!), []);
      assert.ok(await b.diskInfo(inc.diskPaths![0]!), 'the activated copy is the VM\'s disk: destroy elsewhere keeps it');
      console.log(`# libvirt copyDisks migration: downtime ${done.downtimeMs} ms, disk ${(done.disk!.totalBytes / MiB).toFixed(0)} MiB, memory ${(done.transferredBytes / MiB).toFixed(1)} MiB`);
    } finally {
      await cleanup(spec);
      for (const p of copies) await b.deleteDisk(p);
    }
  });

  test('cancel during pre-copy (domjobabort): running on lv1, nothing on lv2', async () => {
    const spec = await running(a);
    try {
      const inc = await b.prepareIncoming(spec);
      await a.startMigration(spec.vmId, { uri: inc.uri, maxBandwidthBytesPerSec: 1 * MiB });
      await waitFor('pre-copy under way', async () => (await a.migrationStatus(spec.vmId)).transferredBytes > 0);
      assert.equal((await b.vmStatus(spec.vmId))?.state !== 'running', true);
      await a.cancelMigration(spec.vmId);
      await a.cancelMigration(spec.vmId); // idempotent
      assert.equal((await a.vmStatus(spec.vmId))?.state, 'running');
      assert.equal((await a.migrationStatus(spec.vmId)).status, 'none');
      await waitFor('lv2 empty', async () => (await domainsOn(lab.hosts[1]!)).length === 0, 10_000);
      assert.equal(await b.vmStatus(spec.vmId), null);
      const h = await beat(a, spec.vmId);
      await waitFor('still counting on lv1', async () => (await beat(a, spec.vmId)) > h);
    } finally {
      await cleanup(spec);
    }
  });

  test('the source libvirtd restarted mid pre-copy: the migration ends (not completed), rollback leaves it running on lv1 only', async () => {
    const spec = await running(a);
    try {
      const inc = await b.prepareIncoming(spec);
      await a.startMigration(spec.vmId, { uri: inc.uri, maxBandwidthBytesPerSec: 1 * MiB });
      await waitFor('pre-copy under way', async () => (await a.migrationStatus(spec.vmId)).transferredBytes > 0);
      await lab.restartDaemon('lv1');
      const st = await waitFor('the migration over', async () => {
        const s = await a.migrationStatus(spec.vmId);
        return s.status !== 'active' && s.status !== 'setup' && s;
      });
      assert.ok(st.status === 'failed' || st.status === 'cancelled', JSON.stringify(st));
      // the workflow's rollback: cancel on the source, destroy the destination's copy
      await a.cancelMigration(spec.vmId);
      await b.destroyVm(spec.vmId);
      assert.equal((await a.vmStatus(spec.vmId))?.state, 'running');
      await waitFor('lv2 empty', async () => (await domainsOn(lab.hosts[1]!)).length === 0, 10_000);
      assert.deepEqual(await domainsOn(lab.hosts[0]!), [a.domainUuid(spec.vmId)]);
      const h = await beat(a, spec.vmId);
      await waitFor('still counting on lv1', async () => (await beat(a, spec.vmId)) > h);
      console.log(`# libvirtd restart mid-migration: ended ${st.status}: ${st.error ?? ''}`);
    } finally {
      await cleanup(spec);
    }
  });
  test('tear-down (lab.stop) leaves no daemon, QEMU, namespace, guard route, pool or file behind, also with a VM still running', async () => {
    await running(a); // left running on purpose: stop must end it
    const pids: Array<{ what: string; pid: number }> = [];
    for (const h of lab.hosts) {
      for (const d of ['libvirtd', 'virtlogd']) {
        const pid = await readPid(`${h.dir}/run/${d}.pid`);
        assert.ok(pid && alive(pid), `${d} of ${h.id} runs`);
        pids.push({ what: `${d} of ${h.id}`, pid });
      }
      for (const f of await fs.readdir(`${h.dir}/run/qemu`).catch(() => [] as string[])) {
        const pid = f.endsWith('.pid') ? await readPid(`${h.dir}/run/qemu/${f}`) : undefined;
        if (pid) pids.push({ what: `QEMU ${f} of ${h.id}`, pid });
      }
    }
    assert.ok(pids.some((p) => p.what.startsWith('QEMU')), 'a QEMU runs before the tear-down');
    const machinePools = async () => (await fs.readdir('/etc/libvirt/storage').catch(() => [] as string[])).filter((x) => x.includes('ferry'));
    assert.deepEqual(await machinePools(), [], 'the lab never defines pools in the machine\'s own libvirt');
    await lab.stop();
    for (const p of pids) assert.equal(alive(p.pid), false, `${p.what} (pid ${p.pid}) is gone`);
    assert.deepEqual(await pidsMentioning(lab.root), [], `no process mentions ${lab.root}`);
    assert.equal(await guardRouteInstalled(lab.subnet), false, 'guard route removed');
    assert.deepEqual(await labNamespacesPresent(lab.prefix), [], 'namespaces removed');
    await assert.rejects(fs.access(lab.root), `${lab.root} (every host's files, pools and the shared pool) removed`);
    assert.deepEqual(await machinePools(), [], 'no pool left in the machine\'s libvirt');
  });
});
