// Placement (ARCHITECTURE.md section 3, ProvisionVm step 1 and LiveMigrate stage 0). Pure and
// deterministic: filter the candidate hosts, weigh the survivors, pick a datastore per host.
// Runs in the workflow sandbox (plain JSON in and out) and in activities / the API dry-run.
// The reservation itself (optimistic locking against races) is the database's job; this module
// only ranks. Every rejection names the resource and the numbers so an operator can act on it.

export interface DatastoreCandidate {
  id: string;
  shared: boolean;
  freeGiB: number;
}

export interface HostCandidate {
  id: string;
  rack?: string;
  maintenance: boolean;
  state: 'up' | 'down';
  cpus: number;
  memoryMiB: number;
  /** vCPUs per physical CPU allowed (Nova's cpu_allocation_ratio) */
  cpuOvercommit: number;
  /** memory overcommit ratio (Nova's ram_allocation_ratio) */
  memoryOvercommit: number;
  usedCpus: number;
  usedMemoryMiB: number;
  cpuModel: string;
  cpuFeatures: string[];
  tags: string[];
  datastores: DatastoreCandidate[];
  /** networks bridged on this host */
  networks: string[];
  /** tags of the VMs already on the host, one array per VM (affinity / anti-affinity) */
  vmTags: string[][];
}

export interface PlacementRequest {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** explicit target: only this host is considered */
  hostId?: string;
  /** never these hosts (a migration's source) */
  excludeHostIds?: string[];
  requiredCpuFeatures?: string[];
  /** datastores holding the template: the disk must go on one of them */
  templateDatastoreIds?: string[];
  network?: string;
  /** refuse hosts that already carry a VM with this tag */
  antiAffinityTag?: string;
  /** require hosts that carry a VM with this tag (any host while no VM carries it yet) */
  affinityTag?: string;
}

export type Weigher = 'spread' | 'pack';

export interface PlacementOptions {
  /** 'spread' (default): most free memory ratio first; 'pack': least free first */
  weigher?: Weigher;
}

export interface RankedHost {
  hostId: string;
  /** higher is better; the weigher's primary measure (free memory ratio after placement for spread) */
  score: number;
  datastoreId: string;
}

export interface RejectedHost {
  hostId: string;
  reasons: string[];
}

export interface PlacementResult {
  ranked: RankedHost[];
  rejected: RejectedHost[];
  weigher: Weigher;
}

/** Formats a number for a human sentence: integers as is, else at most two decimals. */
function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Math.round(n * 100) / 100);
}

function ratio(r: number): string {
  return Number.isInteger(r) ? r.toFixed(1) : fmt(r);
}

function fail(field: string, problem: string, value: unknown): never {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  throw new RangeError(`${field} ${problem}, got ${shown}`);
}

function checkNumber(field: string, v: unknown, opts: { positive?: boolean; integer?: boolean }): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(field, 'must be a finite number', v);
  if (opts.integer && !Number.isInteger(v)) fail(field, 'must be an integer', v);
  if (opts.positive ? !(v > 0) : !(v >= 0)) fail(field, opts.positive ? 'must be positive' : 'must not be negative', v);
}

function checkStrings(field: string, v: unknown): void {
  if (v === undefined) return;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) fail(field, 'must be an array of strings', v);
}

function checkOptionalString(field: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'string' || v === '')) fail(field, 'must be a non-empty string', v);
}

export function validatePlacementRequest(req: PlacementRequest): void {
  if (req === null || typeof req !== 'object') fail('request', 'must be an object', req);
  checkNumber('request.cpus', req.cpus, { positive: true, integer: true });
  checkNumber('request.memoryMiB', req.memoryMiB, { positive: true });
  checkNumber('request.diskGiB', req.diskGiB, {});
  checkOptionalString('request.hostId', req.hostId);
  checkStrings('request.excludeHostIds', req.excludeHostIds);
  checkStrings('request.requiredCpuFeatures', req.requiredCpuFeatures);
  checkStrings('request.templateDatastoreIds', req.templateDatastoreIds);
  if (req.templateDatastoreIds && req.templateDatastoreIds.length === 0) {
    fail('request.templateDatastoreIds', 'must name at least one datastore when given', '[]');
  }
  checkOptionalString('request.network', req.network);
  checkOptionalString('request.antiAffinityTag', req.antiAffinityTag);
  checkOptionalString('request.affinityTag', req.affinityTag);
}

export function validateHosts(hosts: HostCandidate[]): void {
  if (!Array.isArray(hosts)) fail('hosts', 'must be an array', hosts);
  const seen = new Set<string>();
  hosts.forEach((h, i) => {
    const at = `hosts[${i}]`;
    if (typeof h?.id !== 'string' || h.id === '') fail(`${at}.id`, 'must be a non-empty string', h?.id);
    if (seen.has(h.id)) fail(`${at}.id`, 'is a duplicate host id', h.id);
    seen.add(h.id);
    if (h.state !== 'up' && h.state !== 'down') fail(`${at}.state`, "must be 'up' or 'down'", h.state);
    if (typeof h.maintenance !== 'boolean') fail(`${at}.maintenance`, 'must be a boolean', h.maintenance);
    checkNumber(`${at}.cpus`, h.cpus, { positive: true });
    checkNumber(`${at}.memoryMiB`, h.memoryMiB, { positive: true });
    checkNumber(`${at}.cpuOvercommit`, h.cpuOvercommit, { positive: true });
    checkNumber(`${at}.memoryOvercommit`, h.memoryOvercommit, { positive: true });
    checkNumber(`${at}.usedCpus`, h.usedCpus, {});
    checkNumber(`${at}.usedMemoryMiB`, h.usedMemoryMiB, {});
    checkStrings(`${at}.cpuFeatures`, h.cpuFeatures);
    checkStrings(`${at}.tags`, h.tags);
    checkStrings(`${at}.networks`, h.networks);
    if (!Array.isArray(h.vmTags) || h.vmTags.some((t) => !Array.isArray(t))) fail(`${at}.vmTags`, 'must be an array of string arrays', h.vmTags);
    if (!Array.isArray(h.datastores)) fail(`${at}.datastores`, 'must be an array', h.datastores);
    h.datastores.forEach((d, j) => {
      if (typeof d?.id !== 'string' || d.id === '') fail(`${at}.datastores[${j}].id`, 'must be a non-empty string', d?.id);
      checkNumber(`${at}.datastores[${j}].freeGiB`, d.freeGiB, {});
    });
  });
}

/** Capacity after overcommit, what is used, what is free. */
export function hostCapacity(h: HostCandidate): { cpuCap: number; cpuFree: number; memCap: number; memFree: number } {
  const cpuCap = h.cpus * h.cpuOvercommit;
  const memCap = h.memoryMiB * h.memoryOvercommit;
  return { cpuCap, cpuFree: cpuCap - h.usedCpus, memCap, memFree: memCap - h.usedMemoryMiB };
}

function cpuReason(h: HostCandidate, cpus: number): string | null {
  const { cpuCap, cpuFree } = hostCapacity(h);
  if (cpuFree >= cpus) return null;
  return `cpu: needs ${cpus} vCPUs, free ${fmt(Math.max(0, cpuFree))} of ${fmt(cpuCap)} (overcommit ${ratio(h.cpuOvercommit)})`;
}

function memoryReason(h: HostCandidate, memoryMiB: number): string | null {
  const { memCap, memFree } = hostCapacity(h);
  if (memFree >= memoryMiB) return null;
  return `memory: needs ${fmt(memoryMiB)} MiB, free ${fmt(Math.max(0, memFree))} MiB of ${fmt(memCap)} MiB (overcommit ${ratio(h.memoryOvercommit)})`;
}

function missingFeatures(offered: string[], wanted: string[]): string[] {
  const have = new Set(offered);
  return [...new Set(wanted)].filter((f) => !have.has(f)).sort();
}

/** Shared first, then most free, then id: the datastore a new or copied disk goes to. */
export function chooseDatastore(candidates: DatastoreCandidate[]): DatastoreCandidate | undefined {
  return [...candidates].sort((a, b) => Number(b.shared) - Number(a.shared) || b.freeGiB - a.freeGiB || cmp(a.id, b.id))[0];
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function listDatastores(ds: DatastoreCandidate[]): string {
  return ds.length === 0 ? 'none' : ds.map((d) => `${d.id} (${fmt(d.freeGiB)} GiB free)`).join(', ');
}

function diskChoice(h: HostCandidate, req: PlacementRequest): { datastore?: DatastoreCandidate; reason?: string } {
  const template = req.templateDatastoreIds;
  const reachable = template ? h.datastores.filter((d) => template.includes(d.id)) : h.datastores;
  const roomy = reachable.filter((d) => d.freeGiB >= req.diskGiB);
  const datastore = chooseDatastore(roomy);
  if (datastore) return { datastore };
  if (template && reachable.length === 0) {
    return { reason: `disk: no reachable datastore holds the template (template on ${template.join(', ')}; host reaches ${listDatastores(h.datastores)})` };
  }
  const where = template ? 'a datastore holding the template' : 'a reachable datastore';
  return { reason: `disk: needs ${fmt(req.diskGiB)} GiB free on ${where}, available: ${listDatastores(reachable)}` };
}

function carries(h: HostCandidate, tag: string): number {
  return h.vmTags.filter((tags) => tags.includes(tag)).length;
}

/** Filters and weighs `hosts` for `request`. Deterministic: ties go to the smaller host id. */
export function placeVm(request: PlacementRequest, hosts: HostCandidate[], options: PlacementOptions = {}): PlacementResult {
  validatePlacementRequest(request);
  validateHosts(hosts);
  const weigher = options.weigher ?? 'spread';
  if (weigher !== 'spread' && weigher !== 'pack') fail('options.weigher', "must be 'spread' or 'pack'", weigher);

  const excluded = new Set(request.excludeHostIds ?? []);
  // Affinity is a requirement once the group exists somewhere; the group's first VM may go
  // anywhere (otherwise no group could ever start).
  const affinityGroupExists = request.affinityTag !== undefined && hosts.some((h) => carries(h, request.affinityTag!) > 0);

  const accepted: Array<{ host: HostCandidate; datastoreId: string; mem: number; cpu: number }> = [];
  const rejected: RejectedHost[] = [];

  for (const h of [...hosts].sort((a, b) => cmp(a.id, b.id))) {
    const reasons: string[] = [];
    if (request.hostId !== undefined && h.id !== request.hostId) reasons.push(`not the requested host ${request.hostId}`);
    if (excluded.has(h.id)) reasons.push('excluded by the request (migration source)');
    if (h.state !== 'up') reasons.push(`state: host is ${h.state}`);
    if (h.maintenance) reasons.push('maintenance: host is in maintenance (no new placements)');
    const cpu = cpuReason(h, request.cpus);
    if (cpu) reasons.push(cpu);
    const mem = memoryReason(h, request.memoryMiB);
    if (mem) reasons.push(mem);
    const disk = diskChoice(h, request);
    if (disk.reason) reasons.push(disk.reason);
    const missing = missingFeatures(h.cpuFeatures, request.requiredCpuFeatures ?? []);
    if (missing.length > 0) reasons.push(`cpu features: missing ${missing.join(', ')} (cpu model ${h.cpuModel})`);
    if (request.network !== undefined && !h.networks.includes(request.network)) {
      reasons.push(`network: ${request.network} is not bridged on this host (has ${h.networks.length ? h.networks.join(', ') : 'none'})`);
    }
    if (request.antiAffinityTag !== undefined) {
      const n = carries(h, request.antiAffinityTag);
      if (n > 0) reasons.push(`anti-affinity: ${n} VM(s) tagged ${request.antiAffinityTag} already on this host`);
    }
    if (request.affinityTag !== undefined && affinityGroupExists && carries(h, request.affinityTag) === 0) {
      reasons.push(`affinity: no VM tagged ${request.affinityTag} on this host`);
    }

    if (reasons.length > 0) {
      rejected.push({ hostId: h.id, reasons });
      continue;
    }
    const { cpuCap, cpuFree, memCap, memFree } = hostCapacity(h);
    accepted.push({
      host: h,
      datastoreId: disk.datastore!.id,
      // free ratios after this VM lands
      mem: (memFree - request.memoryMiB) / memCap,
      cpu: (cpuFree - request.cpus) / cpuCap,
    });
  }

  const sign = weigher === 'spread' ? 1 : -1;
  accepted.sort((a, b) => sign * (b.mem - a.mem) || sign * (b.cpu - a.cpu) || cmp(a.host.id, b.host.id));
  const ranked = accepted.map((a) => ({
    hostId: a.host.id,
    score: Math.round((weigher === 'spread' ? a.mem : 1 - a.mem) * 1e6) / 1e6,
    datastoreId: a.datastoreId,
  }));
  return { ranked, rejected, weigher };
}

/** A running VM as the migration pre-checks see it. */
export interface MigratingVm {
  id: string;
  cpus: number;
  memoryMiB: number;
  /** CPU features the guest was started with: the target must offer every one */
  cpuFeatures: string[];
  diskGiB: number;
  /** datastores holding the VM's disks on the source */
  datastoreIds: string[];
  network?: string;
}

export interface MigrationCheck {
  ok: boolean;
  reasons: string[];
  /** no shared datastore reachable from both hosts: the disks travel along (a plan flag, not a refusal) */
  copyDisks: boolean;
  /** where the copied disks go (copyDisks), else null */
  targetDatastoreId: string | null;
}

/** LiveMigrate stage 0: can `vm` move from `source` to `target`? Lists every refusal reason. */
export function checkMigrationTarget(vm: MigratingVm, source: HostCandidate, target: HostCandidate): MigrationCheck {
  validateHosts([source, ...(source.id === target.id ? [] : [target])]);
  checkNumber('vm.cpus', vm.cpus, { positive: true, integer: true });
  checkNumber('vm.memoryMiB', vm.memoryMiB, { positive: true });
  checkNumber('vm.diskGiB', vm.diskGiB, {});
  checkStrings('vm.cpuFeatures', vm.cpuFeatures);
  checkStrings('vm.datastoreIds', vm.datastoreIds);
  checkOptionalString('vm.network', vm.network);

  const reasons: string[] = [];
  if (target.id === source.id) reasons.push(`target ${target.id} is the source host`);
  if (target.state !== 'up') reasons.push(`state: target ${target.id} is ${target.state}`);
  if (target.maintenance) reasons.push(`maintenance: target ${target.id} is in maintenance`);

  const missing = missingFeatures(target.cpuFeatures, vm.cpuFeatures);
  if (missing.length > 0) {
    reasons.push(
      `cpu features: target ${target.id} (${target.cpuModel}) lacks ${missing.join(', ')} that the VM was started with on ${source.id} (${source.cpuModel})`,
    );
  }
  if (vm.network !== undefined && !target.networks.includes(vm.network)) {
    reasons.push(`network: ${vm.network} is not bridged on target ${target.id}`);
  }
  const cpu = cpuReason(target, vm.cpus);
  if (cpu) reasons.push(cpu);
  const mem = memoryReason(target, vm.memoryMiB);
  if (mem) reasons.push(mem);

  // Shared storage: every disk's datastore is shared and the target reaches it under the same id.
  const sourceDs = new Map(source.datastores.map((d) => [d.id, d]));
  const targetIds = new Set(target.datastores.map((d) => d.id));
  const shared = vm.datastoreIds.every((id) => sourceDs.get(id)?.shared === true && targetIds.has(id));
  let copyDisks = false;
  let targetDatastoreId: string | null = null;
  if (!shared) {
    copyDisks = true;
    const choice = chooseDatastore(target.datastores.filter((d) => d.freeGiB >= vm.diskGiB));
    if (choice) targetDatastoreId = choice.id;
    else reasons.push(`disk: no shared storage, and copying needs ${fmt(vm.diskGiB)} GiB on target ${target.id}, available: ${listDatastores(target.datastores)}`);
  }
  return { ok: reasons.length === 0, reasons, copyDisks, targetDatastoreId };
}
