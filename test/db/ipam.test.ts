// IPAM: concurrent allocators never share an address (the UNIQUE constraint decides), allocation
// is idempotent per VM, an exhausted pool names the network, release is idempotent.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { IpAllocation } from '../../db/entities.js';
import { CapacityError, NotFoundError, ValidationError } from '../../db/errors.js';
import { allocateIp, ipToInt, listIpAllocations, parseCidr, releaseIp } from '../../db/repositories/ipam.js';
import { createIpPool, createNetwork } from '../../db/repositories/inventory.js';
import type { Db } from '../../db/orm.js';
import { createTestDb, dbKinds, seedNetwork, type TestDb } from '../helpers/db.js';

describe('ipv4 helpers', () => {
  it('parses CIDRs and rejects bad ones by field', () => {
    const c = parseCidr('10.1.0.0/27');
    assert.equal(c.last - c.first + 1, 32);
    assert.throws(() => parseCidr('10.1.0.1/27'), (e: Error) => e instanceof ValidationError && /host bits/.test(e.message));
    assert.throws(() => parseCidr('10.1.0.0/33'), ValidationError);
    assert.throws(() => parseCidr('nonsense'), /^ValidationError: cidr:|cidr:/);
    assert.throws(() => ipToInt('1.2.3.256'), RangeError);
  });
});

for (const kind of dbKinds()) {
  describe(`ipam on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
      // a /27: 32 addresses; .0 network, .31 broadcast, .1 gateway -> 29 usable in a full-range pool
      await seedNetwork(t.db, { id: 'net-a', name: 'prod-a', cidr: '10.1.0.0/27', gateway: '10.1.0.1', rangeStart: '10.1.0.0', rangeEnd: '10.1.0.31' });
    });
    after(async () => t?.cleanup());

    it('40 concurrent allocations on a /27 pool: no duplicate, exactly the 29 usable addresses, the rest name the network', async () => {
      const dbs: Db[] = kind === 'postgres' ? [t.db, await t.connectAgain(), await t.connectAgain()] : [t.db];
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          allocateIp(dbs[i % dbs.length]!, { networkId: 'net-a', vmId: `vm-${i}` }).then(
            (a) => ({ ok: true as const, address: a.address }),
            (e: unknown) => ({ ok: false as const, e }),
          ),
        ),
      );
      const addresses = results.filter((r) => r.ok).map((r) => (r as { address: string }).address);
      assert.equal(new Set(addresses).size, addresses.length, 'no address handed out twice');
      assert.equal(addresses.length, 29);
      assert.ok(!addresses.includes('10.1.0.1'), 'gateway skipped');
      assert.ok(!addresses.includes('10.1.0.0') && !addresses.includes('10.1.0.31'), 'network and broadcast skipped');
      const errors = results.filter((r) => !r.ok).map((r) => (r as { e: unknown }).e);
      assert.equal(errors.length, 11);
      for (const e of errors) {
        assert.ok(e instanceof CapacityError, String(e));
        assert.equal(e.resource, 'ip');
        assert.match(e.message, /network prod-a \(net-a\) has no free address/);
      }
      const rows = await t.db.em().find(IpAllocation, { networkId: 'net-a' });
      assert.equal(rows.length, 29);
    });

    it('is idempotent per (network, vm), also when retried concurrently', async () => {
      // free two addresses (which VMs won the race differs per run)
      const holders = await listIpAllocations(t.db, { networkId: 'net-a' });
      assert.equal(await releaseIp(t.db, { vmId: holders[3]!.vmId }), 1);
      assert.equal(await releaseIp(t.db, { vmId: holders[4]!.vmId }), 1);
      const keeper = holders[0]!;
      const [a, b, c] = await Promise.all([0, 1, 2].map(() => allocateIp(t.db, { networkId: 'net-a', vmId: 'vm-again' })));
      assert.equal(a!.address, b!.address);
      assert.equal(a!.address, c!.address);
      assert.equal((await listIpAllocations(t.db, { vmId: 'vm-again' })).length, 1);
      const again = await allocateIp(t.db, { networkId: 'net-a', vmId: keeper.vmId });
      assert.equal(again.address, keeper.address, 'a VM that has an address keeps it');
    });

    it('hands out the lowest free address and reuses released ones', async () => {
      const rows = await listIpAllocations(t.db, { networkId: 'net-a' });
      const freed = rows.find((r) => r.vmId === 'vm-again')!.address;
      const other = await allocateIp(t.db, { networkId: 'net-a', vmId: 'vm-next' });
      assert.ok(ipToInt(other.address) > ipToInt(freed), 'the lower freed address went first');
      assert.equal(await releaseIp(t.db, { vmId: 'vm-next', networkId: 'net-a' }), 1);
      assert.equal(await releaseIp(t.db, { vmId: 'vm-next', networkId: 'net-a' }), 0, 'release is idempotent');
      assert.equal((await allocateIp(t.db, { networkId: 'net-a', vmId: 'vm-next2' })).address, other.address);
    });

    it('pools are validated against the network; an unknown network is NotFound', async () => {
      await createNetwork(t.db, { id: 'net-b', name: 'lab-b', cidr: '192.168.5.0/24', gateway: '192.168.5.1', vlan: 105 });
      await assert.rejects(createIpPool(t.db, { networkId: 'net-b', rangeStart: '192.168.6.10', rangeEnd: '192.168.6.20' }), (e: Error) => e instanceof ValidationError && /^rangeStart:/.test(e.message));
      await assert.rejects(createIpPool(t.db, { networkId: 'net-b', rangeStart: '192.168.5.20', rangeEnd: '192.168.5.10' }), (e: Error) => e instanceof ValidationError && /^rangeEnd:/.test(e.message));
      await createIpPool(t.db, { networkId: 'net-b', rangeStart: '192.168.5.10', rangeEnd: '192.168.5.20' });
      await assert.rejects(createIpPool(t.db, { networkId: 'net-b', rangeStart: '192.168.5.15', rangeEnd: '192.168.5.30' }), /overlaps/);
      assert.equal((await allocateIp(t.db, { networkId: 'net-b', vmId: 'vm-b' })).address, '192.168.5.10');
      await assert.rejects(allocateIp(t.db, { networkId: 'net-none', vmId: 'vm-b' }), NotFoundError);
    });
  });
}
