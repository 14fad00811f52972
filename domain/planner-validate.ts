// Input checks of the fleet planner (domain/planner.ts). Bad input throws a RangeError that
// names the field and the value, the way domain/placement.ts does; nothing is repaired silently.
import { validateHosts } from './placement.js';
import type { ClusterSnapshot, PlanHost, PlanVmState, PredictionSettings } from './plan-types.js';

export function planError(field: string, problem: string, value: unknown): never {
  const shown = typeof value === 'string' ? JSON.stringify(value) : Array.isArray(value) ? `[${value.length} items]` : String(value);
  throw new RangeError(`${field} ${problem}, got ${shown}`);
}

type Rule = 'positive' | 'non-negative' | 'positive integer' | 'non-negative integer';

/** One number against one rule: finite, then sign, then integrality. */
export function needNumber(field: string, v: unknown, rule: Rule): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) planError(field, 'must be a finite number', v);
  const positive = rule.startsWith('positive');
  if (positive ? v <= 0 : v < 0) planError(field, positive ? 'must be positive' : 'must not be negative', v);
  if (rule.endsWith('integer') && !Number.isInteger(v)) planError(field, 'must be an integer', v);
}

export function needParallel(field: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) planError(field, 'must be an integer >= 1', v);
}

const VM_STATES: readonly PlanVmState[] = ['running', 'stopped', 'paused', 'migrating', 'provisioning', 'error'];

/** Hosts as placement checks them, plus the migration limits the planner schedules with. */
export function validatePlanHosts(hosts: PlanHost[], at = 'snapshot.hosts'): void {
  try {
    validateHosts(hosts);
  } catch (err) {
    if (err instanceof RangeError) throw new RangeError(err.message.replace(/^hosts/, at));
    throw err;
  }
  hosts.forEach((h, i) => {
    needNumber(`${at}[${i}].maxOutgoing`, h.maxOutgoing, 'non-negative integer');
    needNumber(`${at}[${i}].maxIncoming`, h.maxIncoming, 'non-negative integer');
  });
}

export function validateSnapshot(snapshot: ClusterSnapshot): void {
  if (snapshot === null || typeof snapshot !== 'object') planError('snapshot', 'must be an object', snapshot);
  needNumber('snapshot.takenAtMs', snapshot.takenAtMs, 'non-negative');
  if (!Array.isArray(snapshot.hosts)) planError('snapshot.hosts', 'must be an array', snapshot.hosts);
  validatePlanHosts(snapshot.hosts);
  const hostIds = new Set(snapshot.hosts.map((h) => h.id));
  if (!Array.isArray(snapshot.vms)) planError('snapshot.vms', 'must be an array', snapshot.vms);
  const vmIds = new Set<string>();
  snapshot.vms.forEach((vm, i) => {
    const at = `snapshot.vms[${i}]`;
    if (typeof vm?.id !== 'string' || vm.id === '') planError(`${at}.id`, 'must be a non-empty string', vm?.id);
    if (vmIds.has(vm.id)) planError(`${at}.id`, 'is a duplicate VM id', vm.id);
    vmIds.add(vm.id);
    if (!hostIds.has(vm.hostId)) planError(`${at}.hostId`, 'is not a host of the snapshot', vm.hostId);
    if (!VM_STATES.includes(vm.state)) planError(`${at}.state`, `must be one of ${VM_STATES.join(', ')}`, vm.state);
    needNumber(`${at}.cpus`, vm.cpus, 'positive integer');
    needNumber(`${at}.memoryMiB`, vm.memoryMiB, 'positive');
    needNumber(`${at}.diskGiB`, vm.diskGiB, 'non-negative');
    needNumber(`${at}.dirtyRateBytesPerSec`, vm.dirtyRateBytesPerSec, 'non-negative');
    needNumber(`${at}.writableWorkingSetBytes`, vm.writableWorkingSetBytes, 'non-negative');
    if (vm.lastMovedAtMs !== undefined) needNumber(`${at}.lastMovedAtMs`, vm.lastMovedAtMs, 'non-negative');
    for (const k of ['cpuFeatures', 'datastoreIds', 'tags'] as const) {
      if (!Array.isArray(vm[k]) || vm[k].some((x) => typeof x !== 'string')) planError(`${at}.${k}`, 'must be an array of strings', vm[k]);
    }
  });
  if (!Array.isArray(snapshot.links)) planError('snapshot.links', 'must be an array', snapshot.links);
  const pairs = new Set<string>();
  snapshot.links.forEach((l, i) => {
    const at = `snapshot.links[${i}]`;
    if (!hostIds.has(l.a)) planError(`${at}.a`, 'is not a host of the snapshot', l.a);
    if (!hostIds.has(l.b)) planError(`${at}.b`, 'is not a host of the snapshot', l.b);
    needNumber(`${at}.bandwidthBytesPerSec`, l.bandwidthBytesPerSec, 'positive');
    const key = pairKey(l.a, l.b);
    if (pairs.has(key)) planError(at, 'is a second link for the same pair', key);
    pairs.add(key);
  });
  needNumber('snapshot.defaultLinkBandwidthBytesPerSec', snapshot.defaultLinkBandwidthBytesPerSec, 'positive');
}

export function validateSettings(s: PredictionSettings): void {
  if (s === null || typeof s !== 'object') planError('settings', 'must be an object', s);
  needNumber('settings.downtimeLimitMs', s.downtimeLimitMs, 'non-negative');
  if (s.maxBandwidthBytesPerSec !== undefined) needNumber('settings.maxBandwidthBytesPerSec', s.maxBandwidthBytesPerSec, 'positive');
  needNumber('settings.timeScale', s.timeScale, 'positive');
  needNumber('settings.perMoveOverheadMs', s.perMoveOverheadMs, 'non-negative');
  needNumber('settings.coldCopyBytesPerSec', s.coldCopyBytesPerSec, 'positive');
}

/** The undirected key of a host pair. */
export function pairKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

export function byId(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
