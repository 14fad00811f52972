// One chaos run on the rig: a fresh fleet of VMs, the seeded schedule played against the real
// processes (operations through the API, kills, a database outage, simulator faults, steers),
// then everything restored, a bounded wait for the fleet to settle, and the invariant checker
// over database, simulator and Temporal. Afterwards the run's VMs are retired (removed from
// inventory and simulator directly), so every run starts from the same empty hosts.
import { Allocation, Host, IpAllocation, Operation, Vm } from '../../db/entities.js';
import type { SimFaultInput } from '../../domain/faults.js';
import { seedCluster, type ClusterSpec } from '../../workers/cluster-spec.js';
import { checkInvariants, type Violation } from '../../test/helpers/invariants.js';
import { ChaosSampler, checkCapacity, checkTemporal } from '../../test/helpers/invariants-temporal.js';
import type { ProcessKind, Rig } from './rig.js';
import { schedule, type Action, type RunShape } from './schedule.js';

export const SHAPE: RunShape = { hosts: 4, vms: 4, spanMs: 4000 };
/** How long a run may take to settle after its last fault before whatever is open is a violation. */
export const SETTLE_LIMIT_MS = 150_000;

export function chaosCluster(): ClusterSpec {
  const hosts = Array.from({ length: SHAPE.hosts }, (_, i) => `h${i + 1}`);
  return {
    hosts: hosts.map((id, i) => ({ id, rack: `r${(i % 2) + 1}`, cpuModel: 'sim-cpu', cpuFeatures: ['sse4_2', 'avx', 'avx2'], cpus: 8, memoryMiB: 4096 })),
    datastores: [
      { id: 'shared', shared: true, capacityGiB: 10_000, throughputMiBps: 2000, hostIds: hosts },
      { id: 'shared2', shared: true, capacityGiB: 10_000, throughputMiBps: 2000, hostIds: hosts },
    ],
    links: [{ a: 'h1', b: 'h4', bandwidthMiBps: 200 }],
    templates: [{ id: 'tpl-small', name: 'small', os: 'test-os', datastoreIds: ['shared'], diskGiB: 2, minMemoryMiB: 64, requiredCpuFeatures: [] }],
    networks: [{ id: 'net1', name: 'net1', cidr: '10.0.0.0/16', gateway: '10.0.0.1', dns: ['10.0.0.2'], vlan: 10, rangeStart: '10.0.0.10', rangeEnd: '10.0.0.250', hostIds: hosts }],
  };
}

export interface RunStats {
  seed: number;
  operations: Record<string, number>;
  rejected: Record<string, number>;
  unavailable: number;
  faults: Record<string, number>;
  violations: Violation[];
  settleMs: number;
  wallMs: number;
  /** where the run's wall time went (ms): standby (waiting for the standbys to load, before the run), seed, play (schedule and its requests), restore, settle, check, retire */
  phases: Record<string, number>;
  samples: number;
  /** for a run with violations: how each of its operations ended (state, stage, error, failed compensations) */
  diagnosis?: string[];
}

const bump = (m: Record<string, number>, k: string, n = 1) => (m[k] = (m[k] ?? 0) + n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** FERRY_CHAOS_TRACE=1: each action's moment and, while settling, what is still open (for timing a run) */
const TRACE = process.env.FERRY_CHAOS_TRACE === '1';
const KILLS: Record<string, ProcessKind> = { 'kill-control': 'control', 'kill-agents': 'agents', 'kill-api': 'api' };

export async function runOnce(rig: Rig, seed: number, log: (l: string) => void = () => undefined): Promise<RunStats> {
  // the standbys of the previous run's restarts have loaded (they would compete with this run)
  const w0 = Date.now();
  await rig.standbysReady();
  const t0 = Date.now();
  const since = new Date(t0);
  const tag = seed.toString(36);
  const hosts = chaosCluster().hosts.map((h) => h.id);
  const vmIds = Array.from({ length: SHAPE.vms }, (_, i) => `vm-${tag}-${i}`);
  await seedCluster(rig.db, rig.sim, {
    ...chaosCluster(),
    vms: vmIds.map((id, i) => ({ id, name: id, hostId: hosts[i % hosts.length], datastoreId: 'shared', templateId: 'tpl-small', networkId: 'net1', ip: `10.0.1.${10 + i}`, cpus: 1, memoryMiB: 512, diskGiB: 2, cpuFeatures: [], dirtyRateMiBps: 20 + i * 30, writableWorkingSetMiB: 64 })),
  });
  const stats: RunStats = { seed, operations: {}, rejected: {}, unavailable: 0, faults: {}, violations: [], settleMs: 0, wallMs: 0, samples: 0, phases: { standby: t0 - w0 } };
  let mark = t0;
  const phase = (name: string) => {
    const now = Date.now();
    stats.phases[name] = now - mark;
    mark = now;
  };
  phase('seed');
  const sampler = new ChaosSampler({ db: rig.db, sim: rig.sim }).start();
  const started = new Map<number, string>(); // schedule op id -> workflow id
  const answered = new Map<number, Promise<unknown>>(); // schedule op id -> its request, answered
  const pending: Promise<unknown>[] = [];
  const restores: Promise<unknown>[] = [];

  /** The API, retried with one Idempotency-Key while it is down (a killed API comes back). */
  const request = async (method: string, path: string, body: unknown, key: string) => {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const r = await rig.call(method, path, body, { 'idempotency-key': key });
      if ((r.status !== 0 && r.status < 500) || Date.now() > deadline) return r;
      await sleep(250);
    }
  };

  /** restoreAll, a failed restart logged (the settle loop tries again) */
  const restore = async () => {
    try {
      return await rig.restoreAll();
    } catch (e) {
      log(`  seed ${seed}: a restart failed, retried: ${(e as Error).message.slice(0, 300)}`);
      return [];
    }
  };

  const op = async (a: Extract<Action, { type: 'op' }>) => {
    const vmId = vmIds[a.vm];
    const vm = await rig.db.em().findOne(Vm, { id: vmId });
    const other = hosts[(hosts.indexOf(vm?.hostId ?? '') + 1 + (a.host % (hosts.length - 1))) % hosts.length];
    const key = `chaos-${tag}-${a.id}`;
    const call: Record<typeof a.op, () => Promise<{ status: number; body: any }>> = {
      provision: () => request('POST', '/v1/vms', { name: `p-${tag}-${a.id}`, cpus: 1, memoryMiB: 256, diskGiB: 2, template: 'tpl-small', network: 'net1' }, key),
      live: () => request('POST', `/v1/vms/${vmId}/migrations`, { kind: 'live', ...(a.host % 2 ? { targetHostId: other } : {}) }, key),
      cold: () => request('POST', `/v1/vms/${vmId}/migrations`, { kind: 'cold', targetHostId: other }, key),
      storage: () => request('POST', `/v1/vms/${vmId}/migrations`, { kind: 'storage', targetDatastoreId: vm?.datastoreId === 'shared2' ? 'shared' : 'shared2' }, key),
      stop: () => request('POST', `/v1/vms/${vmId}/stop`, {}, key),
      start: () => request('POST', `/v1/vms/${vmId}/start`, undefined, key),
      evacuate: () => request('POST', `/v1/hosts/${hosts[a.host]}/evacuate`, { maxParallel: 2 }, key),
      rebalance: () => request('POST', '/v1/rebalance', { maxMoves: 2 }, key),
    };
    const r = await call[a.op]();
    if (r.status === 202) {
      bump(stats.operations, a.op);
      const wid = r.body?.workflowId ?? r.body?.migrationId;
      if (wid) started.set(a.id, wid);
    } else if (r.status === 0 || r.status >= 500) {
      stats.unavailable++;
      log(`  seed ${seed}: ${a.op} answered ${r.status}: ${JSON.stringify(r.body).slice(0, 200)}`);
    } else bump(stats.rejected, a.op);
  };

  const steer = async (a: Extract<Action, { type: 'steer' }>) => {
    // an operator steers a migration once its start has answered (on loaded cores the answer
    // can come after the steer's moment; without the id there is nothing to steer)
    await answered.get(a.target);
    const wid = started.get(a.target);
    if (!wid) return;
    const r =
      a.steer === 'cancel'
        ? await rig.call('POST', `/v1/migrations/${encodeURIComponent(wid)}/cancel`, { reason: 'chaos campaign' })
        : await rig.call('PATCH', `/v1/migrations/${encodeURIComponent(wid)}`, { maxBandwidthMiBps: a.bandwidthMiBps, maxDowntimeMs: a.downtimeMs });
    bump(stats.faults, r.status < 300 && r.status > 0 ? `steer-${a.steer}` : `steer-${a.steer}-refused`);
  };

  const processFault = async (a: Extract<Action, { type: 'fault' }>) => {
    if (a.fault === 'db-outage') {
      // the run waits for the outage's full length before it restores anything; one that
      // begins during another lengthens it and is not counted as an outage of its own
      bump(stats.faults, rig.dbOutage(a.downMs) ? 'db-outage' : 'db-outage-extended');
      restores.push(rig.outageOver());
      return;
    }
    bump(stats.faults, a.fault);
    if (a.fault === 'kill-temporal') await rig.killTemporal();
    else await rig.kill(KILLS[a.fault]);
    restores.push(sleep(a.downMs).then(() => restore()));
  };

  const simFault = async (a: Extract<Action, { type: 'sim' }>) => {
    const hostId = hosts[a.host];
    const peer = hosts[a.peer] === hostId ? hosts[(a.peer + 1) % hosts.length] : hosts[a.peer];
    const base = { id: `chaos-${tag}-${a.at}`, kind: a.fault };
    const input: SimFaultInput = {
      'fail-step': { ...base, step: a.step, hostId, count: 1 + Math.floor(a.value * 3) },
      'fail-stage': { ...base, stage: a.stage, hostId },
      'destination-crash': { ...base, hostId, stage: a.stage },
      'link-cut': { ...base, hostId, peerHostId: peer },
      'dirty-rate': { ...base, vmId: vmIds[a.vm], value: Math.round(a.value * 2 * 1024 ** 3) },
      'slow-disk': { ...base, hostId, value: 2 + Math.round(a.value * 20) },
    }[a.fault];
    rig.sim.injectFault(input);
    bump(stats.faults, a.fault);
    restores.push(sleep(a.durationMs).then(() => rig.sim.clearFaults({ id: base.id })));
  };

  for (const a of schedule(seed, SHAPE)) {
    await sleep(Math.max(0, t0 + a.at - Date.now()));
    const a0 = Date.now();
    if (TRACE) log(`  trace ${seed} +${a0 - t0} ms: ${JSON.stringify(a)}`);
    const p = a.type === 'op' ? op(a) : a.type === 'steer' ? steer(a) : a.type === 'fault' ? processFault(a) : simFault(a);
    if (a.type === 'op') answered.set(a.id, p.catch(() => undefined));
    pending.push(
      p.then(
        () => {
          if (TRACE) log(`  trace ${seed} +${Date.now() - t0} ms: done ${a.type} ${a.type === 'op' ? a.op : a.type === 'steer' ? a.steer : a.fault} (${Date.now() - a0} ms)`);
          else if (Date.now() - a0 > 10_000) log(`  seed ${seed}: ${JSON.stringify(a)} took ${Date.now() - a0} ms`);
        },
        (e) => log(`  seed ${seed}: ${a.type} ${JSON.stringify(a)} threw ${(e as Error).message}`),
      ),
    );
  }
  await Promise.all(pending);
  phase('play');
  await Promise.all(restores.map((p) => p.catch(() => undefined)));
  // settle: faults cleared, the database back, every process up, then nothing in flight
  rig.sim.clearFaults();
  await restore();
  phase('restore');
  const t1 = Date.now();
  let traced = t1;
  for (;;) {
    if (TRACE && Date.now() - traced > 2000) {
      traced = Date.now();
      const ops = await rig.db.em().find(Operation, { state: 'running' }).catch(() => []);
      log(`  trace ${seed} settle +${traced - t1} ms: running ${ops.map((o) => `${o.kind}/${o.subkind ?? ''}@${o.stage ?? '-'}`).join(' ') || '-'}`);
    }
    const running = await rig.db.em().count(Operation, { state: 'running' }).catch(() => 1);
    const open = running === 0 ? await openWorkflows(rig, since) : 1;
    if (running === 0 && open === 0) break;
    if (Date.now() - t1 > SETTLE_LIMIT_MS) break;
    // a process can die on its own (a bug is a finding too: it is restarted, and logged)
    const back = await restore();
    if (back.length) log(`  seed ${seed}: restarted ${back.join(', ')} that exited on their own`);
    await sleep(100);
  }
  stats.settleMs = Date.now() - t1;
  phase('settle');
  await sampler.stop();
  stats.samples = sampler.samples;
  stats.violations = [
    ...sampler.violations,
    ...(await checkInvariants({ db: rig.db, sim: rig.sim })),
    ...(await checkCapacity(rig.db)),
    ...(await checkTemporal({ db: rig.db, client: rig.client }, { since })),
  ];
  phase('check');
  if (stats.violations.length) stats.diagnosis = await diagnose(rig, since);
  await retire(rig);
  phase('retire');
  stats.wallMs = Date.now() - w0;
  return stats;
}

/** One line per operation of the run: what the analysis of a violation starts from. */
async function diagnose(rig: Rig, since: Date): Promise<string[]> {
  const ops = await rig.db.em().find(Operation, { startedAt: { $gte: since } }, { orderBy: { startedAt: 'asc' } });
  const histories = new Map<string, string>();
  for (const o of ops) histories.set(o.id, await historySummary(rig, o.workflowId, o.runId).catch((e) => `unreadable: ${(e as Error).message.slice(0, 100)}`));
  // when the leftovers were written, against when their operation ended (a write after the end
  // is a late execution of a step, after its compensation ran)
  const leftovers = [
    ...(await rig.db.em().find(Allocation, { kind: 'reservation' })).map((a) => `reservation ${a.id} of ${a.vmId} on ${a.hostId} for operation ${a.operationId ?? '-'} created ${a.createdAt.toISOString()}`),
    ...(await rig.db.em().find(Vm, { state: 'migrating' })).map((v) => `vm ${v.id} migrating on ${v.hostId ?? '-'}, row updated ${v.updatedAt.toISOString()}`),
  ];
  return [...leftovers, ...ops.map((o) => {
    const d = (o.details ?? {}) as { failedStage?: string; compensations?: { name: string; ok: boolean; attempts: number; error?: string }[]; decisions?: { action: string; reason: string }[] };
    const failed = (d.compensations ?? []).filter((c) => !c.ok).map((c) => `${c.name} x${c.attempts}: ${c.error ?? ''}`.slice(0, 300));
    const decisions = (d.decisions ?? []).map((x) => x.action).join(',');
    const h = histories.get(o.id);
    return `${o.id} ${o.kind}/${o.subkind ?? ''} ${o.vmId ?? '-'} ${o.sourceHostId ?? ''}->${o.targetHostId ?? ''} ${o.state} stage ${o.stage ?? '-'}${d.failedStage ? ` failed at ${d.failedStage}` : ''}${o.error ? ` error: ${o.error.slice(0, 300)}` : ''}${decisions ? ` decisions: ${decisions}` : ''}${failed.length ? ` FAILED COMPENSATIONS: ${failed.join(' | ')}` : ''}${h ? ` history: ${h}` : ''} ended ${o.endedAt?.toISOString() ?? '-'}`;
  })];
}

/**
 * What a workflow's history says about retries the Operation record does not show: workflow
 * tasks that timed out or failed (a local activity of a timed-out task runs again, and its first
 * execution may still be going), activity timeouts and failures.
 */
async function historySummary(rig: Rig, workflowId: string, runId?: string | null): Promise<string> {
  const history = await rig.client.workflow.getHandle(workflowId, runId ?? undefined).fetchHistory();
  const n: Record<string, number> = {};
  let markers = 0;
  for (const e of history.events ?? []) {
    if (e.workflowTaskTimedOutEventAttributes) n[`wft-timed-out-${e.workflowTaskTimedOutEventAttributes.timeoutType ?? ''}`] = (n[`wft-timed-out-${e.workflowTaskTimedOutEventAttributes.timeoutType ?? ''}`] ?? 0) + 1;
    if (e.workflowTaskFailedEventAttributes) n['wft-failed'] = (n['wft-failed'] ?? 0) + 1;
    if (e.activityTaskTimedOutEventAttributes) n['activity-timed-out'] = (n['activity-timed-out'] ?? 0) + 1;
    if (e.activityTaskFailedEventAttributes) n['activity-failed'] = (n['activity-failed'] ?? 0) + 1;
    if (e.markerRecordedEventAttributes) markers++;
  }
  return `${history.events?.length ?? 0} events, ${markers} local-activity markers${Object.keys(n).length ? `, ${Object.entries(n).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}`;
}

async function openWorkflows(rig: Rig, since: Date): Promise<number> {
  let n = 0;
  const q = `ExecutionStatus = "Running" AND StartTime >= "${new Date(since.getTime() - 1000).toISOString()}"`;
  for await (const _ of rig.client.workflow.list({ query: q })) n++;
  return n;
}

/** Removes every VM, copy, disk, allocation and address, and takes hosts out of maintenance. */
export async function retire(rig: Rig): Promise<void> {
  const snap = rig.sim.snapshot();
  for (const c of snap.vms) await rig.sim.forHost(c.hostId).destroyVm(c.vmId).catch(() => undefined);
  const anyHost = snap.hosts[0].id;
  for (const d of snap.disks) await rig.sim.forHost(snap.hosts.find((h) => h.datastores.includes(d.datastoreId))?.id ?? anyHost).deleteDisk(d.path).catch(() => undefined);
  const em = rig.db.em();
  await em.nativeDelete(Allocation, {});
  await em.nativeDelete(IpAllocation, {});
  await em.nativeDelete(Vm, {});
  await em.nativeUpdate(Host, {}, { maintenance: false });
}
