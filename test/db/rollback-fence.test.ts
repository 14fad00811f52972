// A step that runs again after its operation rolled back leaves nothing behind. A local activity
// is executed again when its workflow task timed out (a CPU-starved control worker), while the
// first execution may still be running; if that late execution of stage 1 (reserve B, mark the
// VM migrating) lands after the saga's release-reservation and restore-inventory, the
// reservation and the 'migrating' state stayed forever (the chaos campaign's CI sample, seed
// 1060: leaked-reservation and stuck-migrating of one rolled-back operation). The compensation
// now marks the operation (one transaction with the release) and a later reservation or
// migrating mark for it is refused.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Allocation, Operation, Vm } from '../../db/entities.js';
import { ConflictError } from '../../db/errors.js';
import { releaseForRollback, reserve } from '../../db/repositories/capacity.js';
import { createOperation } from '../../db/repositories/operations.js';
import { createVm } from '../../db/repositories/inventory.js';
import { createControlActivities } from '../../activities/control.js';
import { checkInvariants } from '../helpers/invariants.js';
import { createTestDb, dbKinds, seedCluster, type TestDb } from '../helpers/db.js';

for (const kind of dbKinds()) {
  describe(`a late step after a rollback on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
      await seedCluster(t.db, { hosts: 2 });
    });
    after(async () => t?.cleanup());

    it('reserve after releaseForRollback is refused; before it, the release takes it', async () => {
      await createOperation(t.db, { id: 'op-f1', workflowId: 'wf-f1', kind: 'migration', subkind: 'live', vmId: 'vm-f1' });
      const r = { hostId: 'host-2', vmId: 'vm-f1', cpus: 1, memoryMiB: 512, diskGiB: 0, operationId: 'op-f1', kind: 'reservation' as const };
      await reserve(t.db, r);
      assert.equal(await releaseForRollback(t.db, 'op-f1'), 1);
      await assert.rejects(reserve(t.db, r), (e: unknown) => e instanceof ConflictError && /was rolled back/.test(e.message));
      assert.equal(await t.db.em().count(Allocation, { operationId: 'op-f1' }), 0);
      assert.equal((await t.db.em().findOneOrFail(Operation, { id: 'op-f1' })).details.reservationsReleased, true);
      // idempotent, and an operation without a record is no obstacle (nothing to mark)
      assert.equal(await releaseForRollback(t.db, 'op-f1'), 0);
      await reserve(t.db, { ...r, operationId: 'op-without-record' });
      assert.equal(await releaseForRollback(t.db, 'op-without-record'), 1);
    });

    it('reserveMigrationTarget run again after the compensations leaves no reservation and the VM running', async () => {
      const ctl = createControlActivities({ db: t.db });
      await createVm(t.db, { id: 'vm-f2', name: 'f2', cpus: 1, memoryMiB: 512, diskGiB: 2, hostId: 'host-1', datastoreId: 'ds-shared', state: 'running' });
      await createOperation(t.db, { id: 'op-f2', workflowId: 'migrate-vm-f2', kind: 'migration', subkind: 'live', vmId: 'vm-f2' });
      const step = { operationId: 'op-f2', vmId: 'vm-f2', targetHostId: 'host-2' };
      // the first execution, which the workflow saw
      await ctl.reserveMigrationTarget(step);
      assert.equal((await t.db.em().findOneOrFail(Vm, { id: 'vm-f2' })).state, 'migrating');
      // the rollback: the saga's compensations, then the record ends
      await ctl.releaseReservation({ operationId: 'op-f2' });
      await ctl.restoreVmAfterRollback({ vmId: 'vm-f2', hostId: 'host-1' });
      await ctl.finishOperation({ id: 'op-f2', state: 'cancelled', error: 'cancelled by operator' });
      // the late execution of stage 1
      await assert.rejects(ctl.reserveMigrationTarget(step), /was rolled back/);
      assert.equal(await t.db.em().count(Allocation, { operationId: 'op-f2' }), 0);
      assert.equal((await t.db.em().findOneOrFail(Vm, { id: 'vm-f2' })).state, 'running');
      const vs = (await checkInvariants({ db: t.db, sim: { snapshot: () => ({ vms: [{ vmId: 'vm-f2', hostId: 'host-1', state: 'running' }], disks: [], hosts: [] }) } as never })).filter((v) => v.kind === 'leaked-reservation' || v.kind === 'stuck-migrating');
      assert.deepEqual(vs, []);
    });
  });
}
