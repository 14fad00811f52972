// ferry migrate <vmId> | migrations ls | show | cancel | switchover | set
import { answer } from '../client.js';
import { flag, listCommand, type Command, type Ctx } from '../command.js';
import { intInRange, nonEmpty, oneOf, positive } from '../flags.js';
import { UsageError } from '../errors.js';
import type { paths } from '../generated/api.js';
import { describeMigration, type Migration } from '../migration-view.js';
import { duration, ms, print, str } from '../output.js';
import { watchMigration } from '../watch.js';

type MigrateBody = paths['/v1/vms/{id}/migrations']['post']['requestBody']['content']['application/json'];
type SetBody = NonNullable<paths['/v1/migrations/{id}']['patch']['requestBody']>['content']['application/json'];

const MIGRATION_KINDS = ['live', 'cold', 'storage', 'auto'] as const;

const KNOBS = { bandwidth: 'maxBandwidthMiBps', 'max-downtime': 'maxDowntimeMs' } as const;

/** The bandwidth and downtime knobs migrate and migrations set both take, checked in `order`. */
function knobs(c: Ctx, order: (keyof typeof KNOBS)[]): SetBody {
  const body: SetBody = {};
  for (const f of order) {
    const v = flag(c, f);
    if (v !== undefined) body[KNOBS[f]] = positive(f, v);
  }
  return body;
}

export const migrationCommands: Command[] = [
  {
    words: ['migrate'],
    args: ['vmId'],
    usage:
      'migrate <vmId> [--kind live|cold|storage|auto] [--to HOST] [--datastore DS] [--policy P] [--max-downtime MS] [--bandwidth MiBps] [--approve-switchover] [--force] [--no-start] [--flatten|--keep-chain] [--shutdown-timeout SEC] [--allow-cold] [--watch]',
    summary:
      'move a VM: live (default), cold (stop, copy, start on the target), storage (its disks to --datastore, running) or auto (live when it can, else cold with --allow-cold)',
    options: {
      kind: { type: 'string' },
      to: { type: 'string' },
      datastore: { type: 'string' },
      policy: { type: 'string' },
      'max-downtime': { type: 'string' },
      bandwidth: { type: 'string' },
      'approve-switchover': { type: 'boolean' },
      force: { type: 'boolean' },
      'no-start': { type: 'boolean' },
      flatten: { type: 'boolean' },
      'keep-chain': { type: 'boolean' },
      'shutdown-timeout': { type: 'string' },
      'allow-cold': { type: 'boolean' },
      watch: { type: 'boolean' },
    },
    run: async (c) => {
      const body: MigrateBody = { kind: oneOf('kind', flag(c, 'kind'), MIGRATION_KINDS) ?? 'live' };
      const to = flag(c, 'to');
      const datastore = flag(c, 'datastore');
      const policy = flag(c, 'policy');
      if (to !== undefined) body.targetHostId = nonEmpty('to', to);
      if (datastore !== undefined) body.targetDatastoreId = nonEmpty('datastore', datastore);
      // the API checks the policy name and names the field when it is not one
      if (policy !== undefined) body.policy = nonEmpty('policy', policy) as MigrateBody['policy'];
      Object.assign(body, knobs(c, ['max-downtime', 'bandwidth']));
      if (c.opts['approve-switchover'] === true) body.approveSwitchover = true;
      // cold and auto's knobs; the API refuses each one a kind does not take, naming it
      if (c.opts.force === true) body.force = true;
      if (c.opts['no-start'] === true) body.start = false;
      if (c.opts.flatten === true && c.opts['keep-chain'] === true) throw new UsageError('flags --flatten and --keep-chain exclude each other');
      if (c.opts.flatten === true) body.flatten = true;
      if (c.opts['keep-chain'] === true) body.flatten = false;
      const timeoutSec = intInRange('shutdown-timeout', flag(c, 'shutdown-timeout'), 1, 3600);
      if (timeoutSec !== undefined) body.shutdownTimeoutMs = timeoutSec * 1000;
      if (c.opts['allow-cold'] === true) body.allowCold = true;
      const r = await answer(c.api.client.POST('/v1/vms/{id}/migrations', { params: { path: { id: c.args[0]! } }, body }));
      const id = str(r.migrationId);
      const what = `${str(r.kind)} migration ${id} of vm ${str(r.vmId)}`;
      const auto = (r as { auto?: { chose?: string; reason?: string } }).auto;
      const why = auto?.reason ? ` (auto: ${auto.reason})` : '';
      if (c.opts.watch !== true) {
        return print(c, r, () => `${what} started${why} (workflow ${str(r.workflowId)})\n  follow it: ferry migrations show ${id} --watch`);
      }
      if (!c.json) c.out(`${what} started${why}`);
      return watchMigration(c, id);
    },
  },
  listCommand('migrations', 'list migrations, newest first', '/v1/migrations', ['ID', 'VM', 'KIND', 'STATE', 'STAGE', 'FROM', 'TO', 'DOWNTIME', 'DURATION', 'STARTED'], (item) => {
    const m = item as Migration;
    return [
      str(m.id),
      str(m.vmId),
      str(m.kind),
      str(m.state),
      str(m.stage),
      str(m.sourceHostId),
      str(m.targetHostId),
      ms(m.downtimeMs),
      duration(m.durationMs),
      str(m.startedAt),
    ];
  }),
  {
    words: ['migrations', 'show'],
    args: ['id'],
    usage: 'migrations show <id> [--watch]',
    summary: 'show a migration (--watch: follow it until it ends)',
    options: { watch: { type: 'boolean' } },
    run: async (c) => {
      if (c.opts.watch === true) return watchMigration(c, c.args[0]!);
      return print(c, (await answer(c.api.client.GET('/v1/migrations/{id}', { params: { path: { id: c.args[0]! } } }))) as Migration, describeMigration);
    },
  },
  {
    words: ['migrations', 'cancel'],
    args: ['id'],
    usage: 'migrations cancel <id>',
    summary: 'cancel (roll back) a running migration; refused after commitment',
    run: async (c) => {
      const r = await answer(c.api.client.POST('/v1/migrations/{id}/cancel', { params: { path: { id: c.args[0]! } }, body: {} }));
      return print(c, r, () => `migration ${str(r.migrationId)}: cancel requested (it rolls back)`);
    },
  },
  {
    words: ['migrations', 'switchover'],
    args: ['id'],
    usage: 'migrations switchover <id>',
    summary: 'force the switchover now, or approve a held one',
    run: async (c) => {
      const m = (await answer(c.api.client.POST('/v1/migrations/{id}/switchover', { params: { path: { id: c.args[0]! } } }))) as Migration;
      return print(c, m, () => `migration ${str(m.id)}: switchover requested (stage ${str(m.stage)})`);
    },
  },
  {
    words: ['migrations', 'set'],
    args: ['id'],
    usage: 'migrations set <id> [--bandwidth MiBps] [--max-downtime MS]',
    summary: 'change the bandwidth cap and/or max downtime of a running migration',
    options: { bandwidth: { type: 'string' }, 'max-downtime': { type: 'string' } },
    run: async (c) => {
      const body = knobs(c, ['bandwidth', 'max-downtime']);
      if (Object.keys(body).length === 0) throw new UsageError('migrations set needs --bandwidth and/or --max-downtime');
      const m = (await answer(c.api.client.PATCH('/v1/migrations/{id}', { params: { path: { id: c.args[0]! } }, body }))) as Migration;
      return print(c, m, () => `migration ${str(m.id)}: ${Object.entries(body).map(([k, v]) => `${k}=${v}`).join(', ')} applied`);
    },
  },
];
