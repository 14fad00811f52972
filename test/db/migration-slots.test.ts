// Per-host migration slots (activities/queries.ts acquireMigrationSlots): which records hold them.
// A live migration holds its source's outgoing and its target's incoming slot from the grant to
// its end; a cold migration too, through its stop, copy, verify and registration; a storage
// migration (one host, another datastore) asks for none and holds none, though it passes through
// stages named like a live migration's ('reservation', 'commitment'). Found by the chaos
// campaign (seed 89): a storage migration entering 'commitment' on h1 while two live migrations
// held h1's two incoming slots counted as a third.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Operation } from '../../db/entities.js';
import { createOperation } from '../../db/repositories/operations.js';
import { acquireMigrationSlots, holdsSlots, releaseMigrationSlots, SLOT_HOLDERS } from '../../activities/queries.js';
import { checkCapacity } from '../helpers/invariants-temporal.js';
import { createTestDb, dbKinds, seedCluster, type TestDb } from '../helpers/db.js';

for (const kind of dbKinds()) {
  describe(`migration slots on ${kind}`, () => {
    let t: TestDb;
    let n = 0;
    before(async () => {
      t = await createTestDb(kind);
      await seedCluster(t.db, { hosts: 3 }); // default limits: 2 outgoing, 2 incoming
    });
    after(async () => t?.cleanup());

    const op = async (subkind: string | undefined, source: string, target: string, stage = 'pre-migration') => {
      const id = `op-slots-${++n}`;
      await createOperation(t.db, { workflowId: id, kind: 'migration', ...(subkind ? { subkind } : {}), sourceHostId: source, targetHostId: target, stage });
      return id;
    };
    const setStage = (id: string, stage: string) => t.db.em().nativeUpdate(Operation, { id }, { stage });
    const finishAll = () => t.db.em().nativeUpdate(Operation, { state: 'running' }, { state: 'completed' });

    it('a storage migration in its commitment takes none of its host slots and counts in no tally', async () => {
      const a = await op('live', 'host-2', 'host-1');
      const b = await op('live', 'host-3', 'host-1');
      assert.deepEqual(await acquireMigrationSlots(t.db, { operationId: a, sourceHostId: 'host-2', targetHostId: 'host-1' }), { granted: true });
      assert.deepEqual(await acquireMigrationSlots(t.db, { operationId: b, sourceHostId: 'host-3', targetHostId: 'host-1' }), { granted: true });
      const s = await op('storage', 'host-1', 'host-1', 'commitment');
      assert.equal(holdsSlots((await t.db.em().findOneOrFail(Operation, { id: s }))!), false);
      assert.deepEqual(await checkCapacity(t.db), [], 'host-1 receives 2 migrations (its limit), not 3');
      // and it does not take host-1's outgoing slots away from a live migration
      const c = await op('live', 'host-1', 'host-2');
      const d = await op('live', 'host-1', 'host-3');
      assert.equal((await acquireMigrationSlots(t.db, { operationId: c, sourceHostId: 'host-1', targetHostId: 'host-2' })).granted, true);
      assert.equal((await acquireMigrationSlots(t.db, { operationId: d, sourceHostId: 'host-1', targetHostId: 'host-3' })).granted, true);
      await finishAll();
    });

    it('a cold migration holds its slots through stop, copy, verify and register, so a third is refused meanwhile', async () => {
      const cold = await op('cold', 'host-1', 'host-2');
      assert.equal((await acquireMigrationSlots(t.db, { operationId: cold, sourceHostId: 'host-1', targetHostId: 'host-2' })).granted, true);
      const live = await op('live', 'host-3', 'host-2');
      assert.equal((await acquireMigrationSlots(t.db, { operationId: live, sourceHostId: 'host-3', targetHostId: 'host-2' })).granted, true);
      for (const stage of ['stop', 'copy', 'verify', 'register']) {
        await setStage(cold, stage);
        const third = await op('live', 'host-3', 'host-2');
        const r = await acquireMigrationSlots(t.db, { operationId: third, sourceHostId: 'host-3', targetHostId: 'host-2' });
        assert.equal(r.granted, false, `the cold migration in ${stage} holds host-2's incoming slot`);
        assert.match(r.reason ?? '', /host-2 already receives 2 migration\(s\) \(limit 2\)/);
        await t.db.em().nativeUpdate(Operation, { id: third }, { state: 'cancelled' });
      }
      assert.deepEqual(await checkCapacity(t.db), []);
      // its rollback frees them at once, like a live migration's
      await releaseMigrationSlots(t.db, { operationId: cold });
      assert.equal((await t.db.em().findOneOrFail(Operation, { id: cold })).stage, 'rollback');
      assert.equal(await t.db.em().count(Operation, { ...SLOT_HOLDERS, targetHostId: 'host-2' }), 1);
      await finishAll();
    });

    it('a migration record without a subkind (before cold and storage existed) is a live one', async () => {
      const old = await op(undefined, 'host-1', 'host-2', 'pre-copy');
      assert.equal(holdsSlots((await t.db.em().findOneOrFail(Operation, { id: old }))!), true);
      assert.equal(await t.db.em().count(Operation, { ...SLOT_HOLDERS, sourceHostId: 'host-1' }), 1);
      await finishAll();
    });
  });
}
