// The chaos campaign on real QEMU (npm run chaos -- --driver qemu): three qemu hosts on this
// machine, each host agent its own process (workers/qemu-agent.ts) and the control worker a
// process too (bench/chaos/control-worker.ts), so a SIGKILL is real. Each seeded run provisions
// small boot-sector guests and live-migrates them while agents and the control worker are
// killed at random moments; after everything is back and settled, inventory is compared with
// the QEMU processes that exist (/proc command lines and pid files): each running VM's QEMU on
// exactly one host, the one inventory names, and none for a VM that is not running. Plus the
// campaign's Temporal, audit and capacity checks.
import { execa, type ResultPromise } from 'execa';
import path from 'node:path';
import { Allocation, IpAllocation, Vm } from '../../db/entities.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { mulberry32 } from '../fleet.js';
import { outcome, stopOwnTemporal } from '../../test/helpers/ferry.js';
import { formatViolations, type Violation } from '../../test/helpers/invariants.js';
import { checkCapacity, checkTemporal } from '../../test/helpers/invariants-temporal.js';
import { startQemuFerry, type AgentProcess, type QemuFerry } from '../../test/helpers/qemu-ferry.js';
import { writeWorkflowBundle } from './rig.js';

const HOSTS = ['qa', 'qb', 'qc'];
/** who the audit trail names for the campaign's operations (it starts them without the API) */
const PRINCIPAL = 'chaos-campaign';
const SETTLE_LIMIT_MS = 180_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class QemuRig {
  agents = new Map<string, AgentProcess>();
  control: ResultPromise | undefined;
  kills: Record<string, number> = {};
  constructor(
    readonly f: QemuFerry,
    private readonly bundle: string,
  ) {}

  async spawnControl(): Promise<void> {
    const child = execa(process.execPath, ['--import', 'tsx', 'bench/chaos/control-worker.ts'], {
      cwd: PROJECT_ROOT,
      reject: false,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { FERRY_DRIVER: 'qemu', FERRY_DATA_DIR: this.f.root, DATABASE_URL: this.f.databaseUrl, TEMPORAL_ADDRESS: this.f.address, FERRY_TASK_QUEUE_PREFIX: this.f.prefix, FERRY_CHAOS_BUNDLE: this.bundle },
    });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 300_000;
    while (!out.includes('running')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`control worker did not start (exit ${child.exitCode ?? '-'}, signal ${child.signalCode ?? '-'}): ${out}`);
      await sleep(50);
    }
    this.control = child;
  }

  private restoring: Promise<void> | undefined;

  /** Restarts whatever is down; one at a time (two at once would start a process twice). */
  async restoreAll(): Promise<void> {
    while (this.restoring) await this.restoring.catch(() => undefined);
    this.restoring = this.restoreNow();
    try {
      await this.restoring;
    } finally {
      this.restoring = undefined;
    }
  }

  private async restoreNow(): Promise<void> {
    if (!this.control || this.control.exitCode !== null || this.control.signalCode !== null) await this.spawnControl();
    for (const h of HOSTS) {
      const a = this.agents.get(h);
      if (a && a.child.exitCode === null && a.child.signalCode === null) continue;
      this.agents.set(h, await this.f.spawnAgent(h));
    }
  }

  async kill(target: string): Promise<void> {
    this.kills[target === 'control' ? 'kill-control' : 'kill-agent'] = (this.kills[target === 'control' ? 'kill-control' : 'kill-agent'] ?? 0) + 1;
    if (target === 'control') {
      this.control?.kill('SIGKILL');
      await this.control;
    } else await this.agents.get(target)?.kill('SIGKILL');
  }
}

/** Inventory against the QEMU processes that exist. */
export async function checkQemuProcesses(f: QemuFerry): Promise<Violation[]> {
  const out: Violation[] = [];
  for (const vm of await f.db.em().find(Vm, {})) {
    const procs = await f.qemuProcesses(vm.id);
    const where = procs.map((p) => `${p.hostId} (pid ${p.pid})`).join(', ') || 'nowhere';
    if (vm.state === 'running') {
      if (procs.length !== 1 || procs[0].hostId !== vm.hostId) out.push({ kind: 'qemu-process', subject: vm.id, message: `${vm.id} is running on ${vm.hostId} in inventory; its QEMU runs ${where}` });
    } else if (vm.state !== 'stopped' || procs.some((p) => p.hostId !== vm.hostId) || procs.length > 1) {
      // a stopped VM keeps no QEMU (the driver ends it) — any process of a VM not running is a leak
      if (procs.length > 0) out.push({ kind: 'qemu-process', subject: vm.id, message: `${vm.id} is ${vm.state} in inventory, but QEMU runs ${where}` });
    } else if (procs.length > 0) out.push({ kind: 'qemu-process', subject: vm.id, message: `${vm.id} is stopped in inventory, but QEMU runs ${where}` });
  }
  return out;
}

export async function runQemuCampaign(o: { runs: number; seed: number; minutes?: number; log?: (l: string) => void }): Promise<{ violations: number }> {
  const log = o.log ?? ((l) => console.log(l));
  const t0 = Date.now();
  const f = await startQemuFerry({ hosts: HOSTS, processAgents: HOSTS, controlWorker: 'none', guest: { kind: 'dirty', dirtyBytes: 8 * 1024 ** 2 } });
  const bundle = path.join(f.root, 'workflows.js');
  await writeWorkflowBundle(bundle);
  const rig = new QemuRig(f, bundle);
  let total = 0;
  let done = 0;
  const ops: Record<string, number> = {};
  const failing: number[] = [];
  try {
    await rig.restoreAll();
    for (let i = 0; i < o.runs; i++) {
      if (o.minutes !== undefined && Date.now() - t0 > o.minutes * 60_000) {
        log(`chaos: the ${o.minutes}-minute budget is spent after ${i} of ${o.runs} runs`);
        break;
      }
      done = i + 1;
      const seed = o.seed + i;
      const rnd = mulberry32(seed);
      const since = new Date();
      const r0 = Date.now();
      const int = (n: number) => Math.floor(rnd() * n);
      // kills at random moments of the run's first 8 s: an agent (random host) and/or the worker
      const kills = Array.from({ length: 1 + int(3) }, () => ({ at: int(8000), target: rnd() < 0.4 ? 'control' : HOSTS[int(HOSTS.length)], downMs: 300 + int(2000) }));
      const killing = kills.map(async (k) => {
        await sleep(k.at);
        await rig.kill(k.target);
        await sleep(k.downMs);
        await rig.restoreAll();
      });
      const vms = [0, 1].map((n) => `vm-q${seed.toString(36)}-${n}`);
      const moves = vms.map(async (vmId, n) => {
        const p = await outcome(await f.provision({ vmId, name: vmId, memoryMiB: 64, hostId: HOSTS[(seed + n) % HOSTS.length], principal: PRINCIPAL }));
        ops.provision = (ops.provision ?? 0) + 1;
        if (!p.ok) return;
        const vm = await f.db.em().fork().findOne(Vm, { id: vmId });
        if (!vm?.hostId || vm.state !== 'running') return;
        const to = HOSTS[(HOSTS.indexOf(vm.hostId) + 1 + int(2)) % HOSTS.length];
        ops.live = (ops.live ?? 0) + 1;
        await outcome(await f.migrate({ vmId, targetHostId: to, principal: PRINCIPAL }));
      });
      const settled = Promise.all(moves);
      const timer = sleep(SETTLE_LIMIT_MS).then(() => 'timeout' as const);
      await Promise.all(killing);
      await rig.restoreAll();
      const end = await Promise.race([settled.then(() => 'done' as const), timer]);
      const vs: Violation[] = [
        ...(end === 'timeout' ? [{ kind: 'operation-running' as const, subject: `seed ${seed}`, message: `the run's operations did not end within ${SETTLE_LIMIT_MS} ms` }] : []),
        ...(await checkQemuProcesses(f)),
        ...(await checkCapacity(f.db)),
        ...(await checkTemporal({ db: f.db, client: f.client }, { since })),
      ];
      total += vs.length;
      log(`qemu run ${i + 1}/${o.runs} seed ${seed}: kills [${kills.map((k) => `${k.target}@${k.at}ms`).join(' ')}], ${Date.now() - r0} ms, ${vs.length} violations`);
      if (vs.length) {
        failing.push(seed);
        log(`VIOLATIONS in qemu run with seed ${seed}:\n${formatViolations(vs)}\n  replay: npm run chaos -- --driver qemu --runs 1 --seed ${seed}`);
      }
      // retire the run's guests: every VM's QEMU and files, and the inventory rows
      const em = f.db.em();
      for (const vm of await em.find(Vm, {})) await f.destroyEverywhere(vm.id);
      await em.nativeDelete(Allocation, {});
      await em.nativeDelete(IpAllocation, {});
      await em.nativeDelete(Vm, {});
    }
  } finally {
    for (const a of rig.agents.values()) await a.kill('SIGKILL').catch(() => undefined);
    rig.control?.kill('SIGKILL');
    await rig.control?.catch(() => undefined);
    await f.close();
    await stopOwnTemporal();
  }
  const fmt = (m: Record<string, number>) => Object.entries(m).sort().map(([k, v]) => `${k} ${v}`).join(', ');
  log(`\nqemu chaos campaign: seeds ${o.seed}..${o.seed + done - 1}, wall ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  log(`operations: ${fmt(ops)}; SIGKILLs: ${fmt(rig.kills)}`);
  if (failing.length) log(`replay the failing runs:\n${failing.map((s) => `  npm run chaos -- --driver qemu --runs 1 --seed ${s}`).join('\n')}`);
  log(`${done} runs, ${total} violations`);
  return { violations: total };
}
