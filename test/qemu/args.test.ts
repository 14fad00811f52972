// Pure unit tests of the qemu argv builder and state mapping: no QEMU needed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverError, type VmSpec } from '../../domain/hypervisor.js';
import { buildQemuArgs, defaultMac, mapRunState, qemuOptValue } from '../../drivers/qemu/index.js';

const paths = { qmpSocket: '/s/vms/vm-1/qmp.sock', pidFile: '/s/vms/vm-1/qemu.pid', serialLog: '/s/vms/vm-1/serial.log' };
const opts = { accel: 'tcg' as const, cpuModel: 'qemu64', machine: 'pc', startPaused: true, incoming: false };
const base: VmSpec = { vmId: 'vm-1', name: 'web 1', cpus: 2, memoryBytes: 128 * 1024 * 1024, disks: ['/ds/vm-1-root.qcow2'], cpuFeatures: [] };

/** value following a flag (every occurrence) */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('buildQemuArgs', () => {
  it('daemonized, QMP socket, pid file, no display, no defaults, serial to file, tcg', () => {
    const a = buildQemuArgs(base, paths, opts);
    assert.ok(a.includes('-daemonize'));
    assert.ok(a.includes('-nodefaults'));
    assert.ok(a.includes('-no-shutdown'));
    assert.deepEqual(values(a, '-pidfile'), ['/s/vms/vm-1/qemu.pid']);
    assert.deepEqual(values(a, '-qmp'), ['unix:/s/vms/vm-1/qmp.sock,server=on,wait=off']);
    assert.deepEqual(values(a, '-display'), ['none']);
    assert.deepEqual(values(a, '-serial'), ['file:/s/vms/vm-1/serial.log']);
    assert.deepEqual(values(a, '-accel'), ['tcg']);
    assert.deepEqual(values(a, '-cpu'), ['qemu64']);
    assert.deepEqual(values(a, '-smp'), ['2']);
    assert.deepEqual(values(a, '-m'), ['128M']);
    assert.deepEqual(values(a, '-name'), ['vm-1,process=ferry-vm-1']);
    assert.ok(a.includes('-S'), 'started paused: the driver sends cont');
    assert.ok(!a.includes('-incoming'));
    assert.ok(!a.includes('-netdev'));
  });

  it('disks as virtio qcow2 in order, seed read-only raw, iso as cdrom', () => {
    const a = buildQemuArgs({ ...base, disks: ['/ds/a.qcow2', '/ds/b.qcow2'], seedPath: '/ds/vm-1-seed.img', isoPath: '/iso/inst.iso' }, paths, opts);
    assert.deepEqual(values(a, '-drive'), [
      'file=/ds/a.qcow2,format=qcow2,if=virtio,id=disk0',
      'file=/ds/b.qcow2,format=qcow2,if=virtio,id=disk1',
      'file=/ds/vm-1-seed.img,format=raw,if=virtio,readonly=on,id=seed',
      'file=/iso/inst.iso,format=raw,if=ide,media=cdrom,id=cdrom',
    ]);
  });

  it('incoming: -S -incoming defer', () => {
    const a = buildQemuArgs(base, paths, { ...opts, startPaused: false, incoming: true });
    assert.deepEqual(a.slice(-3), ['-S', '-incoming', 'defer']);
  });

  it('network: user netdev, virtio-net without option ROM, deterministic MAC', () => {
    const a = buildQemuArgs({ ...base, network: 'default' }, paths, opts);
    assert.deepEqual(values(a, '-netdev'), ['user,id=net0']);
    assert.deepEqual(values(a, '-device'), [`virtio-net-pci,netdev=net0,romfile=,mac=${defaultMac('vm-1')},id=nic0`]);
    assert.match(defaultMac('vm-1'), /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(defaultMac('vm-1'), defaultMac('vm-1'));
    assert.notEqual(defaultMac('vm-1'), defaultMac('vm-2'));
    const b = buildQemuArgs({ ...base, network: 'default', mac: '52:54:00:aa:bb:cc' }, paths, opts);
    assert.match(values(b, '-device')[0]!, /mac=52:54:00:aa:bb:cc/);
  });

  it('commas in paths are doubled (QEMU option syntax), so a path cannot inject options', () => {
    const a = buildQemuArgs({ ...base, disks: ['/ds/x,readonly=off,file=/etc/shadow.qcow2'] }, paths, opts);
    assert.deepEqual(values(a, '-drive'), ['file=/ds/x,,readonly=off,,file=/etc/shadow.qcow2,format=qcow2,if=virtio,id=disk0']);
    assert.equal(qemuOptValue('x', 'a,b'), 'a,,b');
  });

  it('every argument is its own array element (no shell, no splitting)', () => {
    const a = buildQemuArgs({ ...base, name: 'name with spaces; rm -rf /' }, paths, opts);
    assert.ok(a.every((x) => typeof x === 'string'));
    assert.ok(!a.some((x) => x.includes('rm -rf')), 'the display name never reaches argv');
  });

  it('refuses bad input naming the field', () => {
    const bad: [Partial<VmSpec>, RegExp][] = [
      [{ vmId: 'vm;reboot' }, /spec\.vmId/],
      [{ vmId: '$(id)' }, /spec\.vmId/],
      [{ cpus: 0 }, /spec\.cpus/],
      [{ cpus: 1.5 }, /spec\.cpus/],
      [{ memoryBytes: 1000 }, /spec\.memoryBytes/],
      [{ disks: ['relative.qcow2'] }, /spec\.disks\[0\]/],
      [{ disks: ['/ok.qcow2', '/bad\nx'] }, /spec\.disks\[1\]/],
      [{ seedPath: 'seed.img' }, /spec\.seedPath/],
      [{ mac: '52:54:00:AA:BB:CC' }, /spec\.mac/],
      [{ network: 'br0;x' }, /spec\.network/],
    ];
    for (const [patch, re] of bad) {
      assert.throws(
        () => buildQemuArgs({ ...base, ...patch }, paths, opts),
        (e: DriverError) => e instanceof DriverError && e.code === 'INVALID_ARGUMENT' && e.permanent && re.test(e.message),
        JSON.stringify(patch),
      );
    }
    assert.throws(() => buildQemuArgs(base, { ...paths, qmpSocket: 'rel.sock' }, opts), /paths\.qmpSocket/);
    assert.throws(() => buildQemuArgs(base, paths, { ...opts, cpuModel: 'host,+x;y' }), /cpuModel/);
  });
});

describe('mapRunState', () => {
  it('maps QEMU runstates onto VmPowerState', () => {
    const cases: [string, 'normal' | 'incoming', string][] = [
      ['running', 'normal', 'running'],
      ['inmigrate', 'incoming', 'incoming'],
      ['postmigrate', 'normal', 'postmigrate'],
      ['paused', 'normal', 'paused'],
      ['finish-migrate', 'normal', 'paused'],
      ['prelaunch', 'normal', 'defined'],
      ['prelaunch', 'incoming', 'paused'],
      ['paused', 'incoming', 'paused'],
      ['shutdown', 'normal', 'stopped'],
      ['internal-error', 'normal', 'crashed'],
      ['guest-panicked', 'normal', 'crashed'],
    ];
    for (const [rs, role, want] of cases) assert.equal(mapRunState(rs, role), want, `${rs}/${role}`);
  });
});
