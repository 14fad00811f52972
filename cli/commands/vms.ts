// ferry vms ls | show | create | start | stop | reboot | delete
import { answer, type Api } from '../client.js';
import { flag, type Command } from '../command.js';
import { nonEmpty } from '../flags.js';
import { keyValues, print, printTable, str } from '../output.js';
import type { paths } from '../generated/api.js';
import { vmCreateBody } from './vm-create.js';

type VmState = NonNullable<paths['/v1/vms']['get']['parameters']['query']>['state'];
type Action = 'start' | 'stop' | 'reboot' | 'delete';

const ACTION_SUMMARY: Record<Action, string> = {
  start: 'start a stopped VM',
  stop: 'stop a VM (graceful; --force powers off after the timeout)',
  reboot: 'reboot a running VM',
  delete: 'delete a VM (stops it first; --force powers off after the timeout)',
};

/** Starts the VmLifecycle workflow for `action`; --force only for stop and delete. */
function lifecycle(api: Api, action: Action, id: string, force: boolean) {
  const params = { path: { id } };
  if (action === 'delete') return answer(api.client.DELETE('/v1/vms/{id}', { params: { ...params, query: force ? { force: 'true' } : undefined } }));
  if (action === 'stop') return answer(api.client.POST('/v1/vms/{id}/stop', { params, body: force ? { force: true } : {} }));
  return answer(api.client.POST(action === 'start' ? '/v1/vms/{id}/start' : '/v1/vms/{id}/reboot', { params }));
}

export const vmCommands: Command[] = [
  {
    words: ['vms', 'ls'],
    args: [],
    usage: 'vms ls [--state S] [--host H]',
    summary: 'list VMs',
    options: { state: { type: 'string' }, host: { type: 'string' } },
    run: async (c) => {
      const state = flag(c, 'state');
      const host = flag(c, 'host');
      const items = await c.api.list('/v1/vms', {
        // the API checks the state against its list and names the parameter when it is not one
        ...(state !== undefined ? { state: nonEmpty('state', state) as VmState } : {}),
        ...(host !== undefined ? { hostId: nonEmpty('host', host) } : {}),
      });
      return printTable(c, items, ['ID', 'NAME', 'STATE', 'HOST', 'IP', 'CPUS', 'MEMORY MiB', 'DISK GiB'], (v) => [
        str(v.id),
        str(v.name),
        str(v.state),
        str(v.hostId),
        str(v.ip),
        str(v.cpus),
        str(v.memoryMiB),
        str(v.diskGiB),
      ]);
    },
  },
  {
    words: ['vms', 'show'],
    args: ['id'],
    usage: 'vms show <id>',
    summary: 'show one VM (id or name)',
    run: async (c) => print(c, await answer(c.api.client.GET('/v1/vms/{id}', { params: { path: { id: c.args[0]! } } })), keyValues),
  },
  {
    words: ['vms', 'create'],
    args: ['name'],
    usage:
      'vms create <name> --cpus N --memory MiB --disk GiB (--template T | --clone VM | --import PATH --format F | --iso PATH) [--network N] [--host H] [--user-data FILE] [--ssh-key KEY ...] [--tag T ...]',
    summary: 'provision a VM (ProvisionVm workflow)',
    options: {
      cpus: { type: 'string' },
      memory: { type: 'string' },
      disk: { type: 'string' },
      template: { type: 'string' },
      clone: { type: 'string' },
      import: { type: 'string' },
      format: { type: 'string' },
      iso: { type: 'string' },
      network: { type: 'string' },
      host: { type: 'string' },
      'user-data': { type: 'string' },
      'ssh-key': { type: 'string', multiple: true },
      tag: { type: 'string', multiple: true },
    },
    run: async (c) => {
      const body = vmCreateBody(c.args[0]!, c.opts, c.cwd);
      const r = await answer(c.api.client.POST('/v1/vms', { body }));
      return print(c, r, () => [`vm ${str(r.vmId)} provisioning (workflow ${str(r.workflowId)})`, ...(r.webUiUrl ? [`  ${str(r.webUiUrl)}`] : [])].join('\n'));
    },
  },
  ...(['start', 'stop', 'reboot', 'delete'] as const).map(
    (action): Command => ({
      words: ['vms', action],
      args: ['id'],
      usage: `vms ${action} <id>${action === 'stop' || action === 'delete' ? ' [--force]' : ''}`,
      summary: ACTION_SUMMARY[action],
      options: action === 'stop' || action === 'delete' ? { force: { type: 'boolean' } } : {},
      run: async (c) => {
        const r = await lifecycle(c.api, action, c.args[0]!, c.opts.force === true);
        return print(c, r, () => `vm ${str(r.vmId)}: ${action} started (workflow ${str(r.workflowId)})`);
      },
    }),
  ),
];
