// Simulator disks: virtual-time copies, idempotency by name, abort, space, seeds, slow disks.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DriverError, type Progress } from '../../domain/hypervisor.js';
import { GiB, MiB, TEMPLATE_PATH, openTestCluster } from '../../drivers/sim/fixtures.js';

const code = (c: string, permanent?: boolean) => (e: unknown) => {
  assert.ok(e instanceof DriverError, `expected DriverError, got ${String(e)}`);
  assert.equal(e.code, c, e.message);
  if (permanent !== undefined) assert.equal(e.permanent, permanent, e.message);
  return true;
};

describe('sim disks', () => {
  test('a full copy takes size / throughput of virtual time; a linked clone and a blank disk are instant', async () => {
    const { sim, a } = openTestCluster();
    const progress: Progress[] = [];
    const full = await a.createDisk(
      { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 10 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: false } },
      { onProgress: (p) => progress.push(p) },
    );
    // 2 GiB at 512 MiB/s = 4 s
    assert.equal(sim.virtualNow(), 4000);
    assert.equal(full.virtualSizeBytes, 10 * GiB);
    assert.equal(full.actualSizeBytes, 2 * GiB);
    assert.equal(full.path, 'sim://shared/vm-1-root.qcow2');
    assert.ok(progress.length > 2 && progress.at(-1)!.fraction === 1);
    assert.ok(progress.every((p, i) => i === 0 || p.doneBytes! >= progress[i - 1]!.doneBytes!), 'progress is monotonic');
    const linked = await a.createDisk({ name: 'vm-2-root', datastoreId: 'shared', sizeBytes: 10 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: true } });
    assert.equal(linked.backingPath, TEMPLATE_PATH);
    const blank = await a.createDisk({ name: 'vm-3-data', datastoreId: 'local-a', sizeBytes: GiB, source: { kind: 'blank' } });
    assert.equal(blank.virtualSizeBytes, GiB);
    assert.equal(sim.virtualNow(), 4000, 'linked clone and blank disk take no time');
    // clone of a disk and import of a foreign image copy their source
    sim.upsertImage({ path: 'sim://shared/imports/app.vmdk', datastoreId: 'shared', sizeBytes: GiB, format: 'vmdk' });
    await a.createDisk({ name: 'vm-4-root', datastoreId: 'shared', sizeBytes: GiB, source: { kind: 'import', sourcePath: 'sim://shared/imports/app.vmdk', format: 'vmdk' } });
    assert.equal(sim.virtualNow(), 6000);
    await a.createDisk({ name: 'vm-5-root', datastoreId: 'local-a', sizeBytes: GiB, source: { kind: 'clone', sourcePath: full.path } });
    assert.equal(sim.virtualNow(), 6000 + 20_000, '10 GiB at 512 MiB/s (the slower end)');
    sim.close();
  });

  test('createDisk is idempotent by name: two concurrent calls make one disk', async () => {
    const { sim, a } = openTestCluster();
    const spec = { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 4 * GiB, source: { kind: 'template' as const, imagePath: TEMPLATE_PATH, linked: false } };
    const [x, y] = await Promise.all([a.createDisk(spec), a.createDisk(spec)]);
    assert.deepEqual(x, y);
    assert.equal(sim.snapshot().disks.filter((d) => d.path === x.path).length, 1);
    // a later retry finds the finished disk at once
    const before = sim.virtualNow();
    assert.deepEqual(await a.createDisk(spec), x);
    assert.equal(sim.virtualNow(), before);
    // same name, different content: refused, not silently reused
    await assert.rejects(a.createDisk({ ...spec, sizeBytes: 8 * GiB }), code('INVALID_STATE', true));
    sim.close();
  });

  test('abort removes the partial disk and throws an AbortError', async () => {
    const { sim, a } = openTestCluster();
    const ac = new AbortController();
    let calls = 0;
    const p = a.createDisk(
      { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 4 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: false } },
      { signal: ac.signal, onProgress: () => ++calls === 3 && ac.abort(new Error('activity cancelled')) },
    );
    await assert.rejects(p, (e: unknown) => e instanceof DriverError && e.name === 'AbortError' && /activity cancelled/.test(e.message));
    assert.deepEqual(sim.snapshot().disks, []);
    assert.equal(await a.diskInfo('sim://shared/vm-1-root.qcow2'), null);
    sim.close();
  });

  test('unknown sources, full datastores and bad input get clear permanent errors', async () => {
    const { sim, a } = openTestCluster();
    await assert.rejects(
      a.createDisk({ name: 'x-root', datastoreId: 'shared', sizeBytes: GiB, source: { kind: 'template', imagePath: 'sim://shared/templates/nope.qcow2', linked: true } }),
      (e: unknown) => code('NOT_FOUND', true)(e) && /nope\.qcow2/.test((e as Error).message),
    );
    await assert.rejects(a.createDisk({ name: 'x-root', datastoreId: 'shared', sizeBytes: GiB, source: { kind: 'clone', sourcePath: 'sim://shared/missing.qcow2' } }), code('NOT_FOUND', true));
    await assert.rejects(a.createDisk({ name: 'x-root', datastoreId: 'local-a', sizeBytes: 501 * GiB, source: { kind: 'blank' } }), code('INSUFFICIENT_SPACE', true));
    await assert.rejects(a.createDisk({ name: 'x-root', datastoreId: 'shared', sizeBytes: -1, source: { kind: 'blank' } }), /sizeBytes/);
    await assert.rejects(a.createDisk({ name: 'X;rm', datastoreId: 'shared', sizeBytes: 1, source: { kind: 'blank' } }), /name/);
    await assert.rejects(a.createDisk({ name: 'x-root', datastoreId: 'local-b', sizeBytes: 1, source: { kind: 'blank' } }), /not attached to host host-a/);
    await assert.rejects(a.createDisk({ name: 'x-root', datastoreId: 'nowhere', sizeBytes: 1, source: { kind: 'blank' } }), code('NOT_FOUND'));
    await assert.rejects(sim.forHost('host-z').hostInfo(), (e: unknown) => code('NOT_FOUND')(e) && /host-z/.test((e as Error).message));
    assert.deepEqual(sim.snapshot().disks, [], 'nothing half done');
    sim.close();
  });

  test('hostInfo reports free space; deleteDisk is idempotent and refuses disks in use', async () => {
    const { sim, a } = openTestCluster();
    const before = (await a.hostInfo()).datastores.find((d) => d.id === 'local-a')!;
    const d = await a.createDisk({ name: 'vm-1-root', datastoreId: 'local-a', sizeBytes: 10 * GiB, source: { kind: 'blank' } });
    const after = (await a.hostInfo()).datastores.find((x) => x.id === 'local-a')!;
    assert.equal(before.freeBytes - after.freeBytes, 10 * GiB);
    await a.defineVm({ vmId: 'vm-1', name: 'vm-1', cpus: 1, memoryBytes: GiB, disks: [d.path], cpuFeatures: [] });
    await a.startVm('vm-1');
    await assert.rejects(a.deleteDisk(d.path), code('INVALID_STATE'));
    await a.destroyVm('vm-1');
    await a.deleteDisk(d.path);
    await a.deleteDisk(d.path);
    assert.equal(await a.diskInfo(d.path), null);
    await assert.rejects(a.deleteDisk('/etc/passwd'), code('INVALID_ARGUMENT'));
    sim.close();
  });

  test('writeSeed is idempotent by vmId', async () => {
    const { sim, a } = openTestCluster();
    const seed = { instanceId: 'vm-1', hostname: 'web-1', sshAuthorizedKeys: ['ssh-ed25519 AAAA'] };
    const x = await a.writeSeed('vm-1', 'shared', seed);
    const y = await a.writeSeed('vm-1', 'shared', seed);
    assert.deepEqual(x, y);
    assert.equal(x.path, 'sim://shared/vm-1-seed.iso');
    assert.equal(sim.snapshot().disks.filter((d) => d.kind === 'seed').length, 1);
    sim.close();
  });

  test('slow-disk slows copies in progress and clearing it speeds them up again', async () => {
    const { sim, clock, a } = openTestCluster();
    sim.injectFault({ id: 'slow', kind: 'slow-disk', datastoreId: 'shared', value: 10 });
    let cleared = false;
    const disk = await a.createDisk(
      { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 2 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: false } },
      {
        onProgress: (p) => {
          // half-way at the slow rate (1 GiB at 51.2 MiB/s = 20 s), clear the fault
          if (!cleared && clock.now() >= 20_000) {
            cleared = true;
            assert.ok(Math.abs(p.doneBytes! - GiB) < 64 * MiB, `${p.doneBytes}`);
            sim.clearFaults({ id: 'slow' });
          }
        },
      },
    );
    assert.ok(disk);
    // 20 s slow for the first GiB (plus at most one poll step), then 2 s at 512 MiB/s
    assert.ok(sim.virtualNow() < 23_000 && sim.virtualNow() >= 22_000, `${sim.virtualNow()}`);
    assert.ok(sim.listFaults().length === 0);
    sim.close();
  });

  test('copyDisk copies to another host datastore over the link', async () => {
    const { sim, a } = openTestCluster();
    const src = await a.createDisk({ name: 'vm-1-root', datastoreId: 'local-a', sizeBytes: 2 * GiB, source: { kind: 'blank' } });
    const copy = await a.copyDisk(src.path, { name: 'vm-1-root', datastoreId: 'local-b', sizeBytes: 2 * GiB, source: { kind: 'blank' } });
    assert.equal(copy.path, 'sim://local-b/vm-1-root.qcow2');
    assert.equal(sim.virtualNow(), 2000, '2 GiB at 1 GiB/s');
    assert.deepEqual(await a.copyDisk(src.path, { name: 'vm-1-root', datastoreId: 'local-b', sizeBytes: 2 * GiB, source: { kind: 'blank' } }), copy);
    sim.close();
  });
});

describe('sim topology', () => {
  test('upserts validate their input and removeHost refuses a host with VMs', async () => {
    const { sim, a } = openTestCluster();
    assert.throws(() => sim.upsertHost({ id: 'Host A', cpuModel: 'x', cpuFeatures: [], cpus: 1, memoryBytes: GiB, networks: [] }), /host\.id/);
    assert.throws(() => sim.upsertHost({ id: 'host-d', cpuModel: 'x', cpuFeatures: [], cpus: -1, memoryBytes: GiB, networks: [] }), /host\.cpus/);
    assert.throws(() => sim.upsertDatastore({ id: 'ds-x', shared: false, capacityBytes: GiB, throughputBytesPerSec: MiB, hostIds: ['host-a', 'host-b'] }), /not shared/);
    assert.throws(() => sim.upsertDatastore({ id: 'ds-x', shared: true, capacityBytes: GiB, throughputBytesPerSec: MiB, hostIds: ['host-q'] }), /host-q/);
    assert.throws(() => sim.upsertLink({ a: 'host-a', b: 'host-a', bandwidthBytesPerSec: MiB }), /must differ/);
    assert.throws(() => sim.upsertImage({ path: 'sim://shared/x.qcow2', datastoreId: 'shared', sizeBytes: 0 }), /image\.sizeBytes/);
    sim.upsertLink({ a: 'host-b', b: 'host-a', bandwidthBytesPerSec: 100 * MiB });
    sim.upsertHost({ id: 'host-d', cpuModel: 'x', cpuFeatures: ['sse4_2'], cpus: 4, memoryBytes: 8 * GiB, networks: ['default'] });
    const info = await sim.forHost('host-d').hostInfo();
    assert.deepEqual([info.hostId, info.datastores, info.networks, info.migrationAddress], ['host-d', [], ['default'], 'sim://host-d']);
    await a.createDisk({ name: 'vm-1-root', datastoreId: 'local-a', sizeBytes: GiB, source: { kind: 'blank' } });
    await a.defineVm({ vmId: 'vm-1', name: 'vm-1', cpus: 1, memoryBytes: GiB, disks: ['sim://local-a/vm-1-root.qcow2'], cpuFeatures: [] });
    assert.throws(() => sim.removeHost('host-a'), /vm-1/);
    sim.removeHost('host-d');
    assert.deepEqual(sim.listHosts().map((h) => h.id), ['host-a', 'host-b', 'host-c']);
    sim.close();
  });
});
