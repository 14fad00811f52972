// qemu-img paths of the driver: blank, linked clone, full copy, clone, import, abort, seed.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { DriverError } from '../../domain/hypervisor.js';
import { createQemuDriver, seedFiles, type QemuDriver } from '../../drivers/qemu/index.js';
import { buildGuest, type GuestImages } from '../../workers/lab/guest-images.js';
import { filesUnder, qemuSkipReason, sweep, tempRoot } from '../helpers/qemu-env.js';

const MiB = 1024 * 1024;

describe('qemu driver disks and seed (qemu-img)', { skip: qemuSkipReason }, () => {
  let root: string;
  let drv: QemuDriver;
  let guest: GuestImages;
  let dsPath: string;

  before(async () => {
    root = await tempRoot();
    dsPath = path.join(root, 'ds1');
    drv = createQemuDriver({ hostId: 'host-d', stateDir: path.join(root, 'h'), datastores: [{ id: 'ds1', path: dsPath, shared: false }] });
    guest = await buildGuest({ kind: 'halt' });
  });
  after(async () => {
    await drv?.close();
    if (root) await sweep(root);
  });

  it('hostInfo reports datastores with capacity, networks and the migration address', async () => {
    const h = await drv.hostInfo();
    assert.equal(h.hostId, 'host-d');
    assert.equal(h.migrationAddress, '127.0.0.1');
    assert.deepEqual(h.datastores.map((d) => [d.id, d.path, d.shared]), [['ds1', dsPath, false]]);
    assert.ok(h.datastores[0]!.capacityBytes > 0 && h.datastores[0]!.freeBytes > 0);
    assert.deepEqual(h.networks, ['default']);
    assert.ok(h.cpuFeatures.includes('sse2'));
  });

  it('blank disk: qcow2 of the asked size; idempotent by name', async () => {
    const d = await drv.createDisk({ name: 'b1', datastoreId: 'ds1', sizeBytes: 64 * MiB, source: { kind: 'blank' } });
    assert.deepEqual({ ...d, actualSizeBytes: 0 }, { name: 'b1', datastoreId: 'ds1', path: path.join(dsPath, 'b1.qcow2'), format: 'qcow2', virtualSizeBytes: 64 * MiB, actualSizeBytes: 0 });
    const again = await drv.createDisk({ name: 'b1', datastoreId: 'ds1', sizeBytes: 64 * MiB, source: { kind: 'blank' } });
    assert.deepEqual(again, d);
    assert.deepEqual(await drv.diskInfo(d.path), d);
  });

  it('template: linked clone keeps the base as backing file, full copy does not; size grows to the spec', async () => {
    const linked = await drv.createDisk({ name: 't-linked', datastoreId: 'ds1', sizeBytes: 8 * MiB, source: { kind: 'template', imagePath: guest.qcow2, linked: true } });
    assert.equal(linked.backingPath, guest.qcow2);
    assert.equal(linked.virtualSizeBytes, 8 * MiB);
    const full = await drv.createDisk({ name: 't-full', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'template', imagePath: guest.qcow2, linked: false } });
    assert.equal(full.backingPath, undefined);
    assert.equal(full.virtualSizeBytes, MiB);
    const cmp = await execa('qemu-img', ['compare', guest.raw, full.path], { reject: false });
    assert.equal(cmp.exitCode, 0, cmp.stdout);
  });

  it('clone and copyDisk flatten a linked clone; import converts raw, vmdk and vhdx', async () => {
    const src = path.join(dsPath, 't-linked.qcow2');
    const clone = await drv.createDisk({ name: 'c1', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'clone', sourcePath: src } });
    assert.equal(clone.backingPath, undefined);
    const copied = await drv.copyDisk(src, { name: 'c2', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'blank' } });
    assert.equal(copied.backingPath, undefined);
    assert.equal((await execa('qemu-img', ['compare', src, copied.path], { reject: false })).exitCode, 0);
    for (const fmt of ['raw', 'vmdk', 'vhdx'] as const) {
      const file = path.join(root, `in.${fmt}`);
      await execa('qemu-img', ['convert', '-f', 'raw', '-O', fmt, guest.raw, file]);
      const d = await drv.createDisk({ name: `imp-${fmt}`, datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'import', sourcePath: file, format: fmt } });
      assert.equal(d.format, 'qcow2');
      assert.equal((await execa('qemu-img', ['compare', '-f', 'raw', guest.raw, d.path], { reject: false })).exitCode, 0, fmt);
    }
  });

  it('an import whose declared format does not match is refused, leaving no file', async () => {
    await assert.rejects(
      drv.createDisk({ name: 'wrong', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'import', sourcePath: guest.qcow2, format: 'vmdk' } }),
      (e: DriverError) => e.code === 'INVALID_ARGUMENT' && /source\.format/.test(e.message),
    );
    await assert.rejects(
      drv.createDisk({ name: 'gone', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'clone', sourcePath: path.join(root, 'nope.qcow2') } }),
      (e: DriverError) => e.code === 'NOT_FOUND' && /source\.sourcePath/.test(e.message),
    );
    await assert.rejects(drv.createDisk({ name: 'x', datastoreId: 'nope', sizeBytes: MiB, source: { kind: 'blank' } }), /datastoreId "nope"/);
    const left = await filesUnder(dsPath);
    assert.ok(!left.some((f) => /wrong|gone|partial/.test(f)), left.join(','));
  });

  it('abort: a long convert is killed, the partial file removed, nothing left under the final name', async () => {
    // a 1 GiB raw of random-ish data would be slow to make; a large sparse raw with data every
    // 1 MiB keeps convert busy long enough to abort mid-way
    const big = path.join(root, 'big.raw');
    await execa('qemu-img', ['create', '-f', 'raw', big, '2G']);
    const fh = await fs.open(big, 'r+');
    const chunk = Buffer.alloc(64 * 1024, 0xab);
    for (let off = 0; off < 2 * 1024 * MiB; off += 4 * MiB) await fh.write(chunk, 0, chunk.length, off);
    await fh.close();
    const ac = new AbortController();
    let progressed = false;
    const p = drv.createDisk(
      { name: 'aborted', datastoreId: 'ds1', sizeBytes: 0, source: { kind: 'import', sourcePath: big, format: 'raw' } },
      {
        signal: ac.signal,
        onProgress: (pr) => {
          if (!progressed && (pr.fraction ?? 0) > 0) {
            progressed = true;
            ac.abort(new Error('operator cancelled'));
          }
        },
      },
    );
    await assert.rejects(p, /operator cancelled/);
    assert.ok(progressed, 'the abort landed while qemu-img was converting');
    const left = await filesUnder(dsPath);
    assert.ok(!left.some((f) => f.includes('aborted')), left.join(','));
    assert.equal(await drv.diskInfo(path.join(dsPath, 'aborted.qcow2')), null);
  });

  it('deleteDisk is idempotent and refuses paths outside the datastores', async () => {
    const p = path.join(dsPath, 'b1.qcow2');
    await drv.deleteDisk(p);
    await drv.deleteDisk(p);
    assert.equal(await drv.diskInfo(p), null);
    await assert.rejects(drv.deleteDisk('/etc/passwd'), (e: DriverError) => e.code === 'INVALID_ARGUMENT');
    await assert.rejects(drv.deleteDisk(path.join(dsPath, '..', 'h', 'x')), (e: DriverError) => e.code === 'INVALID_ARGUMENT');
  });

  it('writeSeed: a FAT image labelled cidata with the three NoCloud files', async () => {
    const seed = {
      instanceId: 'i-vm-7',
      hostname: 'web-7',
      sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx ferry@test'],
      network: { address: '10.0.0.7', prefixLength: 24, gateway: '10.0.0.1', dns: ['10.0.0.2'], vlan: 42, mac: '52:54:00:00:00:07' },
    };
    const { path: seedPath } = await drv.writeSeed('vm-7', 'ds1', seed);
    assert.equal(seedPath, path.join(dsPath, 'vm-7-seed.img'));
    const img = await fs.readFile(seedPath);
    assert.equal(img.length, 1474560, 'a 1.44 MB FAT12 floppy image');
    assert.equal(img.readUInt16LE(510), 0xaa55);
    assert.equal(img.subarray(0x2b, 0x36).toString('latin1'), 'cidata     ', 'volume label');
    assert.equal(img.subarray(0x36, 0x3e).toString('latin1'), 'FAT12   ');
    const files = seedFiles(seed);
    for (const content of Object.values(files)) assert.ok(img.includes(Buffer.from(content)), content.slice(0, 40));
    for (const name of ['user-data', 'meta-data', 'network-config']) {
      // long file names are stored as UTF-16LE pieces of up to 5+6+2 chars
      assert.ok(img.includes(Buffer.from(name.slice(0, 5), 'utf16le')), name);
    }
    assert.match(files['user-data'], /^#cloud-config\n/);
    assert.deepEqual(JSON.parse(files['meta-data']), { 'instance-id': 'i-vm-7', 'local-hostname': 'web-7', 'public-keys': seed.sshAuthorizedKeys });
    const net = JSON.parse(files['network-config']);
    assert.deepEqual(net.vlans['eth0.42'].addresses, ['10.0.0.7/24']);
    // rewritten on retry, atomically
    await drv.writeSeed('vm-7', 'ds1', { ...seed, hostname: 'web-7b' });
    assert.ok((await fs.readFile(seedPath)).includes(Buffer.from('web-7b')));
    assert.ok(!(await filesUnder(dsPath)).some((f) => f.includes('partial')));
    const fileOut = await execa('file', [seedPath], { reject: false });
    if (fileOut.exitCode === 0) assert.match(fileOut.stdout, /FAT \(12 bit\)/);
  });

  it('writeSeed refuses bad fields, naming them', async () => {
    const ok = { instanceId: 'i', hostname: 'h', sshAuthorizedKeys: [] as string[] };
    const bad: [object, RegExp][] = [
      [{ hostname: 'bad host;x' }, /seed\.hostname/],
      [{ sshAuthorizedKeys: ['ssh-rsa AAAA\nruncmd: [x]'] }, /sshAuthorizedKeys\[0\]/],
      [{ network: { address: '10.0.0.300', prefixLength: 24, gateway: '10.0.0.1', dns: [], mac: '52:54:00:00:00:01' } }, /seed\.network\.address/],
      [{ network: { address: '10.0.0.3', prefixLength: 33, gateway: '10.0.0.1', dns: [], mac: '52:54:00:00:00:01' } }, /prefixLength/],
      [{ userData: 'x'.repeat(2 * MiB) }, /seed\.userData/],
    ];
    for (const [patch, re] of bad) {
      await assert.rejects(drv.writeSeed('vm-8', 'ds1', { ...ok, ...patch }), (e: DriverError) => e.code === 'INVALID_ARGUMENT' && re.test(e.message), re.source);
    }
    assert.ok(!(await filesUnder(dsPath)).some((f) => f.includes('vm-8')));
  });
});
