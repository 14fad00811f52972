// Reconcile's comparison (ARCHITECTURE.md section 3): inventory against what each host's
// hypervisor reports, as a list of drift findings. Pure: the control activity feeds it rows and
// reports, the API reuses the state mapping when an operator fixes a state. Nothing here acts.
//
// The rules, per VM:
// - a VM with an operation in flight (provision, migration, lifecycle, ...) is skipped whole: its
//   copies and its inventory row are allowed to disagree for the length of that operation (an
//   `incoming` container on the target, a paused source at stop-and-copy);
// - an `incoming` copy is never reported on its own (an empty container, no guest in it);
// - hosts that did not answer are not judged: their VMs are neither missing nor unknown.
import type { VmPowerState } from './hypervisor.js';

export const DRIFT_KIND_LIST = ['unknown-vm', 'missing-vm', 'wrong-state', 'wrong-host', 'stuck-paused'] as const;
export type DriftKindName = (typeof DRIFT_KIND_LIST)[number];

/** What a host agent reports: one entry per VM its hypervisor knows. */
export interface ReportedVm {
  vmId: string;
  state: VmPowerState;
  name?: string;
  cpus?: number;
  memoryBytes?: number;
  disks?: string[];
  cpuFeatures?: string[];
}

export interface HostReport {
  hostId: string;
  vms: ReportedVm[];
}

/** The inventory's view of one VM (only VMs that should exist on a host). */
export interface InventoryVm {
  id: string;
  name: string;
  state: string;
  hostId: string | null;
}

export interface DriftFinding {
  /** `<kind>-<vmId>`: one record per VM and kind */
  id: string;
  kind: DriftKindName;
  vmId: string;
  hostId: string;
  expected: Record<string, unknown>;
  observed: Record<string, unknown>;
}

export interface CompareInput {
  inventory: InventoryVm[];
  reports: HostReport[];
  /** VMs with an operation in flight: skipped entirely */
  busyVmIds: string[];
}

export interface CompareResult {
  findings: DriftFinding[];
  /** VMs the comparison did not judge (busy) */
  skippedVmIds: string[];
  vmsSeen: number;
}

/** Inventory states in which a VM must exist on its host. */
export const PLACED_STATES: readonly string[] = ['running', 'stopped', 'paused'];

export const driftId = (kind: DriftKindName, vmId: string) => `${kind}-${vmId}`;

/**
 * The inventory state that matches a hypervisor power state: what `fix-state` writes. A crashed
 * or powered-off guest is `stopped` (ferry's start brings it back); a source left `postmigrate`
 * holds no running guest either.
 */
export function inventoryStateOf(state: VmPowerState | string): 'running' | 'paused' | 'stopped' {
  if (state === 'running') return 'running';
  if (state === 'paused' || state === 'incoming') return 'paused';
  return 'stopped';
}

function observedOf(hostId: string, vm: ReportedVm): Record<string, unknown> {
  return {
    hostId,
    state: vm.state,
    ...(vm.name !== undefined ? { name: vm.name } : {}),
    ...(vm.cpus !== undefined ? { cpus: vm.cpus } : {}),
    ...(vm.memoryBytes !== undefined ? { memoryBytes: vm.memoryBytes } : {}),
    ...(vm.disks !== undefined ? { disks: vm.disks } : {}),
    ...(vm.cpuFeatures !== undefined ? { cpuFeatures: vm.cpuFeatures } : {}),
  };
}

export function compareInventory(input: CompareInput): CompareResult {
  const busy = new Set(input.busyVmIds);
  const answered = new Set(input.reports.map((r) => r.hostId));
  const byId = new Map(input.inventory.map((v) => [v.id, v]));
  const copies = new Map<string, Array<{ hostId: string; vm: ReportedVm }>>();
  let vmsSeen = 0;
  for (const r of input.reports) {
    for (const vm of r.vms) {
      vmsSeen++;
      const list = copies.get(vm.vmId) ?? [];
      list.push({ hostId: r.hostId, vm });
      copies.set(vm.vmId, list);
    }
  }
  const findings: DriftFinding[] = [];
  const skipped = new Set<string>();
  const add = (kind: DriftKindName, vmId: string, hostId: string, expected: Record<string, unknown>, observed: Record<string, unknown>) =>
    findings.push({ id: driftId(kind, vmId), kind, vmId, hostId, expected, observed });

  // what the hypervisors run that inventory does not place there
  for (const [vmId, list] of copies) {
    if (busy.has(vmId)) {
      skipped.add(vmId);
      continue;
    }
    const inv = byId.get(vmId);
    const placed = inv && PLACED_STATES.includes(inv.state) && inv.hostId ? inv : undefined;
    const real = list.filter((c) => c.vm.state !== 'incoming');
    if (!inv) {
      const c = real[0];
      if (c) add('unknown-vm', vmId, c.hostId, { inInventory: false }, { ...observedOf(c.hostId, c.vm), ...(real.length > 1 ? { alsoOn: real.slice(1).map((x) => x.hostId) } : {}) });
      continue;
    }
    if (!placed) continue; // provisioning / error / deleted rows: judged below or not at all
    const home = list.find((c) => c.hostId === placed.hostId);
    const away = real.filter((c) => c.hostId !== placed.hostId);
    if (away.length > 0 && (!home || home.vm.state === 'incoming')) {
      // not where inventory says, somewhere else instead (only judged when the home host answered)
      if (answered.has(placed.hostId!)) {
        const c = away[0]!;
        add('wrong-host', vmId, c.hostId, { hostId: placed.hostId, state: placed.state }, observedOf(c.hostId, c.vm));
      }
    } else if (away.length > 0 && home) {
      // on its home AND elsewhere: the extra copy is what is wrong
      const c = away[0]!;
      add('wrong-host', vmId, c.hostId, { hostId: placed.hostId, state: placed.state }, { ...observedOf(c.hostId, c.vm), alsoOnHome: true });
    }
  }

  // what inventory places on an answering host, judged against that host's report
  for (const inv of input.inventory) {
    if (!inv.hostId || !PLACED_STATES.includes(inv.state) || !answered.has(inv.hostId)) continue;
    if (busy.has(inv.id)) {
      skipped.add(inv.id);
      continue;
    }
    const list = copies.get(inv.id) ?? [];
    const home = list.find((c) => c.hostId === inv.hostId && c.vm.state !== 'incoming');
    const expected = { hostId: inv.hostId, state: inv.state };
    if (!home) {
      if (!list.some((c) => c.hostId !== inv.hostId && c.vm.state !== 'incoming')) add('missing-vm', inv.id, inv.hostId, expected, { hostId: inv.hostId, state: 'absent' });
      continue;
    }
    const seen = home.vm.state;
    if (seen === 'paused' && inv.state !== 'paused') add('stuck-paused', inv.id, inv.hostId, expected, observedOf(inv.hostId, home.vm));
    else if (inventoryStateOf(seen) !== inv.state) add('wrong-state', inv.id, inv.hostId, expected, observedOf(inv.hostId, home.vm));
  }
  findings.sort((a, b) => a.id.localeCompare(b.id));
  return { findings, skippedVmIds: [...skipped].sort(), vmsSeen };
}

// ---------------------------------------------------------------- the Reconcile workflow's JSON
export interface ReconcileInput {
  /** how long an agent may take to pick up its report task (default 10 s): no answer = "did not answer" */
  agentTimeoutMs?: number;
  /** who asked (API principal), recorded on the operation */
  principal?: string;
}

export interface HostUtilization {
  hostId: string;
  /** allocated / (physical x overcommit) */
  cpu: number;
  memory: number;
}

export interface ReconcileResult {
  operationId: string;
  state: 'running' | 'completed' | 'failed';
  /** hosts that are up in inventory and were asked */
  hostsAsked: string[];
  hostsAnswered: string[];
  /** "host X did not answer: <why>" — its VMs are not judged (never reported missing) */
  hostsUnanswered: Array<{ hostId: string; message: string }>;
  vmsSeen: number;
  skippedVmIds: string[];
  /** open drifts after this run, by kind (every kind present, 0 when none) */
  counts: Record<DriftKindName, number>;
  openDriftIds: string[];
  newDriftIds: string[];
  reopenedDriftIds: string[];
  /** open drifts this run no longer observed (resolved 'gone') */
  goneDriftIds: string[];
  utilization: HostUtilization[];
  error?: string;
}

export function emptyCounts(): Record<DriftKindName, number> {
  return Object.fromEntries(DRIFT_KIND_LIST.map((k) => [k, 0])) as Record<DriftKindName, number>;
}
