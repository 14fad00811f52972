// Property-based fuzz of the whole HTTP API (issue 14), on SQLite and on PostgreSQL. Every route
// is enumerated from the app itself (buildApp's onRoute hook), so a new route cannot escape.
// For each, fast-check generates requests from the route's own zod schemas and mutates them:
// odd path ids (%00, %2F, '..', unicode, very long, SQL/shell metacharacters), junk query strings
// (unknown, repeated, wrong-typed keys, forged cursors), broken bodies and content types, and
// authorization variants around the admin token. Properties, per request:
//   - no 5xx, and no unhandled rejection;
//   - a 4xx body names the problem: non-empty `error` and `message`; a validation error has fields;
//   - a rejected request starts nothing: no workflow start/execute, signal, update or schedule
//     write on the (fake) Temporal client, and no Operation or Vm row appears.
// A failure prints the fast-check seed and path; replay with FERRY_FUZZ_SEED=<seed>.
// FERRY_FUZZ_RUNS sets the total requests per database (default 10,000).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { InjectOptions, RouteOptions } from 'fastify';
import { Registry } from 'prom-client';
import { ScheduleAlreadyRunning, ScheduleNotFoundError } from '@temporalio/client';
import { buildApp } from '../../api/app.js';
import { Drift, Operation, Plan, Vm } from '../../db/entities.js';
import type { DbKind } from '../../db/orm.js';
import { ADMIN, addOperation, addVm, FakeTemporal, OPERATOR, seedInventory, testConfig, VIEWER } from '../helpers/api.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { requestArbitrary } from '../helpers/fuzz.js';

const TOTAL = Number(process.env.FERRY_FUZZ_RUNS ?? 10_000);
const SEED = Number(process.env.FERRY_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** FERRY_FUZZ_ROUTES: a regular expression on "METHOD /url" to fuzz only some routes (replaying one) */
const ONLY = process.env.FERRY_FUZZ_ROUTES ? new RegExp(process.env.FERRY_FUZZ_ROUTES) : undefined;

let unhandled = 0;
process.on('unhandledRejection', (e) => {
  unhandled++;
  console.error('fuzz: unhandled rejection', e);
});

interface Route {
  method: string;
  url: string;
  schema?: Record<string, unknown>;
}

/** The fake Temporal client plus what the fleet and schedule routes ask of Temporal, all counted. */
class FuzzTemporal extends FakeTemporal {
  executes = 0;
  scheduleWrites = 0;
  readonly schedules = new Map<string, Record<string, unknown>>();
  readonly schedule = {
    create: async (o: { scheduleId: string } & Record<string, unknown>) => {
      if (this.schedules.has(o.scheduleId)) throw new ScheduleAlreadyRunning('exists', o.scheduleId);
      this.scheduleWrites++;
      this.schedules.set(o.scheduleId, o);
    },
    getHandle: (id: string) => {
      const get = () => {
        const s = this.schedules.get(id);
        if (!s) throw new ScheduleNotFoundError('no such schedule', id);
        return s;
      };
      return {
        describe: async () => ({ ...get(), scheduleId: id, info: { nextActionTimes: [], recentActions: [], numActionsTaken: 0, numActionsSkippedOverlap: 0 } }),
        update: async (fn: (prev: Record<string, unknown>) => Record<string, unknown>) => {
          this.scheduleWrites++;
          this.schedules.set(id, fn(get()));
        },
        delete: async () => {
          get();
          this.scheduleWrites++;
          this.schedules.delete(id);
        },
      };
    },
  };

  constructor() {
    super();
    // the base fake's answers where it has one (VmConsole), else a dry run's planning workflow
    // answering an empty plan
    (this.workflow as Record<string, unknown>).execute = async (workflowType: string, opts: { args?: unknown[] }) => {
      this.executes++;
      const answer = this.results.get(workflowType);
      if (answer) return answer(opts.args ?? []);
      return { kind: workflowType === 'rebalance' ? 'rebalance' : 'evacuation', subject: 'x', state: 'planned', vms: [], counts: {} };
    };
  }

  /** everything a request may have asked of Temporal so far */
  effects(): number {
    return this.starts.length + this.signals.length + this.updates.length + this.executes + this.scheduleWrites;
  }
}

interface Target {
  kind: DbKind;
  tdb: TestDb;
  temporal: FuzzTemporal;
  routes: Route[];
  inject(o: InjectOptions): Promise<{ statusCode: number; body: string }>;
  close(): Promise<void>;
}

async function startTarget(kind: DbKind): Promise<Target> {
  const tdb = await createTestDb(kind);
  const { db } = tdb;
  await seedInventory(db);
  await addVm(db, { id: 'vm-a', name: 'a', templateId: 'tpl-small' });
  await addVm(db, { id: 'vm-s', name: 's', state: 'stopped', ip: '10.0.0.11' });
  await addVm(db, { id: 'vm-moving', name: 'moving', state: 'migrating', ip: '10.0.0.12' });
  await addVm(db, { id: 'vm-e', name: 'e', state: 'error', hostId: 'h2', ip: '10.0.0.13' });
  await addOperation(db, { id: 'run-moving', runId: 'run-moving', workflowId: 'migrate-vm-moving', kind: 'migration', subkind: 'live', vmId: 'vm-moving', state: 'running', startedAt: new Date() });
  await addOperation(db, { id: 'run-done', runId: 'run-done', workflowId: 'migrate-vm-e', kind: 'migration', subkind: 'live', vmId: 'vm-e', state: 'completed', startedAt: new Date() });
  await addOperation(db, { id: 'evac-1', runId: 'evac-1', workflowId: 'evacuate-h1', kind: 'evacuation', sourceHostId: 'h1', state: 'running', startedAt: new Date() });
  const em = db.em();
  em.create(Drift, { id: 'unknown-vm-vm-x', kind: 'unknown-vm', vmId: 'vm-x', hostId: 'h1', expected: {}, observed: { state: 'running', cpus: 1, memoryMiB: 512 } });
  em.create(Drift, { id: 'wrong-state-vm-s', kind: 'wrong-state', vmId: 'vm-s', hostId: 'h1', expected: { state: 'stopped' }, observed: { state: 'running' } });
  em.create(Plan, { id: 'plan-old', kind: 'evacuation', subject: 'h1', state: 'refused', request: {}, plan: {}, refusal: 'stale' });
  await em.flush();

  const temporal = new FuzzTemporal();
  temporal.runs.set('migrate-vm-moving', { workflowId: 'migrate-vm-moving', runId: 'run-moving', workflowType: 'liveMigrate', status: 'RUNNING' });
  const routes: Route[] = [];
  const onRoute = (r: RouteOptions) => {
    for (const method of [r.method].flat()) routes.push({ method: String(method), url: r.url, schema: r.schema as Record<string, unknown> | undefined });
  };
  const faults: unknown[] = [];
  const app = await buildApp({
    db,
    temporal: temporal.asClient(),
    config: testConfig(tdb.dataDir),
    registry: new Registry(),
    simulator: { injectFault: (f: unknown) => (faults.push(f), { id: `f${faults.length}`, ...(f as object) }), listFaults: () => faults },
    // the fuzzer sends thousands of mutating requests a minute: no rate limit (its 429s are tested on their own)
    env: { FERRY_API_OPERATOR_TOKEN: OPERATOR, FERRY_API_VIEWER_TOKEN: VIEWER, FERRY_API_RATE_LIMIT: 'off' },
    onRoute,
  });
  await app.ready();
  return {
    kind,
    tdb,
    temporal,
    routes,
    inject: (o) => app.inject(o),
    async close() {
      await app.close();
      await tdb.cleanup();
    },
  };
}

const rowCounts = async (t: Target) => {
  const em = t.tdb.db.em();
  const [ops, vms] = await Promise.all([em.count(Operation, {}), em.count(Vm, {})]);
  return `${ops}/${vms}`;
};

/** The properties one response must have; throws (an assertion) naming the request otherwise. */
function checkAnswer(req: InjectOptions, res: { statusCode: number; body: string }, before: { effects: number; rows: string }, after: { effects: number; rows: string }): void {
  const what = `${req.method} ${req.url} -> ${res.statusCode} ${res.body.slice(0, 2000)}`;
  assert.ok(res.statusCode < 500, `5xx: ${what}`);
  if (res.statusCode < 400) return;
  if (req.method === 'HEAD') return; // a HEAD answer has no body
  let body: { error?: unknown; message?: unknown; fields?: Array<{ field?: unknown; problem?: unknown }> };
  try {
    body = JSON.parse(res.body);
  } catch {
    assert.fail(`4xx without a JSON body: ${what}`);
  }
  assert.ok(typeof body.error === 'string' && body.error.length > 0, `4xx without error: ${what}`);
  assert.ok(typeof body.message === 'string' && body.message.length > 0, `4xx without message: ${what}`);
  if (body.error === 'validation') {
    assert.ok(Array.isArray(body.fields) && body.fields.length > 0, `validation error naming no field: ${what}`);
    for (const f of body.fields) assert.ok(typeof f.field === 'string' && f.field.length > 0 && typeof f.problem === 'string' && f.problem.length > 0, `a field without name or problem: ${what}`);
  }
  assert.equal(after.effects, before.effects, `a rejected request asked Temporal for something: ${what}`);
  assert.equal(after.rows, before.rows, `a rejected request left Operation/Vm rows (operations/vms before -> after): ${what}`);
}

function fuzzSuite(kind: DbKind): void {
  describe(`API fuzz on ${kind}`, { concurrency: false }, () => {
    let t: Target;
    const statuses = new Map<number, number>();
    let sent = 0;
    before(async () => {
      t = await startTarget(kind);
    });
    after(async () => {
      console.error(`fuzz ${kind}: seed ${SEED}, ${t.routes.length} routes, ${sent} requests, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
      await t.close();
    });

    it('enumerates every route of the app', () => {
      const urls = new Set(t.routes.map((r) => `${r.method} ${r.url}`));
      for (const r of ['POST /v1/vms', 'GET /v1/vms/:id', 'POST /v1/migrations/:id/cancel', 'PUT /v1/schedules/:name', 'POST /v1/sim/faults', 'GET /healthz']) assert.ok(urls.has(r), r);
      assert.ok(t.routes.length >= 40, `${t.routes.length} routes`);
    });

    it(`≥ ${TOTAL} generated requests: no 5xx, every 4xx names the problem, a rejected request starts nothing`, async () => {
      const perRoute = Math.ceil(TOTAL / t.routes.length);
      const failures: string[] = [];
      // rows are counted once per mutating request: after it, compared with the count after the previous one
      let rows = await rowCounts(t);
      for (const [i, route] of t.routes.entries()) {
        if (ONLY && !ONLY.test(`${route.method} ${route.url}`)) continue;
        // every route runs, so one report lists every failing route (each with its own seed)
        const seed = SEED + i;
        const out = await fc.check(
          fc.asyncProperty(requestArbitrary(route.method, route.url, route.schema, ADMIN), async (req) => {
            const before = { effects: t.temporal.effects(), rows };
            const res = await t.inject(req);
            sent++;
            statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
            // GET and HEAD handlers only read: their rows are not counted (half the fuzz's queries)
            if (req.method !== 'GET' && req.method !== 'HEAD') rows = await rowCounts(t);
            checkAnswer(req, res, before, { effects: t.temporal.effects(), rows });
          }),
          { numRuns: perRoute, seed, endOnFailure: true },
        );
        if (out.failed) {
          const why = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
          failures.push(`${route.method} ${route.url}: ${why}\n  replay: FERRY_FUZZ_SEED=${SEED} (route seed ${seed}, path ${out.counterexamplePath})`);
        }
      }
      assert.deepEqual(failures, [], `fuzz on ${kind} (FERRY_FUZZ_SEED=${SEED}):\n${failures.join('\n')}`);
      if (!ONLY) assert.ok(sent >= TOTAL, `${sent} requests`);
      assert.equal(unhandled, 0, 'unhandled rejections');
    });
  });
}

fuzzSuite('sqlite');
fuzzSuite('postgres');
