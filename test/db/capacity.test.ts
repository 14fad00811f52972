// Reservations never overcommit a host under concurrency (forks, several connection pools, and on
// SQLite several processes), are idempotent, release is idempotent, and the migration commit is
// one atomic, idempotent, readable-back transaction.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { Allocation, Host, Operation, Vm } from '../../db/entities.js';
import { CapacityError, ConflictError, NotFoundError, ValidationError } from '../../db/errors.js';
import { commitMigration, convertReservationToVm, findReservation, getHostUsage, readCommit, release, reserve } from '../../db/repositories/capacity.js';
import { createOperation } from '../../db/repositories/operations.js';
import { createVm } from '../../db/repositories/inventory.js';
import type { Db } from '../../db/orm.js';
import { createTestDb, dbKinds, seedCluster, DB_HELPER_PATH, type TestDb } from '../helpers/db.js';

const GiB = 1024;

async function allocationsOn(db: Db, hostId: string): Promise<Allocation[]> {
  return db.em().find(Allocation, { hostId });
}

/** 3 hosts x 8 GiB (overcommit 1) and 2 GiB per VM: room for 4 VMs per host, 12 in all. */
async function race(t: TestDb, dbs: Db[], tag: string) {
  const hostIds = ['host-1', 'host-2', 'host-3'];
  const results = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      reserve(dbs[i % dbs.length]!, {
        hostId: hostIds[i % 3]!,
        vmId: `vm-${tag}-${i}`,
        cpus: 2,
        memoryMiB: 2 * GiB,
        diskGiB: 10,
        datastoreId: 'ds-shared',
        operationId: `op-${tag}-${i}`,
        kind: 'reservation',
      }).then(
        (a) => ({ ok: true as const, a }),
        (e: unknown) => ({ ok: false as const, e }),
      ),
    ),
  );
  const ok = results.filter((r) => r.ok);
  const failed = results.filter((r) => !r.ok).map((r) => (r as { e: unknown }).e);
  assert.equal(ok.length, 12, `exactly 12 reservations fit (got ${ok.length}; failures: ${failed.slice(0, 3).map(String).join(' | ')})`);
  assert.equal(failed.length, 18);
  for (const e of failed) {
    assert.ok(e instanceof CapacityError, `a CapacityError, not ${String(e)}`);
    assert.equal(e.resource, 'memory');
    assert.match(e.message, /memory: requested 2048 MiB, free 0 MiB of 8192 MiB/);
  }
  for (const h of hostIds) {
    const allocs = await allocationsOn(t.db, h);
    assert.equal(allocs.length, 4, `${h} holds exactly 4`);
    const usage = await getHostUsage(t.db, h);
    assert.ok(usage.usedMemoryMiB <= usage.capacityMemoryMiB, `${h} is not overcommitted`);
    assert.equal(usage.usedMemoryMiB, 8 * GiB);
    assert.equal(usage.reservations, 4);
  }
}

for (const kind of dbKinds()) {
  describe(`capacity on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
      await seedCluster(t.db, { hosts: 3, cpus: 16, memoryMiB: 8 * GiB });
    });
    after(async () => t?.cleanup());

    it('30 concurrent reservations (separate forks) on room for 12: exactly 12 succeed, 18 name memory', async () => {
      await race(t, [t.db], 'forks');
      await t.db.em().nativeDelete(Allocation, {});
    });

    if (kind === 'postgres') {
      it('the same race from three connection pools (as three processes would)', async () => {
        const dbs = [t.db, await t.connectAgain(), await t.connectAgain()];
        await race(t, dbs, 'pools');
        await t.db.em().nativeDelete(Allocation, {});
      });
    }

    it('the same race from three OS processes on one database', async () => {
      const children = await Promise.all(
        [0, 1, 2].map((p) =>
          // each process reserves 10 VMs spread over the three hosts? no: one host each would not
          // race across processes, so every process aims all 10 at host-1
          execa(process.execPath, ['--import', 'tsx', DB_HELPER_PATH, 'reserve-child', t.url, t.dataDir, 'host-1', '10', `proc${p}`], { reject: false }),
        ),
      );
      for (const c of children) assert.equal(c.exitCode, 0, `child failed: ${c.stderr}`);
      const lines = children.flatMap((c) => c.stdout.trim().split('\n')).map((l) => JSON.parse(l) as { ok: boolean; resource?: string; name?: string; message?: string });
      assert.equal(lines.length, 30);
      const ok = lines.filter((l) => l.ok);
      assert.equal(ok.length, 4, `host-1 (8 GiB) takes exactly 4 x 2 GiB: ${JSON.stringify(lines.filter((l) => !l.ok && l.name !== 'CapacityError').slice(0, 2))}`);
      for (const l of lines.filter((x) => !x.ok)) {
        assert.equal(l.name, 'CapacityError', l.message);
        assert.equal(l.resource, 'memory');
      }
      assert.equal((await allocationsOn(t.db, 'host-1')).length, 4);
      await t.db.em().nativeDelete(Allocation, {});
    });

    it('a step that reserves again on another host (a lost attempt re-planned) keeps one reservation, the new one', async () => {
      const r1 = await reserve(t.db, { hostId: 'host-1', vmId: 'vm-lost', cpus: 2, memoryMiB: 1024, diskGiB: 0, operationId: 'op-lost', kind: 'reservation' });
      const other = await reserve(t.db, { hostId: 'host-1', vmId: 'vm-other', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-other', kind: 'reservation' });
      const r2 = await reserve(t.db, { hostId: 'host-2', vmId: 'vm-lost', cpus: 2, memoryMiB: 1024, diskGiB: 0, operationId: 'op-lost', kind: 'reservation' });
      assert.notEqual(r1.id, r2.id);
      const left = await t.db.em().fork().find(Allocation, { operationId: { $in: ['op-lost', 'op-other'] } });
      assert.deepEqual(left.map((a) => `${a.operationId}:${a.hostId}`).sort(), ['op-lost:host-2', 'op-other:host-1'], 'the lost attempt on host-1 is gone, nobody else touched');
      assert.equal((await reserve(t.db, { hostId: 'host-2', vmId: 'vm-lost', cpus: 2, memoryMiB: 1024, diskGiB: 0, operationId: 'op-lost', kind: 'reservation' })).id, r2.id, 'a retry on the same host is the same reservation');
      await t.db.em().nativeDelete(Allocation, {});
      assert.ok(other.id);
    });

    it('cpu and disk limits are named too, with overcommit ratios applied', async () => {
      // 16 cpus x 4.0 = 64 vCPUs
      await reserve(t.db, { hostId: 'host-2', vmId: 'vm-big', cpus: 64, memoryMiB: 1, diskGiB: 0, operationId: 'op-cpu-1', kind: 'reservation' });
      await assert.rejects(
        reserve(t.db, { hostId: 'host-2', vmId: 'vm-one-more', cpus: 1, memoryMiB: 1, diskGiB: 0, operationId: 'op-cpu-2', kind: 'reservation' }),
        (e: Error) => e instanceof CapacityError && e.resource === 'cpu' && /cpu: requested 1 vCPUs, free 0 of 64 \(16 x 4 overcommit\)/.test(e.message),
      );
      await assert.rejects(
        reserve(t.db, { hostId: 'host-3', vmId: 'vm-disk', cpus: 1, memoryMiB: 1, diskGiB: 20_000, datastoreId: 'ds-shared', operationId: 'op-disk', kind: 'reservation' }),
        (e: Error) => e instanceof CapacityError && e.resource === 'disk' && /datastore ds-shared has not enough disk: requested 20000 GiB/.test(e.message),
      );
      await release(t.db, { operationId: 'op-cpu-1' });
    });

    it('a host in maintenance takes no reservation; unknown hosts and bad input are named', async () => {
      await t.db.em().nativeUpdate(Host, { id: 'host-3' }, { maintenance: true });
      await assert.rejects(
        reserve(t.db, { hostId: 'host-3', vmId: 'vm-m', cpus: 1, memoryMiB: 1, diskGiB: 0, operationId: 'op-m', kind: 'reservation' }),
        (e: Error) => e instanceof CapacityError && e.resource === 'host' && /maintenance/.test(e.message),
      );
      await t.db.em().nativeUpdate(Host, { id: 'host-3' }, { maintenance: false });
      await assert.rejects(reserve(t.db, { hostId: 'host-zz', vmId: 'vm-m', cpus: 1, memoryMiB: 1, diskGiB: 0, operationId: 'op-m', kind: 'reservation' }), NotFoundError);
      await assert.rejects(reserve(t.db, { hostId: 'host-1', vmId: 'vm-m', cpus: -1, memoryMiB: 1, diskGiB: 0, operationId: 'op-m', kind: 'reservation' }), (e: Error) => e instanceof ValidationError && e.message.startsWith('cpus:'));
      assert.equal((await allocationsOn(t.db, 'host-3')).length, 0, 'nothing written');
    });

    it('reserve is idempotent by (operationId, hostId, vmId), also when retried concurrently', async () => {
      const input = { hostId: 'host-1', vmId: 'vm-idem', cpus: 1, memoryMiB: 512, diskGiB: 5, datastoreId: 'ds-shared', operationId: 'op-idem', kind: 'reservation' as const };
      const [a, b, c] = await Promise.all([reserve(t.db, input), reserve(t.db, input), reserve(t.db, input)]);
      assert.equal(a.id, b.id);
      assert.equal(a.id, c.id);
      assert.equal((await t.db.em().find(Allocation, { operationId: 'op-idem' })).length, 1);
      assert.equal((await findReservation(t.db, 'op-idem'))?.id, a.id);
    });

    it('release is idempotent by operation, by allocation, and by (vm, host)', async () => {
      assert.equal(await release(t.db, { operationId: 'op-idem' }), 1);
      assert.equal(await release(t.db, { operationId: 'op-idem' }), 0);
      const a = await reserve(t.db, { hostId: 'host-1', vmId: 'vm-r', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-r', kind: 'reservation' });
      assert.equal(await release(t.db, { allocationId: a.id }), 1);
      assert.equal(await release(t.db, { allocationId: a.id }), 0);
      await reserve(t.db, { hostId: 'host-1', vmId: 'vm-r', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-r2', kind: 'vm' });
      assert.equal(await release(t.db, { operationId: 'op-r2' }), 0, 'by operation only reservations go: a VM allocation stays');
      assert.equal(await release(t.db, { vmId: 'vm-r', hostId: 'host-1' }), 1);
      assert.equal(await release(t.db, { vmId: 'vm-r', hostId: 'host-1' }), 0);
    });

    it('convertReservationToVm turns a reservation into the VM allocation, idempotently', async () => {
      const a = await reserve(t.db, { hostId: 'host-1', vmId: 'vm-c', cpus: 1, memoryMiB: 256, diskGiB: 0, operationId: 'op-c', kind: 'reservation' });
      assert.equal((await convertReservationToVm(t.db, a.id)).kind, 'vm');
      assert.equal((await convertReservationToVm(t.db, a.id)).kind, 'vm');
      assert.equal(await release(t.db, { operationId: 'op-c' }), 0, 'no longer a reservation');
      await assert.rejects(convertReservationToVm(t.db, 'alloc-missing'), NotFoundError);
      await release(t.db, { allocationId: a.id });
    });

    describe('commitMigration', () => {
      let reservationId: string;
      before(async () => {
        await createVm(t.db, { id: 'vm-mig', name: 'mig', cpus: 2, memoryMiB: 1024, diskGiB: 20, hostId: 'host-1', datastoreId: 'ds-shared', state: 'migrating' });
        await reserve(t.db, { hostId: 'host-1', vmId: 'vm-mig', cpus: 2, memoryMiB: 1024, diskGiB: 20, datastoreId: 'ds-shared', operationId: 'provision-mig', kind: 'vm' });
        await createOperation(t.db, { id: 'op-mig', workflowId: 'migrate-vm-mig', kind: 'migration', subkind: 'live', vmId: 'vm-mig' });
        // shared storage: the target reservation holds no disk
        reservationId = (await reserve(t.db, { hostId: 'host-2', vmId: 'vm-mig', cpus: 2, memoryMiB: 1024, diskGiB: 0, operationId: 'op-mig', kind: 'reservation' })).id;
      });

      it('is not committed before, and a refused commit changes nothing (atomic)', async () => {
        assert.equal((await readCommit(t.db, { vmId: 'vm-mig', operationId: 'op-mig' })).committed, false);
        // wrong source: refused inside the transaction after nothing was written
        await assert.rejects(
          commitMigration(t.db, { vmId: 'vm-mig', operationId: 'op-mig', sourceHostId: 'host-3', targetHostId: 'host-2', reservationId }),
          (e: Error) => e instanceof ConflictError && /vm vm-mig is on host host-1, not on source host host-3/.test(e.message),
        );
        const vm = await t.db.em().findOneOrFail(Vm, { id: 'vm-mig' });
        assert.equal(vm.hostId, 'host-1');
        assert.equal((await t.db.em().findOneOrFail(Allocation, { id: reservationId })).kind, 'reservation');
        assert.equal((await allocationsOn(t.db, 'host-1')).filter((a) => a.vmId === 'vm-mig').length, 1);
        assert.equal((await readCommit(t.db, { vmId: 'vm-mig', operationId: 'op-mig' })).committed, false);
      });

      it('moves home, converts the reservation, drops the source allocation, records committedAt: one transaction', async () => {
        const before = await getHostUsage(t.db, 'host-1');
        const r = await commitMigration(t.db, { vmId: 'vm-mig', operationId: 'op-mig', sourceHostId: 'host-1', targetHostId: 'host-2' });
        assert.equal(r.alreadyCommitted, false);
        assert.equal(r.allocationId, reservationId);
        const em = t.db.em();
        const vm = await em.findOneOrFail(Vm, { id: 'vm-mig' });
        assert.equal(vm.hostId, 'host-2');
        const mine = await em.find(Allocation, { vmId: 'vm-mig' });
        assert.equal(mine.length, 1, 'exactly one allocation: on the target');
        assert.equal(mine[0]!.hostId, 'host-2');
        assert.equal(mine[0]!.kind, 'vm');
        assert.equal(mine[0]!.diskGiB, 20, 'the disk accounting moved along (shared storage)');
        assert.equal(mine[0]!.datastoreId, 'ds-shared');
        const op = await em.findOneOrFail(Operation, { id: 'op-mig' });
        assert.equal(op.details.committedAt, r.committedAt);
        const after = await getHostUsage(t.db, 'host-1');
        assert.equal(before.usedMemoryMiB - after.usedMemoryMiB, 1024);
        const state = await readCommit(t.db, { vmId: 'vm-mig', operationId: 'op-mig' });
        assert.equal(state.committed, true);
        assert.equal(state.committedAt, r.committedAt);
        assert.equal(state.vmHostId, 'host-2');
      });

      it('a second call (retry after a timeout) returns the same result and changes nothing', async () => {
        const first = await readCommit(t.db, { vmId: 'vm-mig', operationId: 'op-mig' });
        const [a, b] = await Promise.all([
          commitMigration(t.db, { vmId: 'vm-mig', operationId: 'op-mig', sourceHostId: 'host-1', targetHostId: 'host-2' }),
          commitMigration(t.db, { vmId: 'vm-mig', operationId: 'op-mig', sourceHostId: 'host-1', targetHostId: 'host-2', reservationId }),
        ]);
        assert.equal(a.alreadyCommitted, true);
        assert.equal(b.alreadyCommitted, true);
        assert.equal(a.committedAt, first.committedAt);
        assert.equal((await t.db.em().find(Allocation, { vmId: 'vm-mig' })).length, 1);
      });

      it('concurrent first commits: one commits, the other reads it back', async () => {
        await createVm(t.db, { id: 'vm-mig2', name: 'mig2', cpus: 1, memoryMiB: 512, diskGiB: 0, hostId: 'host-2', state: 'migrating' });
        await reserve(t.db, { hostId: 'host-2', vmId: 'vm-mig2', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'prov-mig2', kind: 'vm' });
        await createOperation(t.db, { id: 'op-mig2', workflowId: 'migrate-vm-mig2', kind: 'migration' });
        await reserve(t.db, { hostId: 'host-3', vmId: 'vm-mig2', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-mig2', kind: 'reservation' });
        const input = { vmId: 'vm-mig2', operationId: 'op-mig2', sourceHostId: 'host-2', targetHostId: 'host-3' };
        const rs = await Promise.all([commitMigration(t.db, input), commitMigration(t.db, input), commitMigration(t.db, input)]);
        assert.equal(rs.filter((r) => !r.alreadyCommitted).length, 1);
        assert.equal(new Set(rs.map((r) => r.committedAt)).size, 1);
        const allocs = await t.db.em().find(Allocation, { vmId: 'vm-mig2' });
        assert.deepEqual(allocs.map((a) => [a.hostId, a.kind]), [['host-3', 'vm']]);
      });

      it('an unknown operation reads as not committed; committing it is NotFound', async () => {
        assert.equal((await readCommit(t.db, { vmId: 'vm-mig', operationId: 'op-none' })).committed, false);
        await assert.rejects(commitMigration(t.db, { vmId: 'vm-mig', operationId: 'op-none', sourceHostId: 'host-2', targetHostId: 'host-1' }), NotFoundError);
      });
    });
  });
}
