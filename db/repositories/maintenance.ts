// Maintenance mode on the Operation log: entering or leaving it changes the host and writes a
// finished `maintenance` operation (subkind enter | leave) in ONE transaction, so the log never
// disagrees with the flag. Idempotent by `key`: an activity retried after a crash (or an API
// request repeated) finds its own record and changes nothing twice.
import { Host, Operation } from '../entities.js';
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { NotFoundError } from '../errors.js';
import { retryTransient } from './util.js';

export interface MaintenanceChange {
  hostId: string;
  enabled: boolean;
  /** idempotency key, e.g. the evacuation's run id or the API request id */
  key: string;
  /** workflow that asked (evacuation) or `api` */
  workflowId: string;
  reason: string;
  principal?: string;
}

export interface MaintenanceResult {
  host: Host;
  /** false when the host was already in the requested mode (nothing recorded) */
  changed: boolean;
  operationId?: string;
}

export async function setMaintenance(x: Db | Em, change: MaintenanceChange): Promise<MaintenanceResult> {
  const id = `maintenance-${change.hostId}-${change.enabled ? 'enter' : 'leave'}-${change.key}`;
  return retryTransient(
    () =>
      emOf(x)
        .fork()
        .transactional(async (tx) => {
          const host = await tx.findOne(Host, { id: change.hostId });
          if (!host) throw new NotFoundError('host', change.hostId);
          if (await tx.findOne(Operation, { id })) return { host, changed: false, operationId: id };
          if (host.maintenance === change.enabled) return { host, changed: false };
          host.maintenance = change.enabled;
          const now = new Date();
          tx.create(Operation, {
            id,
            workflowId: change.workflowId,
            runId: null,
            kind: 'maintenance',
            subkind: change.enabled ? 'enter' : 'leave',
            vmId: null,
            state: 'completed',
            stage: null,
            sourceHostId: change.hostId,
            targetHostId: null,
            details: { reason: change.reason, ...(change.principal ? { principal: change.principal } : {}) },
            principal: change.principal ?? null,
            error: null,
            startedAt: now,
            endedAt: now,
          });
          return { host, changed: true, operationId: id };
        }),
    { attempts: 10 },
  );
}
