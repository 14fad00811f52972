// A chaos run's schedule: a pure function of the run's seed (mulberry32), so a failing run is
// replayed by its seed alone. Times are milliseconds from the run's start; VMs and hosts are
// indices into the run's fresh fleet (schedule() knows nothing of the rig).
import { FAULT_KINDS, FAULT_STEPS, type SimFaultKind } from '../../domain/faults.js';
import { mulberry32 } from '../fleet.js';

export const OP_KINDS = ['provision', 'live', 'cold', 'storage', 'stop', 'start', 'evacuate', 'rebalance'] as const;
export type OpKind = (typeof OP_KINDS)[number];
export const PROCESS_FAULTS = ['kill-control', 'kill-agents', 'kill-api', 'kill-temporal', 'db-outage'] as const;
export type ProcessFault = (typeof PROCESS_FAULTS)[number];
/**
 * How often each process fault is picked, relative to the others: a dev server restart and a
 * database outage twice as often as one ferry process's SIGKILL (there are three of those), so
 * a campaign cut short by its time budget still holds enough of both (measured: 0.31 of each
 * per run, 0.47 SIGKILLs of a ferry process).
 */
const PROCESS_FAULT_WEIGHTS: Record<ProcessFault, number> = { 'kill-control': 1, 'kill-agents': 1, 'kill-api': 1, 'kill-temporal': 2, 'db-outage': 2 };

export type Action =
  | { at: number; type: 'op'; op: OpKind; vm: number; host: number; id: number }
  /** steer the op with schedule id `target` (a migration): cancel it, or change its knobs */
  | { at: number; type: 'steer'; steer: 'cancel' | 'params'; target: number; bandwidthMiBps: number; downtimeMs: number }
  /** a process fault; the killed process (or the database) is back after downMs */
  | { at: number; type: 'fault'; fault: ProcessFault; downMs: number }
  | { at: number; type: 'sim'; fault: SimFaultKind; host: number; peer: number; vm: number; stage: number; step: string; value: number; durationMs: number };

export interface RunShape {
  hosts: number;
  vms: number;
  /** last moment an action may start */
  spanMs: number;
}

/** The schedule of the run with this seed: 3-5 operations, 0-2 steers, 1-3 faults. */
export function schedule(seed: number, shape: RunShape): Action[] {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  /** one draw, like pick(), with each item's chance proportional to its weight */
  const weighted = <T extends string>(xs: readonly T[], w: Record<T, number>): T => {
    let r = rnd() * xs.reduce((s, x) => s + w[x], 0);
    for (const x of xs) if ((r -= w[x]) < 0) return x;
    return xs[xs.length - 1];
  };
  const at = () => Math.round(rnd() * shape.spanMs);
  const out: Action[] = [];
  const ops = 3 + int(3);
  const migrations: number[] = [];
  for (let id = 0; id < ops; id++) {
    // live migrations are the product's core: twice as likely as any other kind
    const op = rnd() < 0.25 ? 'live' : pick(OP_KINDS);
    if (op === 'live' || op === 'cold' || op === 'storage') migrations.push(id);
    // operations start in the first half, so faults and steers find them in flight
    out.push({ at: Math.round(rnd() * shape.spanMs * 0.5), type: 'op', op, vm: int(shape.vms), host: int(shape.hosts), id });
  }
  for (let i = int(3); i > 0 && migrations.length > 0; i--) {
    out.push({ at: at(), type: 'steer', steer: rnd() < 0.5 ? 'cancel' : 'params', target: pick(migrations), bandwidthMiBps: 64 + int(1024), downtimeMs: 50 + int(950) });
  }
  const faults = 1 + int(3);
  for (let i = 0; i < faults; i++) {
    const r = rnd();
    if (r < 0.55) {
      const fault = weighted(PROCESS_FAULTS, PROCESS_FAULT_WEIGHTS);
      // an outage mostly inside SQLite's busy_timeout (writers wait), sometimes beyond it (writers fail)
      const downMs = fault === 'db-outage' ? (rnd() < 0.2 ? 11_000 : 1500 + int(2500)) : 200 + int(1500);
      out.push({ at: at(), type: 'fault', fault, downMs });
    } else {
      out.push({
        at: at(),
        type: 'sim',
        fault: pick(FAULT_KINDS),
        host: int(shape.hosts),
        peer: int(shape.hosts),
        vm: int(shape.vms),
        stage: pick([1, 2, 3, 5]),
        step: pick(FAULT_STEPS),
        value: rnd(),
        durationMs: 300 + int(2500),
      });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}
