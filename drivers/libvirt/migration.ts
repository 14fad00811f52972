// Live migration on libvirt, mapped onto ferry's stages:
//   stage 1 (B) prepareIncoming: the destination is ready (disks visible to its libvirtd, no live
//     copy in the way) and hands out its p2p URI. libvirt creates the incoming domain itself.
//   stage 2 (A) startMigration: `virsh migrate --live --p2p --persistent --suspend --auto-converge`
//     in the background (detached, so it survives an agent restart; its stderr goes to a log
//     file next to the record); progress is `domjobinfo --rawstats` (round = memory iteration).
//     The controller's decisions are `migrate-setspeed` / `migrate-setmaxdowntime` (and the
//     auto-converge throttle through QMP migrate-set-parameters).
//   stage 3 (A) continueSwitchover: libvirt switches over by itself once the remainder fits the
//     downtime limit; forcing it is raising the limit. --suspend keeps B paused until activation.
//   rollback (A) cancelMigration: `domjobabort`; the source keeps running, libvirt removes B's copy.
//   stage 5 (B) activateIncoming: `virsh resume`. (A) cleanupSource undefines A's shut-off copy.
// The source definition is kept (no --undefinesource) until ferry's commit: the "shut off
// (migrated)" domain is the postmigrate source, and its completed job holds the final numbers.
// Without shared storage (copyDisks) the same migration runs with --copy-storage-all and a
// destination XML whose disks are the destination's copies (copy-storage.ts).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { DriverError, type IncomingOptions, type IncomingResult, type MigrationParams, type MigrationStats, type VmRuntime, type VmSpec } from '../hypervisor.js';
import { FORCE_DOWNTIME_MS, validateMigrationParams as validateCommonParams } from '../common.js';
import { copyStorageUri, createCopyStorage, parseMigrationUri } from './copy-storage.js';
import { rewriteDiskSources } from './domain-xml.js';
import { checkConnectUri, checkHostOffers, type HostConfig } from './host.js';
import type { Lifecycle } from './lifecycle.js';
import { validateVmSpec } from './lifecycle.js';
import { activeStatus, jobToStats, JOB_OPERATION, JOB_TYPE, parseDomState, parseJobInfo, type JobInfo } from './parse.js';

const MiB = 1024 ** 2;
export const DEFAULT_DOWNTIME_MS = 300;
export { FORCE_DOWNTIME_MS };
/** how long after `virsh migrate` starts a missing job still means setup */
const SETUP_GRACE_MS = 3_000;

export interface MigrationRecord {
  uri: string;
  startedAt: number;
  wasRunning: boolean;
  pid?: number;
  downtimeLimitMs: number;
  maxBandwidthBytesPerSec?: number;
  throttlePct: number;
  /** copyDisks: source path -> the destination's copy (the disks travel inside the job) */
  moves?: Record<string, string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function validateMigrationParams(p: MigrationParams): void {
  validateCommonParams(p);
  if (p.hold) {
    throw new DriverError(
      'hold (switchover held for operator approval) is not supported by the libvirt driver yet: libvirt has no pause-before-switchover, it switches over by itself once the remainder fits the downtime limit',
      'INVALID_ARGUMENT',
      true,
    );
  }
}

/** virsh migrate-setspeed takes whole MiB/s (at least 1). */
export function bandwidthMiB(bytesPerSec: number): number {
  return Math.max(1, Math.round(bytesPerSec / MiB));
}

/** The argv of the background `virsh migrate` (pure; unit-tested). */
export function migrateArgs(connectUri: string, uuid: string, destUri: string, p: { maxBandwidthBytesPerSec?: number; throttlePct?: number; copyStorage?: boolean; destXmlFile?: string }): string[] {
  return [
    '-c', connectUri, 'migrate', '--live', '--p2p', '--persistent', '--suspend', '--auto-converge',
    ...(p.throttlePct ? ['--auto-converge-initial', String(Math.max(1, Math.min(99, Math.round(p.throttlePct))))] : []),
    // ferry's shared datastores are shared by configuration; libvirt only trusts network file systems
    ...(p.copyStorage ? ['--copy-storage-all'] : ['--unsafe']),
    // the destination's definition, live and persistent (copyDisks: its disks are other files)
    ...(p.destXmlFile ? ['--xml', p.destXmlFile, '--persistent-xml', p.destXmlFile] : []),
    ...(p.maxBandwidthBytesPerSec !== undefined ? ['--bandwidth', String(bandwidthMiB(p.maxBandwidthBytesPerSec))] : []),
    uuid, destUri,
  ];
}

export function createMigration(cfg: HostConfig, life: Lifecycle, virshBinary = 'virsh') {
  const { virsh, hostId } = cfg;
  const { dom } = life;
  const dir = path.join(cfg.stateDir, 'migrations');
  const recordPath = (vmId: string) => path.join(dir, `${vmId}.json`);
  const logPath = (vmId: string) => path.join(dir, `${vmId}.log`);
  const xmlPath = (vmId: string) => path.join(dir, `${vmId}.xml`);
  const memoryStartPath = (vmId: string) => path.join(dir, `${vmId}.memory-start`);
  const copies = createCopyStorage(cfg);

  async function readRecord(vmId: string): Promise<MigrationRecord | undefined> {
    try {
      return JSON.parse(await fs.readFile(recordPath(vmId), 'utf8')) as MigrationRecord;
    } catch {
      return undefined;
    }
  }
  async function writeRecord(vmId: string, rec: MigrationRecord): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    const tmp = `${recordPath(vmId)}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(rec));
    await fs.rename(tmp, recordPath(vmId));
  }
  async function dropRecord(vmId: string): Promise<void> {
    await fs.rm(recordPath(vmId), { force: true });
    await fs.rm(logPath(vmId), { force: true });
    await fs.rm(xmlPath(vmId), { force: true });
    await fs.rm(memoryStartPath(vmId), { force: true });
  }

  /** Is the background virsh of this record still alive (checked by its command line, not just the pid)? */
  async function virshAlive(rec: MigrationRecord, vmId: string): Promise<boolean> {
    if (!rec.pid) return false;
    try {
      const cmd = await fs.readFile(`/proc/${rec.pid}/cmdline`, 'utf8');
      const stat = await fs.readFile(`/proc/${rec.pid}/stat`, 'utf8');
      return cmd.includes(dom(vmId)) && cmd.includes('migrate') && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    } catch {
      return false;
    }
  }

  async function virshError(vmId: string): Promise<string | undefined> {
    const log = await fs.readFile(logPath(vmId), 'utf8').catch(() => '');
    const errs = log.split('\n').filter((l) => l.startsWith('error: ')).map((l) => l.slice(7).trim());
    return errs.length ? errs.join(': ') : undefined;
  }

  async function job(vmId: string, flags: string[] = []): Promise<JobInfo | null> {
    try {
      const out = await virsh.maybe(['domjobinfo', '--rawstats', ...flags, dom(vmId)]);
      return out === null ? null : parseJobInfo(out);
    } catch (e) {
      // an inactive domain has no current job ("domain is not running")
      if (e instanceof DriverError && e.code === 'INVALID_STATE') return null;
      throw e;
    }
  }

  const isActiveOut = (j: JobInfo | null) => !!j && (j.type === JOB_TYPE.bounded || j.type === JOB_TYPE.unbounded) && j.operation === JOB_OPERATION.migrationOut;

  async function shutOffMigrated(vmId: string): Promise<boolean> {
    const st = await virsh.maybe(['domstate', '--reason', dom(vmId)]);
    if (st === null) return false;
    const s = parseDomState(st);
    return s.state === 'shut off' && s.reason === 'migrated';
  }

  // ------------------------------------------------------------------ destination (B)
  async function prepareIncoming(spec: VmSpec, opts?: IncomingOptions): Promise<IncomingResult> {
    validateVmSpec(spec);
    checkHostOffers(cfg, spec);
    const cur = await life.status(spec.vmId);
    if (cur && (cur.state === 'running' || cur.state === 'postmigrate')) {
      throw new DriverError(`vm "${spec.vmId}" is already ${cur.state} on destination host "${hostId}"`, 'INVALID_STATE', true);
    }
    const moves = opts?.copyDisks ? await copies.prepareCopies(spec, opts.copyDisks) : {};
    // the shared disks must be visible to this libvirtd (the same path in one of its pools)
    for (const p of [...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])].filter((x) => !moves[x])) {
      if ((await virsh.maybe(['vol-dumpxml', p])) === null) {
        for (const ds of cfg.datastores) await virsh.maybe(['pool-refresh', ds.pool]);
        if ((await virsh.maybe(['vol-dumpxml', p])) === null) {
          throw new DriverError(`disk ${p} of vm "${spec.vmId}" is not in any storage pool of destination host "${hostId}" (shared storage expected)`, 'INVALID_STATE', true);
        }
      }
    }
    if (!opts?.copyDisks) return { uri: cfg.migrationUri };
    const move = (p: string) => moves[p] ?? p;
    return { uri: copyStorageUri(cfg.migrationUri, moves), diskPaths: spec.disks.map(move), ...(spec.seedPath ? { seedPath: move(spec.seedPath) } : {}) };
  }

  async function activateIncoming(vmId: string): Promise<VmRuntime> {
    const cur = await life.status(vmId);
    if (!cur) throw new DriverError(`vm "${vmId}" has not arrived on host "${hostId}"`, 'NOT_FOUND');
    if (cur.state === 'running') {
      await copies.keepCopies(vmId);
      return cur;
    }
    if (cur.state === 'incoming') throw new DriverError(`vm "${vmId}" is still being received on host "${hostId}"`, 'INVALID_STATE');
    if (cur.state !== 'paused') throw new DriverError(`vm "${vmId}" on host "${hostId}" is ${cur.state}, not a received copy`, 'INVALID_STATE', true);
    await virsh.run(['resume', dom(vmId)]);
    await copies.keepCopies(vmId);
    return life.requireStatus(vmId);
  }

  /**
   * Stage 5's forward recovery: the received domain crashed or shut off after the commit. Its
   * disks (the copies with copyDisks) are the VM's own now; `virsh start` boots it (the guest
   * restarts).
   */
  async function recoverIncoming(vmId: string): Promise<VmRuntime> {
    const cur = await life.status(vmId);
    if (!cur) throw new DriverError(`vm "${vmId}" has no domain on host "${hostId}"`, 'NOT_FOUND');
    if (cur.state !== 'running' && cur.state !== 'crashed' && cur.state !== 'stopped') {
      throw new DriverError(`vm "${vmId}" on host "${hostId}" is ${cur.state}: its received copy is not lost, activateIncoming resumes it`, 'INVALID_STATE', true);
    }
    await copies.keepCopies(vmId);
    return life.startVm(vmId);
  }

  // ------------------------------------------------------------------ source (A)
  async function applyParams(vmId: string, rec: MigrationRecord, p: MigrationParams): Promise<void> {
    if (p.maxBandwidthBytesPerSec !== undefined) await virsh.run(['migrate-setspeed', dom(vmId), String(bandwidthMiB(p.maxBandwidthBytesPerSec))]);
    if (p.downtimeLimitMs !== undefined || rec.downtimeLimitMs !== DEFAULT_DOWNTIME_MS) {
      await virsh.run(['migrate-setmaxdowntime', dom(vmId), String(p.downtimeLimitMs ?? rec.downtimeLimitMs)]);
    }
    if (p.throttlePct !== undefined) {
      // virsh has no knob for the running auto-converge throttle; QMP does (same as the QEMU driver)
      const pct = Math.max(1, Math.min(99, Math.round(p.throttlePct)));
      const cmd = JSON.stringify({ execute: 'migrate-set-parameters', arguments: { 'cpu-throttle-initial': pct, 'max-cpu-throttle': Math.max(pct, 99) } });
      await virsh.run(['qemu-monitor-command', dom(vmId), cmd]);
    }
  }

  async function startMigration(vmId: string, opts: { uri: string; copyDisks?: boolean } & MigrationParams): Promise<void> {
    const cur = await life.requireStatus(vmId);
    if (typeof opts?.uri !== 'string') checkConnectUri('uri', opts?.uri);
    const { destUri, moves } = parseMigrationUri(opts.uri);
    checkConnectUri('uri', destUri);
    if (!/^qemu\+(tcp|tls|ssh):\/\//.test(destUri)) throw new DriverError(`uri "${destUri}" must be a destination's p2p URI (qemu+tcp://<address>/system)`, 'INVALID_ARGUMENT', true);
    if (opts.copyDisks && !moves) throw new DriverError(`copyDisks: uri "${destUri}" is not the answer of a copyDisks prepareIncoming (it names no disk copies)`, 'INVALID_ARGUMENT', true);
    if (moves && !opts.copyDisks) throw new DriverError(`uri "${destUri}" is a copyDisks destination's: start the migration with copyDisks`, 'INVALID_ARGUMENT', true);
    validateMigrationParams(opts);
    const rec0 = await readRecord(vmId);
    const j = await job(vmId);
    if (isActiveOut(j) || (rec0 && (await virshAlive(rec0, vmId)))) {
      if (rec0?.uri === opts.uri) return setMigrationParams(vmId, opts); // idempotent: the same migration is under way
      throw new DriverError(`vm "${vmId}" already has a migration under way to ${rec0?.uri ?? 'another destination'}`, 'INVALID_STATE', true);
    }
    if (cur.state === 'postmigrate') {
      if (rec0?.uri === opts.uri) return; // done already (a retry after completion)
      throw new DriverError(`vm "${vmId}" already migrated away from host "${hostId}"`, 'INVALID_STATE', true);
    }
    if (cur.state !== 'running' && cur.state !== 'paused') throw new DriverError(`vm "${vmId}" cannot be migrated while ${cur.state}`, 'INVALID_STATE', true);
    const rec: MigrationRecord = {
      uri: opts.uri,
      startedAt: Date.now(),
      wasRunning: cur.state === 'running',
      downtimeLimitMs: opts.downtimeLimitMs ?? DEFAULT_DOWNTIME_MS,
      throttlePct: opts.throttlePct ?? 0,
      ...(opts.maxBandwidthBytesPerSec !== undefined ? { maxBandwidthBytesPerSec: opts.maxBandwidthBytesPerSec } : {}),
      ...(moves ? { moves } : {}),
    };
    await fs.mkdir(dir, { recursive: true });
    await fs.rm(logPath(vmId), { force: true });
    await fs.rm(memoryStartPath(vmId), { force: true });
    if (moves) await fs.writeFile(xmlPath(vmId), rewriteDiskSources(await virsh.run(['dumpxml', '--migratable', dom(vmId)]), moves));
    // detached with its output in a file: the migration (driven by the source libvirtd) and this
    // client outlive an agent that is killed; a new agent reads the record, the log and libvirt
    const child = execa(virshBinary, migrateArgs(cfg.uri, dom(vmId), destUri, { ...opts, copyStorage: !!moves, ...(moves ? { destXmlFile: xmlPath(vmId) } : {}) }), {
      detached: true,
      reject: false,
      stdin: 'ignore',
      stdout: { file: logPath(vmId) },
      stderr: { file: logPath(vmId) },
      env: { LC_ALL: 'C' },
      cleanup: false,
    });
    child.unref();
    void child.catch(() => undefined);
    rec.pid = child.pid;
    await writeRecord(vmId, rec);
    // wait until libvirt shows the job (or virsh gave up) so a refused start is reported here
    const deadline = Date.now() + 15_000;
    for (;;) {
      const now = await job(vmId);
      if (isActiveOut(now)) break;
      if (await shutOffMigrated(vmId)) return; // a tiny guest can finish before the first poll
      if (!(await virshAlive(rec, vmId))) {
        const err = (await virshError(vmId)) ?? 'virsh migrate exited without an error message';
        await dropRecord(vmId);
        throw new DriverError(`migration of vm "${vmId}" to ${destUri} failed: ${err}`, 'HYPERVISOR');
      }
      if (Date.now() > deadline) break; // still in setup; migrationStatus reports it
      await sleep(20);
    }
    await applyParams(vmId, rec, { downtimeLimitMs: rec.downtimeLimitMs }).catch(() => undefined);
  }

  async function migrationStatus(vmId: string): Promise<MigrationStats> {
    const cur = await life.status(vmId);
    const rec = await readRecord(vmId);
    if (!cur) {
      if (!rec) throw new DriverError(`vm "${vmId}" is not defined on libvirt host "${hostId}"`, 'NOT_FOUND', true);
      return { ...jobToStats(emptyJob(), 'failed'), error: `vm "${vmId}" vanished from host "${hostId}" during its migration` };
    }
    const j = await job(vmId);
    const cs = { copyStorage: !!rec?.moves };
    if (isActiveOut(j)) return rec?.moves ? copyStorageSample(vmId, rec, j!) : jobToStats(j!, activeStatus(j!));
    if (cur.state === 'postmigrate') {
      const done = await job(vmId, ['--completed', '--keep-completed']);
      return jobToStats(done && done.type === JOB_TYPE.completed ? done : emptyJob(), 'completed', undefined, cs);
    }
    if (!rec) return jobToStats(emptyJob(), 'none');
    if (await virshAlive(rec, vmId)) {
      // no job (yet, or any more): right after the start this is setup; later the job has ended
      // and virsh is about to exit with the outcome, so wait for it rather than report a setup
      // sample whose clock went back to 0
      const started = Date.now() - rec.startedAt;
      // copyDisks: the memory phase's clock has not started (see copyStorageSample)
      if (started < SETUP_GRACE_MS) return { ...jobToStats(emptyJob(), 'setup', undefined, cs), elapsedMs: rec.moves ? 0 : started };
      for (const until = Date.now() + SETUP_GRACE_MS; Date.now() < until && (await virshAlive(rec, vmId)); ) await sleep(50);
      if (await virshAlive(rec, vmId)) return { ...jobToStats(emptyJob(), 'setup', undefined, cs), elapsedMs: rec.moves ? 0 : Date.now() - rec.startedAt };
      return migrationStatus(vmId);
    }
    const err = await virshError(vmId);
    // virsh exits only after libvirt's confirm phase: a migration that completed between the state
    // read above and here shows as shut off (migrated) now
    if (await shutOffMigrated(vmId)) return migrationStatus(vmId);
    const last = await job(vmId, ['--completed', '--anystats']).catch(() => null);
    const base = last && last.type !== JOB_TYPE.none ? last : emptyJob();
    if (err && /operation aborted|canceled by client|cancelled/i.test(err)) return jobToStats(base, 'cancelled', err, cs);
    return jobToStats(base, 'failed', err ?? 'virsh migrate ended and the domain did not migrate', cs);
  }

  /**
   * A copyDisks job in ferry's terms: libvirt copies the disks first and starts the memory once they
   * are in sync. Until then the migration is in setup (the controller does not steer a disk copy,
   * as on QEMU, where the workflow waits for the mirror before the memory starts); from then on
   * elapsedMs is the memory phase's, on the job's own clock, so the controller's budgets count the
   * pre-copy only and the clock never goes back.
   */
  async function copyStorageSample(vmId: string, rec: MigrationRecord, j: JobInfo): Promise<MigrationStats> {
    const memoryStarted = j.iteration >= 1 || j.dataProcessed - j.diskProcessed > 0;
    if (!memoryStarted) return { ...jobToStats(j, 'setup', undefined, { copyStorage: true }), elapsedMs: 0 };
    // the job's time_elapsed when its memory phase was first seen, written once (its own file: the
    // record is rewritten by setMigrationParams meanwhile)
    const file = memoryStartPath(vmId);
    await fs.writeFile(file, String(j.elapsedMs), { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    const from = Number(await fs.readFile(file, 'utf8'));
    return { ...jobToStats(j, 'active', undefined, { copyStorage: true }), elapsedMs: Math.max(0, j.elapsedMs - from) };
  }

  async function setMigrationParams(vmId: string, params: MigrationParams): Promise<void> {
    await life.requireStatus(vmId);
    validateMigrationParams(params);
    const prev = await readRecord(vmId);
    if (!prev) throw new DriverError(`vm "${vmId}" has no migration on host "${hostId}" to tune`, 'INVALID_STATE', true);
    const rec: MigrationRecord = {
      ...prev,
      downtimeLimitMs: params.downtimeLimitMs ?? prev.downtimeLimitMs,
      throttlePct: params.throttlePct ?? prev.throttlePct,
      ...(params.maxBandwidthBytesPerSec !== undefined ? { maxBandwidthBytesPerSec: params.maxBandwidthBytesPerSec } : {}),
    };
    await writeRecord(vmId, rec);
    if (!isActiveOut(await job(vmId))) return; // finished meanwhile: nothing to tune
    await applyParams(vmId, rec, params);
  }

  async function waitEnd(vmId: string): Promise<MigrationStats> {
    const deadline = Date.now() + cfg.migrationWaitMs;
    for (;;) {
      const st = await migrationStatus(vmId);
      if (st.status !== 'active' && st.status !== 'setup') return st;
      if (Date.now() > deadline) throw new DriverError(`vm "${vmId}": migration did not end within ${cfg.migrationWaitMs} ms (status ${st.status})`, 'TIMEOUT');
      await sleep(50);
    }
  }

  async function continueSwitchover(vmId: string): Promise<void> {
    let st = await migrationStatus(vmId);
    if (st.status === 'completed') return;
    if (st.status !== 'active' && st.status !== 'setup') throw new DriverError(`vm "${vmId}" has no migration to switch over (status ${st.status}${st.error ? `: ${st.error}` : ''})`, 'INVALID_STATE', true);
    if (isActiveOut(await job(vmId))) await virsh.run(['migrate-setmaxdowntime', dom(vmId), String(FORCE_DOWNTIME_MS)]).catch(() => undefined);
    st = await waitEnd(vmId);
    if (st.status !== 'completed') throw new DriverError(`migration of vm "${vmId}" ended ${st.status}: ${st.error ?? 'no error given'}`, 'HYPERVISOR', true);
  }

  async function cancelMigration(vmId: string): Promise<void> {
    const cur = await life.requireStatus(vmId);
    const rec = await readRecord(vmId);
    if (cur.state === 'postmigrate') {
      throw new DriverError(`migration of vm "${vmId}" already completed: the source on host "${hostId}" is shut off (migrated) and must not be resumed`, 'INVALID_STATE', true);
    }
    if (isActiveOut(await job(vmId))) {
      await virsh.run(['domjobabort', dom(vmId)]).catch((e: unknown) => {
        if (!(e instanceof DriverError && e.code === 'INVALID_STATE')) throw e;
      });
    }
    const end = await waitEnd(vmId);
    if (end.status === 'completed') throw new DriverError(`migration of vm "${vmId}" completed before the abort reached it`, 'INVALID_STATE', true);
    // libvirt resumes a source it paused for the switchover; a source paused by us is resumed here
    const after = await life.requireStatus(vmId);
    if ((rec?.wasRunning ?? true) && after.state === 'paused') await virsh.run(['resume', dom(vmId)]);
    await dropRecord(vmId);
  }

  return { prepareIncoming, activateIncoming, recoverIncoming, startMigration, migrationStatus, setMigrationParams, continueSwitchover, cancelMigration, dropRecord, readRecord, discardIncomingCopies: copies.discardCopies };
}

function emptyJob(): JobInfo {
  return parseJobInfo('Job type: 0');
}
