// The invariant checker's campaign half (ARCHITECTURE.md section 6), next to checkInvariants'
// database-vs-simulator checks: Temporal against the Operation records (no workflow stuck open,
// every record closed with the state its workflow ended in, every fleet-changing workflow
// audited, by a named principal), host capacity and per-host migration slots never exceeded,
// and a sampler that checks both (and "one host runs the guest") while a chaos run is going on.
import type { Client } from '@temporalio/client';
import type { Db } from '../../db/orm.js';
import { Allocation, Host, Operation } from '../../db/entities.js';
import type { Simulator } from '../../drivers/sim/index.js';
import { SLOT_HOLDERS } from '../../activities/queries.js';
import type { Violation, ViolationKind } from './invariants.js';

/** Workflow types that write an Operation record (what `unaudited-workflow` looks for). */
export const AUDITED_WORKFLOWS = ['provisionVm', 'liveMigrate', 'coldMigrate', 'storageMigrate', 'vmLifecycle', 'evacuateHost', 'rebalance'];
/** Workflow types whose result carries the operation's final state (`{ state }`). */
const STATEFUL_RESULTS = new Set(['liveMigrate', 'coldMigrate', 'storageMigrate']);
const STATES = new Set(['completed', 'failed', 'cancelled', 'rolled-back']);

/** Capacity and slot violations right now (database side: allocations and running migrations). */
export async function checkCapacity(db: Db): Promise<Violation[]> {
  const em = db.em();
  const [hosts, allocations, migrations] = await Promise.all([
    em.find(Host, {}),
    em.find(Allocation, {}),
    // the records that hold slots by ferry's own rule (a storage migration holds none)
    em.find(Operation, SLOT_HOLDERS),
  ]);
  const out: Violation[] = [];
  for (const h of hosts) {
    const mine = allocations.filter((a) => a.hostId === h.id);
    const cpus = mine.reduce((s, a) => s + a.cpus, 0);
    const mem = mine.reduce((s, a) => s + a.memoryMiB, 0);
    if (cpus > h.cpus * h.cpuOvercommit || mem > h.memoryMiB * h.memoryOvercommit) {
      out.push({ kind: 'capacity-exceeded', subject: h.id, message: `${h.id} holds ${cpus} vCPU / ${mem} MiB in ${mine.length} allocations, capacity ${h.cpus * h.cpuOvercommit} vCPU / ${h.memoryMiB * h.memoryOvercommit} MiB` });
    }
    const outgoing = migrations.filter((o) => o.sourceHostId === h.id).length;
    const incoming = migrations.filter((o) => o.targetHostId === h.id).length;
    if (outgoing > h.maxOutgoingMigrations || incoming > h.maxIncomingMigrations) {
      out.push({ kind: 'slots-exceeded', subject: h.id, message: `${h.id} has ${outgoing} outgoing / ${incoming} incoming migrations in slot stages (limits ${h.maxOutgoingMigrations} / ${h.maxIncomingMigrations})` });
    }
  }
  return out;
}

/**
 * Temporal against the Operation records started since `since`: no workflow open (at rest), each
 * record's workflow known and its state matching how the workflow ended, each audited workflow
 * type with a record, each record naming its principal and (closed) its end time.
 */
export async function checkTemporal(x: { db: Db; client: Client }, opts: { since: Date; atRest?: boolean }): Promise<Violation[]> {
  const out: Violation[] = [];
  const add = (kind: ViolationKind, subject: string, message: string) => out.push({ kind, subject, message });
  const startedAfter = new Date(opts.since.getTime() - 1000).toISOString();
  const workflows = new Map<string, { type: string; status: string; runId: string }[]>();
  for await (const w of x.client.workflow.list({ query: `StartTime >= "${startedAfter}"` })) {
    workflows.set(w.workflowId, [...(workflows.get(w.workflowId) ?? []), { type: w.type, status: w.status.name, runId: w.runId }]);
    if ((opts.atRest ?? true) && w.status.name === 'RUNNING') add('workflow-open', w.workflowId, `workflow ${w.workflowId} (${w.type}) is still running`);
  }
  const ops = await x.db.em().find(Operation, { startedAt: { $gte: opts.since } });
  // by workflow id over the whole table: a workflow started just before `since` (inside the
  // second of slack) has its record from before `since`, which is not a missing record
  const byWorkflow = new Set([...ops.map((o) => o.workflowId), ...(await x.db.em().find(Operation, { workflowId: { $in: [...workflows.keys()] } }, { fields: ['workflowId'] })).map((o) => o.workflowId)]);
  for (const o of ops) {
    if (!o.principal) add('audit-incomplete', o.id, `operation ${o.id} (${o.kind} ${o.workflowId}) names no principal`);
    if (o.state !== 'running' && !o.endedAt) add('audit-incomplete', o.id, `operation ${o.id} (${o.kind}) is ${o.state} with no end time`);
    const runs = workflows.get(o.workflowId);
    if (!runs) {
      add('operation-without-workflow', o.id, `operation ${o.id} (${o.kind}) names workflow ${o.workflowId}, which Temporal does not list`);
      continue;
    }
    // the record's run (a continued-as-new fleet workflow has several; the latest decides)
    let handle = x.client.workflow.getHandle(o.workflowId, o.runId ?? undefined);
    let d = await handle.describe().catch(() => undefined);
    if (d && d.status.name === 'CONTINUED_AS_NEW') {
      handle = x.client.workflow.getHandle(o.workflowId);
      d = await handle.describe().catch(() => undefined);
    }
    if (!d) {
      add('operation-without-workflow', o.id, `operation ${o.id}: workflow ${o.workflowId} run ${o.runId ?? '-'} cannot be described`);
      continue;
    }
    const status = d.status.name;
    const mismatch = (why: string) => add('operation-mismatch', o.id, `operation ${o.id} (${o.kind} ${o.subkind ?? ''} of ${o.vmId ?? '-'}) is ${o.state} but workflow ${o.workflowId} ${why}`);
    if (status === 'RUNNING') {
      if (o.state !== 'running') mismatch('is still running');
      continue;
    }
    if (o.state === 'running') {
      mismatch(`ended ${status}`);
      continue;
    }
    if (status === 'COMPLETED' && STATEFUL_RESULTS.has(d.type)) {
      const result = (await handle.result().catch(() => undefined)) as { state?: string } | undefined;
      if (result?.state && STATES.has(result.state) && result.state !== o.state) mismatch(`ended with state ${result.state}`);
    } else if (status !== 'COMPLETED' && o.state === 'completed') {
      mismatch(`ended ${status}`);
    }
  }
  for (const [workflowId, runs] of workflows) {
    const audited = runs.find((r) => AUDITED_WORKFLOWS.includes(r.type));
    if (audited && !byWorkflow.has(workflowId)) add('unaudited-workflow', workflowId, `workflow ${workflowId} (${audited.type}, ${audited.status}) has no Operation record`);
  }
  return out;
}

/**
 * Samples, every `everyMs` while a run goes on: the guests running on more than one host (for
 * every VM the simulator holds) and the capacity/slot checks. Errors reading a locked state file
 * or a database in an outage are counted, not verdicts.
 */
export class ChaosSampler {
  readonly violations: Violation[] = [];
  samples = 0;
  errors = 0;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly x: { db: Db; sim: Simulator },
    private readonly everyMs = 100,
  ) {}

  start(): this {
    this.timer = setInterval(() => void this.sample(), this.everyMs);
    this.timer.unref();
    return this;
  }

  private async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const snap = this.x.sim.snapshot();
      const running = new Map<string, string[]>();
      for (const c of snap.vms) if (c.state === 'running') running.set(c.vmId, [...(running.get(c.vmId) ?? []), c.hostId]);
      for (const [vmId, hosts] of running) {
        if (hosts.length > 1) this.push({ kind: 'doubled-during-run', subject: vmId, message: `a sample saw ${vmId} running on ${hosts.join(' and ')}` });
      }
      for (const v of await checkCapacity(this.x.db)) this.push(v);
      this.samples++;
    } catch {
      this.errors++;
    } finally {
      this.busy = false;
    }
  }

  private push(v: Violation): void {
    // one per subject and kind: a violation that lasts many samples is one finding
    if (!this.violations.some((w) => w.kind === v.kind && w.subject === v.subject)) this.violations.push(v);
  }

  async stop(): Promise<this> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    while (this.busy) await new Promise((r) => setTimeout(r, 10));
    return this;
  }
}
