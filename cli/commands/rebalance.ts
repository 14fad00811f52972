// ferry rebalance | rebalances ls | show | schedules ls | show | set | delete
import { answer } from '../client.js';
import { flag, type Command, type Ctx } from '../command.js';
import { UsageError } from '../errors.js';
import { intInRange, nonEmpty, positive } from '../flags.js';
import { fleetText, planText, printFleetList, type Fleet, type PlanView } from '../fleet-view.js';
import { getRebalance, startedOrWatch, watchFleet } from '../fleet-watch.js';
import type { paths } from '../generated/api.js';
import { keyValues, list, print, printTable, str } from '../output.js';

type RebalanceBody = NonNullable<paths['/v1/rebalance']['post']['requestBody']['content']['application/json']>;
type ScheduleBody = paths['/v1/schedules/{name}']['put']['requestBody']['content']['application/json'];
type ScheduleName = paths['/v1/schedules/{name}']['put']['parameters']['path']['name'];
type Level = NonNullable<RebalanceBody['level']>;

const SCHEDULES: readonly ScheduleName[] = ['rebalance', 'reconcile'];


const level = (c: Ctx) => intInRange('level', flag(c, 'level'), 1, 5) as Level | undefined;
const maxMoves = (c: Ctx) => intInRange('max-moves', flag(c, 'max-moves'), 1, 1000);

function scheduleName(cmd: string, name: string): ScheduleName {
  if (!(SCHEDULES as readonly string[]).includes(name)) throw new UsageError(`${cmd}: <name> must be one of ${SCHEDULES.join(', ')}, got ${JSON.stringify(name)}`);
  return name as ScheduleName;
}

const imbalance = (v: unknown) => (typeof v === 'number' ? v.toFixed(3) : '-');

interface Schedule {
  name?: string;
  cron?: string | null;
  paused?: boolean;
  level?: number | null;
  maxMoves?: number | null;
  dryRun?: boolean;
  nextActionTimes?: string[];
  numActionsTaken?: number;
  numActionsSkippedOverlap?: number;
}

export const rebalanceCommands: Command[] = [
  {
    words: ['rebalance'],
    args: [],
    usage: 'rebalance [--dry-run] [--level 1-5] [--max-moves N] [--max-parallel N] [--cooldown MIN] [--watch]',
    summary: 'balance load across hosts (--dry-run: the plan and imbalance before/after, stored for `plans approve`; --watch: exit 3 if a VM stayed)',
    options: {
      'dry-run': { type: 'boolean' },
      level: { type: 'string' },
      'max-moves': { type: 'string' },
      'max-parallel': { type: 'string' },
      cooldown: { type: 'string' },
      watch: { type: 'boolean' },
    },
    run: async (c) => {
      const dryRun = c.opts['dry-run'] === true;
      if (dryRun && c.opts.watch === true) throw new UsageError('rebalance: --watch follows a started rebalance; a --dry-run starts none (approve the plan with --watch)');
      const body: RebalanceBody = {};
      if (dryRun) body.dryRun = true;
      const lvl = level(c);
      const moves = maxMoves(c);
      const parallel = intInRange('max-parallel', flag(c, 'max-parallel'), 1, 100);
      const cooldown = flag(c, 'cooldown');
      if (lvl !== undefined) body.level = lvl;
      if (moves !== undefined) body.maxMoves = moves;
      if (parallel !== undefined) body.maxParallel = parallel;
      if (cooldown !== undefined) body.cooldownMinutes = cooldown === '0' ? 0 : positive('cooldown', cooldown);
      const r = await answer(c.api.client.POST('/v1/rebalance', { body }));
      if (dryRun) return print(c, r as PlanView, (p) => planText(p, { approve: true }));
      const id = str(r.rebalanceId);
      return startedOrWatch(c, r, 'rebalance', id, c.opts.watch === true ? getRebalance(c.api, id) : undefined, `ferry rebalances show ${id} --watch`);
    },
  },
  {
    words: ['rebalances', 'ls'],
    args: [],
    usage: 'rebalances ls',
    summary: 'list rebalance runs, newest first',
    run: async (c) => printFleetList(c, (await c.api.list('/v1/rebalances')) as Fleet[]),
  },
  {
    words: ['rebalances', 'show'],
    args: ['id'],
    usage: 'rebalances show <id> [--watch]',
    summary: 'a rebalance run with one row per VM (--watch: follow it; exit 3 if a VM stayed)',
    options: { watch: { type: 'boolean' } },
    run: async (c) => {
      const get = getRebalance(c.api, c.args[0]!);
      if (c.opts.watch === true) return watchFleet(c, get, c.args[0]);
      return print(c, await get(), (r) => `${fleetText(r)}\n\nimbalance: ${imbalance(r.imbalanceBefore)} before, ${imbalance(r.imbalanceAfter)} after`);
    },
  },
  {
    words: ['schedules', 'ls'],
    args: [],
    usage: 'schedules ls',
    summary: 'the rebalance and reconcile schedules (Temporal Schedules, overlap skip)',
    run: async (c) =>
      printTable(c, (await c.api.list('/v1/schedules')) as Schedule[], ['NAME', 'CRON', 'PAUSED', 'LEVEL', 'MAX MOVES', 'DRY RUN', 'RUNS', 'SKIPPED', 'NEXT'], (s) => [
        str(s.name),
        str(s.cron),
        s.paused ? 'yes' : 'no',
        str(s.level),
        str(s.maxMoves),
        s.dryRun ? 'yes' : 'no',
        str(s.numActionsTaken),
        str(s.numActionsSkippedOverlap),
        str(s.nextActionTimes?.[0]),
      ]),
  },
  {
    words: ['schedules', 'show'],
    args: ['name'],
    usage: 'schedules show rebalance|reconcile',
    summary: 'one schedule: its cron, state, next and recent runs',
    run: async (c) => {
      const name = scheduleName('schedules show', c.args[0]!);
      return print(c, await answer(c.api.client.GET('/v1/schedules/{name}', { params: { path: { name } } })), (s) => keyValues({ ...s, nextActionTimes: list(s.nextActionTimes) }));
    },
  },
  {
    words: ['schedules', 'set'],
    args: ['name'],
    usage: "schedules set rebalance|reconcile --cron '<expr>' [--paused] [--level N] [--max-moves N] [--dry-run]",
    summary: "create or update a schedule (--cron: 5 fields or '@every 10m'; --level, --max-moves, --dry-run: rebalance only)",
    options: { cron: { type: 'string' }, paused: { type: 'boolean' }, level: { type: 'string' }, 'max-moves': { type: 'string' }, 'dry-run': { type: 'boolean' } },
    run: async (c) => {
      const name = scheduleName('schedules set', c.args[0]!);
      const cron = flag(c, 'cron');
      if (cron === undefined) throw new UsageError("schedules set: flag --cron is required (a 5-field cron expression or '@every 10m')");
      const body: ScheduleBody = { cron: nonEmpty('cron', cron) };
      if (c.opts.paused === true) body.paused = true;
      const lvl = level(c);
      const moves = maxMoves(c);
      if (lvl !== undefined) body.level = lvl;
      if (moves !== undefined) body.maxMoves = moves;
      if (c.opts['dry-run'] === true) body.dryRun = true;
      if (name === 'reconcile') {
        const only = (['level', 'max-moves', 'dry-run'] as const).find((f) => c.opts[f] !== undefined);
        if (only) throw new UsageError(`schedules set reconcile: flag --${only} applies to the rebalance schedule only`);
      }
      const { data, response } = await c.api.client.PUT('/v1/schedules/{name}', { params: { path: { name } }, body });
      const s = (data ?? {}) as Schedule;
      return print(c, s, () => `schedule ${name} ${response.status === 201 ? 'created' : 'updated'}: ${str(s.cron)}${s.paused ? ' (paused)' : ''}, next ${str(s.nextActionTimes?.[0])}`);
    },
  },
  {
    words: ['schedules', 'delete'],
    args: ['name'],
    usage: 'schedules delete rebalance|reconcile',
    summary: 'delete a schedule (workflows it started go on)',
    run: async (c) => {
      const name = scheduleName('schedules delete', c.args[0]!);
      await c.api.client.DELETE('/v1/schedules/{name}', { params: { path: { name } } });
      return print(c, { name, deleted: true }, () => `schedule ${name} deleted`);
    },
  },
];
