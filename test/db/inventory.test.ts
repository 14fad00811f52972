// Inventory: unique names are ConflictErrors naming the name, optimistic locking on VMs and hosts,
// cursor pagination, host usage from allocations.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OptimisticLockError } from '@mikro-orm/core';
import { Allocation, Vm } from '../../db/entities.js';
import { ConflictError, NotFoundError, ValidationError } from '../../db/errors.js';
import { reserve } from '../../db/repositories/capacity.js';
import {
  createDatastore,
  createHost,
  createTemplate,
  createVm,
  deleteTemplate,
  getHostWithUsage,
  getTemplateByName,
  getVm,
  listHostsWithUsage,
  listTemplates,
  listVms,
  retireVm,
  setHostMaintenance,
  setVmState,
  updateHost,
  updateTemplate,
  updateVm,
} from '../../db/repositories/inventory.js';
import { createTestDb, dbKinds, type TestDb } from '../helpers/db.js';

for (const kind of dbKinds()) {
  describe(`inventory on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
      await createHost(t.db, { id: 'host-a', cpuModel: 'EPYC', cpuFeatures: ['avx2'], cpus: 8, memoryMiB: 16384, rack: 'r1' });
      await createHost(t.db, { id: 'host-b', cpuModel: 'EPYC', cpus: 8, memoryMiB: 16384, memoryOvercommit: 1.5 });
      await createDatastore(t.db, { id: 'ds-1', capacityGiB: 500, throughputMiBps: 200, hostIds: ['host-a', 'host-b'] });
    });
    after(async () => t?.cleanup());

    it('hosts get their defaults and a taken id is a conflict', async () => {
      const h = await getHostWithUsage(t.db, 'host-a');
      assert.equal(h.cpuOvercommit, 4);
      assert.equal(h.memoryOvercommit, 1);
      assert.equal(h.maxOutgoingMigrations, 2);
      assert.equal(h.state, 'up');
      assert.equal(h.maintenance, false);
      assert.equal(typeof h.createdAt, 'string', 'plain JSON for the workflow boundary');
      await assert.rejects(createHost(t.db, { id: 'host-a', cpuModel: 'x', cpus: 1, memoryMiB: 1 }), ConflictError);
      await assert.rejects(createHost(t.db, { id: 'Host A', cpuModel: 'x', cpus: 1, memoryMiB: 1 }), (e: Error) => e instanceof ValidationError && e.message.startsWith('id:'));
    });

    it('host usage sums VM allocations and reservations, per datastore too', async () => {
      await reserve(t.db, { hostId: 'host-b', vmId: 'vm-u1', cpus: 2, memoryMiB: 4096, diskGiB: 50, datastoreId: 'ds-1', operationId: 'op-u1', kind: 'vm' });
      await reserve(t.db, { hostId: 'host-b', vmId: 'vm-u2', cpus: 1, memoryMiB: 1024, diskGiB: 30, datastoreId: 'ds-1', operationId: 'op-u2', kind: 'reservation' });
      const page = await listHostsWithUsage(t.db);
      const b = page.items.find((h) => h.id === 'host-b')!;
      assert.equal(b.usage.usedCpus, 3);
      assert.equal(b.usage.usedMemoryMiB, 5120);
      assert.equal(b.usage.reservedMemoryMiB, 1024);
      assert.equal(b.usage.capacityMemoryMiB, 16384 * 1.5);
      assert.equal(b.usage.capacityCpus, 32);
      assert.deepEqual(b.usage.datastores, [{ datastoreId: 'ds-1', capacityGiB: 500, usedGiB: 80, freeGiB: 420 }]);
      const a = page.items.find((h) => h.id === 'host-a')!;
      assert.equal(a.usage.usedCpus, 0);
      assert.equal(a.usage.datastores[0]!.usedGiB, 80, 'a shared datastore counts every host');
    });

    it('optimistic lock: two forks updating the same VM -> the second flush fails', async () => {
      await createVm(t.db, { id: 'vm-lock', name: 'lock', cpus: 1, memoryMiB: 512, diskGiB: 1 });
      const em1 = t.db.em();
      const em2 = t.db.em();
      const a = await em1.findOneOrFail(Vm, { id: 'vm-lock' });
      const b = await em2.findOneOrFail(Vm, { id: 'vm-lock' });
      b.state = 'running';
      await em2.flush();
      a.state = 'error';
      await assert.rejects(em1.flush(), OptimisticLockError);
      const now = await getVm(t.db, 'vm-lock');
      assert.equal(now.state, 'running');
      assert.equal(now.version, 2);
    });

    it('repository updates: a stale expectedVersion is a ConflictError; without one, concurrent patches all land', async () => {
      const vm = await getVm(t.db, 'vm-lock');
      await updateVm(t.db, 'vm-lock', { tags: ['x'] }, { expectedVersion: vm.version });
      await assert.rejects(updateVm(t.db, 'vm-lock', { tags: ['y'] }, { expectedVersion: vm.version }), (e: Error) => e instanceof ConflictError && e.field === 'version');
      await Promise.all([updateVm(t.db, 'vm-lock', { ip: '10.0.0.9' }), updateVm(t.db, 'vm-lock', { mac: '52:54:00:00:00:09' }), setVmState(t.db, 'vm-lock', 'stopped')]);
      const after = await getVm(t.db, 'vm-lock');
      assert.equal(after.ip, '10.0.0.9');
      assert.equal(after.mac, '52:54:00:00:00:09');
      assert.equal(after.state, 'stopped');
      assert.deepEqual(after.tags, ['x']);
      await assert.rejects(setVmState(t.db, 'vm-lock', 'running', { from: ['paused'] }), /VM lock is stopped, not paused/);
      await assert.rejects(updateVm(t.db, 'vm-nope', { ip: '1.1.1.1' }), NotFoundError);
    });

    it('hosts: maintenance toggles under the lock; a stale host update is refused', async () => {
      const h = await setHostMaintenance(t.db, 'host-a', true);
      assert.equal(h.maintenance, true);
      await assert.rejects(updateHost(t.db, 'host-a', { rack: 'r9' }, { expectedVersion: h.version - 1 }), ConflictError);
      assert.equal((await setHostMaintenance(t.db, 'host-a', false)).maintenance, false);
    });

    it('a taken VM name is a ConflictError naming the name; the same create again returns the row', async () => {
      const vm = await createVm(t.db, { id: 'vm-web1', name: 'web-1', cpus: 2, memoryMiB: 2048, diskGiB: 20, tags: ['web'] });
      assert.equal((await createVm(t.db, { id: 'vm-web1', name: 'web-1', cpus: 2, memoryMiB: 2048, diskGiB: 20 })).id, vm.id);
      await assert.rejects(createVm(t.db, { name: 'web-1', cpus: 1, memoryMiB: 1, diskGiB: 1 }), (e: Error) => {
        assert.ok(e instanceof ConflictError);
        assert.equal(e.field, 'name');
        assert.match(e.message, /"web-1"/);
        return true;
      });
      // racing creates of one name with different ids: one wins, the rest conflict
      const rs = await Promise.allSettled([1, 2, 3, 4].map((i) => createVm(t.db, { id: `vm-race-${i}`, name: 'race', cpus: 1, memoryMiB: 1, diskGiB: 1 })));
      assert.equal(rs.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of rs) if (r.status === 'rejected') assert.ok(r.reason instanceof ConflictError && /"race"/.test(r.reason.message), String(r.reason));
      await assert.rejects(createVm(t.db, { name: 'bad name', cpus: 1, memoryMiB: 1, diskGiB: 1 }), (e: Error) => e instanceof ValidationError && e.message.startsWith('name:'));
    });

    it('lists VMs with cursor pagination: every VM once, in order', async () => {
      for (let i = 0; i < 7; i++) await createVm(t.db, { id: `vm-p${i}`, name: `page-${i}`, cpus: 1, memoryMiB: 1, diskGiB: 1, state: 'running' });
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Awaited<ReturnType<typeof listVms>> = await listVms(t.db, { state: 'running', limit: 3, cursor });
        seen.push(...page.items.map((v) => v.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      assert.deepEqual(seen, ['vm-p0', 'vm-p1', 'vm-p2', 'vm-p3', 'vm-p4', 'vm-p5', 'vm-p6']);
      assert.equal(pages, 3);
      await assert.rejects(listVms(t.db, { cursor: 'garbage' }), (e: Error) => e instanceof ValidationError && e.message.startsWith('cursor:'));
    });

    it('templates: CRUD with a unique name', async () => {
      await createTemplate(t.db, { id: 'tpl-deb', name: 'debian-12', os: 'debian', imagePath: '/images/debian-12.qcow2', datastoreIds: ['ds-1'], diskGiB: 10, minMemoryMiB: 512, owner: 'ops', department: 'infra' });
      await assert.rejects(
        createTemplate(t.db, { name: 'debian-12', os: 'debian', imagePath: '/x', datastoreIds: [], diskGiB: 1, minMemoryMiB: 1 }),
        (e: Error) => e instanceof ConflictError && e.field === 'name' && /"debian-12"/.test(e.message),
      );
      await createTemplate(t.db, { id: 'tpl-alp', name: 'alpine', os: 'alpine', imagePath: '/images/alpine.qcow2', datastoreIds: ['ds-1'], diskGiB: 1, minMemoryMiB: 128, department: 'dev' });
      await assert.rejects(updateTemplate(t.db, 'tpl-alp', { name: 'debian-12' }), ConflictError);
      assert.equal((await updateTemplate(t.db, 'tpl-alp', { tags: ['small'] })).tags[0], 'small');
      assert.equal((await getTemplateByName(t.db, 'debian-12')).id, 'tpl-deb');
      assert.deepEqual((await listTemplates(t.db, { department: 'infra' })).items.map((x) => x.id), ['tpl-deb']);
      assert.equal(await deleteTemplate(t.db, 'tpl-alp'), true);
      assert.equal(await deleteTemplate(t.db, 'tpl-alp'), false);
    });

    it('retireVm releases the reservation, frees the name under a tombstone, and a retry changes nothing', async () => {
      await createVm(t.db, { id: 'vm-old', name: 'old-1', hostId: 'host-a', cpus: 1, memoryMiB: 512, diskGiB: 5, state: 'stopped' });
      await reserve(t.db, { hostId: 'host-a', vmId: 'vm-old', cpus: 1, memoryMiB: 512, diskGiB: 5, datastoreId: 'ds-1', operationId: 'op-old', kind: 'vm' });
      for (let attempt = 0; attempt < 2; attempt++) {
        await t.db.em().transactional(async (tx) => retireVm(tx, await tx.findOneOrFail(Vm, { id: 'vm-old' })));
      }
      const vm = await getVm(t.db, 'vm-old');
      assert.deepEqual({ state: vm.state, hostId: vm.hostId, name: vm.name }, { state: 'deleted', hostId: null, name: 'old-1.deleted.vm-old' });
      assert.equal(await t.db.em().count(Allocation, { vmId: 'vm-old' }), 0);
      assert.equal((await createVm(t.db, { name: 'old-1', cpus: 1, memoryMiB: 512, diskGiB: 5 })).name, 'old-1', 'the name is free again');
    });
  });
}
