// The rollback fence on an operation's record (capacity.ts uses it for every reservation).
import type { Em } from '../orm.js';
import { Operation } from '../entities.js';

/**
 * The mark a rollback leaves in its operation's details when it gives the reservations back
 * (releaseForRollback): from then on no reservation is made for that operation. A step can run
 * again after the workflow moved on (a local activity is executed again when its workflow task
 * timed out, on a CPU-starved worker, while the first execution still runs); without the mark
 * a late reservation after the compensation stays forever (found by the chaos campaign: a
 * leaked reservation and a VM left 'migrating' by an operation that had rolled back).
 */
const RELEASED = 'reservationsReleased';

/**
 * Claims the operation's row for this transaction (so a rollback's release and a reservation for
 * the same operation serialise) and says whether its rollback already gave its reservations
 * back. An operation without a record (tests) was never rolled back.
 */
export async function operationRolledBack(tx: Em, operationId: string): Promise<boolean> {
  await tx.execute(tx.getKnex()('operation').where({ id: operationId }).increment('version', 1), [], 'run');
  const op = await tx.findOne(Operation, { id: operationId }, { refresh: true });
  return op?.details?.[RELEASED] === true;
}

/** Sets the mark (inside the caller's transaction, after operationRolledBack claimed the row). */
export async function markRolledBack(tx: Em, operationId: string): Promise<void> {
  const op = await tx.findOne(Operation, { id: operationId });
  if (op) {
    op.details = { ...op.details, [RELEASED]: true };
    await tx.flush();
  }
}
