// ferry hosts ls | hosts maintenance <id> on|off (evacuate: commands/fleet.ts)
import { answer } from '../client.js';
import { listCommand, type Command } from '../command.js';
import { UsageError } from '../errors.js';
import { get, print, str } from '../output.js';

export const hostCommands: Command[] = [
  listCommand('hosts', 'list hosts with capacity and usage', '/v1/hosts', ['ID', 'NAME', 'STATE', 'MAINT', 'VMS', 'CPUS USED/ALLOC', 'MEMORY MiB USED/ALLOC'], (h) => [
    str(h.id),
    str(h.name),
    str(h.state),
    h.maintenance ? 'yes' : 'no',
    str(get(h, 'usage.vms')),
    `${str(get(h, 'usage.cpus'))}/${str(get(h, 'allocatable.cpus'))}`,
    `${str(get(h, 'usage.memoryMiB'))}/${str(get(h, 'allocatable.memoryMiB'))}`,
  ]),
  {
    words: ['hosts', 'maintenance'],
    args: ['id', 'on|off'],
    usage: 'hosts maintenance <id> on|off',
    summary: 'enter or leave maintenance (no new placements while on; admin token)',
    run: async (c) => {
      const [id, mode] = c.args as [string, string];
      if (mode !== 'on' && mode !== 'off') throw new UsageError(`the second argument of hosts maintenance must be on or off, got ${JSON.stringify(mode)}`);
      const h = await answer(c.api.client.POST('/v1/hosts/{id}/maintenance', { params: { path: { id } }, body: { enabled: mode === 'on' } }));
      return print(c, h, () => `host ${str(h.id)}: maintenance ${h.maintenance ? 'on' : 'off'}`);
    },
  },
];
