// The simulator benchmarks of `npm run bench`. Each returns the lines it prints; numbers are
// measured side by side with a baseline in the same process, and a missed goal is reported,
// never thrown.
//   benchFerryVsBare  ferry LiveMigrate (zero-cost hypervisor) vs a bare workflow with the same
//                     number of no-op activities, same dev server, same worker process/connection
//   benchSimVsModel   the simulator's pre-copy (ManualClock, instantaneous) vs simulatePrecopy
//   benchReservations N concurrent reservations on SQLite vs the same N one after another
import { performance } from 'node:perf_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { createDb, migrateUp, type Db } from '../db/orm.js';
import { Allocation, Datastore, Host } from '../db/entities.js';
import { reserve } from '../db/repositories/capacity.js';
import { ManualClock, Simulator } from '../drivers/sim/index.js';
import type { MigrationStats } from '../domain/hypervisor.js';
import { createControlWorker, createHostAgent, runWorkers } from '../workers/create-worker.js';
import { simFaultHook } from '../workers/main.js';
import { startDevServer, type DevServer } from '../workers/dev-server.js';
import { controlQueue, migrationStartAttributes, workflowIds, type LiveMigrateInput, type MigrationResult } from '../workflows/definitions.js';
import { simulatePrecopy, type PrecopyResult } from '../domain/precopy-model.js';
import { outcome, smallCluster, startTestFerry, type TestFerry } from '../test/helpers/ferry.js';
import type { BareActivities } from './bare-workflow.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

// ------------------------------------------------------------------------------------ helpers

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const f1 = (x: number) => x.toFixed(1);
const pad = (s: string | number, n: number) => String(s).padStart(n);
const padEnd = (s: string | number, n: number) => String(s).padEnd(n);

/** `goal: met` / `goal: NOT met` for a ratio and a bound. */
function verdict(ratio: number, op: '<=' | '>=', bound: number): string {
  const ok = op === '<=' ? ratio <= bound : ratio >= bound;
  return `(goal ${op} ${bound.toFixed(2)}) ${ok ? 'met' : 'NOT met'}`;
}

type Ts = { seconds?: number | { toNumber(): number } | null; nanos?: number | null } | null | undefined;
function tsMs(ts: Ts): number {
  if (!ts) return NaN;
  const s = ts.seconds == null ? 0 : typeof ts.seconds === 'number' ? ts.seconds : ts.seconds.toNumber();
  return s * 1000 + (ts.nanos ?? 0) / 1e6;
}

interface HistoryFacts {
  events: number;
  activities: number;
  workflowTasks: number;
  /** activity type -> ms from ActivityTaskStarted to ActivityTaskCompleted (server time) */
  activityRunMs: Array<{ type: string; ms: number }>;
  /** server time from WorkflowExecutionStarted to WorkflowExecutionCompleted */
  serverMs: number;
  /** median ms from a task's Scheduled to its Started event (workflow and activity tasks): matching + poll latency */
  dispatchMs: number;
}

/** Counts what a run actually executed, from its history (ActivityTaskScheduled events etc.). */
async function historyFacts(handle: WorkflowHandle): Promise<HistoryFacts> {
  const h = await handle.fetchHistory();
  const events = h.events ?? [];
  const scheduled = new Map<string, string>();
  const started = new Map<string, number>();
  const activityRunMs: HistoryFacts['activityRunMs'] = [];
  const scheduledAt = new Map<string, number>();
  const dispatch: number[] = [];
  let workflowTasks = 0;
  let first = NaN;
  let last = NaN;
  for (const e of events) {
    const id = String(e.eventId);
    const at = tsMs(e.eventTime as Ts);
    if (e.workflowExecutionStartedEventAttributes) first = at;
    if (e.workflowExecutionCompletedEventAttributes) last = at;
    if (e.workflowTaskCompletedEventAttributes) workflowTasks++;
    if (e.workflowTaskScheduledEventAttributes || e.activityTaskScheduledEventAttributes) scheduledAt.set(id, at);
    if (e.workflowTaskStartedEventAttributes) dispatch.push(at - (scheduledAt.get(String(e.workflowTaskStartedEventAttributes.scheduledEventId)) ?? at));
    if (e.activityTaskScheduledEventAttributes) scheduled.set(id, e.activityTaskScheduledEventAttributes.activityType?.name ?? '?');
    if (e.activityTaskStartedEventAttributes) {
      const sid = String(e.activityTaskStartedEventAttributes.scheduledEventId);
      started.set(sid, at);
      dispatch.push(at - (scheduledAt.get(sid) ?? at));
    }
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const sid = String(done.scheduledEventId);
      activityRunMs.push({ type: scheduled.get(sid) ?? '?', ms: at - (started.get(sid) ?? at) });
    }
  }
  return { events: events.length, activities: scheduled.size, workflowTasks, activityRunMs, serverMs: last - first, dispatchMs: dispatch.length ? median(dispatch) : 0 };
}

// ------------------------------------------------------------ 1. ferry LiveMigrate vs bare

export const BARE_WORKFLOWS_PATH = fileURLToPath(new URL('./bare-workflow.ts', import.meta.url));

const quietBundlerLogger = {
  log() {},
  trace() {},
  debug() {},
  info() {},
  warn(message: string) {
    console.warn(message);
  },
  error(message: string) {
    console.error(message);
  },
};

export interface FerryVsBareOptions {
  /** measured migrations (one warm-up run of each kind comes on top) */
  runs?: number;
  log?: (line: string) => void;
}

/**
 * N ferry live migrations on the simulator with zero-cost transfers (time scale 1e6, 64 MiB
 * guests that dirty nothing), one at a time, each followed by a bare workflow that runs the same
 * number of no-op activities as that migration's history shows. Same dev server, same
 * NativeConnection, same process.
 */
/** Activities of one live migration before issue 13's levers (16 activities + 17 workflow tasks, the issue's own count). */
const BEFORE_ISSUE_13_ACTIVITIES = 16;

export async function benchFerryVsBare(opts: FerryVsBareOptions = {}): Promise<string[]> {
  const runs = opts.runs ?? 10;
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };

  let server: DevServer | undefined;
  const external = process.env.FERRY_TEST_TEMPORAL_ADDRESS ?? process.env.TEMPORAL_ADDRESS;
  const t0 = performance.now();
  if (external) {
    process.env.FERRY_TEST_TEMPORAL_ADDRESS = external;
  } else {
    server = await startDevServer({ headless: true, log: () => undefined });
    process.env.FERRY_TEST_TEMPORAL_ADDRESS = server.address;
  }
  let f: TestFerry | undefined;
  let connection: NativeConnection | undefined;
  let running: ReturnType<typeof runWorkers> | undefined;
  try {
    f = await startTestFerry({ cluster: smallCluster({ hosts: 2, memoryMiB: 64 * 1024 }), timeScale: 1e6, workers: 'none' });
    const ferry = f;
    connection = await NativeConnection.connect({ address: ferry.address });
    const bareQueue = `${ferry.prefix}bench-bare`;
    const bareActivities: BareActivities = { async noop() {} };
    const workers: Worker[] = [
      await createControlWorker({ connection, namespace: 'default', prefix: ferry.prefix, deps: { db: ferry.db, faults: simFaultHook(ferry.sim) } }),
      ...(await Promise.all(
        ferry.cluster.hosts.map((h) => createHostAgent({ connection: connection!, namespace: 'default', prefix: ferry.prefix, driver: ferry.sim.forHost(h.id), pollMs: 20 })),
      )),
      await Worker.create({
        connection,
        namespace: 'default',
        taskQueue: bareQueue,
        workflowBundle: await bundleWorkflowCode({ workflowsPath: BARE_WORKFLOWS_PATH, logger: quietBundlerLogger }),
        activities: bareActivities,
      }),
    ];
    running = runWorkers(workers);
    say(`set-up (dev server ${external ? 'external' : 'started'}, bundles, workers): ${f1((performance.now() - t0) / 1000)} s`);

    // guests: 64 MiB, nothing dirtied, on h1; the warm-up one plus `runs`
    const tp = performance.now();
    const vmIds = await Promise.all(
      Array.from({ length: runs + 1 }, async (_, i) => {
        const name = `bench-${i}`;
        const vmId = `vm-bench-${i}`;
        const h = await ferry.provision({ name, vmId, hostId: 'h1', memoryMiB: 64, workload: { dirtyRateBytesPerSec: 0, writableWorkingSetBytes: 64 * MiB } });
        const r = await outcome(h);
        if (!r.ok) throw new Error(`provisioning ${vmId} failed: ${r.message}`);
        return vmId;
      }),
    );
    say(`provisioned ${vmIds.length} guests (64 MiB, dirty rate 0) in ${f1((performance.now() - tp) / 1000)} s`);

    async function oneMigration(vmId: string): Promise<{ ms: number; facts: HistoryFacts; result: MigrationResult }> {
      const input: LiveMigrateInput = { vmId, targetHostId: 'h2' };
      const start = performance.now();
      // started as the API starts it (api/routes/migrations.ts): with its search attributes
      const handle = await ferry.client.workflow.start('liveMigrate', {
        taskQueue: controlQueue(ferry.prefix),
        workflowId: `${workflowIds.migrate(vmId)}-${ferry.prefix}`,
        args: [input],
        typedSearchAttributes: migrationStartAttributes({ vmId, kind: 'live', sourceHostId: 'h1', targetHostId: 'h2' }),
      });
      const r = await outcome<MigrationResult>(handle);
      const ms = performance.now() - start;
      if (!r.ok) throw new Error(`live migration of ${vmId} failed: ${r.message}`);
      if (r.value.state !== 'completed') throw new Error(`live migration of ${vmId} ended ${r.value.state}`);
      return { ms, facts: await historyFacts(handle), result: r.value };
    }
    async function oneBare(i: string, n: number): Promise<{ ms: number; facts: HistoryFacts }> {
      const start = performance.now();
      const handle = await ferry.client.workflow.start('bareActivities', { taskQueue: bareQueue, workflowId: `bench-bare-${i}-${ferry.prefix}`, args: [n] });
      const got = (await handle.result()) as number;
      const ms = performance.now() - start;
      if (got !== n) throw new Error(`bare workflow ran ${got} activities, expected ${n}`);
      return { ms, facts: await historyFacts(handle) };
    }

    // warm-up (JIT, first workflow task of each bundle, DB statement caches)
    const warm = await oneMigration(vmIds[0]!);
    await oneBare('warm', warm.facts.activities);

    await oneBare('warm-before', BEFORE_ISSUE_13_ACTIVITIES);
    const ferryMs: number[] = [];
    const bareMs: number[] = [];
    const beforeMs: number[] = [];
    const ferryFacts: HistoryFacts[] = [];
    const bareFacts: HistoryFacts[] = [];
    for (let i = 1; i <= runs; i++) {
      const m = await oneMigration(vmIds[i]!);
      ferryMs.push(m.ms);
      ferryFacts.push(m.facts);
      // the SAME number of activities as this migration executed
      const b = await oneBare(String(i), m.facts.activities);
      bareMs.push(b.ms);
      bareFacts.push(b.facts);
      // and as many as a migration took before issue 13's levers
      beforeMs.push((await oneBare(`before-${i}`, BEFORE_ISSUE_13_ACTIVITIES)).ms);
    }

    const counts = [...new Set(ferryFacts.map((x) => x.activities))].join('/');
    const med = (xs: HistoryFacts[], k: 'events' | 'workflowTasks' | 'serverMs' | 'dispatchMs') => median(xs.map((x) => x[k]));
    say(`runs: ${runs} migrations h1 -> h2, one at a time, each followed by its bare twin (after 1 warm-up of each)`);
    say(`activities per migration (ActivityTaskScheduled in history): ${counts}; bare runs the same count`);
    say('');
    say(`${padEnd('', 34)}${pad('ferry', 10)}${pad('bare', 10)}`);
    say(`${padEnd('wall ms per run, median', 34)}${pad(f1(median(ferryMs)), 10)}${pad(f1(median(bareMs)), 10)}`);
    say(`${padEnd('wall ms per run, min', 34)}${pad(f1(Math.min(...ferryMs)), 10)}${pad(f1(Math.min(...bareMs)), 10)}`);
    say(`${padEnd('wall ms per run, p90', 34)}${pad(f1(pct(ferryMs, 90)), 10)}${pad(f1(pct(bareMs, 90)), 10)}`);
    say(`${padEnd('server ms start->complete, median', 34)}${pad(f1(med(ferryFacts, 'serverMs')), 10)}${pad(f1(med(bareFacts, 'serverMs')), 10)}`);
    say(`${padEnd('history events, median', 34)}${pad(med(ferryFacts, 'events'), 10)}${pad(med(bareFacts, 'events'), 10)}`);
    say(`${padEnd('workflow tasks, median', 34)}${pad(med(ferryFacts, 'workflowTasks'), 10)}${pad(med(bareFacts, 'workflowTasks'), 10)}`);
    say(`${padEnd('task dispatch ms (sched->start)', 34)}${pad(f1(med(ferryFacts, 'dispatchMs')), 10)}${pad(f1(med(bareFacts, 'dispatchMs')), 10)}`);
    const actSum = (xs: HistoryFacts[]) => median(xs.map((x) => x.activityRunMs.reduce((s, a) => s + a.ms, 0)));
    say(`${padEnd('ms inside activities, median', 34)}${pad(f1(actSum(ferryFacts)), 10)}${pad(f1(actSum(bareFacts)), 10)}`);

    // where ferry's activity time goes: the slowest activity types (median per call, server time)
    const byType = new Map<string, number[]>();
    for (const fx of ferryFacts) {
      const perRun = new Map<string, number>();
      for (const a of fx.activityRunMs) perRun.set(a.type, (perRun.get(a.type) ?? 0) + a.ms);
      for (const [t, ms] of perRun) byType.set(t, [...(byType.get(t) ?? []), ms]);
    }
    const top = [...byType].map(([t, xs]) => [t, median(xs)] as const).sort((a, b) => b[1] - a[1]).slice(0, 5);
    say(`slowest ferry activity types (ms per migration, median): ${top.map(([t, ms]) => `${t} ${f1(ms)}`).join(', ')}`);
    say('');
    const ratio = median(ferryMs) / median(bareMs);
    say(`ferry/bare = ${ratio.toFixed(2)} ${verdict(ratio, '<=', 1.15)}`);
    const before = median(ferryMs) / median(beforeMs);
    say(`ferry/bare with the task count before issue 13 (${BEFORE_ISSUE_13_ACTIVITIES} activities, ${BEFORE_ISSUE_13_ACTIVITIES + 1} workflow tasks: ${f1(median(beforeMs))} ms) = ${before.toFixed(2)} (reported; below 1 = fewer tasks paid off)`);
    return out;
  } finally {
    await running?.stop();
    await connection?.close();
    await f?.close();
    await server?.stop();
    // the server this benchmark started is gone: later benchmarks must not be pointed at it
    if (server) delete process.env.FERRY_TEST_TEMPORAL_ADDRESS;
  }
}

// ----------------------------------------------------------- 2. simulator vs analytic model

export interface SimVsModelRow {
  dirtyMiBps: number;
  model: PrecopyResult;
  sim: MigrationStats;
  forced: boolean;
  identical: boolean;
}

const LINK = 1 * GiB;
const MEMORY = 4 * GiB;
const WWS = 1 * GiB;
const DOWNTIME_MS = 300;
/** virtual ms per clock step while watching the simulator */
const STEP_MS = 5;

/**
 * One row: a real Simulator (':memory:', ManualClock at time scale 1) runs the migration; the
 * clock is stepped until it completes. A migration the model stops by a limit (max rounds or max
 * sent) never converges in the simulator (it has no such limit: the workflow's controller
 * decides), so it is forced with continueSwitchover exactly at the model's end of pre-copy, as
 * test/unit/sim-model.test.ts does.
 */
export async function simVsModelRow(dirtyMiBps: number): Promise<SimVsModelRow> {
  const clock = new ManualClock();
  const sim = Simulator.open({ path: ':memory:', now: clock.now, sleep: clock.sleep, timeScale: 1 });
  try {
    for (const id of ['bench-a', 'bench-b']) {
      sim.upsertHost({ id, cpuModel: 'bench-cpu', cpuFeatures: ['sse4_2'], cpus: 8, memoryBytes: 64 * GiB, networks: ['default'] });
    }
    sim.upsertDatastore({ id: 'shared', shared: true, capacityBytes: 1000 * GiB, throughputBytesPerSec: 1 * GiB, hostIds: ['bench-a', 'bench-b'] });
    sim.upsertLink({ a: 'bench-a', b: 'bench-b', bandwidthBytesPerSec: LINK });
    const imagePath = 'sim://shared/templates/bench.qcow2';
    sim.upsertImage({ path: imagePath, datastoreId: 'shared', sizeBytes: 2 * GiB });
    const A = sim.forHost('bench-a');
    const B = sim.forHost('bench-b');
    const vmId = 'vm-bench';
    const disk = await A.createDisk({ name: `${vmId}-root`, datastoreId: 'shared', sizeBytes: 20 * GiB, source: { kind: 'template', imagePath, linked: true } });
    await A.defineVm({
      vmId,
      name: vmId,
      cpus: 2,
      memoryBytes: MEMORY,
      disks: [disk.path],
      cpuFeatures: ['sse4_2'],
      network: 'default',
      workload: { dirtyRateBytesPerSec: dirtyMiBps * MiB, writableWorkingSetBytes: WWS },
    });
    const { spec } = await A.startVm(vmId);
    const { uri } = await B.prepareIncoming(spec);

    const model = simulatePrecopy({ memoryBytes: MEMORY, bandwidthBytesPerSec: LINK, dirtyRateBytesPerSec: dirtyMiBps * MiB, writableWorkingSetBytes: WWS, downtimeLimitMs: DOWNTIME_MS });
    const forced = model.stopReason !== 'converged';

    const startWall = clock.now();
    await A.startMigration(vmId, { uri, downtimeLimitMs: DOWNTIME_MS, autoSwitchover: true });
    const limitMs = model.totalMs * 4 + 60_000;
    let st = await A.migrationStatus(vmId);
    let continued = false;
    while (st.status !== 'completed') {
      if (st.status === 'failed' || st.status === 'cancelled' || st.status === 'none') throw new Error(`sim migration at ${dirtyMiBps} MiB/s ended ${st.status}: ${st.error ?? ''}`);
      const elapsed = clock.now() - startWall;
      if (elapsed > limitMs) throw new Error(`sim migration at ${dirtyMiBps} MiB/s did not complete within ${limitMs} virtual ms (status ${st.status}, round ${st.round})`);
      if (forced && !continued && elapsed + STEP_MS >= model.precopyMs) {
        // the controller's forced switchover, at the model's last round boundary
        clock.set(startWall + model.precopyMs);
        const atEnd = await A.migrationStatus(vmId);
        if (atEnd.status !== 'active') throw new Error(`sim at ${dirtyMiBps} MiB/s: expected still active at the model's round ${model.rounds.length}, got ${atEnd.status}`);
        await A.continueSwitchover(vmId);
        continued = true;
      } else {
        clock.advance(STEP_MS);
      }
      st = await A.migrationStatus(vmId);
    }
    const identical =
      st.round === model.rounds.length && st.transferredBytes === model.totalSentBytes && st.downtimeMs === model.downtimeMs && st.totalTimeMs === model.totalMs;
    return { dirtyMiBps, model, sim: st, forced, identical };
  } finally {
    sim.close();
  }
}

export async function benchSimVsModel(opts: { rates?: number[]; log?: (line: string) => void } = {}): Promise<string[]> {
  const rates = opts.rates ?? [0, 10, 100, 500, 900, 1100, 2000];
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };
  say(`link 1 GiB/s, memory 4 GiB, writable working set 1 GiB, downtime limit ${DOWNTIME_MS} ms; model limits: 30 rounds, 3x memory sent`);
  say(`simulator: ':memory:' + ManualClock, stepped ${STEP_MS} virtual ms at a time until completed; rows the model stops by a limit are forced there`);
  say('');
  const head =
    `${pad('dirty MiB/s', 11)} ${padEnd('model stop', 10)} ${pad('rounds', 6)} ${pad('sim', 4)} ${pad('sent MiB', 9)} ${pad('sim', 9)} ` +
    `${pad('downtime ms', 11)} ${pad('sim', 9)} ${pad('total ms', 9)} ${pad('sim', 9)} ${pad('sim/model dt', 12)}  identical`;
  say(head);
  const t0 = performance.now();
  let allSame = true;
  for (const rate of rates) {
    const r = await simVsModelRow(rate);
    allSame &&= r.identical;
    const dtRatio = r.model.downtimeMs === 0 ? 1 : (r.sim.downtimeMs ?? NaN) / r.model.downtimeMs;
    say(
      `${pad(rate, 11)} ${padEnd(r.model.stopReason + (r.forced ? '*' : ''), 10)} ${pad(r.model.rounds.length, 6)} ${pad(r.sim.round, 4)} ` +
        `${pad(f1(r.model.totalSentBytes / MiB), 9)} ${pad(f1(r.sim.transferredBytes / MiB), 9)} ` +
        `${pad(r.model.downtimeMs.toFixed(3), 11)} ${pad((r.sim.downtimeMs ?? NaN).toFixed(3), 9)} ` +
        `${pad(f1(r.model.totalMs), 9)} ${pad(f1(r.sim.totalTimeMs ?? NaN), 9)} ${pad(dtRatio.toFixed(4), 12)}  ${r.identical ? 'yes' : 'NO'}`,
    );
  }
  say(`(* = forced with continueSwitchover at the model's end of pre-copy; identical = rounds, bytes, downtime and total time equal exactly)`);
  say(`wall time for the whole table: ${f1(performance.now() - t0)} ms`);
  say('');
  say(`identical rows: ${allSame ? 'all' : 'NOT all'} (goal: all identical) ${allSame ? 'met' : 'NOT met'}`);
  return out;
}

// ------------------------------------------------------- 3. reservation throughput on SQLite

async function reservationDb(hosts: number): Promise<{ db: Db; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-db-'));
  const db = await createDb({ databaseUrl: join(dir, 'ferry.sqlite'), dataDir: dir });
  await migrateUp(db);
  const em = db.em();
  const hostIds = Array.from({ length: hosts }, (_, i) => `host-${i + 1}`);
  for (const id of hostIds) em.create(Host, { id, name: id, cpuModel: 'bench-cpu', cpuFeatures: ['sse4_2'], cpus: 1024, memoryMiB: 1024 * 1024, tags: [] });
  em.create(Datastore, { id: 'ds-shared', name: 'ds-shared', shared: true, capacityGiB: 1_000_000, throughputMiBps: 500, hostIds });
  await em.flush();
  return { db, dir };
}

/**
 * N reservations fired at once (Promise.all on one Db, as the control worker's concurrent
 * activities do) vs the same N awaited one after another, each on a fresh SQLite file with room
 * for all of them. Every reservation claims its host row (optimistic lock), so concurrency on
 * SQLite serializes; the ratio shows what contention costs.
 */
export async function benchReservations(opts: { n?: number; hosts?: number; log?: (line: string) => void } = {}): Promise<string[]> {
  const n = opts.n ?? 200;
  const hosts = opts.hosts ?? 4;
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };
  const input = (tag: string, i: number) => ({
    hostId: `host-${(i % hosts) + 1}`,
    vmId: `vm-${tag}-${i}`,
    cpus: 1,
    memoryMiB: 512,
    diskGiB: 10,
    datastoreId: 'ds-shared',
    operationId: `op-${tag}-${i}`,
    kind: 'reservation' as const,
  });

  async function measure(mode: 'concurrent' | 'sequential'): Promise<number> {
    const { db, dir } = await reservationDb(hosts);
    try {
      // warm-up: statement caches, the first transaction
      await reserve(db, input('warm', 0));
      const t0 = performance.now();
      if (mode === 'concurrent') await Promise.all(Array.from({ length: n }, (_, i) => reserve(db, input(mode, i))));
      else for (let i = 0; i < n; i++) await reserve(db, input(mode, i));
      const ms = performance.now() - t0;
      const placed = await db.em().count(Allocation, { operationId: { $like: `op-${mode}-%` } });
      if (placed !== n) throw new Error(`${mode}: ${placed} of ${n} reservations recorded`);
      return ms;
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const seqMs = await measure('sequential');
  const conMs = await measure('concurrent');
  const seqRate = (n * 1000) / seqMs;
  const conRate = (n * 1000) / conMs;
  say(`${n} reservations over ${hosts} hosts, one SQLite file each run (all fit; every one recorded)`);
  say(`${padEnd('', 28)}${pad('concurrent', 12)}${pad('sequential', 12)}`);
  say(`${padEnd('wall ms', 28)}${pad(f1(conMs), 12)}${pad(f1(seqMs), 12)}`);
  say(`${padEnd('reservations/s', 28)}${pad(f1(conRate), 12)}${pad(f1(seqRate), 12)}`);
  const ratio = conRate / seqRate;
  say('');
  say(`concurrent/sequential throughput = ${ratio.toFixed(2)} ${verdict(ratio, '>=', 0.8)}`);
  return out;
}
