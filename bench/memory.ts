// Benchmark 9 (issue 13, "Memory"): the control worker's resident memory with 0, 100 and 500
// LiveMigrate workflows in flight, per in-flight migration. The rig is bench/load.ts: the control
// worker alone in a child process (its RSS is its own), the host agents in this process, the
// guests written straight to the cluster spec (running in the simulator with their inventory
// rows; no ProvisionVm), per-host migration limits lifted. The simulator runs at time scale 1 and
// every ring link carries 1 MiB/s, so a 1 GiB guest would take ~17 minutes to copy: every
// migration stays in pre-copy (its completion budget, 800 s/GiB, is not reached either) until the
// benchmark terminates them.
import { performance } from 'node:perf_hooks';
import type { WorkflowHandle } from '@temporalio/client';
import { outcome } from '../test/helpers/ferry.js';
import { pct, startMigration, startRig, type Rig, type WorkerSample } from './load.js';
import { devServer } from './throughput.js';

type Log = (line: string) => void;
const MiB = 1024 ** 2;
const f1 = (x: number) => x.toFixed(1);
const pad = (s: string | number, n: number) => String(s).padStart(n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const RUNNING_MIGRATIONS = `WorkflowType = 'liveMigrate' AND ExecutionStatus = 'Running'`;

/** RSS and heap of the control worker: the median of `n` samples, each after a full GC, 2 s apart. */
async function steadySample(rig: Rig, n = 5): Promise<{ rss: number; heap: number; rssAll: number[] }> {
  const s: WorkerSample[] = [];
  for (let i = 0; i < n; i++) {
    if (i) await sleep(2000);
    s.push(await rig.control.sample(true));
  }
  return { rss: pct(s.map((x) => x.rssBytes), 50), heap: pct(s.map((x) => x.heapUsedBytes), 50), rssAll: s.map((x) => x.rssBytes) };
}

export async function benchMemory(opts: { log?: Log; levels?: number[]; hosts?: number } = {}): Promise<string[]> {
  const out: string[] = [];
  const say = (l: string) => {
    out.push(l);
    opts.log?.(l);
  };
  const levels = opts.levels ?? [100, 500];
  const max = Math.max(...levels);
  const hosts = opts.hosts ?? 20;
  const dev = await devServer();
  let rig: Rig | undefined;
  const handles: WorkflowHandle[] = [];
  try {
    // agents sample each pre-copy within the workflow's 1 s watch windows every 500 ms
    rig = await startRig({ address: dev.server.address, hosts, vms: max, timeScale: 1, agentPollMs: 500, linkBytesPerSec: MiB, seedVms: true, vmMemoryMiB: 1024 });
    const r = rig;
    say(`${max} running guests (1 GiB, dirtying nothing) seeded on ${hosts} hosts in ${f1(r.provisionMs / 1000)} s (with the database and simulator set-up; cluster spec: simulator + inventory, no ProvisionVm); ring links 1 MiB/s, simulator time scale 1; per-host migration limits lifted`);
    const inPrecopy = async () => (await r.ferry.client.workflow.count(`${RUNNING_MIGRATIONS} AND Stage = '2-pre-copy'`)).count;
    const running = async () => (await r.ferry.client.workflow.count(RUNNING_MIGRATIONS)).count;
    // and the hypervisor's side: guests whose migration the simulator has active (copying)
    const copying = async (upTo: number) => {
      let c = 0;
      for (const vm of [...r.hostOf.keys()].slice(0, upTo)) if ((await r.ferry.sim.forHost(r.hostOf.get(vm)!).migrationStatus(vm)).status === 'active') c++;
      return c;
    };
    await sleep(3000);
    const base = await steadySample(r);
    const mib = (b: number) => b / MiB;
    say('');
    say(`${'in flight'.padEnd(10)}${pad('in pre-copy', 14)}${pad('RSS MiB', 9)}${pad('heap MiB', 10)}${pad('KiB RSS / migration', 21)}${pad('KiB heap / migration', 22)}   RSS samples MiB`);
    say(`${'0'.padEnd(10)}${pad(0, 14)}${pad(f1(mib(base.rss)), 9)}${pad(f1(mib(base.heap)), 10)}${''.padEnd(43)}   ${base.rssAll.map((x) => f1(mib(x))).join(' ')}`);
    const vms = [...r.hostOf.keys()];
    let startedN = 0;
    // any migration that ended while it should have stayed in pre-copy is a finding: say how
    const reportClosed = async () => {
      const closed = [];
      for (const h of handles) {
        const d = await h.describe();
        if (d.status.name !== 'RUNNING') closed.push({ id: h.workflowId, status: d.status.name, r: await outcome(h) });
      }
      say(closed.length ? `${closed.length} migration(s) ended before the end:` : 'no migration ended before the end (all still running)');
      for (const c of closed.slice(0, 10)) say(`  ${c.id}: ${c.status}, ${c.r.ok ? JSON.stringify(c.r.value).slice(0, 400) : c.r.message}`);
    };
    for (const n of levels) {
      const t0 = performance.now();
      const deadline = Date.now() + 420_000;
      let seen = 0;
      // started 10 at a time, each batch once the previous ones are in pre-copy: stages 0-1 run
      // local activities on the control worker's SQLite, and a burst of hundreds only makes its
      // workflow tasks time out and retry
      while (startedN < n || (seen = await inPrecopy()) < n) {
        if (Date.now() > deadline) {
          say(`only ${seen} of ${n} migrations in pre-copy (Stage search attribute) within 420 s; ${await running()} running`);
          await reportClosed();
          throw new Error(`only ${seen} of ${n} migrations reached pre-copy within 420 s`);
        }
        if (startedN < n && (seen = await inPrecopy()) >= startedN - 5) {
          const next = vms.slice(startedN, Math.min(n, startedN + 10));
          handles.push(...(await Promise.all(next.map((vm) => startMigration(r, vm)))));
          startedN += next.length;
        } else await sleep(1000);
      }
      const reachedS = (performance.now() - t0) / 1000;
      const s = await steadySample(r);
      const after = await inPrecopy();
      const active = await copying(n);
      say(`${String(n).padEnd(10)}${pad(`${seen}/${after}/${active}`, 14)}${pad(f1(mib(s.rss)), 9)}${pad(f1(mib(s.heap)), 10)}${pad(f1((s.rss - base.rss) / 1024 / n), 21)}${pad(f1((s.heap - base.heap) / 1024 / n), 22)}   ${s.rssAll.map((x) => f1(mib(x))).join(' ')}  (all in pre-copy ${f1(reachedS)} s after the first start)`);
    }
    say(`(in pre-copy: Running liveMigrate workflows whose Stage search attribute is 2-pre-copy, before / after the samples / guests the simulator has an active migration for; RSS and heap: median of 5 samples 2 s apart, each after a full GC in the control worker process; the SDK caches every running workflow: maxCachedWorkflows default)`);
    await reportClosed();
    return out;
  } finally {
    // terminate (not cancel: 500 rollbacks would only load the machine; the rig is thrown away)
    for (let at = 0; at < handles.length; at += 50) await Promise.all(handles.slice(at, at + 50).map((h) => h.terminate('benchmark 9 done').catch(() => undefined)));
    await rig?.close();
    await dev.close();
  }
}
