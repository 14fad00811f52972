// ferry under load (the rig is bench/load.ts). Each returns the lines it prints.
//   benchServers     the dev server (SQLite file, WAL) vs the production Temporal server 1.32 on
//                    PostgreSQL, started side by side in the same run: per-activity dispatch and
//                    migrations/s (issue 15)
//   benchThroughput  closed loops of C in {10, 100} live migrations vs C bare workflows with the
//                    same activity count, one dev server (issue 13, B2)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { startDevServer, type DevServer } from '../workers/dev-server.js';
import { dropTemporalDatabases, ensureTemporalServer, freeTemporalPorts, startTemporalServer, temporalDbTarget, TEMPORAL_SERVER_VERSION, type TemporalServer } from '../workers/temporal-server.js';
import { execa } from 'execa';
import { closedLoop, cpuSeconds, historyFacts, pct, pidsByCommandLine, startMigration, startRig, warmUp, type LoopResult, type Rig } from './load.js';

type Log = (line: string) => void;
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const pad = (s: string | number, n: number) => String(s).padStart(n);
const median = (xs: number[]) => pct(xs, 50);

/** The dev server as `npm start` runs it: a SQLite file (WAL, synchronous=NORMAL), in a scratch folder. */
export async function devServer(): Promise<{ server: DevServer; pids(): Promise<number[]>; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-dev-'));
  const server = await startDevServer({ headless: true, dbFile: join(dir, 'temporal.sqlite'), log: () => undefined });
  return {
    server,
    pids: async () => pidsByCommandLine('start-dev', `--port ${server.address.split(':').pop()}`),
    async close() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** temporal-server on fresh databases (temporal_bench_<id>, dropped at the end) and free ports, so it never meets a running prod:local or test tier. */
async function prodServer(log: Log): Promise<{ server: TemporalServer; pids(): Promise<number[]>; close(): Promise<void> }> {
  const binaries = await ensureTemporalServer({ log });
  const db = temporalDbTarget(`${process.env.FERRY_TEST_PG_BASE ?? 'postgres://postgres@127.0.0.1:5432'}/temporal_bench_${randomBytes(4).toString('hex')}`);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-prod-'));
  try {
    const server = await startTemporalServer({ binaries, db, ports: await freeTemporalPorts(), logFile: join(dir, 'temporal-server.log'), log: () => undefined });
    // the engine is the server plus its PostgreSQL backends (pooled, so they live as long as it)
    const pids = async () => {
      const r = await execa('psql', ['-h', db.host, '-p', String(db.port), '-U', db.user, '-d', 'postgres', '-At', '-c', `SELECT pid FROM pg_stat_activity WHERE datname IN ('${db.database}', '${db.visibilityDatabase}')`], { reject: false });
      return [server.pid, ...r.stdout.split('\n').filter(Boolean).map(Number)];
    };
    return {
      server,
      pids,
      async close() {
        await server.stop();
        await dropTemporalDatabases(binaries.sqlTool, db);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await dropTemporalDatabases(binaries.sqlTool, db);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

function loopHeader(): string {
  return `${'kind'.padEnd(6)}${pad('C', 4)}${pad('done', 6)}${pad('s', 6)}${pad('wf/s', 7)}${pad('events/s', 10)}${pad('acts/wf', 8)}${pad('wfTask s2s p95', 16)}${pad('act s2s p95', 13)}${pad('RSS MiB', 9)}${pad('lag p99', 9)}${pad('lag max', 9)}`;
}

function loopRow(r: LoopResult): string {
  return `${r.kind.padEnd(6)}${pad(r.c, 4)}${pad(r.completed, 6)}${pad(f1(r.seconds), 6)}${pad(f2(r.perSec), 7)}${pad(Math.round(r.eventsPerSec), 10)}${pad(f1(r.activitiesPerWorkflow), 8)}${pad(`${Math.round(r.wfS2SP95)} ms`, 16)}${pad(`${Math.round(r.actS2SP95)} ms`, 13)}${pad(Math.round(r.rssMaxMiB), 9)}${pad(f1(r.lagP99MaxMs), 9)}${pad(f1(r.lagMaxMs), 9)}`;
}

// ------------------------------------------------------------------- dev server vs production

interface ServerFigures {
  perActivityMs: number;
  dispatchMs: number;
  migrationMs: number;
  loop: LoopResult;
  /** CPU seconds per migration in the closed loop: the Temporal engine (server + its database backends), ferry's control worker */
  engineCpuS: number;
  controlCpuS: number;
}

async function measureServer(address: string, enginePids: () => Promise<number[]>, o: { loopC: number; loopMs: number }): Promise<ServerFigures> {
  const rig = await startRig({ address, hosts: 4, vms: o.loopC, timeScale: 1e6 });
  try {
    await warmUp(rig);
    // per-activity cost: a bare workflow of 20 sequential no-op activities, alone, 5 times
    const per: number[] = [];
    const dispatch: number[] = [];
    for (let i = 0; i < 5; i++) {
      const h = await rig.ferry.client.workflow.start('bareActivities', { taskQueue: rig.bareQueue, workflowId: `bench-per-activity-${rig.ferry.prefix}${i}`, args: [20] });
      await h.result();
      const f = await historyFacts(h);
      per.push(f.serverMs / 20);
      dispatch.push(median([...f.wfS2S, ...f.actS2S]));
    }
    // one migration alone, 3 times
    const mig: number[] = [];
    for (let i = 0; i < 3; i++) {
      const vmId = [...rig.hostOf.keys()][i % rig.hostOf.size]!;
      const t0 = performance.now();
      const h = await startMigration(rig, vmId);
      await h.result();
      mig.push(performance.now() - t0);
      rig.hostOf.set(vmId, rig.hosts[(rig.hosts.indexOf(rig.hostOf.get(vmId)!) + 1) % rig.hosts.length]!);
    }
    const pids = await enginePids();
    const cpu0 = [cpuSeconds(pids), cpuSeconds([rig.control.pid])];
    const loop = await closedLoop(rig, 'ferry', o.loopC, o.loopMs);
    const engineCpuS = (cpuSeconds(pids) - cpu0[0]!) / loop.completed;
    const controlCpuS = (cpuSeconds([rig.control.pid]) - cpu0[1]!) / loop.completed;
    return { perActivityMs: median(per), dispatchMs: median(dispatch), migrationMs: median(mig), loop, engineCpuS, controlCpuS };
  } finally {
    await rig.close();
  }
}

export async function benchServers(opts: { log?: Log; loopC?: number; loopMs?: number } = {}): Promise<string[]> {
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };
  const o = { loopC: opts.loopC ?? 10, loopMs: opts.loopMs ?? 20_000 };
  say(`the same rig on each server, one after the other: ferry on SQLite, simulator at time scale 1e6 (zero-time hypervisor), control worker in its own process, 4 hosts`);
  say(`per activity = server time of a bare workflow of 20 sequential no-op activities / 20 (median of 5); dispatch = median Scheduled->Started of its tasks`);
  say(`migrations/s = a closed loop of ${o.loopC} live migrations for ${o.loopMs / 1000} s`);
  const dev = await devServer();
  let devFig: ServerFigures;
  try {
    devFig = await measureServer(dev.server.address, dev.pids, o);
  } finally {
    await dev.close();
  }
  const prod = await prodServer(say);
  let prodFig: ServerFigures;
  try {
    prodFig = await measureServer(prod.server.address, prod.pids, o);
  } finally {
    await prod.close();
  }
  say('');
  say(`${''.padEnd(36)}${pad('dev server', 12)}${pad(`server ${TEMPORAL_SERVER_VERSION}`, 16)}${pad('prod/dev', 10)}`);
  const row = (name: string, d: number, p: number, digits = 1) => say(`${name.padEnd(36)}${pad(d.toFixed(digits), 12)}${pad(p.toFixed(digits), 16)}${pad(f2(p / d), 10)}`);
  row('ms per activity (sequential)', devFig.perActivityMs, prodFig.perActivityMs);
  row('task dispatch ms (sched->start)', devFig.dispatchMs, prodFig.dispatchMs);
  row('ms per migration (alone)', devFig.migrationMs, prodFig.migrationMs, 0);
  row(`migrations/s (C = ${o.loopC})`, devFig.loop.perSec, prodFig.loop.perSec, 2);
  row('history events/s', devFig.loop.eventsPerSec, prodFig.loop.eventsPerSec, 0);
  row('workflow task s2s p95 ms', devFig.loop.wfS2SP95, prodFig.loop.wfS2SP95, 0);
  row('activity task s2s p95 ms', devFig.loop.actS2SP95, prodFig.loop.actS2SP95, 0);
  row('engine CPU s per migration', devFig.engineCpuS, prodFig.engineCpuS, 3);
  row('control worker CPU s per migration', devFig.controlCpuS, prodFig.controlCpuS, 3);
  const events = prodFig.loop.eventsPerSec / prodFig.loop.perSec;
  say(`engine = the server process (+ its PostgreSQL backends for ${TEMPORAL_SERVER_VERSION}); ${Math.round(events)} history events per migration`);
  say(`capacity of one engine core at the measured cost: ${f1(1 / prodFig.engineCpuS)} migrations/s (${TEMPORAL_SERVER_VERSION}), ${f1(1 / devFig.engineCpuS)} (dev server)`);
  say(`(${f1(prodFig.loop.activitiesPerWorkflow)} activities per migration; production server on PostgreSQL 15 at 127.0.0.1, pools of 5 per service, 4 history shards, all on the same 2 cores)`);
  return out;
}

// ------------------------------------------------------------------------- throughput (B2)

export async function benchThroughput(opts: { log?: Log; cs?: number[]; loopMs?: number } = {}): Promise<string[]> {
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };
  const cs = opts.cs ?? [10, 100];
  const loopMs = opts.loopMs ?? 25_000;
  const dev = await devServer();
  let rig: Rig | undefined;
  try {
    rig = await startRig({ address: dev.server.address, hosts: 4, vms: Math.max(...cs), timeScale: 1e6 });
    say(`one dev server (SQLite file, WAL); ${rig.hostOf.size} guests (64 MiB, nothing dirtied) on 4 hosts provisioned in ${f1(rig.provisionMs / 1000)} s; simulator time scale 1e6`);
    const warm = await warmUp(rig);
    say(`closed loops for ${loopMs / 1000} s each; bare = bareActivities(${warm.activities}), the activity count of a migration; control and bare workers in processes of their own`);
    say('');
    say(loopHeader());
    const lines: string[] = [];
    for (const c of cs) {
      const ferry = await closedLoop(rig, 'ferry', c, loopMs);
      say(loopRow(ferry));
      const bare = await closedLoop(rig, 'bare', c, loopMs, warm.activities);
      say(loopRow(bare));
      const ratio = ferry.perSec / bare.perSec;
      const p95 = Math.max(ferry.wfS2SP95, ferry.actS2SP95);
      lines.push(`C = ${c}: ferry/bare = ${f2(ratio)} (goal >= 0.85) ${ratio >= 0.85 ? 'met' : 'NOT met'}; ferry's schedule-to-start p95 ${Math.round(p95)} ms (goal < 1000) ${p95 < 1000 ? 'met' : 'NOT met'}`);
    }
    say('');
    for (const l of lines) say(l);
    return out;
  } finally {
    await rig?.close();
    await dev.close();
  }
}
