// ferry evacuate <hostId> | evacuations ls | show | pause | resume | cancel | plans ls | show | approve
import { answer } from '../client.js';
import { flag, type Command } from '../command.js';
import { UsageError } from '../errors.js';
import { intInRange, nonEmpty } from '../flags.js';
import { fleetText, planText, printFleetList, secs, storedPlanText, type Fleet, type PlanView, type StoredPlan } from '../fleet-view.js';
import { getEvacuation, getRebalance, startedOrWatch, watchFleet } from '../fleet-watch.js';
import type { paths } from '../generated/api.js';
import { print, printTable, str } from '../output.js';

type EvacuateBody = NonNullable<paths['/v1/hosts/{id}/evacuate']['post']['requestBody']['content']['application/json']>;

const evacuate: Command = {
  words: ['evacuate'],
  args: ['hostId'],
  usage: 'evacuate <hostId> [--dry-run] [--max-parallel N] [--allow-cold] [--include-stopped] [--policy P] [--watch]',
  summary: 'move every VM off a host (--dry-run: the plan, stored for `plans approve`; --watch: exit 3 if a VM stayed)',
  options: {
    'dry-run': { type: 'boolean' },
    'max-parallel': { type: 'string' },
    'allow-cold': { type: 'boolean' },
    'include-stopped': { type: 'boolean' },
    policy: { type: 'string' },
    watch: { type: 'boolean' },
  },
  run: async (c) => {
    const dryRun = c.opts['dry-run'] === true;
    if (dryRun && c.opts.watch === true) throw new UsageError('evacuate: --watch follows a started evacuation; a --dry-run starts none (approve the plan with --watch)');
    const body: EvacuateBody = {};
    if (dryRun) body.dryRun = true;
    const maxParallel = intInRange('max-parallel', flag(c, 'max-parallel'), 1, 100);
    if (maxParallel !== undefined) body.maxParallel = maxParallel;
    if (c.opts['allow-cold'] === true) body.allowCold = true;
    if (c.opts['include-stopped'] === true) body.includeStopped = true;
    // the API checks the policy name and names the field when it is not one
    const policy = flag(c, 'policy');
    if (policy !== undefined) body.policy = nonEmpty('policy', policy) as EvacuateBody['policy'];
    const r = await answer(c.api.client.POST('/v1/hosts/{id}/evacuate', { params: { path: { id: c.args[0]! } }, body }));
    if (dryRun) return print(c, r as PlanView, (p) => planText(p, { approve: true }));
    const id = str(r.evacuationId);
    return startedOrWatch(c, r, `evacuation of ${c.args[0]!}`, id, c.opts.watch === true ? getEvacuation(c.api, id) : undefined, `ferry evacuations show ${id} --watch`);
  },
};

const evacuations: Command[] = [
  {
    words: ['evacuations', 'ls'],
    args: [],
    usage: 'evacuations ls [--host H]',
    summary: 'list evacuations, newest first',
    options: { host: { type: 'string' } },
    run: async (c) => {
      const host = flag(c, 'host');
      const items = (await c.api.list('/v1/evacuations', host !== undefined ? { hostId: nonEmpty('host', host) } : {})) as Fleet[];
      return printFleetList(c, items, 'HOST');
    },
  },
  {
    words: ['evacuations', 'show'],
    args: ['id'],
    usage: 'evacuations show <id> [--watch]',
    summary: 'an evacuation with one row per VM (--watch: follow it; exit 3 if a VM stayed)',
    options: { watch: { type: 'boolean' } },
    run: async (c) => {
      const get = getEvacuation(c.api, c.args[0]!);
      return c.opts.watch === true ? watchFleet(c, get, c.args[0]) : print(c, await get(), fleetText);
    },
  },
  ...(['pause', 'resume'] as const).map(
    (action): Command => ({
      words: ['evacuations', action],
      args: ['id'],
      usage: `evacuations ${action} <id>`,
      summary: action === 'pause' ? 'start no new moves (running ones finish)' : 'start moves again',
      run: async (c) => {
        const r = await answer(c.api.client.POST(`/v1/evacuations/{id}/${action}`, { params: { path: { id: c.args[0]! } } }));
        return print(c, r, () => `evacuation ${str(r.evacuationId)}: ${action} requested`);
      },
    }),
  ),
  {
    words: ['evacuations', 'cancel'],
    args: ['id'],
    usage: 'evacuations cancel <id> [--abort-running] [--reason R]',
    summary: 'start no new moves (--abort-running: also roll back moves before their commitment)',
    options: { 'abort-running': { type: 'boolean' }, reason: { type: 'string' } },
    run: async (c) => {
      const reason = flag(c, 'reason');
      const body = { ...(c.opts['abort-running'] === true ? { abortRunning: true } : {}), ...(reason !== undefined ? { reason: nonEmpty('reason', reason) } : {}) };
      const r = await answer(c.api.client.POST('/v1/evacuations/{id}/cancel', { params: { path: { id: c.args[0]! } }, body }));
      return print(c, r, () => `evacuation ${str(r.evacuationId)}: cancel requested${body.abortRunning ? ' (running moves roll back where they can)' : ''}`);
    },
  },
];

const plans: Command[] = [
  {
    words: ['plans', 'ls'],
    args: [],
    usage: 'plans ls',
    summary: 'list stored dry-run plans, newest first',
    run: async (c) =>
      printTable(c, (await c.api.list('/v1/plans')) as StoredPlan[], ['ID', 'KIND', 'SUBJECT', 'STATE', 'MOVES', 'STAY', 'MAKESPAN s', 'CREATED'], (p) => [
        str(p.id),
        str(p.kind),
        str(p.subject),
        str(p.state),
        str(p.plan?.moves?.length),
        str(p.plan?.left?.length),
        secs(p.plan?.makespanMs),
        str(p.createdAt),
      ]),
  },
  {
    words: ['plans', 'show'],
    args: ['id'],
    usage: 'plans show <id>',
    summary: 'a stored plan: its moves, predicted makespan, the VMs that stay',
    run: async (c) => print(c, (await answer(c.api.client.GET('/v1/plans/{id}', { params: { path: { id: c.args[0]! } } }))) as StoredPlan, storedPlanText),
  },
  {
    words: ['plans', 'approve'],
    args: ['id'],
    usage: 'plans approve <id> [--watch]',
    summary: 'execute exactly a stored plan (refused when the inventory changed since; --watch: exit 3 if a VM stayed)',
    options: { watch: { type: 'boolean' } },
    run: async (c) => {
      const r = await answer(c.api.client.POST('/v1/plans/{id}/approve', { params: { path: { id: c.args[0]! } } }));
      const id = str(r.workflowId);
      const evac = r.kind === 'evacuation';
      const watch = c.opts.watch === true ? (evac ? getEvacuation(c.api, id) : getRebalance(c.api, id)) : undefined;
      return startedOrWatch(c, r, `plan ${str(r.planId)} approved: ${str(r.kind)}`, id, watch, `ferry ${evac ? 'evacuations' : 'rebalances'} show ${id} --watch`);
    },
  },
];

export const fleetCommands: Command[] = [evacuate, ...evacuations, ...plans];
