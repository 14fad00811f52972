// The destination side of a live migration: prepareIncoming spawns QEMU with `-S -incoming defer`
// and has it listen on a port probed from a hash of hostId/vmId inside the host's port range;
// activateIncoming starts the received copy. A destination is single-use (QEMU exits after a
// failed or cancelled incoming migration), so a later prepareIncoming starts afresh.
import { promises as fs } from 'node:fs';
import { DriverError, type IncomingOptions, type IncomingResult, type VmRuntime, type VmSpec } from '../hypervisor.js';
import { validateVmSpec } from './args.js';
import type { BlockJobs } from './block-jobs.js';
import { checkHostOffers } from './host.js';
import type { Lifecycle } from './lifecycle.js';
import { queryMigrate } from './migration-model.js';
import { portIsFree, portOrder, sleep } from './process.js';
import type { VmDeps } from './processes.js';
import { QmpCommandError } from './qmp.js';
import type { NbdExportRecord } from './vm-store.js';

export function createIncoming({ cfg, store, sessions, procs }: VmDeps, lifecycle: Lifecycle, blockJobs: BlockJobs) {
  const { hostId, migrationAddress, portRange } = cfg;
  const { qmp, runstate } = sessions;
  const { requireStatus } = lifecycle;

  /** migrate-incoming on the first free port of the VM's probe order (at most 64 tried). */
  async function listen(vmId: string): Promise<string> {
    const taken = await store.incomingUrisExcept(vmId);
    let lastErr: unknown;
    for (const port of portOrder(`${hostId}/${vmId}`, portRange).slice(0, 64)) {
      const candidate = `tcp:${migrationAddress}:${port}`;
      // in a namespace the probe would bind in the agent's namespace, not QEMU's: QEMU's bind decides
      if (taken.has(candidate) || (!cfg.netns && !(await portIsFree(migrationAddress, port)))) continue;
      try {
        await qmp(vmId, 'migrate-incoming', { uri: candidate });
        return candidate;
      } catch (err) {
        lastErr = err; // lost a race for the port: next one
        if (!(err instanceof QmpCommandError)) throw err;
      }
    }
    throw new DriverError(`no free migration port in ${portRange.join('-')} on ${migrationAddress}: ${(lastErr as Error | undefined)?.message ?? 'all busy'}`, 'HYPERVISOR');
  }

  const prepareIncoming = (spec: VmSpec, opts: IncomingOptions = {}): Promise<IncomingResult> =>
    store.withLock(spec?.vmId, async () => {
      validateVmSpec(spec);
      checkHostOffers(cfg, spec);
      const vmId = spec.vmId;
      const existing = await store.readSpec(vmId);
      if (existing) {
        const rt = await store.readRuntime(vmId);
        const pid = await procs.livePid(vmId);
        if (rt.role !== 'incoming') {
          throw new DriverError(`vm "${vmId}" already exists on host "${hostId}" (not an incoming copy)`, 'INVALID_STATE', true);
        }
        if (pid !== undefined && rt.incomingUri) return answer(rt.incomingUri, rt.nbd, existing);
        // a destination is single-use: after a cancelled/failed migration QEMU exited; start afresh
        if (pid !== undefined) await procs.kill(vmId, pid);
        await removeCopies(vmId);
        await store.removeVm(vmId);
      }
      // copyDisks: the destination runs on empty copies that the source's mirror fills over NBD;
      // they are recorded before they exist, so a destroy after a crash finds them
      const local = opts.copyDisks ? await blockJobs.createIncomingCopies(spec, opts.copyDisks) : { spec, created: [] };
      await store.createVm(local.spec, 'incoming');
      try {
        if (local.created.length) await store.updateRuntime(vmId, { diskCopies: local.created });
        await procs.spawn(vmId, local.spec, true);
        await qmp(vmId, 'migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
        if (opts.copyDisks) await blockJobs.exportIncoming(vmId, local.spec);
        const uri = await listen(vmId);
        await store.updateRuntime(vmId, { incomingUri: uri });
        const rt = await store.readRuntime(vmId);
        return answer(uri, rt.nbd, local.spec);
      } catch (err) {
        // leave nothing half done
        await procs.killIfAlive(vmId, true);
        sessions.drop(vmId);
        await removeCopies(vmId);
        await store.removeVm(vmId);
        throw err;
      }
    });

  function answer(uri: string, nbd: NbdExportRecord | undefined, spec: VmSpec): IncomingResult {
    if (!nbd) return { uri };
    return {
      uri,
      mirror: { kind: 'nbd', host: nbd.host, port: nbd.port, exports: nbd.exports },
      diskPaths: spec.disks,
      ...(spec.seedPath ? { seedPath: spec.seedPath } : {}),
    };
  }

  async function removeCopies(vmId: string): Promise<void> {
    for (const f of await blockJobs.incomingCopies(vmId)) await fs.rm(f, { force: true });
  }

  const activateIncoming = (vmId: string): Promise<VmRuntime> =>
    store.withLock(vmId, async () => {
      await store.requireSpec(vmId);
      const pid = await procs.livePid(vmId);
      if (pid === undefined) {
        throw new DriverError(`vm "${vmId}" has no QEMU process on host "${hostId}" (the incoming copy is gone)`, 'INVALID_STATE', true);
      }
      let rs = await runstate(vmId);
      if (rs === 'running') {
        await blockJobs.stopExports(vmId);
        await store.updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true, incomingUri: undefined, diskCopies: undefined });
        return requireStatus(vmId);
      }
      if (rs === 'inmigrate') {
        // query-migrate says completed a moment before the runstate leaves inmigrate
        const q = await queryMigrate(qmp, vmId);
        if (q.status === 'completed') {
          const deadline = Date.now() + 5_000;
          while (rs === 'inmigrate' && Date.now() < deadline) {
            await sleep(20);
            rs = await runstate(vmId);
          }
        }
        if (rs === 'inmigrate') {
          throw new DriverError(`vm "${vmId}": incoming migration not finished (status ${q.status ?? 'waiting'})`, 'INVALID_STATE');
        }
      }
      if (rs !== 'paused' && rs !== 'prelaunch') {
        throw new DriverError(`vm "${vmId}" cannot be activated from runstate ${rs}`, 'INVALID_STATE', true);
      }
      // copyDisks: the NBD exports go before the guest runs on the copies
      await blockJobs.stopExports(vmId);
      await qmp(vmId, 'cont');
      await qmp(vmId, 'announce-self', { initial: 50, max: 550, rounds: 5, step: 100 });
      rs = await runstate(vmId);
      if (rs !== 'running') throw new DriverError(`vm "${vmId}" is ${rs} after cont, not running`, 'HYPERVISOR');
      await store.updateRuntime(vmId, { role: 'normal', started: true, expectRunning: true, incomingUri: undefined, diskCopies: undefined });
      return requireStatus(vmId);
    });

  /**
   * Stage 5's forward recovery: the received copy's QEMU exited or broke (crashed, shut down) after
   * the commit. Its disks (B's copies with copyDisks) are the VM's own now: the record becomes a
   * normal VM's and a fresh process boots from them (startVm; the guest restarts).
   */
  async function recoverIncoming(vmId: string): Promise<VmRuntime> {
    await store.withLock(vmId, async () => {
      await store.requireSpec(vmId);
      const cur = await requireStatus(vmId);
      if (cur.state === 'running') return;
      if (cur.state !== 'crashed' && cur.state !== 'stopped') {
        throw new DriverError(`vm "${vmId}" on host "${hostId}" is ${cur.state}: its received copy is not lost, activateIncoming resumes it`, 'INVALID_STATE', true);
      }
      if (cur.pid !== undefined) await procs.kill(vmId, cur.pid);
      await store.updateRuntime(vmId, { role: 'normal', incomingUri: undefined, diskCopies: undefined });
    });
    return lifecycle.startVm(vmId);
  }

  return { prepareIncoming, activateIncoming, recoverIncoming };
}
