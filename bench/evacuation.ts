// Benchmark 6: evacuations EXECUTED on the simulator (real dev server, child LiveMigrate
// workflows), N ∈ {10, 50, 200} VMs of mixed seeded sizes, maxParallel 3. Reported per N:
//   executed makespan / LB, LB = max(Σ t_j / k, max t_j) over the MEASURED move durations t_j
//     (fleet-anchors.md section 3; goal ≤ 1.2): how well the executor keeps k moves busy;
//   executed / predicted makespan: how well the dry-run plan foretold the window.
// Time scale 1: a move's transfer takes real seconds (0.25–2 GiB at 1 GiB/s), so the numbers
// include the overhead of Temporal tasks on this machine, as an operator would see it. A first
// evacuation of 6 VMs calibrates the per-move overhead the plan then predicts with (learned from
// finished moves, as in production).
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { smallCluster, startTestFerry, stopOwnTemporal } from '../test/helpers/ferry.js';
import type { ClusterSpec } from '../workers/cluster-spec.js';
import { workflowIds, type FleetProgress } from '../workflows/definitions.js';
import { makespanLowerBound } from '../domain/planner.js';
import { Host } from '../db/entities.js';
import { mulberry32 } from './fleet.js';

function cluster(n: number, seed: number): ClusterSpec {
  const rnd = mulberry32(seed);
  const spec = smallCluster({ hosts: 6, memoryMiB: 1024 * 1024, cpus: 512, poolSize: 240 });
  const tag = randomUUID().slice(0, 6);
  const sizes = [256, 512, 1024, 2048];
  // h2's 6 VMs are the calibration evacuation: ferry learns its per-move overhead from them
  spec.vms = Array.from({ length: n + 6 }, (_, i) => ({
    id: `be${tag}-${i}`,
    name: `be${tag}-${i}`,
    hostId: i < n ? 'h1' : 'h2',
    datastoreId: 'shared',
    templateId: 'tpl-small',
    networkId: 'net1',
    ip: `10.0.0.${10 + i}`,
    cpus: 1,
    memoryMiB: sizes[Math.floor(rnd() * sizes.length)],
    diskGiB: 1,
    cpuFeatures: [],
    dirtyRateMiBps: Math.floor(rnd() * 40),
    writableWorkingSetMiB: 64,
  }));
  return spec;
}

export interface EvacuationRow {
  n: number;
  executedMs: number;
  lowerBoundMs: number;
  predictedMs: number;
  moved: number;
}

export async function evacuationRow(n: number, k = 3): Promise<EvacuationRow> {
  const f = await startTestFerry({ cluster: cluster(n, n), timeScale: 1 });
  try {
    // the source allows k outgoing moves, so k is the only limit (the bound's assumption)
    await f.db.em().nativeUpdate(Host, { id: 'h1' }, { maxOutgoingMigrations: k });
    const planId = `pb-${f.prefix}${n}`;
    const run = async (input: object, id: string) => (await (await f.client.workflow.start('evacuateHost', { taskQueue: f.taskQueue, workflowId: id, args: [input] })).result()) as FleetProgress;
    await run({ hostId: 'h2', maxParallel: k }, `${workflowIds.evacuate('h2')}-${f.prefix}`);
    const dry = await run({ hostId: 'h1', maxParallel: k, dryRun: true, planId }, `plan-${planId}`);
    const r = await run({ hostId: 'h1', planId }, `${workflowIds.evacuate('h1')}-${f.prefix}`);
    const moved = r.vms.filter((v) => v.state === 'moved');
    const executedMs = Math.max(...moved.map((v) => v.endedAtMs!)) - Math.min(...moved.map((v) => v.startedAtMs!));
    return { n, executedMs, lowerBoundMs: makespanLowerBound(moved.map((v) => v.durationMs!), k), predictedMs: dry.predictedMakespanMs ?? 0, moved: moved.length };
  } finally {
    await f.close();
  }
}

export async function benchEvacuation(opts: { sizes?: number[]; log?: (line: string) => void } = {}): Promise<string[]> {
  const log = opts.log ?? console.log;
  const lines: string[] = [];
  const say = (l: string) => {
    lines.push(l);
    log(l);
  };
  say('  N    moved  executed   LB(measured t_j)  exec/LB (goal <= 1.2)  predicted  exec/predicted');
  for (const n of opts.sizes ?? [10, 50, 200]) {
    const t0 = performance.now();
    const r = await evacuationRow(n);
    const ratio = r.executedMs / r.lowerBoundMs;
    say(
      `  ${String(n).padEnd(4)} ${String(r.moved).padEnd(6)} ${(r.executedMs / 1000).toFixed(1).padStart(7)} s ${(r.lowerBoundMs / 1000).toFixed(1).padStart(10)} s        ${ratio.toFixed(3)} ${ratio <= 1.2 ? 'met' : 'MISSED'}            ${(r.predictedMs / 1000).toFixed(1).padStart(6)} s   ${(r.executedMs / r.predictedMs).toFixed(2)}   (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    );
  }
  return lines;
}

if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  const sizes = process.argv.slice(2).map(Number).filter((x) => x > 0);
  await benchEvacuation({ sizes: sizes.length ? sizes : undefined });
  await stopOwnTemporal();
}
