// The rig of ferry's load benchmarks (bench/throughput.ts): one Temporal server (a dev server, or
// the production server on PostgreSQL), ferry on the simulator with its control worker in a child
// process of its own (bench/load-worker.ts, so its RSS and event-loop delay are its own), the bare
// baseline worker in another child process of the same kind, the host agents in this process,
// and closed loops of workflows measured from their histories.
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import type { WorkflowHandle } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { Host } from '../db/entities.js';
import { createHostAgent, runWorkers } from '../workers/create-worker.js';
import { PROJECT_ROOT } from '../workers/temporal-cli.js';
import { controlQueue, workflowIds, type LiveMigrateInput, type MigrationResult } from '../workflows/definitions.js';
import { outcome, smallCluster, startTestFerry, type TestFerry } from '../test/helpers/ferry.js';

const MiB = 1024 ** 2;

export function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

// -------------------------------------------------------------------------- worker processes

export interface WorkerSample {
  rssBytes: number;
  heapUsedBytes: number;
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
}

export interface LoadWorker {
  kind: 'control' | 'bare';
  pid: number;
  /** RSS and event-loop delay since the previous sample (after a full GC when `gc`) */
  sample(gc?: boolean): Promise<WorkerSample>;
  stop(): Promise<void>;
}

async function spawnLoadWorker(kind: 'control' | 'bare', env: Record<string, string>): Promise<LoadWorker> {
  const child: ResultPromise = execa(process.execPath, ['--expose-gc', '--import', 'tsx', 'bench/load-worker.ts'], {
    cwd: PROJECT_ROOT,
    reject: false,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'inherit',
    env: { ...env, LOAD_KIND: kind },
  });
  const lines: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    // the SDK's and the ORM's log lines share stdout: only `ready` and the JSON samples are answers
    if (l !== 'ready' && !l.startsWith('{')) return void process.stderr.write(`[${kind} worker] ${l}\n`);
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  const next = (what: string, ms = 90_000) =>
    new Promise<string>((res, rej) => {
      const l = lines.shift();
      if (l !== undefined) return res(l);
      const t = setTimeout(() => rej(new Error(`${kind} load worker: no ${what} within ${ms / 1000} s`)), ms);
      waiters.push((x) => {
        clearTimeout(t);
        res(x);
      });
      void child.then((r) => rej(new Error(`${kind} load worker exited (${r.exitCode ?? r.signal}) before ${what}`)));
    });
  const ready = await next('ready');
  if (ready !== 'ready') throw new Error(`${kind} load worker said "${ready}" instead of ready`);
  return {
    kind,
    pid: child.pid!,
    async sample(gc = false) {
      child.stdin!.write(gc ? 'gc-sample\n' : 'sample\n');
      return JSON.parse(await next('sample')) as WorkerSample;
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.stdin!.write('stop\n');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await child;
      clearTimeout(t);
    },
  };
}

// ------------------------------------------------------------------------------------ rig

export interface RigOptions {
  address: string;
  hosts: number;
  vms: number;
  /** the simulator's time scale (1e6: a zero-time hypervisor) */
  timeScale: number;
  /** the host agents' poll interval while they follow a pre-copy */
  agentPollMs?: number;
  /** migration link bandwidth between ring neighbours (default: the simulator's 1 GiB/s) */
  linkBytesPerSec?: number;
  /** the bare worker's slots (default: the SDK's) */
  bareSlots?: { workflow?: number; activity?: number };
  /**
   * write the guests straight to the cluster spec (running in the simulator, inventory rows,
   * allocations, addresses: seedCluster's path) instead of provisioning them through ProvisionVm
   * (500 provisions take ~10 minutes on this machine)
   */
  seedVms?: boolean;
  /** guest memory (default 64 MiB) */
  vmMemoryMiB?: number;
}

export interface Rig {
  ferry: TestFerry;
  control: LoadWorker;
  bare: LoadWorker;
  bareQueue: string;
  /** where each guest is now */
  hostOf: Map<string, string>;
  hosts: string[];
  provisionMs: number;
  close(): Promise<void>;
}

/**
 * ferry on a simulated ring of `hosts` hosts (64 GiB, 64 CPUs each), `vms` 64 MiB guests that
 * dirty nothing spread round-robin, per-host migration slot limits lifted (the benchmark measures
 * the engine, not the admission policy), control and bare workers in child processes.
 */
export async function startRig(o: RigOptions): Promise<Rig> {
  process.env.FERRY_TEST_TEMPORAL_ADDRESS = o.address;
  const cluster = smallCluster({ hosts: o.hosts, memoryMiB: 64 * 1024, cpus: 64 });
  // a /22 (1,000 addresses): smallCluster's /24 holds 245 guests
  cluster.networks[0] = { ...cluster.networks[0]!, cidr: '10.0.0.0/22', rangeStart: '10.0.0.10', rangeEnd: '10.0.3.250' };
  const vmMiB = o.vmMemoryMiB ?? 64;
  const homeOf = (i: number) => cluster.hosts[i % cluster.hosts.length]!.id;
  if (o.seedVms) {
    if (o.vms > 990) throw new Error(`startRig: ${o.vms} seeded guests do not fit the /22's 990 addresses`);
    cluster.vms = Array.from({ length: o.vms }, (_, i) => ({
      id: `vm-load-${i}`,
      name: `load-${i}`,
      hostId: homeOf(i),
      datastoreId: cluster.datastores[0]!.id,
      templateId: cluster.templates[0]!.id,
      networkId: cluster.networks[0]!.id,
      ip: `10.0.${(10 + i) >> 8}.${(10 + i) & 255}`,
      cpus: 1,
      memoryMiB: vmMiB,
      diskGiB: cluster.templates[0]!.diskGiB,
      cpuFeatures: ['sse4_2'],
      dirtyRateMiBps: 0,
      writableWorkingSetMiB: Math.min(vmMiB, 64),
    }));
  }
  const tSeed = performance.now();
  const ferry = await startTestFerry({ cluster, timeScale: o.timeScale, workers: 'none' });
  const seedMs = performance.now() - tSeed;
  const hosts = ferry.cluster.hosts.map((h) => h.id);
  const started: LoadWorker[] = [];
  let agents: ReturnType<typeof runWorkers> | undefined;
  let connection: NativeConnection | undefined;
  try {
    await ferry.db.em().nativeUpdate(Host, {}, { maxOutgoingMigrations: 100_000, maxIncomingMigrations: 100_000 });
    if (o.linkBytesPerSec) for (let i = 0; i < hosts.length; i++) ferry.sim.upsertLink({ a: hosts[i]!, b: hosts[(i + 1) % hosts.length]!, bandwidthBytesPerSec: o.linkBytesPerSec });
    const bareQueue = `${ferry.prefix}load-bare`;
    const env = { LOAD_ADDRESS: o.address, LOAD_DIR: ferry.dir, LOAD_TIME_SCALE: String(o.timeScale) };
    const [control, bare] = await Promise.all([
      spawnLoadWorker('control', { ...env, LOAD_PREFIX: ferry.prefix }),
      spawnLoadWorker('bare', { ...env, LOAD_PREFIX: bareQueue, ...(o.bareSlots?.workflow ? { LOAD_WF_SLOTS: String(o.bareSlots.workflow) } : {}), ...(o.bareSlots?.activity ? { LOAD_ACT_SLOTS: String(o.bareSlots.activity) } : {}) }),
    ]);
    started.push(control, bare);
    connection = await NativeConnection.connect({ address: o.address });
    const agentWorkers: Worker[] = await Promise.all(hosts.map((h) => createHostAgent({ connection: connection!, namespace: 'default', prefix: ferry.prefix, driver: ferry.sim.forHost(h), pollMs: o.agentPollMs ?? 20 })));
    agents = runWorkers(agentWorkers);

    const hostOf = new Map<string, string>();
    const t0 = performance.now();
    const ids = Array.from({ length: o.vms }, (_, i) => i);
    if (o.seedVms) for (const i of ids) hostOf.set(`vm-load-${i}`, homeOf(i));
    // provisioned 25 at a time (a burst of hundreds only queues on the server)
    for (let at = 0; at < (o.seedVms ? 0 : ids.length); at += 25) {
      await Promise.all(
        ids.slice(at, at + 25).map(async (i) => {
          const hostId = homeOf(i);
          const vmId = `vm-load-${i}`;
          const r = await outcome(await ferry.provision({ name: `load-${i}`, vmId, hostId, cpus: 1, memoryMiB: vmMiB, workload: { dirtyRateBytesPerSec: 0, writableWorkingSetBytes: 64 * MiB } }));
          if (!r.ok) throw new Error(`provisioning ${vmId} failed: ${r.message}`);
          hostOf.set(vmId, hostId);
        }),
      );
    }
    // seeded: the time startTestFerry took (database, simulator, seedCluster with the guests)
    const provisionMs = o.seedVms ? seedMs : performance.now() - t0;
    return {
      ferry,
      control,
      bare,
      bareQueue,
      hostOf,
      hosts,
      provisionMs,
      async close() {
        await Promise.all(started.map((w) => w.stop()));
        await agents?.stop();
        await connection?.close();
        await ferry.close();
      },
    };
  } catch (e) {
    await Promise.all(started.map((w) => w.stop()));
    await agents?.stop();
    await connection?.close();
    await ferry.close();
    throw e;
  }
}

let seq = 0;

/** Starts a live migration of `vmId` to the next host in the ring (a unique workflow id per run). */
export function startMigration(rig: Rig, vmId: string): Promise<WorkflowHandle> {
  const from = rig.hostOf.get(vmId)!;
  const to = rig.hosts[(rig.hosts.indexOf(from) + 1) % rig.hosts.length]!;
  const input: LiveMigrateInput = { vmId, targetHostId: to };
  return rig.ferry.client.workflow.start('liveMigrate', { taskQueue: controlQueue(rig.ferry.prefix), workflowId: `${workflowIds.migrate(vmId)}-${rig.ferry.prefix}${++seq}`, args: [input] });
}

async function migrateOnce(rig: Rig, vmId: string): Promise<WorkflowHandle> {
  const handle = await startMigration(rig, vmId);
  const r = await outcome<MigrationResult>(handle);
  if (!r.ok) throw new Error(`live migration of ${vmId} failed: ${r.message}`);
  if (r.value.state !== 'completed') throw new Error(`live migration of ${vmId} ended ${r.value.state}`);
  rig.hostOf.set(vmId, rig.hosts[(rig.hosts.indexOf(rig.hostOf.get(vmId)!) + 1) % rig.hosts.length]!);
  return handle;
}

async function bareOnce(rig: Rig, n: number): Promise<WorkflowHandle> {
  const handle = await rig.ferry.client.workflow.start('bareActivities', { taskQueue: rig.bareQueue, workflowId: `load-bare-${rig.ferry.prefix}${++seq}`, args: [n] });
  const got = (await handle.result()) as number;
  if (got !== n) throw new Error(`bare workflow ran ${got} activities, expected ${n}`);
  return handle;
}

// ------------------------------------------------------------------------------ histories

type Ts = { seconds?: number | { toNumber(): number } | null; nanos?: number | null } | null | undefined;
function tsMs(ts: Ts): number {
  if (!ts) return NaN;
  const s = ts.seconds == null ? 0 : typeof ts.seconds === 'number' ? ts.seconds : ts.seconds.toNumber();
  return s * 1000 + (ts.nanos ?? 0) / 1e6;
}

export interface Facts {
  events: number;
  activities: number;
  workflowTasks: number;
  serverMs: number;
  /** Scheduled -> Started of each workflow task / activity task */
  wfS2S: number[];
  actS2S: number[];
}

export async function historyFacts(handle: WorkflowHandle): Promise<Facts> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduledAt = new Map<string, number>();
  const f: Facts = { events: events.length, activities: 0, workflowTasks: 0, serverMs: NaN, wfS2S: [], actS2S: [] };
  let first = NaN;
  for (const e of events) {
    const at = tsMs(e.eventTime as Ts);
    if (e.workflowExecutionStartedEventAttributes) first = at;
    if (e.workflowExecutionCompletedEventAttributes) f.serverMs = at - first;
    if (e.workflowTaskScheduledEventAttributes || e.activityTaskScheduledEventAttributes) scheduledAt.set(String(e.eventId), at);
    if (e.activityTaskScheduledEventAttributes) f.activities++;
    if (e.workflowTaskCompletedEventAttributes) f.workflowTasks++;
    const wts = e.workflowTaskStartedEventAttributes;
    if (wts) f.wfS2S.push(at - (scheduledAt.get(String(wts.scheduledEventId)) ?? at));
    const ats = e.activityTaskStartedEventAttributes;
    if (ats) f.actS2S.push(at - (scheduledAt.get(String(ats.scheduledEventId)) ?? at));
  }
  return f;
}

// ---------------------------------------------------------------------------- closed loops

export interface LoopResult {
  kind: 'ferry' | 'bare';
  c: number;
  completed: number;
  seconds: number;
  perSec: number;
  eventsPerSec: number;
  activitiesPerWorkflow: number;
  wfS2SP95: number;
  actS2SP95: number;
  /** of the worker process that ran the workflows: max RSS and event-loop delay over 1 s samples */
  rssMaxMiB: number;
  lagP99MaxMs: number;
  lagMaxMs: number;
}

/**
 * C loops, each starting its next workflow as soon as its previous one completes, for `ms`
 * (the workflows running at the deadline finish and count). ferry: live migrations of C guests
 * round the ring; bare: bareActivities(n). Histories are read afterwards.
 */
export async function closedLoop(rig: Rig, kind: 'ferry' | 'bare', c: number, ms: number, bareActivities = 0): Promise<LoopResult> {
  const vms = [...rig.hostOf.keys()].slice(0, c);
  if (kind === 'ferry' && vms.length < c) throw new Error(`closed loop of ${c} needs ${c} guests, the rig has ${vms.length}`);
  const worker = kind === 'ferry' ? rig.control : rig.bare;
  await worker.sample(); // resets the delay histogram
  const samples: WorkerSample[] = [];
  const sampler = setInterval(() => void worker.sample().then((s) => samples.push(s)), 1000);
  const handles: WorkflowHandle[] = [];
  const t0 = performance.now();
  const deadline = t0 + ms;
  try {
    await Promise.all(
      Array.from({ length: c }, async (_, i) => {
        while (performance.now() < deadline) handles.push(kind === 'ferry' ? await migrateOnce(rig, vms[i]!) : await bareOnce(rig, bareActivities));
      }),
    );
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - t0) / 1000;
  samples.push(await worker.sample());
  const facts: Facts[] = [];
  for (let i = 0; i < handles.length; i += 20) facts.push(...(await Promise.all(handles.slice(i, i + 20).map(historyFacts))));
  const events = facts.reduce((s, f) => s + f.events, 0);
  return {
    kind,
    c,
    completed: handles.length,
    seconds,
    perSec: handles.length / seconds,
    eventsPerSec: events / seconds,
    activitiesPerWorkflow: facts.length ? facts.reduce((s, f) => s + f.activities, 0) / facts.length : 0,
    wfS2SP95: pct(facts.flatMap((f) => f.wfS2S), 95),
    actS2SP95: pct(facts.flatMap((f) => f.actS2S), 95),
    rssMaxMiB: Math.max(...samples.map((s) => s.rssBytes)) / MiB,
    lagP99MaxMs: Math.max(...samples.map((s) => s.lagP99Ms)),
    lagMaxMs: Math.max(...samples.map((s) => s.lagMaxMs)),
  };
}

/** One migration of the first guest, for its activity count (the bare twin runs as many). */
export async function warmUp(rig: Rig): Promise<Facts> {
  const facts = await historyFacts(await migrateOnce(rig, [...rig.hostOf.keys()][0]!));
  await bareOnce(rig, facts.activities);
  return facts;
}

// ----------------------------------------------------------------------------- CPU time

/** user + system CPU seconds of these processes so far (/proc/<pid>/stat; a vanished pid counts 0). */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // fields after the parenthesised command: state is field 3, utime 14, stime 15
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(rest[11]) + Number(rest[12]);
    } catch {
      /* exited */
    }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** pids whose command line contains every one of `parts` (the dev server has no pid in its handle). */
export function pidsByCommandLine(...parts: string[]): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ');
      if (parts.every((p) => cmd.includes(p))) out.push(Number(d));
    } catch {
      /* exited */
    }
  }
  return out;
}
