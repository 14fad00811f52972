import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkMigrationTarget,
  placeVm,
  type HostCandidate,
  type MigratingVm,
  type PlacementRequest,
} from '../../domain/placement.js';

function host(id: string, over: Partial<HostCandidate> = {}): HostCandidate {
  return {
    id,
    maintenance: false,
    state: 'up',
    cpus: 8,
    memoryMiB: 8192,
    cpuOvercommit: 1,
    memoryOvercommit: 1,
    usedCpus: 0,
    usedMemoryMiB: 0,
    cpuModel: 'EPYC',
    cpuFeatures: ['sse4_2', 'avx', 'avx2', 'aes'],
    tags: [],
    datastores: [{ id: 'shared-1', shared: true, freeGiB: 500 }],
    networks: ['prod'],
    vmTags: [],
    ...over,
  };
}

const small: PlacementRequest = { cpus: 2, memoryMiB: 2048, diskGiB: 20 };

function reasonsFor(result: ReturnType<typeof placeVm>, hostId: string): string[] {
  return result.rejected.find((r) => r.hostId === hostId)?.reasons ?? [];
}

describe('placeVm filters', () => {
  it('rejects a down host and one in maintenance, with a reason each', () => {
    const r = placeVm(small, [host('a', { state: 'down' }), host('b', { maintenance: true }), host('c')]);
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['c']);
    assert.deepEqual(reasonsFor(r, 'a'), ['state: host is down']);
    assert.deepEqual(reasonsFor(r, 'b'), ['maintenance: host is in maintenance (no new placements)']);
  });

  it('memory: names needed, free and capacity with the overcommit ratio', () => {
    const r = placeVm({ ...small, memoryMiB: 4096 }, [host('a', { usedMemoryMiB: 6144 })]);
    assert.deepEqual(r.ranked, []);
    assert.deepEqual(reasonsFor(r, 'a'), ['memory: needs 4096 MiB, free 2048 MiB of 8192 MiB (overcommit 1.0)']);
  });

  it('overcommit ratios raise capacity for cpu and memory', () => {
    const busy = host('a', { cpus: 4, usedCpus: 6, cpuOvercommit: 2, usedMemoryMiB: 8192, memoryOvercommit: 1.5 });
    assert.deepEqual(placeVm(small, [busy]).ranked.map((x) => x.hostId), ['a']); // 8-6=2 cpus, 12288-8192=4096 MiB
    const r = placeVm({ ...small, cpus: 3 }, [busy]);
    assert.deepEqual(reasonsFor(r, 'a'), ['cpu: needs 3 vCPUs, free 2 of 8 (overcommit 2.0)']);
    const m = placeVm({ ...small, memoryMiB: 5000 }, [busy]);
    assert.deepEqual(reasonsFor(m, 'a'), ['memory: needs 5000 MiB, free 4096 MiB of 12288 MiB (overcommit 1.5)']);
  });

  it('explicit hostId keeps only that host; excluded hosts are refused', () => {
    const r = placeVm({ ...small, hostId: 'b', excludeHostIds: ['a'] }, [host('a'), host('b'), host('c')]);
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['b']);
    assert.deepEqual(reasonsFor(r, 'a'), ['not the requested host b', 'excluded by the request (migration source)']);
    assert.deepEqual(reasonsFor(r, 'c'), ['not the requested host b']);
  });

  it('disk: needs a reachable datastore with room; lists what there is', () => {
    const r = placeVm({ ...small, diskGiB: 100 }, [
      host('a', { datastores: [{ id: 'local-a', shared: false, freeGiB: 40 }] }),
      host('b', { datastores: [] }),
    ]);
    assert.deepEqual(reasonsFor(r, 'a'), ['disk: needs 100 GiB free on a reachable datastore, available: local-a (40 GiB free)']);
    assert.deepEqual(reasonsFor(r, 'b'), ['disk: needs 100 GiB free on a reachable datastore, available: none']);
  });

  it('template: the disk goes to a datastore holding the template, with room', () => {
    const hosts = [
      host('a', { datastores: [{ id: 'local-a', shared: false, freeGiB: 900 }] }),
      host('b', {
        datastores: [
          { id: 'tmpl-1', shared: true, freeGiB: 10 },
          { id: 'local-b', shared: false, freeGiB: 900 },
        ],
      }),
      host('c', {
        datastores: [
          { id: 'tmpl-1', shared: true, freeGiB: 10 },
          { id: 'tmpl-2', shared: false, freeGiB: 300 },
        ],
      }),
    ];
    const r = placeVm({ ...small, templateDatastoreIds: ['tmpl-1', 'tmpl-2'] }, hosts);
    assert.deepEqual(r.ranked, [{ hostId: 'c', score: 0.75, datastoreId: 'tmpl-2' }]);
    assert.deepEqual(reasonsFor(r, 'a'), [
      'disk: no reachable datastore holds the template (template on tmpl-1, tmpl-2; host reaches local-a (900 GiB free))',
    ]);
    assert.deepEqual(reasonsFor(r, 'b'), ['disk: needs 20 GiB free on a datastore holding the template, available: tmpl-1 (10 GiB free)']);
  });

  it('cpu features: names every missing feature and the host cpu model', () => {
    const r = placeVm({ ...small, requiredCpuFeatures: ['avx512f', 'aes', 'avx2', 'amx'] }, [host('a', { cpuModel: 'Skylake' })]);
    assert.deepEqual(reasonsFor(r, 'a'), ['cpu features: missing amx, avx512f (cpu model Skylake)']);
  });

  it('network must be bridged on the host', () => {
    const r = placeVm({ ...small, network: 'dmz' }, [host('a', { networks: ['prod', 'mgmt'] }), host('b', { networks: ['dmz'] })]);
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['b']);
    assert.deepEqual(reasonsFor(r, 'a'), ['network: dmz is not bridged on this host (has prod, mgmt)']);
  });

  it('anti-affinity refuses hosts already carrying a VM with the tag', () => {
    const r = placeVm({ ...small, antiAffinityTag: 'db' }, [
      host('a', { vmTags: [['db', 'prod'], ['web']] }),
      host('b', { vmTags: [['web']] }),
    ]);
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['b']);
    assert.deepEqual(reasonsFor(r, 'a'), ['anti-affinity: 1 VM(s) tagged db already on this host']);
  });

  it('affinity requires a host carrying the group once the group exists; the first VM goes anywhere', () => {
    const hosts = [host('a', { vmTags: [['web']] }), host('b', { vmTags: [['cache']] })];
    const r = placeVm({ ...small, affinityTag: 'cache' }, hosts);
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['b']);
    assert.deepEqual(reasonsFor(r, 'a'), ['affinity: no VM tagged cache on this host']);
    const first = placeVm({ ...small, affinityTag: 'new-group' }, hosts);
    assert.deepEqual(first.ranked.map((x) => x.hostId), ['a', 'b']);
  });

  it('collects every reason for a host, not only the first', () => {
    const r = placeVm({ ...small, cpus: 16, network: 'dmz' }, [host('a', { maintenance: true })]);
    assert.deepEqual(reasonsFor(r, 'a'), [
      'maintenance: host is in maintenance (no new placements)',
      'cpu: needs 16 vCPUs, free 8 of 8 (overcommit 1.0)',
      'network: dmz is not bridged on this host (has prod)',
    ]);
  });
});

describe('placeVm weighers', () => {
  const hosts = [
    host('h3', { usedMemoryMiB: 4096 }),
    host('h1', { usedMemoryMiB: 1024, usedCpus: 4 }),
    host('h2', { usedMemoryMiB: 1024, usedCpus: 2 }),
    host('h0', { usedMemoryMiB: 6144 }),
  ];

  it('spread (default): most free memory first, then most free cpu, scores after placement', () => {
    const r = placeVm(small, hosts);
    assert.equal(r.weigher, 'spread');
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['h2', 'h1', 'h3', 'h0']);
    assert.deepEqual(r.ranked.map((x) => x.score), [0.625, 0.625, 0.25, 0]);
  });

  it('pack: least free first, then least free cpu', () => {
    const r = placeVm(small, hosts, { weigher: 'pack' });
    assert.deepEqual(r.ranked.map((x) => x.hostId), ['h0', 'h3', 'h1', 'h2']);
  });

  it('ties are broken by host id whatever the input order', () => {
    const same = [host('c'), host('a'), host('b')];
    assert.deepEqual(placeVm(small, same).ranked.map((x) => x.hostId), ['a', 'b', 'c']);
    assert.deepEqual(placeVm(small, [...same].reverse(), { weigher: 'pack' }).ranked.map((x) => x.hostId), ['a', 'b', 'c']);
  });

  it('datastore per host: shared first, then the most free, then id', () => {
    const r = placeVm(small, [
      host('a', {
        datastores: [
          { id: 'local', shared: false, freeGiB: 1000 },
          { id: 's-small', shared: true, freeGiB: 100 },
          { id: 's-big', shared: true, freeGiB: 200 },
        ],
      }),
      host('b', {
        datastores: [
          { id: 'l2', shared: false, freeGiB: 50 },
          { id: 'l1', shared: false, freeGiB: 50 },
        ],
      }),
    ]);
    assert.deepEqual(
      r.ranked.map((x) => [x.hostId, x.datastoreId]),
      [
        ['a', 's-big'],
        ['b', 'l1'],
      ],
    );
  });

  it('is deterministic and leaves its inputs alone', () => {
    const before = JSON.stringify(hosts);
    const one = placeVm(small, hosts);
    const two = placeVm(small, JSON.parse(before) as HostCandidate[]);
    assert.deepEqual(one, two);
    assert.equal(JSON.stringify(hosts), before);
    assert.deepEqual(JSON.parse(JSON.stringify(one)), one); // plain JSON
  });
});

describe('placeVm input validation', () => {
  it('names the bad field', () => {
    assert.throws(() => placeVm({ ...small, cpus: 0 }, [host('a')]), /request\.cpus must be positive, got 0/);
    assert.throws(() => placeVm({ ...small, memoryMiB: Number.NaN }, [host('a')]), /request\.memoryMiB must be a finite number/);
    assert.throws(() => placeVm({ ...small, diskGiB: -1 }, [host('a')]), /request\.diskGiB must not be negative/);
    assert.throws(() => placeVm({ ...small, templateDatastoreIds: [] }, [host('a')]), /request\.templateDatastoreIds/);
    assert.throws(() => placeVm(small, [host('a'), host('a')]), /hosts\[1\]\.id is a duplicate host id/);
    assert.throws(() => placeVm(small, [host('a', { memoryOvercommit: 0 })]), /hosts\[0\]\.memoryOvercommit must be positive/);
    assert.throws(() => placeVm(small, [host('a')], { weigher: 'random' as never }), /options\.weigher/);
  });
});

describe('checkMigrationTarget', () => {
  const vm: MigratingVm = {
    id: 'vm-1',
    cpus: 2,
    memoryMiB: 4096,
    cpuFeatures: ['sse4_2', 'avx2'],
    diskGiB: 40,
    datastoreIds: ['shared-1'],
    network: 'prod',
  };
  const source = host('src', { usedCpus: 2, usedMemoryMiB: 4096 });

  it('accepts a compatible target on shared storage without copying disks', () => {
    assert.deepEqual(checkMigrationTarget(vm, source, host('dst')), {
      ok: true,
      reasons: [],
      copyDisks: false,
      targetDatastoreId: null,
    });
  });

  it('refuses the source itself', () => {
    const r = checkMigrationTarget(vm, source, source);
    assert.equal(r.ok, false);
    assert.ok(r.reasons.includes('target src is the source host'));
  });

  it('refuses a target lacking a CPU feature the VM was started with, even with the same model', () => {
    const r = checkMigrationTarget(vm, source, host('dst', { cpuFeatures: ['sse4_2', 'avx'] }));
    assert.deepEqual(r.reasons, ['cpu features: target dst (EPYC) lacks avx2 that the VM was started with on src (EPYC)']);
  });

  it('a different CPU model is fine when every feature is offered', () => {
    assert.equal(checkMigrationTarget(vm, source, host('dst', { cpuModel: 'Xeon', cpuFeatures: ['avx2', 'sse4_2'] })).ok, true);
  });

  it('no shared datastore: copyDisks is a plan flag with a target datastore, not a refusal', () => {
    const local = host('src', { datastores: [{ id: 'local-src', shared: false, freeGiB: 100 }] });
    const r = checkMigrationTarget({ ...vm, datastoreIds: ['local-src'] }, local, host('dst', { datastores: [{ id: 'local-dst', shared: false, freeGiB: 100 }] }));
    assert.deepEqual(r, { ok: true, reasons: [], copyDisks: true, targetDatastoreId: 'local-dst' });
    // a shared datastore the target does not reach also means copying
    const r2 = checkMigrationTarget(vm, source, host('dst', { datastores: [{ id: 'shared-2', shared: true, freeGiB: 100 }] }));
    assert.equal(r2.copyDisks, true);
    assert.equal(r2.targetDatastoreId, 'shared-2');
  });

  it('copying without room on the target is refused with the numbers', () => {
    const local = host('src', { datastores: [{ id: 'local-src', shared: false, freeGiB: 100 }] });
    const r = checkMigrationTarget({ ...vm, datastoreIds: ['local-src'] }, local, host('dst', { datastores: [{ id: 'local-dst', shared: false, freeGiB: 10 }] }));
    assert.equal(r.ok, false);
    assert.equal(r.copyDisks, true);
    assert.deepEqual(r.reasons, ['disk: no shared storage, and copying needs 40 GiB on target dst, available: local-dst (10 GiB free)']);
  });

  it('refuses missing network, capacity, maintenance and down, all listed', () => {
    const r = checkMigrationTarget(vm, source, host('dst', { networks: ['mgmt'], usedMemoryMiB: 6144, usedCpus: 7, maintenance: true, state: 'down' }));
    assert.deepEqual(r.reasons, [
      'state: target dst is down',
      'maintenance: target dst is in maintenance',
      'network: prod is not bridged on target dst',
      'cpu: needs 2 vCPUs, free 1 of 8 (overcommit 1.0)',
      'memory: needs 4096 MiB, free 2048 MiB of 8192 MiB (overcommit 1.0)',
    ]);
  });

  it('names a bad vm field', () => {
    assert.throws(() => checkMigrationTarget({ ...vm, memoryMiB: -5 }, source, host('dst')), /vm\.memoryMiB must be positive/);
  });
});
