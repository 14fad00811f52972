// Operations (audit records): idempotent create, merged details under concurrent updates, finish,
// a later run of the same workflow id, newest-first cursor pagination.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ConflictError, ValidationError } from '../../db/errors.js';
import { createOperation, findRunningOperation, finishOperation, getOperation, listOperations, updateOperation } from '../../db/repositories/operations.js';
import { createTestDb, dbKinds, type TestDb } from '../helpers/db.js';

for (const kind of dbKinds()) {
  describe(`operations on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
    });
    after(async () => t?.cleanup());

    it('create is idempotent by workflow id, also when raced', async () => {
      const ops = await Promise.all([0, 1, 2, 3].map(() => createOperation(t.db, { workflowId: 'provision-web-1', runId: 'run-1', kind: 'provision', subkind: 'template', vmId: 'vm-1' })));
      assert.ok(ops.every((o) => o.id === 'provision-web-1'));
      assert.equal((await listOperations(t.db, { workflowId: 'provision-web-1' })).items.length, 1);
      await assert.rejects(createOperation(t.db, { id: 'provision-web-1', workflowId: 'other', kind: 'provision' }), ConflictError);
      await assert.rejects(createOperation(t.db, { workflowId: 'x', kind: 'nope' as 'provision' }), (e: Error) => e instanceof ValidationError && e.message.startsWith('kind:'));
    });

    it('details are deep-merged; concurrent updates all land', async () => {
      await updateOperation(t.db, 'provision-web-1', { stage: 'select', details: { placement: { chosen: 'host-a', rejected: [{ hostId: 'host-b', reasons: ['memory'] }] } } });
      await Promise.all([
        updateOperation(t.db, 'provision-web-1', { details: { stepTimingsMs: { select: 12 } } }),
        updateOperation(t.db, 'provision-web-1', { details: { placement: { datastoreId: 'ds-1' } } }),
        updateOperation(t.db, 'provision-web-1', { details: { compensations: ['release-reservation'] } }),
      ]);
      const op = await getOperation(t.db, 'provision-web-1');
      assert.equal(op.stage, 'select');
      assert.deepEqual(op.details, {
        placement: { chosen: 'host-a', rejected: [{ hostId: 'host-b', reasons: ['memory'] }], datastoreId: 'ds-1' },
        stepTimingsMs: { select: 12 },
        compensations: ['release-reservation'],
      });
      assert.equal(await updateOperation(t.db, 'missing', { stage: 'x' }), null);
    });

    it('finish sets the end once, is idempotent, and refuses a different outcome', async () => {
      const a = await finishOperation(t.db, 'provision-web-1', { state: 'failed', error: 'no host', details: { rolledBack: true } });
      assert.equal(a!.state, 'failed');
      const endedAt = a!.endedAt!.getTime();
      const b = await finishOperation(t.db, 'provision-web-1', { state: 'failed' });
      assert.equal(b!.endedAt!.getTime(), endedAt);
      assert.equal(b!.error, 'no host');
      await assert.rejects(finishOperation(t.db, 'provision-web-1', { state: 'completed' }), ConflictError);
      await assert.rejects(finishOperation(t.db, 'provision-web-1', { state: 'running' }), ValidationError);
    });

    it('a later run of the same workflow id archives the earlier record and starts fresh', async () => {
      const op = await createOperation(t.db, { workflowId: 'provision-web-1', runId: 'run-2', kind: 'provision' });
      assert.equal(op.state, 'running');
      assert.equal(op.runId, 'run-2');
      assert.deepEqual(op.details, {});
      const old = await getOperation(t.db, 'provision-web-1.run-run-1');
      assert.equal(old.state, 'failed');
      assert.equal(old.error, 'no host');
      assert.equal((await createOperation(t.db, { workflowId: 'provision-web-1', runId: 'run-2', kind: 'provision' })).id, 'provision-web-1', 'and is idempotent for its own run');
      assert.equal((await findRunningOperation(t.db, { workflowId: 'provision-web-1' }))?.runId, 'run-2');
    });

    it('lists newest first with a cursor, filtered', async () => {
      for (let i = 0; i < 5; i++) {
        await createOperation(t.db, { id: `mig-${i}`, workflowId: 'migrate-vm-9', runId: `r${i}`, kind: 'migration', vmId: 'vm-9' });
        await finishOperation(t.db, `mig-${i}`, { state: 'completed' });
      }
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const page: Awaited<ReturnType<typeof listOperations>> = await listOperations(t.db, { kind: 'migration', vmId: 'vm-9', limit: 2, cursor });
        ids.push(...page.items.map((o) => o.id));
        cursor = page.nextCursor;
      } while (cursor);
      assert.equal(ids.length, 5);
      assert.equal(new Set(ids).size, 5);
      const all = (await listOperations(t.db, { kind: 'migration', limit: 10 })).items;
      assert.deepEqual(ids, all.map((o) => o.id), 'pages concatenate to the single-page order');
      for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.startedAt.getTime() >= all[i]!.startedAt.getTime(), 'newest first');
    });
  });
}
