// ferry drift ls | show | resolve | reconcile
import { answer } from '../client.js';
import { flag, type Command } from '../command.js';
import { UsageError } from '../errors.js';
import { nonEmpty, oneOf } from '../flags.js';
import type { paths } from '../generated/api.js';
import { get, keyValues, print, printTable, str } from '../output.js';
import { startedText } from '../fleet-watch.js';

type DriftQuery = NonNullable<paths['/v1/drift']['get']['parameters']['query']>;
type Action = paths['/v1/drift/{id}/resolve']['post']['requestBody']['content']['application/json']['action'];

const STATES: readonly NonNullable<DriftQuery['state']>[] = ['open', 'resolved'];
const ACTIONS: readonly Action[] = ['adopt', 'forget', 'fix-state'];

export const driftCommands: Command[] = [
  {
    words: ['drift', 'ls'],
    args: [],
    usage: 'drift ls [--state open|resolved] [--kind K] [--vm V] [--host H]',
    summary: 'drift found by reconcile, newest first',
    options: { state: { type: 'string' }, kind: { type: 'string' }, vm: { type: 'string' }, host: { type: 'string' } },
    run: async (c) => {
      const state = oneOf('state', flag(c, 'state'), STATES);
      const kind = flag(c, 'kind');
      const vm = flag(c, 'vm');
      const host = flag(c, 'host');
      const items = await c.api.list('/v1/drift', {
        ...(state !== undefined ? { state } : {}),
        // the API checks the kind against its list and names the parameter when it is not one
        ...(kind !== undefined ? { kind: nonEmpty('kind', kind) as DriftQuery['kind'] } : {}),
        ...(vm !== undefined ? { vmId: nonEmpty('vm', vm) } : {}),
        ...(host !== undefined ? { hostId: nonEmpty('host', host) } : {}),
      });
      return printTable(c, items, ['ID', 'KIND', 'VM', 'HOST', 'STATE', 'EXPECTED', 'OBSERVED', 'DETECTED', 'RESOLUTION'], (d) => [
        str(d.id),
        str(d.kind),
        str(d.vmId),
        str(d.hostId),
        str(d.state),
        str(d.expected),
        str(d.observed),
        str(d.detectedAt),
        str(d.resolution),
      ]);
    },
  },
  {
    words: ['drift', 'show'],
    args: ['id'],
    usage: 'drift show <id>',
    summary: 'one drift record',
    run: async (c) => print(c, await answer(c.api.client.GET('/v1/drift/{id}', { params: { path: { id: c.args[0]! } } })), keyValues),
  },
  {
    words: ['drift', 'resolve'],
    args: ['id'],
    usage: 'drift resolve <id> --action adopt|forget|fix-state',
    summary: 'resolve in inventory: adopt an unknown VM, forget a missing one, fix a state or host',
    options: { action: { type: 'string' } },
    run: async (c) => {
      const action = oneOf('action', flag(c, 'action'), ACTIONS);
      if (action === undefined) throw new UsageError(`drift resolve: flag --action is required (one of ${ACTIONS.join(', ')})`);
      const r = await answer(c.api.client.POST('/v1/drift/{id}/resolve', { params: { path: { id: c.args[0]! } }, body: { action } }));
      return print(c, r, () => `drift ${str(get(r, 'drift.id'))} resolved: ${action} (vm ${str(get(r, 'vm.id'))}, operation ${str(r.operationId)})`);
    },
  },
  {
    words: ['reconcile'],
    args: [],
    usage: 'reconcile',
    summary: 'compare inventory with what the hosts report now (findings: `drift ls`)',
    run: async (c) => {
      const r = await answer(c.api.client.POST('/v1/reconcile', { body: {} }));
      return print(c, r, () => startedText('reconcile', r, r.reconcileId, 'ferry drift ls --state open'));
    },
  },
];
