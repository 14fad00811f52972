// One worker in a process of its own, for the load benchmarks (bench/load.ts): either ferry's
// control worker (createControlWorker, on the benchmark's SQLite database and simulator file) or
// the bare baseline worker (bench/bare-workflow.ts). Alone in its process so that its resident
// memory and event-loop delay are its own. Configured by environment:
//   LOAD_KIND        control | bare
//   LOAD_ADDRESS     Temporal frontend
//   LOAD_PREFIX      ferry's task-queue prefix (control) / the bare task queue (bare)
//   LOAD_DIR         the benchmark's data folder (ferry.sqlite, sim.sqlite) (control)
//   LOAD_WF_SLOTS, LOAD_ACT_SLOTS   maxConcurrentWorkflow/ActivityTaskExecutions (bare; the
//                    control worker uses createControlWorker's own settings)
// Prints `ready` once polling, then on every line `sample` (or `gc-sample`: after a full GC,
// run with --expose-gc) read from stdin one JSON line:
// { rssBytes, heapUsedBytes, lagP50Ms, lagP99Ms, lagMaxMs } (event-loop delay since the last
// sample, perf_hooks.monitorEventLoopDelay at 10 ms resolution). `stop` drains and exits.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createDb } from '../db/orm.js';
import { Simulator } from '../drivers/sim/index.js';
import { createControlWorker } from '../workers/create-worker.js';
import { simFaultHook } from '../workers/main.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const BARE_WORKFLOWS_PATH = fileURLToPath(new URL('./bare-workflow.ts', import.meta.url));

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`bench/load-worker.ts: ${name} is not set`);
  return v;
};

const kind = env('LOAD_KIND');
if (kind !== 'control' && kind !== 'bare') throw new Error(`bench/load-worker.ts: LOAD_KIND must be control or bare, got "${kind}"`);
const connection = await NativeConnection.connect({ address: env('LOAD_ADDRESS') });
let close = async () => undefined as void;
let worker: Worker;
if (kind === 'control') {
  const dir = env('LOAD_DIR');
  const db = await createDb({ databaseUrl: join(dir, 'ferry.sqlite'), dataDir: dir });
  const sim = Simulator.open({ path: join(dir, 'sim.sqlite'), timeScale: Number(process.env.LOAD_TIME_SCALE ?? 1) });
  worker = await createControlWorker({ connection, namespace: 'default', prefix: env('LOAD_PREFIX'), deps: { db, faults: simFaultHook(sim) } });
  close = async () => {
    await db.close();
    sim.close();
  };
} else {
  const slots = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
  worker = await Worker.create({
    connection,
    namespace: 'default',
    taskQueue: env('LOAD_PREFIX'),
    workflowBundle: await bundleWorkflowCode({ workflowsPath: BARE_WORKFLOWS_PATH, logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error } }),
    activities: { async noop() {} },
    maxConcurrentWorkflowTaskExecutions: slots('LOAD_WF_SLOTS'),
    maxConcurrentActivityTaskExecutions: slots('LOAD_ACT_SLOTS'),
  });
}

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
const running = worker.run();
// polling starts with run(); the state says so once the pollers are up
while (worker.getState() !== 'RUNNING') await new Promise((r) => setTimeout(r, 10));
console.log('ready');

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'sample' || line === 'gc-sample') {
    // --expose-gc: a full collection first when asked (memory per in-flight workflow)
    if (line === 'gc-sample') (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    const ms = (ns: number) => ns / 1e6;
    console.log(JSON.stringify({ rssBytes: m.rss, heapUsedBytes: m.heapUsed, lagP50Ms: ms(lag.percentile(50)), lagP99Ms: ms(lag.percentile(99)), lagMaxMs: ms(lag.max) }));
    lag.reset();
  } else if (line === 'stop') {
    worker.shutdown();
  }
});

await running;
await connection.close();
await close();
process.exit(0);
