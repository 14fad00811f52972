// One QMP session per VM, opened on first use and re-opened after it closes: this is how a new
// driver instance (a restarted agent) re-attaches to a daemonized QEMU. QMP accepts one client per
// socket, so close() must run before another instance in the same process takes the host over.
import { DriverError, type MigrationEventWatch } from '../hypervisor.js';
import { livePid } from './process.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import type { VmStore } from './vm-store.js';

export type QmpSessions = ReturnType<typeof createQmpSessions>;

export interface QmpSessionOptions {
  store: VmStore;
  hostId: string;
  qmpTimeoutMs: number;
  /** every session's MIGRATION events (the auto-switchover watcher, re-armed on reconnect) */
  onMigrationEvent: (vmId: string, e: QmpEvent) => void;
}

export function createQmpSessions({ store, hostId, qmpTimeoutMs, onMigrationEvent }: QmpSessionOptions) {
  const clients = new Map<string, Promise<QmpClient>>();

  async function get(vmId: string): Promise<QmpClient> {
    const cached = clients.get(vmId);
    if (cached) {
      try {
        const c = await cached;
        if (!c.closed) return c;
      } catch {
        // fall through and reconnect
      }
      if (clients.get(vmId) === cached) clients.delete(vmId);
    }
    const p = store.vmPaths(vmId);
    const connecting = (async () => {
      if ((await livePid(p)) === undefined) {
        throw new DriverError(`vm "${vmId}" has no running QEMU process on host "${hostId}"`, 'INVALID_STATE');
      }
      const c = await QmpClient.connect(p.qmpSocket, { connectTimeoutMs: 5_000, commandTimeoutMs: qmpTimeoutMs });
      c.onClose(() => {
        if (clients.get(vmId) === connecting) clients.delete(vmId);
      });
      // re-arm the auto-switchover watcher after an agent restart
      c.onEvent((e) => onMigrationEvent(vmId, e), ['MIGRATION']);
      return c;
    })();
    clients.set(vmId, connecting);
    try {
      return await connecting;
    } catch (err) {
      if (clients.get(vmId) === connecting) clients.delete(vmId);
      throw err;
    }
  }

  function drop(vmId: string): void {
    const c = clients.get(vmId);
    clients.delete(vmId);
    c?.then((x) => x.close()).catch(() => undefined);
  }

  async function qmp<T = unknown>(vmId: string, command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    const c = await get(vmId);
    return c.execute<T>(command, args, { timeoutMs });
  }

  async function runstate(vmId: string): Promise<string> {
    const r = await qmp<{ status: string }>(vmId, 'query-status');
    return r.status;
  }

  async function hmp(vmId: string, commandLine: string): Promise<string> {
    return (await get(vmId)).hmp(commandLine);
  }

  /**
   * The VM's migration events from now on, buffered between calls of next() so an event that
   * lands while the caller queries is not missed; a closed connection wakes the waiter too (its
   * next query reconnects or reports the error).
   */
  async function watchMigrationEvents(vmId: string): Promise<MigrationEventWatch> {
    const c = await get(vmId);
    let pending = false;
    let wake: (() => void) | undefined;
    const fire = () => {
      pending = true;
      wake?.();
    };
    const offEvent = c.onEvent(fire, ['MIGRATION', 'MIGRATION_PASS']);
    const offClose = c.onClose(fire);
    return {
      next(timeoutMs) {
        if (pending) {
          pending = false;
          return Promise.resolve();
        }
        return new Promise<void>((resolve) => {
          const timer = setTimeout(done, timeoutMs);
          function done() {
            clearTimeout(timer);
            wake = undefined;
            pending = false;
            resolve();
          }
          wake = done;
        });
      },
      close() {
        wake?.();
        offEvent();
        offClose();
      },
    };
  }

  /** Closes every session; the VMs keep running. */
  async function close(): Promise<void> {
    const all = [...clients.values()];
    clients.clear();
    await Promise.all(all.map((c) => c.then((x) => x.close()).catch(() => undefined)));
  }

  return { get, drop, qmp, runstate, hmp, watchMigrationEvents, close };
}
