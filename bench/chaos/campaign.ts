// The seeded chaos campaign on the simulator: one rig (dev server, control worker, agents, API,
// each a real process) for every run, run i with seed S+i, and the report: runs, operations,
// faults by kind, process restarts, violations (each failing run with its seed and the command
// that replays it). The last line reads `N runs, V violations`.
import { formatViolations, type Violation } from '../../test/helpers/invariants.js';
import { FAULT_KINDS } from '../../domain/faults.js';
import { Rig } from './rig.js';
import { chaosCluster, runOnce, type RunStats } from './run.js';
import { PROCESS_FAULTS } from './schedule.js';

export interface CampaignOptions {
  runs: number;
  seed: number;
  plant?: string;
  timeScale?: number;
  /** stop starting runs after this many minutes (the report counts the runs that ran) */
  minutes?: number;
  log?: (line: string) => void;
}

export interface CampaignReport {
  runs: number;
  violations: number;
  failingSeeds: number[];
  operations: Record<string, number>;
  rejected: Record<string, number>;
  faults: Record<string, number>;
  restarts: Record<string, number>;
  byKind: Record<string, number>;
  wallMs: number;
  text: string;
}

/** A run's phases, in order (run.ts): what `wall time per run` breaks the runs' time into. */
const PHASES = ['standby', 'seed', 'play', 'restore', 'settle', 'check', 'retire'];

export function replayCommand(seed: number, plant?: string): string {
  return `npm run chaos -- --runs 1 --seed ${seed}${plant ? ` --plant ${plant}` : ''}`;
}

export async function runCampaign(o: CampaignOptions): Promise<CampaignReport> {
  const log = o.log ?? ((l) => console.log(l));
  const t0 = Date.now();
  const rig = new Rig({ cluster: chaosCluster(), timeScale: o.timeScale ?? 20, plant: o.plant });
  const all: RunStats[] = [];
  const sum = (pick: (s: RunStats) => Record<string, number>) => {
    const m: Record<string, number> = {};
    for (const s of all) for (const [k, v] of Object.entries(pick(s))) m[k] = (m[k] ?? 0) + v;
    return m;
  };
  try {
    await rig.start();
    log(`chaos: rig up in ${Date.now() - t0} ms (${rig.dir}); ${o.runs} runs from seed ${o.seed}${o.plant ? `, planted bug ${o.plant}` : ''}`);
    for (let i = 0; i < o.runs; i++) {
      if (o.minutes !== undefined && Date.now() - t0 > o.minutes * 60_000) {
        log(`chaos: the ${o.minutes}-minute budget is spent after ${i} of ${o.runs} runs`);
        break;
      }
      const seed = o.seed + i;
      const s = await runOnce(rig, seed, log);
      all.push(s);
      const faults = Object.entries(s.faults).map(([k, v]) => `${k}${v > 1 ? `x${v}` : ''}`).join(' ');
      log(`run ${i + 1}/${o.runs} seed ${seed}: ${Object.values(s.operations).reduce((a, b) => a + b, 0)} ops, faults [${faults}], settled in ${s.settleMs} ms, ${s.wallMs} ms (${Object.entries(s.phases).map(([k, v]) => `${k} ${v}`).join(', ')}), ${s.violations.length} violations`);
      if (s.violations.length) {
        log(`VIOLATIONS in run with seed ${seed}:\n${formatViolations(s.violations)}\n  the run's operations:\n${(s.diagnosis ?? []).map((l) => `    ${l}`).join('\n')}\n  replay: ${replayCommand(seed, o.plant)}`);
      }
    }
  } finally {
    await rig.close();
  }
  const violations: Violation[] = all.flatMap((s) => s.violations);
  const byKind: Record<string, number> = {};
  for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + 1;
  const faults = sum((s) => s.faults);
  const operations = sum((s) => s.operations);
  const rejected = sum((s) => s.rejected);
  // every kill- fault is one SIGKILL (kill-temporal included)
  const kills = PROCESS_FAULTS.filter((f) => f.startsWith('kill-')).reduce((n, f) => n + (faults[f] ?? 0), 0);
  const fmt = (m: Record<string, number>) => Object.entries(m).sort().map(([k, v]) => `${k} ${v}`).join(', ') || '-';
  const failingSeeds = all.filter((s) => s.violations.length).map((s) => s.seed);
  const wallMs = Date.now() - t0;
  const lines = [
    '',
    `chaos campaign: seeds ${o.seed}..${o.seed + all.length - 1}, wall ${(wallMs / 1000).toFixed(0)} s (${(wallMs / Math.max(1, all.length) / 1000).toFixed(1)} s per run)`,
    `operations started: ${Object.values(operations).reduce((a, b) => a + b, 0)} (${fmt(operations)}); refused with a 4xx: ${fmt(rejected)}`,
    `faults: ${fmt(faults)}`,
    `SIGKILLs ${kills} (of which Temporal dev server ${faults['kill-temporal'] ?? 0}), database outages ${faults['db-outage'] ?? 0}, simulator fault kinds ${FAULT_KINDS.filter((k) => faults[k]).length}/${FAULT_KINDS.length}`,
    `wall time per run, mean s: ${PHASES.map((p) => `${p} ${(all.reduce((t, s) => t + (s.phases[p] ?? 0), 0) / Math.max(1, all.length) / 1000).toFixed(1)}`).join(', ')}`,
    `process restarts: ${fmt(rig.restarts)} (seconds spent restarting: ${fmt(Object.fromEntries(Object.entries(rig.restartMs).map(([k, v]) => [k, Math.round(v / 1000)])))})`,
    `violations by kind: ${fmt(byKind)}`,
    ...(failingSeeds.length ? ['replay the failing runs:', ...failingSeeds.map((s) => `  ${replayCommand(s, o.plant)}`)] : []),
    `${all.length} runs, ${violations.length} violations`,
  ];
  const text = lines.join('\n');
  log(text);
  return { runs: all.length, violations: violations.length, failingSeeds, operations, rejected, faults, restarts: { ...rig.restarts }, byKind, wallMs, text };
}
