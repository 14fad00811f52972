// npm run chaos -- [--runs N] [--seed S] [--plant skip-release-reservation] [--time-scale X]
//                  [--driver sim|qemu] [--minutes M]
// Exits 1 on any invariant violation, 2 on bad arguments.
import { runCampaign } from './campaign.js';
import { PLANTS } from './control-worker-plants.js';

function args(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${a} needs a value`);
    out[a.slice(2)] = v;
    i++;
  }
  return out;
}

function int(name: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

async function main() {
  let a: Record<string, string>;
  let runs: number, seed: number, timeScale: number, minutes: number | undefined;
  try {
    a = args(process.argv.slice(2));
    for (const k of Object.keys(a)) if (!['runs', 'seed', 'plant', 'time-scale', 'driver', 'minutes'].includes(k)) throw new Error(`unknown option --${k}`);
    runs = int('runs', a.runs, a.driver === 'qemu' ? 20 : 30, 1);
    seed = int('seed', a.seed, 1, 0);
    timeScale = int('time-scale', a['time-scale'], 20, 1);
    minutes = a.minutes === undefined ? undefined : int('minutes', a.minutes, 0, 1);
    if (a.plant && !(PLANTS as readonly string[]).includes(a.plant)) throw new Error(`--plant must be one of ${PLANTS.join(', ')}`);
    if (a.driver && a.driver !== 'sim' && a.driver !== 'qemu') throw new Error(`--driver must be sim or qemu, got ${a.driver}`);
  } catch (e) {
    console.error(`chaos: ${(e as Error).message}`);
    process.exit(2);
  }
  if (a.driver === 'qemu') {
    const { runQemuCampaign } = await import('./qemu.js');
    const r = await runQemuCampaign({ runs, seed, minutes });
    process.exit(r.violations ? 1 : 0);
  }
  const r = await runCampaign({ runs, seed, plant: a.plant, timeScale, minutes });
  process.exit(r.violations ? 1 : 0);
}

void main();
