// What the Temporal Web UI shows for an operation (ARCHITECTURE.md section 3, "What the Web UI
// shows"): the one-line static summary a workflow is started with, its static details (the inputs
// as a markdown table), and the words of an activity's summary. Pure: the API (starting a
// workflow) and the workflows (starting a child, naming an activity) build the very same lines.

const MiB = 1024 * 1024;

export interface MigrateSummaryInput {
  vmId: string;
  /** the VM's name, when the caller knows it */
  vmName?: string;
  /** known at the API; inside an evacuation the plan's `from` */
  sourceHostId?: string;
  targetHostId?: string;
  policy?: string;
}

const vmLabel = (i: { vmId: string; vmName?: string }) => (i.vmName && i.vmName !== i.vmId ? `${i.vmName} (${i.vmId})` : i.vmId);

/** `live-migrate vm-demo-04 host-d → host-a (policy default)`; an unknown end reads `?` / `(planner picks)`. */
export function liveMigrateSummary(i: MigrateSummaryInput): string {
  return `live-migrate ${vmLabel(i)} ${i.sourceHostId ?? '?'} → ${i.targetHostId ?? '(planner picks)'} (policy ${i.policy ?? 'default'})`;
}

/** `cold-migrate web-1 (vm-1) h1 → h2 (datastore local-h2)`; `(auto)` when kind auto chose it. */
export function coldMigrateSummary(i: Omit<MigrateSummaryInput, 'policy'> & { targetDatastoreId?: string; auto?: boolean }): string {
  return `cold-migrate ${vmLabel(i)} ${i.sourceHostId ?? '?'} → ${i.targetHostId ?? '(planner picks)'}${i.targetDatastoreId ? ` (datastore ${i.targetDatastoreId})` : ''}${i.auto ? ' (auto)' : ''}`;
}

/** `storage-migrate web-1 (vm-1) on h1 → datastore local-h1` */
export function storageMigrateSummary(i: { vmId: string; vmName?: string; hostId?: string; targetDatastoreId: string }): string {
  return `storage-migrate ${vmLabel(i)} on ${i.hostId ?? '?'} → datastore ${i.targetDatastoreId}`;
}

export interface ProvisionSummaryInput {
  name: string;
  cpus: number;
  memoryMiB: number;
  source: { kind: string; templateId?: string; sourceVmId?: string; path?: string; isoPath?: string };
  /** the template's name, when the caller knows it (else its id) */
  templateName?: string;
}

/** `provision web-1 (2 vCPU, 2048 MiB) from debian-12` */
export function provisionSummary(i: ProvisionSummaryInput): string {
  const s = i.source;
  const from =
    s.kind === 'template' ? (i.templateName ?? s.templateId ?? 'a template')
    : s.kind === 'clone' ? `a clone of ${s.sourceVmId}`
    : s.kind === 'import' ? `import ${basename(s.path ?? '')}`
    : `installer ${basename(s.isoPath ?? '')}`;
  return `provision ${i.name} (${i.cpus} vCPU, ${i.memoryMiB} MiB) from ${from}`;
}

/** `evacuate host-a (max 3 in parallel)`, with `dry run` / `plan p-1` when it is one. */
export function evacuateSummary(i: { hostId: string; maxParallel?: number; dryRun?: boolean; planId?: string }, defaultParallel = 3): string {
  return `evacuate ${i.hostId} (max ${i.maxParallel ?? defaultParallel} in parallel)${planNote(i)}`;
}

/** `rebalance default (level 3, max 5 moves)` */
export function rebalanceSummary(i: { cluster: string; level?: number; maxMoves?: number; dryRun?: boolean; planId?: string }, defaults = { level: 3, maxMoves: 5 }): string {
  return `rebalance ${i.cluster} (level ${i.level ?? defaults.level}, max ${i.maxMoves ?? defaults.maxMoves} moves)${planNote(i)}`;
}

/** `reconcile default` */
export function reconcileSummary(cluster: string): string {
  return `reconcile ${cluster}`;
}

/** `stop vm-1` / `delete vm-1 (forced)` */
export function lifecycleSummary(i: { vmId: string; action: string; force?: boolean }): string {
  return `${i.action} ${i.vmId}${i.force ? ' (forced)' : ''}`;
}

/** `template golden from vm-1` */
export function templateSummary(i: { name: string; vmId: string }): string {
  return `template ${i.name} from ${i.vmId}`;
}

function planNote(i: { dryRun?: boolean; planId?: string }): string {
  return i.dryRun ? ' dry run' : i.planId ? ` plan ${i.planId}` : '';
}

function basename(p: string): string {
  return p.split('/').pop() || p;
}

/**
 * The inputs of a workflow as markdown (static details): a title and one `- **name**: value` line
 * per input. (A markdown table would be the obvious form, but the Web UI 2.42 renders tables
 * without cell borders or padding, which reads worse than a list.) Undefined values and empty
 * arrays are left out, arrays are joined, objects written as compact JSON; new lines are folded
 * and markdown's special characters escaped, so a value cannot break the list.
 */
export function inputsTable(title: string, input: Record<string, unknown>): string {
  const rows = Object.entries(input)
    .filter(([, v]) => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => [k, formatValue(v)] as [string, string]);
  return markdownList(title, rows);
}

/** `**title**` and one `- **key**: value` line per row (shared with the current details). */
export function markdownList(title: string, rows: Array<[string, string]>): string {
  return [`**${title}**`, '', ...rows.map(([k, v]) => `- **${cell(k)}**: ${cell(v)}`)].join('\n');
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) return v.join(', ');
  return JSON.stringify(v);
}

function cell(s: string): string {
  const flat = s.replace(/([\\`*_[\]<>|])/g, '\\$1').replace(/\r?\n/g, ' ');
  return flat.length > 200 ? `${flat.slice(0, 197)}...` : flat;
}

const ACRONYMS: Record<string, string> = { ip: 'IP', vm: 'VM', vms: 'VMs', cpu: 'CPU', iso: 'ISO' };

/** An activity type as words: `allocateIp` → `allocate IP`, `startDestinationContainer` → `start destination container`. */
export function activityWords(activityType: string): string {
  return activityType
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(' ')
    .map((w) => ACRONYMS[w] ?? w)
    .join(' ');
}

/** Bytes for a person: `1.5 GiB`, `640 MiB`, `12 KiB`. */
export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1024 * MiB) return `${(n / (1024 * MiB)).toFixed(1)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(n >= 100 * MiB ? 0 : 1)} MiB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KiB`;
  return `${Math.round(n)} B`;
}

/** Seconds for a person: `42 s`, `3 min 5 s`. */
export function seconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/**
 * An activity's summary: `stage 2 pre-copy on h1: watch precopy`, `step 3 customize: allocate IP`,
 * `evacuate h1: fleet snapshot`. `where` is the host whose agent runs it, or 'control'.
 */
export function activitySummary(phase: string, where: string, activityType: string, note?: string): string {
  return `${phase}${where === 'control' ? '' : ` on ${where}`}: ${activityWords(activityType)}${note ? ` (${note})` : ''}`;
}
