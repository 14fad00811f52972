// VM power state and lifecycle on one host: status from the pid file, runtime.json and QEMU's
// runstate; define / start / stop / reboot / pause / resume / destroy, serialized per VM.
import { DriverError, type VmPowerState, type VmRuntime, type VmSpec } from '../hypervisor.js';
import { validateVmSpec } from './args.js';
import { checkHostOffers } from './host.js';
import { isOurProcess } from './process.js';
import type { VmDeps } from './processes.js';
import type { RuntimeRecord } from './vm-store.js';

export type Lifecycle = ReturnType<typeof createLifecycle>;

/** QEMU runstate -> VmPowerState (prelaunch depends on the role: see vmStatus). */
export function mapRunState(runstate: string, role: RuntimeRecord['role']): VmPowerState {
  switch (runstate) {
    case 'running':
      return 'running';
    case 'inmigrate':
      return 'incoming';
    case 'postmigrate':
      return 'postmigrate';
    case 'prelaunch':
      // a received migration whose source never ran lands in prelaunch: a paused copy
      return role === 'incoming' ? 'paused' : 'defined';
    case 'shutdown':
      return 'stopped';
    case 'internal-error':
    case 'io-error':
    case 'guest-panicked':
    case 'watchdog':
      return 'crashed';
    default:
      // paused, finish-migrate, suspended, debug, save-vm, restore-vm, colo
      return 'paused';
  }
}

export function createLifecycle({ cfg, store, sessions, procs }: VmDeps) {
  const { hostId } = cfg;
  const { withLock, readRuntime, updateRuntime, requireSpec } = store;
  const { qmp, runstate } = sessions;

  async function status(vmId: string): Promise<VmRuntime | null> {
    const spec = await store.readSpec(vmId);
    if (!spec) return null;
    const rt = await readRuntime(vmId);
    const pid = await procs.livePid(vmId);
    if (pid === undefined) {
      const state: VmPowerState = rt.role === 'incoming' || rt.expectRunning ? 'crashed' : rt.started ? 'stopped' : 'defined';
      return { vmId, state, spec };
    }
    let rs: string;
    try {
      rs = await runstate(vmId);
    } catch (err) {
      // the process may have exited between the pid check and the query (a destination after a
      // cancelled migration exits by itself)
      if ((await procs.livePid(vmId)) === undefined) return status(vmId);
      throw err;
    }
    return { vmId, state: mapRunState(rs, rt.role), pid, spec };
  }

  async function requireStatus(vmId: string): Promise<VmRuntime> {
    const s = await status(vmId);
    if (!s) throw new DriverError(`vm "${vmId}" is not defined on host "${hostId}"`, 'NOT_FOUND', true);
    return s;
  }

  /** A locked step on a defined VM: nothing to do when it is `already` so, else `act` and report. */
  function transition(vmId: string, act: (cur: VmRuntime) => Promise<unknown>, already?: VmPowerState): Promise<VmRuntime> {
    return withLock(vmId, async () => {
      const cur = await requireStatus(vmId);
      if (cur.state === already) return cur;
      await act(cur);
      return requireStatus(vmId);
    });
  }

  function cannot(vmId: string, verb: string, state: VmPowerState): DriverError {
    return new DriverError(`vm "${vmId}" cannot be ${verb} while ${state}`, 'INVALID_STATE', true);
  }

  const defineVm = (spec: VmSpec): Promise<VmRuntime> =>
    withLock(spec?.vmId, async () => {
      validateVmSpec(spec);
      checkHostOffers(cfg, spec);
      const existing = await store.readSpec(spec.vmId);
      if (existing) {
        if (JSON.stringify(existing) !== JSON.stringify(spec)) {
          throw new DriverError(`vm "${spec.vmId}" is already defined on host "${hostId}" with a different spec`, 'INVALID_STATE', true);
        }
        return requireStatus(spec.vmId);
      }
      await store.createVm(spec, 'normal');
      return { vmId: spec.vmId, state: 'defined', spec };
    });

  const startVm = (vmId: string): Promise<VmRuntime> =>
    withLock(vmId, async () => {
      const spec = await requireSpec(vmId);
      const cur = await requireStatus(vmId);
      const rt = await readRuntime(vmId);
      if (cur.state === 'running') return cur;
      if (cur.state === 'incoming' || rt.role === 'incoming') {
        throw new DriverError(`vm "${vmId}" on host "${hostId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
      }
      if (cur.state === 'postmigrate') {
        throw new DriverError(`vm "${vmId}" migrated away from host "${hostId}" (postmigrate): it must not be started here`, 'INVALID_STATE', true);
      }
      if (cur.pid !== undefined && (cur.state === 'stopped' || cur.state === 'crashed')) {
        // guest powered off (-no-shutdown keeps the process) or a QEMU error: fresh process
        await procs.kill(vmId, cur.pid);
      } else if (cur.pid !== undefined) {
        // defined (prelaunch after a spawn whose `cont` never happened) or paused
        await qmp(vmId, 'cont');
        await updateRuntime(vmId, { started: true, expectRunning: true });
        return requireStatus(vmId);
      }
      checkHostOffers(cfg, spec);
      await procs.spawn(vmId, spec, false);
      try {
        await qmp(vmId, 'cont');
        const rs = await runstate(vmId);
        if (rs !== 'running') throw new DriverError(`vm "${vmId}" is "${rs}" after cont, not running`, 'HYPERVISOR');
      } catch (err) {
        await procs.killIfAlive(vmId);
        throw err;
      }
      await updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true });
      return requireStatus(vmId);
    });

  const stopVm = (vmId: string, opts: { timeoutMs: number; force: boolean }): Promise<VmRuntime> =>
    withLock(vmId, async () => {
      await requireSpec(vmId);
      if (!opts || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs < 0) {
        throw new DriverError('opts.timeoutMs must be a non-negative number', 'INVALID_ARGUMENT', true);
      }
      const pid = await procs.livePid(vmId);
      if (pid === undefined) {
        await updateRuntime(vmId, { expectRunning: false });
        return requireStatus(vmId);
      }
      let rs = await runstate(vmId);
      if (rs !== 'shutdown') {
        // woken by QEMU's SHUTDOWN event (the guest powered off; -no-shutdown keeps the process)
        // or the monitor closing, not by a poll; a check every second covers an event missed
        // between the runstate query and the subscription
        const c = await sessions.get(vmId);
        let wake: (() => void) | undefined;
        const fire = () => wake?.();
        const offEvent = c.onEvent(fire, ['SHUTDOWN']);
        const offClose = c.onClose(fire);
        try {
          if (rs === 'running') await qmp(vmId, 'system_powerdown');
          const deadline = Date.now() + opts.timeoutMs;
          while (rs !== 'shutdown' && Date.now() < deadline) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(done, Math.min(1000, Math.max(1, deadline - Date.now())));
              function done() {
                clearTimeout(timer);
                wake = undefined;
                resolve();
              }
              wake = done;
            });
            if (!(await isOurProcess(pid, store.vmPaths(vmId).qmpSocket))) break;
            rs = await runstate(vmId).catch(() => 'gone');
          }
        } finally {
          offEvent();
          offClose();
        }
        if (rs !== 'shutdown' && rs !== 'gone' && !opts.force) {
          throw new DriverError(`vm "${vmId}" did not shut down within ${opts.timeoutMs} ms (runstate ${rs}); retry with force`, 'TIMEOUT');
        }
      }
      await procs.kill(vmId, pid);
      await updateRuntime(vmId, { expectRunning: false });
      return requireStatus(vmId);
    });

  const rebootVm = (vmId: string): Promise<VmRuntime> =>
    transition(vmId, async (cur) => {
      if (cur.state !== 'running' && cur.state !== 'paused') throw cannot(vmId, 'rebooted', cur.state);
      await qmp(vmId, 'system_reset');
    });

  const pauseVm = (vmId: string): Promise<VmRuntime> =>
    transition(
      vmId,
      async (cur) => {
        if (cur.state !== 'running') throw cannot(vmId, 'paused', cur.state);
        await qmp(vmId, 'stop');
      },
      'paused',
    );

  const resumeVm = (vmId: string, opts?: { afterCompletedMigration?: boolean }): Promise<VmRuntime> =>
    transition(
      vmId,
      async (cur) => {
        if (cur.state === 'postmigrate' && !opts?.afterCompletedMigration) {
          throw new DriverError(
            `vm "${vmId}" on host "${hostId}" completed an outgoing migration (postmigrate): resuming it could run the guest twice`,
            'INVALID_STATE',
            true,
          );
        }
        const rt = await readRuntime(vmId);
        if (rt.role === 'incoming' || cur.state === 'incoming') {
          throw new DriverError(`vm "${vmId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
        }
        if (cur.state !== 'paused' && cur.state !== 'postmigrate') throw cannot(vmId, 'resumed', cur.state);
        await qmp(vmId, 'cont');
      },
      'running',
    );

  const destroyVm = (vmId: string): Promise<void> =>
    withLock(vmId, async () => {
      await procs.killIfAlive(vmId);
      sessions.drop(vmId);
      await store.removeVm(vmId);
    });

  async function listVms(): Promise<VmRuntime[]> {
    const out: VmRuntime[] = [];
    for (const n of await store.listVmIds()) {
      const s = await status(n);
      if (s) out.push(s);
    }
    return out;
  }

  return { status, requireStatus, defineVm, startVm, stopVm, rebootVm, pauseVm, resumeVm, destroyVm, listVms };
}
