// `npm run bench`: ferry's benchmarks, in order, each against a baseline measured in the same
// run. It is a report: a missed goal is printed, not fatal; a benchmark that crashes makes the
// exit code non-zero (the others still run).
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { DefaultLogger, Runtime, type LogEntry } from '@temporalio/worker';

// Before anything else installs the SDK runtime: warnings and errors only, minus the host agents'
// "No workflows registered" notice (they run activities only, by design).
Runtime.install({
  logger: new DefaultLogger('WARN', (entry: LogEntry) => {
    if (entry.message.startsWith('No workflows registered')) return;
    console.error(`[${entry.level}] ${entry.message}`, entry.meta ? JSON.stringify(entry.meta) : '');
  }),
});
const { benchFerryVsBare, benchReservations, benchSimVsModel } = await import('./sim.js');

const QEMU_BENCH_URL = new URL('./qemu.ts', import.meta.url);
const QEMU_BENCH = fileURLToPath(QEMU_BENCH_URL);

interface Bench {
  title: string;
  /** a benchmark still running after this is reported as crashed (the run goes on) */
  timeoutMs?: number;
  run: (log: (line: string) => void) => Promise<unknown>;
}

async function qemuBinary(): Promise<string | undefined> {
  const r = await execa('qemu-system-x86_64', ['--version'], { reject: false });
  return r.exitCode === 0 ? r.stdout.split('\n')[0] : undefined;
}

const BENCHES: Bench[] = [
  { title: '1. ferry LiveMigrate vs a bare Temporal workflow (same activity count)', run: (log) => benchFerryVsBare({ runs: 10, log }) },
  { title: '2. simulator vs analytic pre-copy model (simulatePrecopy)', run: (log) => benchSimVsModel({ log }) },
  { title: '3. placement reservations on SQLite: concurrent vs sequential', run: (log) => benchReservations({ n: 200, hosts: 4, log }) },
  {
    title: '4. QEMU (bench/qemu.ts)',
    timeoutMs: 240_000,
    async run(log) {
      const version = await qemuBinary();
      if (!version) return log('skipped: qemu-system-x86_64 is not on PATH');
      if (!existsSync(QEMU_BENCH)) return log('skipped: bench/qemu.ts does not exist (yet)');
      log(`using ${version}`);
      const mod = (await import(QEMU_BENCH_URL.href)) as { benchQemu?: () => Promise<string[]> };
      if (typeof mod.benchQemu !== 'function') throw new Error('bench/qemu.ts does not export benchQemu(): Promise<string[]>');
      for (const line of await mod.benchQemu()) log(line);
    },
  },
  { title: '5. fleet planner: evacuation makespan, rebalance vs optimum, planning time (bench/fleet.ts)', run: async (log) => (await import('./fleet.js')).benchFleet({ log }) },
  {
    title: '6. evacuations executed on the simulator: makespan vs its lower bound and vs the dry-run prediction (bench/evacuation.ts)',
    timeoutMs: 900_000,
    run: async (log) => (await import('./evacuation.js')).benchEvacuation({ log }),
  },
  {
    title: '7. dev server vs the production Temporal server on PostgreSQL: per-activity dispatch, migrations/s (bench/throughput.ts)',
    timeoutMs: 600_000,
    run: async (log) => (await import('./throughput.js')).benchServers({ log }),
  },
  {
    title: '8. throughput under load: closed loops of C = 10 and 100 migrations vs bare workflows (bench/throughput.ts)',
    timeoutMs: 600_000,
    run: async (log) => (await import('./throughput.js')).benchThroughput({ log }),
  },
  {
    title: '9. memory per in-flight migration: control worker RSS with 0, 100 and 500 LiveMigrate in pre-copy (bench/memory.ts)',
    timeoutMs: 900_000,
    run: async (log) => (await import('./memory.js')).benchMemory({ log }),
  },
  {
    title: '10. pre-copy model vs real QEMU: rounds, bytes, total time, verdict (bench/precopy-qemu.ts)',
    timeoutMs: 300_000,
    async run(log) {
      if (!(await qemuBinary())) return log('skipped: qemu-system-x86_64 is not on PATH');
      await (await import('./precopy-qemu.js')).benchPrecopyQemu({ log });
    },
  },
  {
    title: '11. ferry on libvirt vs a bare virsh migrate of the same domain (bench/libvirt.ts)',
    timeoutMs: 420_000,
    run: async (log) => (await import('./libvirt.js')).benchLibvirt({ log }),
  },
  {
    title: '12. cold and storage migration on QEMU vs shutdown + copy throughput + boot (bench/cold-storage.ts)',
    timeoutMs: 600_000,
    async run(log) {
      if (!(await qemuBinary())) return log('skipped: qemu-system-x86_64 is not on PATH');
      await (await import('./cold-storage.js')).benchColdStorage({ log });
    },
  },
];

async function main(): Promise<number> {
  const started = performance.now();
  console.log(`ferry bench — ${new Date().toISOString()} — node ${process.version}, ${process.platform}/${process.arch}`);
  // `npm run bench -- 7 qemu`: only benchmark 7 and those whose title contains "qemu"
  const only = process.argv.slice(2).map((a) => a.toLowerCase());
  const picked = (title: string) => only.some((w) => (/^\d+$/.test(w) ? title.startsWith(`${w}. `) : title.toLowerCase().includes(w)));
  const selected = only.length ? BENCHES.filter((b) => picked(b.title)) : BENCHES;
  if (only.length && !selected.length) throw new Error(`no benchmark title matches ${only.join(', ')}`);
  const failed: string[] = [];
  for (const b of selected) {
    console.log('');
    console.log(`=== ${b.title} ===`);
    const t0 = performance.now();
    try {
      const limit = b.timeoutMs ?? 180_000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        b.run((line) => console.log(line)),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${limit / 1000} s`)), limit);
        }),
      ]).finally(() => clearTimeout(timer));
      console.log(`--- ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (err) {
      failed.push(b.title);
      console.log(`CRASHED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  }
  console.log('');
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s; ${failed.length ? `${failed.length} benchmark(s) crashed: ${failed.join('; ')}` : 'no benchmark crashed'}`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
