// The fleet commands of the CLI (evacuate, evacuations, plans, rebalance, schedules, drift,
// reconcile; cli/commands/fleet.ts, rebalance.ts, drift.ts) in-process against a real listening
// API with a test database and the fake Temporal client, as test/api/cli.test.ts does. The fake
// is given here what these routes ask of Temporal beyond it: `workflow.execute` (a dry run's
// planning workflow answers a FleetProgress) and `schedule` (Temporal Schedules, in memory).
// `--watch` follows a scripted sequence of progress answers: exit 0 when every VM moved, 3 when
// one stayed (a VM too big for any other host, left with its reason).
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ScheduleAlreadyRunning, ScheduleNotFoundError } from '@temporalio/client';
import { runCli, type CliIo } from '../../cli/main.js';
import { Drift, Plan } from '../../db/entities.js';
import type { FleetProgress, VmMoveReport } from '../../workflows/definitions.js';
import { addVm, ADMIN, seedInventory, startTestApi, type TestApi } from '../helpers/api.js';

let t: TestApi;
let url: string;

function cli(opts: { tty?: boolean } = {}) {
  let out = '';
  let err = '';
  let polls = 0;
  const io: CliIo = {
    env: { FERRY_API_URL: url, FERRY_API_TOKEN: ADMIN },
    stdout: { write: (s: string) => (out += s), isTTY: opts.tty, columns: 200 },
    stderr: { write: (s: string) => (err += s) },
    sleep: async () => {
      if (++polls > 100) throw new Error('--watch polled 100 times without an end');
    },
  };
  return {
    run: (...argv: string[]) => runCli(argv, io),
    get out() {
      return out;
    },
    get err() {
      return err;
    },
  };
}

const vm = (id: string, over: Partial<VmMoveReport> = {}): VmMoveReport => ({ vmId: id, vmName: id.replace(/^vm-/, ''), from: 'h1', to: 'h2', kind: 'live', state: 'waiting', attempts: 0, failedTargets: [], predictedMs: 4200, ...over });

function fleet(vms: VmMoveReport[], over: Partial<FleetProgress> = {}): FleetProgress {
  const n = (s: VmMoveReport['state']) => vms.filter((v) => v.state === s).length;
  return {
    operationId: 'op-evac',
    kind: 'evacuation',
    subject: 'h1',
    state: 'running',
    dryRun: false,
    maxParallel: 2,
    counts: { moved: n('moved'), inFlight: n('in-flight'), waiting: n('waiting'), failed: n('failed'), left: n('left'), cancelled: n('cancelled') },
    vms,
    predictedMakespanMs: 8400,
    lowerBoundMs: 6300,
    startedAtMs: Date.now(),
    maxInFlightSeen: 2,
    ...over,
  };
}

const BIG_REASON = 'no host can take it: h2 has 14336 MiB free of the 20000 MiB it needs; h3 is in maintenance';
/** What the fake's planning workflow answers: two moves and the big VM left behind. */
const PLANNED = fleet([vm('vm-a'), vm('vm-c', { predictedMs: 2100 }), vm('vm-big', { to: undefined, kind: undefined, predictedMs: undefined, state: 'left', reason: BIG_REASON })], { state: 'planned', dryRun: true });

/** The fake's progress answers in order, one per query; the last one repeats. */
class Scripted extends Map<string, FleetProgress> {
  served = 0;
  constructor(readonly script: FleetProgress[]) {
    super();
  }
  override get(): FleetProgress {
    return this.script[Math.min(this.served++, this.script.length - 1)]!;
  }
}

/** Temporal Schedules in memory: create, describe, update, delete. */
function fakeSchedules() {
  const all = new Map<string, { spec: unknown; action: { args?: unknown[] }; state: { paused: boolean } }>();
  return {
    all,
    create: async (o: { scheduleId: string; spec: unknown; action: { args?: unknown[] }; state: { paused: boolean } }) => {
      if (all.has(o.scheduleId)) throw new ScheduleAlreadyRunning('exists', o.scheduleId);
      all.set(o.scheduleId, { spec: o.spec, action: o.action, state: o.state });
    },
    getHandle: (id: string) => {
      const get = () => {
        const s = all.get(id);
        if (!s) throw new ScheduleNotFoundError('no such schedule', id);
        return s;
      };
      return {
        describe: async () => ({ scheduleId: id, ...get(), info: { nextActionTimes: [new Date('2030-01-01T00:10:00Z')], recentActions: [], numActionsTaken: 0, numActionsSkippedOverlap: 0 } }),
        update: async (fn: (prev: ReturnType<typeof get>) => ReturnType<typeof get>) => void all.set(id, fn(get())),
        delete: async () => {
          get();
          all.delete(id);
        },
      };
    },
  };
}

before(async () => {
  t = await startTestApi();
  await seedInventory(t.db);
  await addVm(t.db, { id: 'vm-a', name: 'a' });
  await addVm(t.db, { id: 'vm-c', name: 'c', ip: '10.0.0.12' });
  await addVm(t.db, { id: 'vm-big', name: 'big', ip: '10.0.0.13', memoryMiB: 20_000 });
  const fake = t.temporal as unknown as { workflow: Record<string, unknown>; schedule: unknown };
  fake.workflow.execute = async (workflowType: string, o: { workflowId: string; args: unknown[] }) => {
    const input = o.args[0] as { planId: string };
    // the real planning workflow stores the plan (activities/fleet.ts storePlan) before it answers
    const em = t.db.em();
    em.create(Plan, {
      id: input.planId,
      kind: workflowType === 'rebalance' ? 'rebalance' : 'evacuation',
      subject: workflowType === 'rebalance' ? 'default' : 'h1',
      request: {},
      plan: {
        moves: PLANNED.vms.filter((v) => v.state === 'waiting').map((v, order) => ({ ...v, order })),
        left: PLANNED.vms.filter((v) => v.state === 'left'),
        makespanMs: 8400,
        lowerBoundMs: 6300,
      },
    });
    await em.flush();
    return workflowType === 'rebalance' ? { ...PLANNED, kind: 'rebalance', subject: 'default', imbalanceBefore: 0.31, imbalanceAfter: 0.12 } : PLANNED;
  };
  fake.schedule = fakeSchedules();
  await t.app.listen({ host: '127.0.0.1', port: 0 });
  const addr = t.app.server.address();
  assert.ok(addr && typeof addr === 'object');
  url = `http://127.0.0.1:${addr.port}`;
});
after(() => t.close());
beforeEach(() => {
  t.temporal.starts.length = 0;
  for (const r of t.temporal.runs.values()) r.status = 'COMPLETED';
});

const progress = (p: Map<string, FleetProgress>) => (t.temporal.progress = p as unknown as typeof t.temporal.progress);

describe('ferry evacuate', () => {
  it('--dry-run prints the plan table, the makespan and lower bound, who stays and why, and how to approve', async () => {
    const c = cli();
    assert.equal(await c.run('evacuate', 'h1', '--dry-run', '--max-parallel', '2'), 0, c.err);
    const lines = c.out.trimEnd().split('\n');
    assert.match(lines[0]!, /^plan (plan-[0-9a-f]+) \(evacuation of h1\): 2 moves, 1 VM would stay$/);
    assert.match(lines[1]!, /^VM\s+FROM\s+TO\s+KIND\s+PREDICTED s\s+ORDER$/);
    assert.match(lines[2]!, /^a\s+h1\s+h2\s+live\s+4\.2\s+1$/);
    assert.match(lines[3]!, /^c\s+h1\s+h2\s+live\s+2\.1\s+2$/);
    assert.match(c.out, /^predicted makespan: 8\.4 s \(lower bound 6\.3 s\)$/m);
    assert.ok(c.out.includes(`would stay:\n  big on h1: ${BIG_REASON}`), c.out);
    const planId = /^plan (plan-[0-9a-f]+)/.exec(lines[0]!)![1]!;
    assert.equal(lines.at(-1), `approve with: ferry plans approve ${planId}`);
    assert.equal(t.temporal.starts.length, 0, 'a dry run starts nothing');

    const ls = cli();
    assert.equal(await ls.run('plans', 'ls'), 0, ls.err);
    assert.match(ls.out, new RegExp(`^${planId}\\s+evacuation\\s+h1\\s+proposed\\s`, 'm'));
    const show = cli();
    assert.equal(await show.run('plans', 'show', planId), 0, show.err);
    assert.match(show.out, /^state:\s+proposed$/m);
    assert.match(show.out, /approve with: ferry plans approve/);
  });

  it('starts an evacuation with its flags: evacuation id, workflow id, Web UI link', async () => {
    const c = cli();
    assert.equal(await c.run('evacuate', 'h1', '--max-parallel', '3', '--allow-cold', '--include-stopped'), 0, c.err);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'evacuateHost');
    assert.deepEqual(s.args[0], { hostId: 'h1', maxParallel: 3, allowCold: true, includeStopped: true, policy: undefined, principal: 'bootstrap-admin' });
    assert.match(c.out, /^evacuation of h1 started$/m);
    assert.match(c.out, new RegExp(`^  id:\\s+${s.workflowId}$`, 'm'));
    assert.match(c.out, new RegExp(`^  workflow: ${s.workflowId} \\(run ${s.runId}\\)$`, 'm'));
    assert.match(c.out, /^  web UI:\s+http:\/\/ui\.test:8233\/namespaces\/default\/workflows\//m);
    assert.match(c.out, /follow it: ferry evacuations show \S+ --watch/);
  });

  it('--watch prints only what changed and exits 0 when every VM moved', async () => {
    const script = new Scripted([
      fleet([vm('vm-a', { state: 'in-flight', attempts: 1 }), vm('vm-c')]),
      fleet([vm('vm-a', { state: 'in-flight', attempts: 1 }), vm('vm-c')]),
      fleet([vm('vm-a', { state: 'moved', attempts: 1, durationMs: 4300 }), vm('vm-c', { state: 'in-flight', attempts: 1 })]),
      fleet([vm('vm-a', { state: 'moved', attempts: 1, durationMs: 4300 }), vm('vm-c', { state: 'moved', attempts: 1, durationMs: 2000 })], { state: 'completed' }),
    ]);
    progress(script);
    const c = cli();
    assert.equal(await c.run('evacuate', 'h1', '--watch'), 0, c.err);
    assert.equal(script.served, 4, 'one GET per poll until the end');
    const lines = c.out.trimEnd().split('\n');
    const counts = lines.filter((l) => l.startsWith('evacuation ') && l.includes(' in flight,'));
    assert.deepEqual(
      counts.map((l) => l.replace(/^evacuation \S+ /, '')),
      ['running: 0 moved, 1 in flight, 1 waiting, 0 failed, 0 left', 'running: 1 moved, 1 in flight, 0 waiting, 0 failed, 0 left', 'completed: 2 moved, 0 in flight, 0 waiting, 0 failed, 0 left'],
      'the repeated answer printed nothing',
    );
    assert.ok(lines.some((l) => /^  a\s+moved\s+-> h2\s+4\.3 s$/.test(l)), c.out);
    assert.equal(lines.filter((l) => /^  a\s+in-flight/.test(l)).length, 1);
    assert.match(lines.at(-1)!, /^evacuation \S+ completed: 2 moved, 0 stayed \(at most 2 in flight\)$/);
  });

  it('--watch exits 3 when a VM stayed, naming it and the reason', async () => {
    const big = vm('vm-big', { to: undefined, state: 'left', reason: BIG_REASON });
    progress(new Scripted([fleet([vm('vm-a', { state: 'in-flight' }), big]), fleet([vm('vm-a', { state: 'moved', durationMs: 3000 }), big], { state: 'completed' })]));
    const c = cli();
    assert.equal(await c.run('evacuate', 'h1', '--watch'), 3, c.err);
    assert.match(c.out, /^  big\s+left\s+-> -\s+no host can take it/m);
    assert.match(c.out, /completed: 1 moved, 1 stayed/);
    assert.ok(c.out.includes(`  stayed: big (left) on h1: ${BIG_REASON}`), c.out);
  });

  it('--watch on a terminal redraws the block in place', async () => {
    progress(new Scripted([fleet([vm('vm-a', { state: 'in-flight', startedAtMs: Date.now() - 1500 })]), fleet([vm('vm-a', { state: 'moved', durationMs: 1600 })], { state: 'completed' })]));
    const c = cli({ tty: true });
    assert.equal(await c.run('evacuations', 'show', 'tapi-evacuate-h1', '--watch'), 0, c.err);
    // elapsed is counted from startedAtMs when the block is drawn: at least 1.5 s, more on a busy machine
    const elapsed = /in-flight\s+-> h2\s+(\d+\.\d) s of ~4\.2 s/.exec(c.out);
    assert.ok(elapsed && Number(elapsed[1]) >= 1.5, c.out);
    assert.ok(c.out.includes('\x1b[2A\r\x1b[J'), 'back two lines, cleared, drawn again');
  });

  it('usage errors name the flag, exit 2, nothing sent', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['evacuate', 'h1', '--max-parallel', '0'], /flag --max-parallel must be a whole number from 1 to 100, got "0"/],
      [['evacuate', 'h1', '--max-parallel', 'lots'], /flag --max-parallel must be a whole number/],
      [['evacuate', 'h1', '--dry-run', '--watch'], /--watch follows a started evacuation/],
      [['evacuate', 'h1', '--dryrun'], /unknown flag --dryrun/],
      [['rebalance', '--level', '6'], /flag --level must be a whole number from 1 to 5, got "6"/],
      [['rebalance', '--max-moves', '-1'], /flag --max-moves needs a value|flag --max-moves must be/],
      [['schedules', 'set', 'rebalance', '--cron', '@every 1m', '--level', '0'], /flag --level must be a whole number from 1 to 5/],
      [['schedules', 'set', 'rebalance'], /flag --cron is required/],
      [['schedules', 'set', 'nightly', '--cron', '@every 1m'], /<name> must be one of rebalance, reconcile/],
      [['schedules', 'set', 'reconcile', '--cron', '@every 1m', '--max-moves', '2'], /flag --max-moves applies to the rebalance schedule only/],
      [['drift', 'ls', '--state', 'closed'], /flag --state must be one of open, resolved, got "closed"/],
      [['drift', 'resolve', 'd1'], /flag --action is required/],
      [['drift', 'resolve', 'd1', '--action', 'ignore'], /flag --action must be one of adopt, forget, fix-state/],
      [['evacuations', 'cancel'], /missing <id>/],
    ];
    for (const [argv, msg] of cases) {
      const c = cli();
      assert.equal(await c.run(...argv), 2, `${argv.join(' ')}: ${c.err}`);
      assert.match(c.err, msg, argv.join(' '));
    }
    assert.equal(t.temporal.starts.length, 0);
  });

  it('--help says exit code 3', async () => {
    const c = cli();
    assert.equal(await c.run('--help'), 0);
    assert.match(c.out, /3 a watched evacuation or rebalance ended with VMs that did not move/);
  });
});

describe('ferry evacuations, plans approve, rebalance', () => {
  it('evacuations pause, resume, cancel --abort-running --reason reach the workflow', async () => {
    t.temporal.runs.get('tapi-evacuate-h1')!.status = 'RUNNING';
    for (const [argv, signal] of [
      [['evacuations', 'pause', 'tapi-evacuate-h1'], 'pause'],
      [['evacuations', 'resume', 'tapi-evacuate-h1'], 'resume'],
      [['evacuations', 'cancel', 'tapi-evacuate-h1', '--abort-running', '--reason', 'window over'], 'cancel'],
    ] as const) {
      const c = cli();
      assert.equal(await c.run(...argv), 0, c.err);
      assert.match(c.out, new RegExp(`evacuation tapi-evacuate-h1: ${signal} requested`));
      assert.equal(t.temporal.signals.at(-1)!.name, signal);
    }
    assert.deepEqual(t.temporal.signals.at(-1)!.args, [{ reason: 'window over', abortRunning: true }]);
    t.temporal.finish('tapi-evacuate-h1');
    const c = cli();
    assert.equal(await c.run('evacuations', 'pause', 'tapi-evacuate-h1'), 1);
    assert.match(c.err, /is not running \(completed\) \[HTTP 409/);
  });

  it('plans approve starts exactly the plan; approving twice is the API refusal, exit 1', async () => {
    const d = cli();
    assert.equal(await d.run('evacuate', 'h1', '--dry-run'), 0, d.err);
    const planId = /^plan (plan-[0-9a-f]+)/.exec(d.out)![1]!;
    progress(new Map([['tapi-evacuate-h1', fleet([vm('vm-a')])]]));
    const c = cli();
    assert.equal(await c.run('plans', 'approve', planId), 0, c.err);
    assert.match(c.out, new RegExp(`^plan ${planId} approved: evacuation started$`, 'm'));
    assert.equal((t.temporal.starts[0]!.args[0] as { planId: string }).planId, planId);
    const em = t.db.em();
    const plan = await em.findOneOrFail(Plan, { id: planId });
    plan.state = 'approved';
    await em.flush();
    const again = cli();
    assert.equal(await again.run('plans', 'approve', planId), 1);
    assert.match(again.err, /already approved \[HTTP 409 POST \/v1\/plans\//);
  });

  it('rebalance --dry-run prints the plan with imbalance before and after; rebalance sends level and max moves', async () => {
    const c = cli();
    assert.equal(await c.run('rebalance', '--dry-run', '--level', '4', '--max-moves', '2'), 0, c.err);
    assert.match(c.out, /^plan plan-[0-9a-f]+ \(rebalance of default\): 2 moves, 1 VM would stay$/m);
    assert.match(c.out, /^predicted makespan: 8\.4 s \(lower bound 6\.3 s\)$/m);
    assert.match(c.out, /^imbalance: 0\.310 before, 0\.120 after$/m);
    assert.match(c.out, /approve with: ferry plans approve plan-/);
    const r = cli();
    assert.equal(await r.run('rebalance', '--level', '2', '--max-moves', '5'), 0, r.err);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'rebalance');
    assert.deepEqual([(s.args[0] as { level: number }).level, (s.args[0] as { maxMoves: number }).maxMoves], [2, 5]);
    assert.match(r.out, /follow it: ferry rebalances show \S+ --watch/);
  });
});

describe('ferry schedules, drift, reconcile', () => {
  it('schedules set (created, then updated), ls, show, delete; a second delete is the 404', async () => {
    const c = cli();
    assert.equal(await c.run('schedules', 'set', 'rebalance', '--cron', '*/30 * * * *', '--level', '3', '--max-moves', '4', '--dry-run'), 0, c.err);
    assert.match(c.out, /^schedule rebalance created: /);
    const fake = (t.temporal as unknown as { schedule: ReturnType<typeof fakeSchedules> }).schedule;
    const s = fake.all.get('tapi-ferry-rebalance')!;
    assert.deepEqual(s.spec, { cronExpressions: ['*/30 * * * *'] });
    assert.deepEqual((s.action.args![0] as Record<string, unknown>).level, 3);
    const u = cli();
    assert.equal(await u.run('schedules', 'set', 'rebalance', '--cron', '0 * * * *', '--paused'), 0, u.err);
    assert.match(u.out, /^schedule rebalance updated: .*\(paused\)/);
    const ls = cli();
    assert.equal(await ls.run('schedules', 'ls'), 0, ls.err);
    assert.match(ls.out, /^NAME\s+CRON\s+PAUSED\s+LEVEL\s+MAX MOVES\s+DRY RUN\s+RUNS\s+SKIPPED\s+NEXT$/m);
    assert.match(ls.out, /^rebalance\s+0 \* \* \* \*\s+yes\s/m);
    const show = cli();
    assert.equal(await show.run('schedules', 'show', 'rebalance'), 0, show.err);
    assert.match(show.out, /^paused:\s+true$/m);
    const bad = cli();
    assert.equal(await bad.run('schedules', 'set', 'reconcile', '--cron', 'often'), 1);
    assert.match(bad.err, /cron: must be a 5-field cron expression/);
    const del = cli();
    assert.equal(await del.run('schedules', 'delete', 'rebalance'), 0, del.err);
    assert.match(del.out, /^schedule rebalance deleted$/m);
    assert.equal(fake.all.size, 0);
    const again = cli();
    assert.equal(await again.run('schedules', 'delete', 'rebalance'), 1);
    assert.match(again.err, /schedule rebalance not found \[HTTP 404 DELETE/);
  });

  it('drift ls (filters), drift resolve --action fix-state, reconcile', async () => {
    const em = t.db.em();
    const at = new Date('2026-01-01T00:00:00Z');
    em.create(Drift, { id: 'wrong-state-vm-c', kind: 'wrong-state', vmId: 'vm-c', hostId: 'h1', state: 'open', expected: { state: 'running' }, observed: { state: 'crashed' }, detectedAt: at, lastSeenAt: at });
    em.create(Drift, { id: 'unknown-vm-stray', kind: 'unknown-vm', vmId: 'stray', hostId: 'h2', state: 'open', expected: {}, observed: { state: 'running' }, detectedAt: new Date(at.getTime() + 1000), lastSeenAt: at });
    await em.flush();
    const c = cli();
    assert.equal(await c.run('drift', 'ls'), 0, c.err);
    assert.match(c.out, /^ID\s+KIND\s+VM\s+HOST\s+STATE\s+EXPECTED\s+OBSERVED\s+DETECTED\s+RESOLUTION$/m);
    assert.match(c.out, /^wrong-state-vm-c\s+wrong-state\s+vm-c\s+h1\s+open\s+\{"state":"running"\}\s+\{"state":"crashed"\}\s/m);
    const k = cli();
    assert.equal(await k.run('drift', 'ls', '--kind', 'unknown-vm', '--state', 'open'), 0, k.err);
    assert.match(k.out, /^unknown-vm-stray\s/m);
    assert.doesNotMatch(k.out, /wrong-state-vm-c/);
    const badKind = cli();
    assert.equal(await badKind.run('drift', 'ls', '--kind', 'odd'), 1);
    assert.match(badKind.err, /kind/);
    assert.match(badKind.err, /HTTP 400/);
    const r = cli();
    assert.equal(await r.run('drift', 'resolve', 'wrong-state-vm-c', '--action', 'fix-state'), 0, r.err);
    assert.match(r.out, /^drift wrong-state-vm-c resolved: fix-state \(vm vm-c, operation \S+\)$/m);
    const resolved = cli();
    assert.equal(await resolved.run('drift', 'ls', '--state', 'resolved'), 0, resolved.err);
    assert.match(resolved.out, /^wrong-state-vm-c\s.*fix-state$/m);
    const rc = cli();
    assert.equal(await rc.run('reconcile'), 0, rc.err);
    assert.equal(t.temporal.starts.at(-1)!.workflowType, 'reconcile');
    assert.match(rc.out, /^reconcile started$/m);
    assert.match(rc.out, /follow it: ferry drift ls --state open/);
  });
});
