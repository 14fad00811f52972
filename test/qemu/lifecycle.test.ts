// Real QEMU under TCG: disks from a template, boot, lifecycle, re-attach, name validation.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { DriverError, type VmSpec } from '../../domain/hypervisor.js';
import { createQemuDriver, type QemuDriver } from '../../drivers/qemu/index.js';
import { HALT_MAGIC, buildGuest, readHeartbeat, type GuestImages } from '../../workers/lab/guest-images.js';
import { filesUnder, pidsMentioning, qemuSkipReason, sweep, tempRoot, waitFor } from '../helpers/qemu-env.js';

const MiB = 1024 * 1024;

function spec(vmId: string, disks: string[], extra: Partial<VmSpec> = {}): VmSpec {
  return { vmId, name: vmId, cpus: 1, memoryBytes: 64 * MiB, disks, cpuFeatures: [], ...extra };
}

describe('qemu driver lifecycle (real QEMU, TCG)', { skip: qemuSkipReason }, () => {
  let root: string;
  let drv: QemuDriver;
  let halt: GuestImages;
  let dirty: GuestImages;
  let acpi: GuestImages;

  before(async () => {
    root = await tempRoot();
    drv = createQemuDriver({ hostId: 'host-a', stateDir: path.join(root, 'a') });
    halt = await buildGuest({ kind: 'halt' });
    dirty = await buildGuest({ kind: 'dirty', dirtyBytes: 64 * 4096, delay: 20000 });
    acpi = await buildGuest({ kind: 'acpi' });
  });

  after(async () => {
    await drv?.close();
    if (root) await sweep(root);
  });

  it('linked clone from the template, start -> running, guest code runs', async () => {
    const disk = await drv.createDisk({ name: 'vm1-root', datastoreId: 'local', sizeBytes: 0, source: { kind: 'template', imagePath: halt.qcow2, linked: true } });
    assert.equal(disk.format, 'qcow2');
    assert.equal(disk.backingPath, halt.qcow2);
    // idempotent by name: the same disk comes back, not a second one
    const again = await drv.createDisk({ name: 'vm1-root', datastoreId: 'local', sizeBytes: 0, source: { kind: 'template', imagePath: halt.qcow2, linked: true } });
    assert.deepEqual(again, disk);

    const def = await drv.defineVm(spec('vm1', [disk.path], { network: 'default' }));
    assert.equal(def.state, 'defined');
    assert.equal((await drv.vmStatus('vm1'))?.state, 'defined');
    assert.equal((await drv.defineVm(spec('vm1', [disk.path], { network: 'default' }))).state, 'defined', 'defineVm is idempotent');

    const rt = await drv.startVm('vm1');
    assert.equal(rt.state, 'running');
    assert.ok(rt.pid && rt.pid > 1);
    assert.deepEqual(await drv.qmp('vm1', 'query-status'), { status: 'running', singlestep: false, running: true });
    await waitFor('the halt guest to store its magic', async () => (await readHeartbeat((c) => drv.hmp('vm1', c))) === HALT_MAGIC);
    const serial = await fs.readFile(drv.vmPaths('vm1').serialLog, 'utf8');
    assert.match(serial, /UP/);
    assert.equal((await drv.startVm('vm1')).pid, rt.pid, 'startVm on a running VM is a no-op');
  });

  it('pause, resume, reboot, forced stop (the guest ignores ACPI), start again', async () => {
    assert.equal((await drv.pauseVm('vm1')).state, 'paused');
    assert.equal((await drv.pauseVm('vm1')).state, 'paused');
    assert.equal((await drv.resumeVm('vm1')).state, 'running');
    assert.equal((await drv.rebootVm('vm1')).state, 'running');
    const pid = (await drv.vmStatus('vm1'))!.pid!;

    await assert.rejects(drv.stopVm('vm1', { timeoutMs: 300, force: false }), (e: DriverError) => e.code === 'TIMEOUT');
    assert.equal((await drv.vmStatus('vm1'))?.state, 'running', 'an unforced stop that timed out leaves the VM running');
    const stopped = await drv.stopVm('vm1', { timeoutMs: 300, force: true });
    assert.equal(stopped.state, 'stopped');
    assert.deepEqual(await pidsMentioning(drv.vmPaths('vm1').qmpSocket), []);
    assert.ok(!(await pidsMentioning(String(pid))).includes(pid));
    assert.equal((await drv.stopVm('vm1', { timeoutMs: 10, force: true })).state, 'stopped', 'stop is idempotent');
    assert.equal((await drv.startVm('vm1')).state, 'running');
  });

  it('graceful stop: a guest that powers off on ACPI stops without force, well inside its timeout', async () => {
    const disk = await drv.createDisk({ name: 'vm-acpi-root', datastoreId: 'local', sizeBytes: 0, source: { kind: 'template', imagePath: acpi.qcow2, linked: true } });
    await drv.defineVm(spec('vm-acpi', [disk.path]));
    try {
      assert.equal((await drv.startVm('vm-acpi')).state, 'running');
      await waitFor('the acpi guest to arm its power button', async () => (await readHeartbeat((c) => drv.hmp('vm-acpi', c))) === HALT_MAGIC);
      // not forced: only the guest's own power-off can end this stop before its (long) timeout
      const stopped = await drv.stopVm('vm-acpi', { timeoutMs: 120_000, force: false });
      assert.equal(stopped.state, 'stopped');
      assert.deepEqual(await pidsMentioning(drv.vmPaths('vm-acpi').qmpSocket), [], 'its QEMU is gone');
    } finally {
      await drv.destroyVm('vm-acpi');
    }
  });

  it('a new driver instance on the same stateDir re-attaches to the running VM', async () => {
    const before = await drv.vmStatus('vm1');
    await drv.close(); // the agent goes away; the daemonized QEMU does not
    const drv2 = createQemuDriver({ hostId: 'host-a', stateDir: path.join(root, 'a') });
    try {
      const seen = await drv2.listVms();
      assert.deepEqual(seen.map((v) => [v.vmId, v.state, v.pid]), [['vm1', 'running', before!.pid]]);
      await waitFor('the magic through the new instance', async () => (await readHeartbeat((c) => drv2.hmp('vm1', c))) === HALT_MAGIC);
      assert.equal((await drv2.pauseVm('vm1')).state, 'paused', 'the new instance drives the VM');
      assert.equal((await drv2.resumeVm('vm1')).state, 'running');
    } finally {
      await drv2.close();
    }
  });

  it('destroyVm kills the process, removes runtime files, keeps the disk; idempotent', async () => {
    const disk = (await drv.vmStatus('vm1'))!.spec.disks[0]!;
    await drv.destroyVm('vm1');
    await drv.destroyVm('vm1');
    assert.equal(await drv.vmStatus('vm1'), null);
    assert.deepEqual(await pidsMentioning(path.join(root, 'a', 'vms')), []);
    assert.deepEqual(await filesUnder(path.join(root, 'a', 'vms')), []);
    assert.ok(await drv.diskInfo(disk));
  });

  it('a disk imported from a vmdk boots, and a busy guest counts its heartbeat', async () => {
    const vmdk = path.join(root, 'import.vmdk');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', dirty.raw, vmdk]);
    const progress: number[] = [];
    const disk = await drv.createDisk(
      { name: 'vm2-root', datastoreId: 'local', sizeBytes: 2 * MiB, source: { kind: 'import', sourcePath: vmdk, format: 'vmdk' } },
      { onProgress: (p) => p.fraction !== undefined && progress.push(p.fraction) },
    );
    assert.equal(disk.format, 'qcow2');
    assert.equal(disk.virtualSizeBytes, 2 * MiB);
    assert.equal(disk.backingPath, undefined);
    assert.equal(progress.at(-1), 1);
    await drv.defineVm(spec('vm2', [disk.path]));
    assert.equal((await drv.startVm('vm2')).state, 'running');
    const first = await waitFor('heartbeat > 0', async () => readHeartbeat((c) => drv.hmp('vm2', c)));
    await waitFor('heartbeat to advance', async () => (await readHeartbeat((c) => drv.hmp('vm2', c))) > first);
    await drv.destroyVm('vm2');
  });

  it('a dead VM process is reported crashed, and startVm brings it back', async () => {
    const disk = await drv.createDisk({ name: 'vm3-root', datastoreId: 'local', sizeBytes: 0, source: { kind: 'template', imagePath: halt.qcow2, linked: true } });
    await drv.defineVm(spec('vm3', [disk.path]));
    const { pid } = await drv.startVm('vm3');
    process.kill(pid!, 'SIGKILL');
    await waitFor('crashed', async () => (await drv.vmStatus('vm3'))?.state === 'crashed');
    assert.equal((await drv.startVm('vm3')).state, 'running');
    await drv.destroyVm('vm3');
  });

  it('shell metacharacters in names are refused before any process starts', async () => {
    // a driver whose qemu and qemu-img are a sentinel that records any invocation
    const sentinel = path.join(root, 'sentinel.sh');
    const invoked = path.join(root, 'sentinel-invoked');
    await fs.writeFile(sentinel, `#!/bin/sh\necho "$@" >> '${invoked}'\nexit 1\n`, { mode: 0o755 });
    const guarded = createQemuDriver({ hostId: 'host-g', stateDir: path.join(root, 'g'), qemuBinary: sentinel, qemuImgBinary: sentinel });
    const bad = ['vm;rm -rf /', 'vm$(id)', 'a b', '../etc', 'VM1', 'x`id`', 'vm|cat', 'vm&', ''];
    for (const name of bad) {
      const invalid = (e: DriverError) => e instanceof DriverError && e.code === 'INVALID_ARGUMENT' && e.permanent;
      await assert.rejects(guarded.defineVm(spec(name, [])), invalid, name);
      await assert.rejects(guarded.startVm(name), invalid, name);
      await assert.rejects(guarded.prepareIncoming(spec(name, [])), invalid, name);
      await assert.rejects(guarded.destroyVm(name), invalid, name);
      await assert.rejects(guarded.vmStatus(name), invalid, name);
      await assert.rejects(guarded.createDisk({ name, datastoreId: 'local', sizeBytes: MiB, source: { kind: 'blank' } }), invalid, name);
      await assert.rejects(guarded.writeSeed(name, 'local', { instanceId: 'i', hostname: 'h', sshAuthorizedKeys: [] }), invalid, name);
    }
    // a disk path with a newline would break QEMU's option parser: refused too, naming the field
    await assert.rejects(guarded.defineVm(spec('vm9', ['/tmp/x\n,file=/etc/passwd'])), (e: DriverError) => e.code === 'INVALID_ARGUMENT' && /spec\.disks\[0\]/.test(e.message));
    await assert.rejects(fs.access(invoked), 'no qemu / qemu-img process was started');
    assert.deepEqual(await filesUnder(path.join(root, 'g', 'vms')), [], 'nothing was written');
    // the sentinel does record a valid call, so the check above can fail
    await assert.rejects(guarded.createDisk({ name: 'ok-name', datastoreId: 'local', sizeBytes: MiB, source: { kind: 'blank' } }));
    await fs.access(invoked);
  });
});
