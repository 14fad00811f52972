// The driver's live-migration calls, both sides. Destination: prepareIncoming (stage 1, an empty
// container) and activateIncoming (stage 5). Source: startMigration persists the migration row
// with the faults bound to its stages, then its status is a function of rows and virtual now
// (model.ts); parameters, continueSwitchover and cancel add events to the row, never mutate the past.
import {
  DriverError,
  type MigrationParams,
  type MigrationStats,
  type StartMigrationOptions,
  type VmRuntime,
  type VmSpec,
} from '../hypervisor.js';
import { DEFAULT_DEVICE_STATE_BYTES } from '../../domain/precopy-model.js';
import { diskPath, parseDiskPath, type DiskCopyPlan } from './disks.js';
import { consume, findStageFault, linkCut, liveFaults, markFired } from './faults.js';
import { toRuntime, type SimHost } from './host.js';
import { attached, datastoresOf, diskRow, freeBytes, imageRow, linkBandwidth, requireHost, setVmState, vmRow } from './lookups.js';
import { abortMigration, addSegment, evaluate, latestMigration, OPEN_STATUSES, openMigrationFrom, openMigrations, settle } from './migrations.js';
import { commitThenThrow, type MigrationRow } from './store.js';
import { invalid, invalidState, nonNegativeNumber, positiveNumber, safeName, stableJson } from './validate.js';
import { boot, validateVmSpec } from './vm-ops.js';

const URI = /^sim:\/\/([^/]+)\/([^/]+)$/;

export function prepareIncoming(h: SimHost, spec: VmSpec): { uri: string } {
  validateVmSpec(spec);
  return h.op('prepareIncoming', spec.vmId, (nowV) => {
    const uri = `sim://${h.hostId}/${spec.vmId}`;
    const row = h.vmRow(spec.vmId);
    if (row?.state === 'incoming') return { uri };
    const stage1 = findStageFault(h.store, 'fail-stage', 1, [h.hostId], spec.vmId);
    if (stage1) {
      consume(h.store, stage1, nowV);
      commitThenThrow(new DriverError(`injected fault ${stage1.id}: stage 1 (prepareIncoming) failed on ${h.hostId}`, 'FAULT_INJECTED'));
    }
    const crash = findStageFault(h.store, 'destination-crash', 1, [h.hostId], spec.vmId);
    if (crash) {
      consume(h.store, crash, nowV);
      commitThenThrow(new DriverError(`destination crashed: host ${h.hostId} is unreachable (fault ${crash.id})`, 'UNREACHABLE'));
    }
    if (row) throw invalidState(`vm ${spec.vmId} already exists on ${h.hostId} (${row.state}); cannot receive it`, true);
    h.checkHostFits(spec);
    h.store.run(
      'INSERT INTO vms (host_id, vm_id, state, spec, generation, updated_v) VALUES (?, ?, ?, ?, 0, ?)',
      h.hostId,
      spec.vmId,
      'incoming',
      stableJson(spec),
      nowV,
    );
    return { uri };
  });
}

export function activateIncoming(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('activateIncoming', vmId, (row, nowV) => {
    if (row.state === 'running') return toRuntime(row);
    if (row.state === 'incoming') {
      const inFlight = openMigrations(h.store).some((m) => m.vm_id === vmId && m.target_host === h.hostId);
      throw invalidState(`vm ${vmId} on ${h.hostId} is still incoming: no migrated state has arrived`, !inFlight);
    }
    if (row.state !== 'paused') throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}; cannot activate`, true);
    const stage5 = findStageFault(h.store, 'fail-stage', 5, [h.hostId], vmId);
    if (stage5) {
      consume(h.store, stage5, nowV);
      commitThenThrow(new DriverError(`injected fault ${stage5.id}: stage 5 (activation) failed on ${h.hostId}`, 'FAULT_INJECTED'));
    }
    const crash = findStageFault(h.store, 'destination-crash', 5, [h.hostId], vmId);
    if (crash) {
      consume(h.store, crash, nowV);
      setVmState(h.store, h.hostId, vmId, 'crashed', nowV);
      commitThenThrow(new DriverError(`destination crashed: host ${h.hostId} lost vm ${vmId} during activation (fault ${crash.id})`, 'UNREACHABLE'));
    }
    setVmState(h.store, h.hostId, vmId, 'running', nowV);
    return h.runtime(vmId);
  });
}

/** Stage 5's forward recovery: a crashed received copy boots from its disks (fault step startVm: it is a boot). */
export function recoverIncoming(h: SimHost, vmId: string): VmRuntime {
  return h.vmOp('startVm', vmId, (row, nowV) => {
    if (row.state === 'running') return toRuntime(row);
    if (row.state !== 'crashed') throw invalidState(`vm ${vmId} on ${h.hostId} is ${row.state}: its received copy is not lost, activateIncoming resumes it`, true);
    return boot(h, row, nowV);
  });
}

export function startMigration(h: SimHost, vmId: string, opts: StartMigrationOptions): void {
  safeName('vmId', vmId);
  if (!opts || typeof opts.uri !== 'string') throw invalid('uri must be the string returned by prepareIncoming');
  const m = URI.exec(opts.uri);
  if (!m) throw invalid(`uri "${opts.uri}" is not a simulator migration uri (sim://<hostId>/<vmId>)`);
  const [, target, uriVm] = m as unknown as [string, string, string];
  if (uriVm !== vmId) throw invalid(`uri "${opts.uri}" is for vm ${uriVm}, not ${vmId}`);
  if (target === h.hostId) throw invalid(`uri "${opts.uri}" points at the source host itself`);
  validateParams(opts);
  if (opts.copyDisks !== undefined && typeof opts.copyDisks !== 'boolean') throw invalid('copyDisks must be a boolean');
  h.op('startMigration', vmId, (nowV) => {
    requireHost(h.store, target);
    const src = h.requireVm(vmId);
    const open = openMigrations(h.store).find((x) => x.vm_id === vmId);
    if (open) {
      if (open.source_host === h.hostId && open.target_host === target) return; // retry of the same start
      throw invalidState(`vm ${vmId} is already migrating from ${open.source_host} to ${open.target_host}`, true);
    }
    if (src.state !== 'running' && src.state !== 'paused') {
      throw invalidState(`vm ${vmId} on ${h.hostId} is ${src.state}; only a running or paused vm migrates live`, true);
    }
    const dst = vmRow(h.store, target, vmId);
    if (!dst || dst.state !== 'incoming') {
      throw invalidState(`destination ${target} is not waiting for vm ${vmId} (${dst ? dst.state : 'absent'}); call prepareIncoming there first`, true);
    }
    const cut = linkCut(h.store, h.hostId, target);
    if (cut) {
      markFired(h.store, cut.id, nowV);
      commitThenThrow(new DriverError(`link down between ${h.hostId} and ${target} (fault ${cut.id})`, 'UNREACHABLE'));
    }
    const spec = JSON.parse(src.spec) as VmSpec;
    const targetHost = requireHost(h.store, target);
    const offered = new Set(JSON.parse(targetHost.cpu_features) as string[]);
    const missing = spec.cpuFeatures.filter((f) => !offered.has(f));
    if (missing.length > 0) throw invalid(`host ${target} lacks CPU features the guest uses: ${missing.join(', ')}`);

    const plan = diskPlan(h, spec, target, opts.copyDisks === true);
    const diskBytes = plan.reduce((s, p) => s + diskRow(h.store, p.sourcePath)!.virtual_size_bytes, 0);
    const workload = spec.workload ?? { dirtyRateBytesPerSec: 0, writableWorkingSetBytes: spec.memoryBytes };
    const bound: Record<string, string> = {};
    let failRound1: string | null = null;
    let failPause: string | null = null;
    let failContinue: string | null = null;
    const stage2 = findStageFault(h.store, 'fail-stage', 2, [h.hostId, target], vmId);
    if (stage2) {
      consume(h.store, stage2, nowV, false);
      failRound1 = `injected fault ${stage2.id}: migration failed during pre-copy (stage 2)`;
      bound.round1 = stage2.id;
    }
    const crash2 = findStageFault(h.store, 'destination-crash', 2, [target], vmId);
    if (crash2 && !failRound1) {
      consume(h.store, crash2, nowV, false);
      failRound1 = 'destination crashed';
      bound.round1 = crash2.id;
    }
    const crash3 = findStageFault(h.store, 'destination-crash', 3, [target], vmId);
    if (crash3) {
      consume(h.store, crash3, nowV, false);
      failPause = 'destination crashed';
      bound.pause = crash3.id;
    }
    const stage3 = findStageFault(h.store, 'fail-stage', 3, [h.hostId, target], vmId);
    if (stage3) {
      consume(h.store, stage3, nowV, false);
      failContinue = `injected fault ${stage3.id}: stop-and-copy failed (stage 3)`;
      bound.continue = stage3.id;
    }
    const info = h.store.db
      .prepare(
        `INSERT INTO migrations (vm_id, source_host, target_host, uri, start_v, memory_bytes, link_bw, dirty_rate, wws, device_bytes,
           source_prev_state, disk_bytes, disk_plan, fail_round1, fail_pause, fail_continue, bound_faults)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        vmId,
        h.hostId,
        target,
        opts.uri,
        nowV,
        spec.memoryBytes,
        linkBandwidth(h.store, h.hostId, target),
        workload.dirtyRateBytesPerSec,
        workload.writableWorkingSetBytes,
        DEFAULT_DEVICE_STATE_BYTES,
        src.state,
        diskBytes,
        JSON.stringify(plan),
        failRound1,
        failPause,
        failContinue,
        JSON.stringify(bound),
      );
    const id = Number(info.lastInsertRowid);
    addSegment(h.store, id, nowV, pickParams(opts));
    const override = liveFaults(h.store, 'dirty-rate').find((f) => f.vm_id === vmId);
    if (override) {
      addSegment(h.store, id, nowV, { dirtyRateBytesPerSec: override.value ?? 0 });
      markFired(h.store, override.id, nowV);
    }
  });
}

/** Disks the destination cannot reach: refused without copyDisks, else planned onto its local (then roomiest) datastore. */
function diskPlan(h: SimHost, spec: VmSpec, target: string, copyDisks: boolean): DiskCopyPlan[] {
  const files = [...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])];
  const unreachable = files.filter((p) => {
    const d = diskRow(h.store, p);
    const img = d ? undefined : imageRow(h.store, p);
    const ds = d?.datastore_id ?? img?.datastore_id;
    return ds !== undefined && !attached(h.store, ds, target);
  });
  if (unreachable.length === 0) return [];
  if (!copyDisks) {
    throw invalidState(`host ${target} cannot reach ${unreachable.join(', ')}; migrate with copyDisks (no shared storage)`, true);
  }
  const candidates = datastoresOf(h.store, target)
    .map((d) => ({ d, free: freeBytes(h.store, d) }))
    // the host's own (unshared) datastores first, then the roomiest
    .sort((a, b) => a.d.shared - b.d.shared || b.free - a.free || (a.d.id < b.d.id ? -1 : 1));
  const need = unreachable.reduce((s, p) => s + (diskRow(h.store, p)?.virtual_size_bytes ?? 0), 0);
  const dest = candidates[0];
  if (!dest || dest.free < need) {
    throw new DriverError(`host ${target} has no datastore with ${need} bytes free for the copied disks`, 'INSUFFICIENT_SPACE', true);
  }
  return unreachable
    .filter((p) => diskRow(h.store, p))
    .map((p) => {
      const file = parseDiskPath(p).file;
      return { sourcePath: p, targetPath: diskPath(dest.d.id, file), targetDatastoreId: dest.d.id, name: diskRow(h.store, p)!.name };
    });
}

export function migrationStatus(h: SimHost, vmId: string): MigrationStats {
  safeName('vmId', vmId);
  return h.op('migrationStatus', vmId, (nowV) => {
    const m = latestMigration(h.store, vmId, h.hostId);
    if (!m) {
      return {
        status: 'none',
        round: 0,
        transferredBytes: 0,
        remainingBytes: 0,
        totalBytes: 0,
        dirtyRateBytesPerSec: 0,
        transferRateBytesPerSec: 0,
        expectedDowntimeMs: 0,
        throttlePct: 0,
      };
    }
    return evaluate(h.store, m, nowV).stats;
  });
}

export function setMigrationParams(h: SimHost, vmId: string, params: MigrationParams): void {
  safeName('vmId', vmId);
  validateParams(params);
  h.op('setMigrationParams', vmId, (nowV) => {
    const m = openMigrationFrom(h.store, vmId, h.hostId);
    if (!m) throw invalidState(`vm ${vmId} has no migration in progress from ${h.hostId}`, true);
    // a new segment: takes effect at the next round boundary (status stays a function of rows + now)
    addSegment(h.store, m.id, nowV, pickParams(params));
    settle(h.store, nowV);
  });
}

export function continueSwitchover(h: SimHost, vmId: string): void {
  safeName('vmId', vmId);
  h.op('continueSwitchover', vmId, (nowV) => {
    const m = h.store.get<MigrationRow>(
      'SELECT * FROM migrations WHERE vm_id = ? AND source_host = ? ORDER BY id DESC LIMIT 1',
      vmId,
      h.hostId,
    );
    if (!m) throw invalidState(`vm ${vmId} has no migration from ${h.hostId}`, true);
    const v = evaluate(h.store, m, nowV);
    if (v.status === 'completed' || v.status === 'device') return;
    if (v.status === 'failed' || v.status === 'cancelled') {
      throw new DriverError(`migration of ${vmId} to ${m.target_host} ${v.status}: ${v.stats.error ?? ''}`, 'HYPERVISOR', true);
    }
    if (m.continue_at_v === null) {
      let failContinue = m.fail_continue;
      let bound = m.bound_faults;
      if (!failContinue) {
        const stage3 = findStageFault(h.store, 'fail-stage', 3, [h.hostId, m.target_host], vmId);
        if (stage3) {
          consume(h.store, stage3, nowV, false);
          failContinue = `injected fault ${stage3.id}: stop-and-copy failed (stage 3)`;
          bound = JSON.stringify({ ...(JSON.parse(bound) as object), continue: stage3.id });
        }
      }
      h.store.run(
        'UPDATE migrations SET continue_at_v = ?, fail_continue = ?, bound_faults = ? WHERE id = ?',
        nowV,
        failContinue,
        bound,
        m.id,
      );
    }
    settle(h.store, nowV);
  });
}

export function cancelMigration(h: SimHost, vmId: string): void {
  safeName('vmId', vmId);
  h.op('cancelMigration', vmId, (nowV) => {
    const m = latestMigration(h.store, vmId, h.hostId);
    if (!m) return;
    const v = evaluate(h.store, m, nowV);
    if (v.status === 'completed') {
      throw invalidState(
        `migration of ${vmId} to ${m.target_host} already completed; the source is postmigrate and must not be resumed (the guest would run twice)`,
        true,
      );
    }
    if (!OPEN_STATUSES.has(v.status)) return; // failed or cancelled already: rolled back by settle
    abortMigration(h.store, m, nowV, 'cancelled', `cancelled on ${h.hostId}`);
  });
}

function pickParams(p: MigrationParams): MigrationParams {
  const out: MigrationParams = {};
  if (p.maxBandwidthBytesPerSec !== undefined) out.maxBandwidthBytesPerSec = p.maxBandwidthBytesPerSec;
  if (p.downtimeLimitMs !== undefined) out.downtimeLimitMs = p.downtimeLimitMs;
  if (p.throttlePct !== undefined) out.throttlePct = p.throttlePct;
  if (p.hold !== undefined) out.hold = p.hold;
  if (p.autoSwitchover !== undefined) out.autoSwitchover = p.autoSwitchover;
  return out;
}

function validateParams(p: MigrationParams): void {
  if (!p || typeof p !== 'object') throw invalid('migration params must be an object');
  if (p.maxBandwidthBytesPerSec !== undefined) positiveNumber('maxBandwidthBytesPerSec', p.maxBandwidthBytesPerSec);
  if (p.downtimeLimitMs !== undefined) nonNegativeNumber('downtimeLimitMs', p.downtimeLimitMs);
  if (p.throttlePct !== undefined && !(Number.isFinite(p.throttlePct) && p.throttlePct >= 0 && p.throttlePct <= 99)) {
    throw invalid(`throttlePct must be a number in 0..99, got ${p.throttlePct}`);
  }
  for (const k of ['hold', 'autoSwitchover'] as const) {
    if (p[k] !== undefined && typeof p[k] !== 'boolean') throw invalid(`${k} must be a boolean`);
  }
}

