// What a fleet plan depends on, as one short string: a plan is executed only while the cluster
// still digests the same (or after revalidatePlan says every move still holds).
import type { ClusterSnapshot, FleetPlan } from './plan-types.js';
import { byId } from './planner-validate.js';

/** FNV-1a, 32 bits, over the UTF-16 code units of `text`; 8 hex digits. */
export function fnv1a32(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * Digest of every host's id, state, maintenance flag, capacity (cpus, memory, overcommit ratios),
 * used figures and datastores' free space, the evacuated host, and each moved VM's id, home,
 * state and size. Canonical: hosts, datastores and VMs sorted by id, fixed field order.
 */
export function snapshotDigest(snapshot: ClusterSnapshot, plan: Pick<FleetPlan, 'moves' | 'hostId'>): string {
  const hosts = [...snapshot.hosts]
    .sort((a, b) => byId(a.id, b.id))
    .map((h) => [
      h.id,
      h.state,
      h.maintenance,
      h.cpus,
      h.memoryMiB,
      h.cpuOvercommit,
      h.memoryOvercommit,
      h.usedCpus,
      h.usedMemoryMiB,
      [...h.datastores].sort((a, b) => byId(a.id, b.id)).map((d) => [d.id, d.freeGiB]),
    ]);
  const byVm = new Map(snapshot.vms.map((v) => [v.id, v]));
  const moved = [...new Set(plan.moves.map((m) => m.vmId))].sort(byId).map((id) => {
    const vm = byVm.get(id);
    return vm ? [vm.id, vm.hostId, vm.state, vm.cpus, vm.memoryMiB, vm.diskGiB] : [id, null];
  });
  return fnv1a32(JSON.stringify([plan.hostId ?? null, hosts, moved]));
}
