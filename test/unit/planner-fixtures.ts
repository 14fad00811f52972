// Builders for the planner tests (planner*.test.ts): hosts, VMs, a snapshot whose used figures
// and vmTags follow from its VMs, a seeded PRNG, and the at-every-instant limit check.
import assert from 'node:assert/strict';
import type { ClusterSnapshot, FleetPlan, PlanHost, PlanVm, PredictionSettings } from '../../domain/plan-types.js';
import { antiAffine } from '../../domain/planner-state.js';

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

export const SETTINGS: PredictionSettings = { downtimeLimitMs: 300, timeScale: 1, perMoveOverheadMs: 500, coldCopyBytesPerSec: 200 * MiB };

/** A host; `baseCpus` / `baseMemoryMiB` are used by guests the snapshot does not list. */
export type HostSpec = PlanHost & { baseCpus: number; baseMemoryMiB: number };

export function host(id: string, over: Partial<HostSpec> = {}): HostSpec {
  return {
    id,
    maintenance: false,
    state: 'up',
    cpus: 32,
    memoryMiB: 65536,
    cpuOvercommit: 1,
    memoryOvercommit: 1,
    usedCpus: 0,
    usedMemoryMiB: 0,
    cpuModel: 'EPYC',
    cpuFeatures: ['sse4_2', 'avx', 'avx2', 'aes'],
    tags: [],
    datastores: [
      { id: 'shared-1', shared: true, freeGiB: 4000 },
      { id: `local-${id}`, shared: false, freeGiB: 500 },
    ],
    networks: ['prod'],
    vmTags: [],
    maxOutgoing: 2,
    maxIncoming: 2,
    baseCpus: 0,
    baseMemoryMiB: 0,
    ...over,
  };
}

export function vm(id: string, hostId: string, over: Partial<PlanVm> = {}): PlanVm {
  return {
    id,
    name: id,
    hostId,
    state: 'running',
    cpus: 2,
    memoryMiB: 4096,
    diskGiB: 20,
    cpuFeatures: ['avx'],
    datastoreIds: ['shared-1'],
    tags: [],
    dirtyRateBytesPerSec: 0,
    writableWorkingSetBytes: 0,
    ...over,
  };
}

/** A snapshot whose hosts' used figures and vmTags are their base plus the listed VMs. */
export function cluster(hosts: HostSpec[], vms: PlanVm[], over: Partial<ClusterSnapshot> = {}): ClusterSnapshot {
  return {
    takenAtMs: 1_000_000,
    hosts: hosts.map(({ baseCpus, baseMemoryMiB, ...h }) => {
      const mine = vms.filter((v) => v.hostId === h.id);
      return {
        ...h,
        usedCpus: baseCpus + mine.reduce((a, v) => a + v.cpus, 0),
        usedMemoryMiB: baseMemoryMiB + mine.reduce((a, v) => a + v.memoryMiB, 0),
        vmTags: mine.map((v) => [...v.tags]),
      };
    }),
    vms,
    links: [],
    defaultLinkBandwidthBytesPerSec: 1 * GiB,
    ...over,
  };
}

/** The seeded PRNG of the fleet benchmark (mulberry32), so tests and bench draw alike. */
export { mulberry32 as rng } from '../../bench/fleet.js';

/** At every start instant: in flight <= k, per source <= maxOutgoing, per target <= maxIncoming (0 counts as 1). */
export function assertLimitsHold(
  moves: Array<{ from: string; to: string; startAtMs: number; endAtMs: number }>,
  hosts: Array<Pick<PlanHost, 'id' | 'maxOutgoing' | 'maxIncoming'>>,
  k: number,
): void {
  const lim = new Map(hosts.map((h) => [h.id, h]));
  for (const m of moves) {
    const t = m.startAtMs;
    const live = moves.filter((x) => x.startAtMs <= t && t < x.endAtMs);
    assert.ok(live.length <= k, `${live.length} in flight at ${t} (max ${k})`);
    for (const h of hosts) {
      const out = live.filter((x) => x.from === h.id).length;
      const inn = live.filter((x) => x.to === h.id).length;
      assert.ok(out <= Math.max(1, lim.get(h.id)!.maxOutgoing), `${out} leaving ${h.id} at ${t}`);
      assert.ok(inn <= Math.max(1, lim.get(h.id)!.maxIncoming), `${inn} entering ${h.id} at ${t}`);
    }
  }
}

/** Where each VM is over time: an unmoved VM on its host for ever; a moved one on both ends while in flight. */
function presence(snapshot: ClusterSnapshot, plan: FleetPlan): Map<string, Array<{ hostId: string; from: number; to: number }>> {
  const out = new Map<string, Array<{ hostId: string; from: number; to: number }>>();
  for (const v of snapshot.vms) {
    const m = plan.moves.find((x) => x.vmId === v.id);
    out.set(v.id, m ? [{ hostId: m.from, from: 0, to: m.endAtMs }, { hostId: m.to, from: m.startAtMs, to: Infinity }] : [{ hostId: v.hostId, from: 0, to: Infinity }]);
  }
  return out;
}

/**
 * No two anti-affine VMs on (or bound for) one host at any instant of the schedule, beyond a
 * pair that already shared its host in the snapshot (there, until one of them leaves).
 */
export function assertAntiAffinityAtEveryInstant(snapshot: ClusterSnapshot, plan: FleetPlan): void {
  const where = presence(snapshot, plan);
  for (const x of snapshot.vms) {
    for (const y of snapshot.vms) {
      if (x.id >= y.id || !antiAffine(x, y)) continue;
      for (const a of where.get(x.id)!) {
        for (const b of where.get(y.id)!) {
          const preexisting = x.hostId === y.hostId && a.hostId === x.hostId && a.from === 0 && b.from === 0;
          const overlap = !preexisting && a.hostId === b.hostId && a.from < b.to && b.from < a.to;
          assert.ok(!overlap, `${x.id} and ${y.id} are both on ${a.hostId} during [${Math.max(a.from, b.from)}, ${Math.min(a.to, b.to)})`);
        }
      }
    }
  }
}
