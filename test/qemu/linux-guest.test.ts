// The real Linux template (workers/lab/linux-guest.ts: Debian's cloud kernel + a busybox
// initramfs whose /init is ferry's own, reading the NoCloud files) provisioned through ProvisionVm
// with a network and SSH keys on real QEMU: the guest's console shows the hostname, the address
// and gateway it applied and the key it installed, each equal to what ferry allocated in the
// database. Needs apt-get download of Debian packages on the first run (cached afterwards).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { IpAllocation, Network, Vm } from '../../db/entities.js';
import { createQemuConsole } from '../../drivers/qemu/index.js';
import { buildLinuxGuest, type LinuxGuest } from '../../workers/lab/linux-guest.js';
import { outcome, stopOwnTemporal } from '../helpers/ferry.js';
import { qemuSkipReason, waitFor } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFerryTestKeyOnlyForTheLinuxGuestTest0000 ferry@test';

describe('real Linux guest applies the NoCloud seed', { skip: qemuSkipReason, timeout: 300_000 }, () => {
  let f: QemuFerry;
  let guest: LinuxGuest;

  before(async () => {
    guest = await buildLinuxGuest(path.join(os.tmpdir(), 'ferry-tools-cache'));
    f = await startQemuFerry({ hosts: ['qa'], templateImage: guest.qcow2 });
  });
  after(async () => {
    await f?.close();
    await stopOwnTemporal();
  });

  test('hostname, address, gateway and SSH key on the console equal the allocation', async () => {
    const h = await f.provision({ name: 'lnx-1', memoryMiB: 192, sshKeys: [KEY] });
    const r = await outcome<{ vmId: string }>(h);
    assert.ok(r.ok, r.ok ? '' : r.message);
    const vmId = r.value.vmId;
    const em = f.db.em().fork();
    const vm = await em.findOneOrFail(Vm, { id: vmId });
    const net = await em.findOneOrFail(Network, { id: vm.networkId! });
    const alloc = await em.findOneOrFail(IpAllocation, { vmId });
    assert.equal(alloc.address, vm.ip);
    const prefix = net.cidr.split('/')[1];

    const console = createQemuConsole('qa', f.host('qa').stateDir);
    const lines = await waitFor('the guest to apply its seed', async () => {
      const t = await console.consoleTail(vmId, 500);
      return t.lines.includes('FERRY-GUEST-UP') ? t.lines : undefined;
    }, 180_000);
    assert.ok(lines.some((l) => /ferry's own init reading the cloud-init NoCloud files/.test(l)), lines.join('\n'));
    const got = (what: string) => lines.filter((l) => l.startsWith(`FERRY-NOCLOUD ${what} `)).map((l) => l.slice(`FERRY-NOCLOUD ${what} `.length));
    assert.deepEqual(got('hostname'), ['lnx-1'], lines.join('\n'));
    assert.deepEqual(got('address'), [`${alloc.address}/${prefix} dev eth0`], lines.join('\n'));
    assert.deepEqual(got('gateway'), [net.gateway], lines.join('\n'));
    assert.deepEqual(got('ssh-key'), [KEY], lines.join('\n'));
    // and it keeps running: the heartbeat goes on
    await waitFor('a heartbeat after boot', async () => (await console.consoleTail(vmId, 5)).lines.some((l) => /^tick [2-9]/.test(l)), 30_000);
  });
});
