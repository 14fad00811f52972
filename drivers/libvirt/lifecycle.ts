// Domain lifecycle on one libvirtd: define (idempotent by the UUID derived from the vmId), start,
// stop (ACPI shutdown, then destroy after the timeout when forced), reset, suspend/resume, destroy
// + undefine, status from `domstate --reason` and the spec from the domain's ferry metadata.
// Every domain is addressed by its UUID, so a retry after a crash finds the one its first attempt
// defined, and a domain some migration carried here is found the same way.
import { DriverError, assertSafeName, type VmPowerState, type VmRuntime, type VmSpec } from '../hypervisor.js';
import { buildDomainXml, currentSpec, domainUuid, parseDomainXml } from './domain-xml.js';
import { validateVmSpecFields } from '../common.js';
import { checkHostOffers, type HostConfig } from './host.js';
import { JOB_OPERATION, JOB_TYPE, mapDomState, parseDomState, parseJobInfo, parseNames } from './parse.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bad(m: string): DriverError {
  return new DriverError(m, 'INVALID_ARGUMENT', true);
}


export function validateVmSpec(spec: VmSpec): void {
  validateVmSpecFields(spec, {
    maxNameLength: 200,
    checkPath: (what, p) => {
      if (/[\0\n]/.test(p)) throw bad(`${what} "${p}" must be an absolute path`);
    },
  });
}

export type Lifecycle = ReturnType<typeof createLifecycle>;

export function createLifecycle(cfg: HostConfig) {
  const { virsh, hostId } = cfg;
  const dom = (vmId: string) => {
    assertSafeName('vmId', vmId);
    return domainUuid(vmId);
  };

  function xmlOptions() {
    return { domainType: cfg.domainType, machine: cfg.machine, cpuModel: cfg.cpuModel };
  }

  /** Whether an incoming migration job is under way for this domain (this host is its destination). */
  async function incomingJob(vmId: string): Promise<boolean> {
    const out = await virsh.maybe(['domjobinfo', '--rawstats', dom(vmId)]).catch(() => null);
    if (out === null) return false;
    const job = parseJobInfo(out);
    return (job.type === JOB_TYPE.bounded || job.type === JOB_TYPE.unbounded) && job.operation === JOB_OPERATION.migrationIn;
  }

  async function status(vmId: string): Promise<VmRuntime | null> {
    const xml = await virsh.maybe(['dumpxml', dom(vmId)]);
    if (xml === null) return null;
    const parsed = parseDomainXml(xml);
    const spec = currentSpec(parsed);
    if (!spec) throw new DriverError(`domain ${parsed.name} (${parsed.uuid}) on host "${hostId}" was not defined by ferry (no ferry metadata)`, 'INVALID_STATE', true);
    const st = await virsh.maybe(['domstate', '--reason', dom(vmId)]);
    if (st === null) return null; // undefined between the two calls (a migration finished)
    const ds = parseDomState(st);
    let state: VmPowerState = mapDomState(ds, { started: ds.reason !== 'unknown' });
    if (state === 'paused' && ds.reason === 'migration' && (await incomingJob(vmId))) state = 'incoming';
    return { vmId, state, spec };
  }

  async function requireStatus(vmId: string): Promise<VmRuntime> {
    const s = await status(vmId);
    if (!s) throw new DriverError(`vm "${vmId}" is not defined on libvirt host "${hostId}"`, 'NOT_FOUND', true);
    return s;
  }

  const cannot = (vmId: string, verb: string, state: VmPowerState) => new DriverError(`vm "${vmId}" cannot be ${verb} while ${state}`, 'INVALID_STATE', true);

  async function defineVm(spec: VmSpec): Promise<VmRuntime> {
    validateVmSpec(spec);
    checkHostOffers(cfg, spec);
    const existing = await status(spec.vmId);
    if (existing) {
      // the stored spec is the one defined; a pivot may have moved disks since (currentSpec)
      const raw = parseDomainXml((await virsh.run(['dumpxml', '--inactive', dom(spec.vmId)])) ?? '').spec;
      if (JSON.stringify(raw) !== JSON.stringify(spec)) {
        throw new DriverError(`vm "${spec.vmId}" is already defined on host "${hostId}" with a different spec`, 'INVALID_STATE', true);
      }
      return existing;
    }
    await virsh.withXmlFile(buildDomainXml(spec, xmlOptions()), (file) => virsh.run(['define', file]));
    return requireStatus(spec.vmId);
  }

  async function waitState(vmId: string, done: (s: VmRuntime | null) => boolean, timeoutMs: number): Promise<VmRuntime | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await status(vmId);
      if (done(s) || Date.now() >= deadline) return s;
      await sleep(Math.min(100, Math.max(1, deadline - Date.now())));
    }
  }

  async function startVm(vmId: string): Promise<VmRuntime> {
    const cur = await requireStatus(vmId);
    switch (cur.state) {
      case 'running':
        return cur;
      case 'incoming':
        throw new DriverError(`vm "${vmId}" on host "${hostId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
      case 'postmigrate':
        throw new DriverError(`vm "${vmId}" migrated away from host "${hostId}": it must not be started here`, 'INVALID_STATE', true);
      case 'paused':
        await virsh.run(['resume', dom(vmId)]);
        return requireStatus(vmId);
      default:
        checkHostOffers(cfg, cur.spec);
        await virsh.run(['start', dom(vmId)]);
        return requireStatus(vmId);
    }
  }

  async function stopVm(vmId: string, opts: { timeoutMs: number; force: boolean }): Promise<VmRuntime> {
    if (!opts || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs < 0) throw bad('opts.timeoutMs must be a non-negative number');
    const cur = await requireStatus(vmId);
    if (cur.state !== 'running' && cur.state !== 'paused' && cur.state !== 'crashed') return cur;
    if (cur.state === 'running') {
      await virsh.run(['shutdown', '--mode', 'acpi', dom(vmId)]).catch((e: unknown) => {
        // it may have powered off between the status read and the shutdown
        if (!(e instanceof DriverError && e.code === 'INVALID_STATE')) throw e;
      });
      const after = await waitState(vmId, (s) => s === null || (s.state !== 'running' && s.state !== 'paused'), opts.timeoutMs);
      if (after && after.state !== 'running' && after.state !== 'paused') return after;
      if (!opts.force) throw new DriverError(`vm "${vmId}" did not shut down within ${opts.timeoutMs} ms (ACPI); retry with force`, 'TIMEOUT');
    }
    await destroyDomain(vmId);
    return requireStatus(vmId);
  }

  /** `virsh destroy`, tolerating a domain that is not running any more. */
  async function destroyDomain(vmId: string): Promise<void> {
    try {
      await virsh.run(['destroy', dom(vmId)], { timeoutMs: cfg.migrationWaitMs });
    } catch (e) {
      if (e instanceof DriverError && (e.code === 'INVALID_STATE' || e.code === 'NOT_FOUND')) return;
      throw e;
    }
  }

  async function rebootVm(vmId: string): Promise<VmRuntime> {
    const cur = await requireStatus(vmId);
    if (cur.state !== 'running' && cur.state !== 'paused') throw cannot(vmId, 'rebooted', cur.state);
    // a hard reset, as the QEMU driver's system_reset: it works for guests without ACPI handling
    await virsh.run(['reset', dom(vmId)]);
    return requireStatus(vmId);
  }

  async function pauseVm(vmId: string): Promise<VmRuntime> {
    const cur = await requireStatus(vmId);
    if (cur.state === 'paused') return cur;
    if (cur.state !== 'running') throw cannot(vmId, 'paused', cur.state);
    await virsh.run(['suspend', dom(vmId)]);
    return requireStatus(vmId);
  }

  async function resumeVm(vmId: string, opts?: { afterCompletedMigration?: boolean }): Promise<VmRuntime> {
    const cur = await requireStatus(vmId);
    if (cur.state === 'running') return cur;
    if (cur.state === 'postmigrate') {
      throw new DriverError(
        opts?.afterCompletedMigration
          ? `vm "${vmId}" completed its migration away from host "${hostId}": libvirt has ended the source QEMU, so it cannot be resumed here (the guest's state is on the destination, paused)`
          : `vm "${vmId}" on host "${hostId}" completed an outgoing migration: resuming it could run the guest twice`,
        'INVALID_STATE',
        true,
      );
    }
    if (cur.state === 'incoming') throw new DriverError(`vm "${vmId}" is an incoming migration copy: use activateIncoming`, 'INVALID_STATE', true);
    if (cur.state !== 'paused') throw cannot(vmId, 'resumed', cur.state);
    await virsh.run(['resume', dom(vmId)]);
    return requireStatus(vmId);
  }

  /** Stops (forced) and undefines; idempotent; keeps disks. */
  async function destroyVm(vmId: string): Promise<void> {
    if ((await virsh.maybe(['dominfo', dom(vmId)])) === null) return;
    await destroyDomain(vmId);
    try {
      await virsh.run(['undefine', dom(vmId)]);
    } catch (e) {
      // a transient domain (an incoming copy) is gone with the destroy
      if (e instanceof DriverError && (e.code === 'NOT_FOUND' || /transient/i.test(e.message))) return;
      throw e;
    }
  }

  async function listVms(): Promise<VmRuntime[]> {
    const out: VmRuntime[] = [];
    for (const uuid of parseNames(await virsh.run(['list', '--all', '--uuid']))) {
      const xml = await virsh.maybe(['dumpxml', uuid]);
      if (xml === null) continue;
      const spec = parseDomainXml(xml).spec;
      if (!spec || domainUuid(spec.vmId) !== uuid) continue; // not ferry's
      const s = await status(spec.vmId);
      if (s) out.push(s);
    }
    return out;
  }

  return { dom, status, requireStatus, defineVm, startVm, stopVm, rebootVm, pauseVm, resumeVm, destroyVm, destroyDomain, listVms, waitState, incomingJob };
}
