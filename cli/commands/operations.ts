// ferry operations show <id>
import { answer } from '../client.js';
import type { Command } from '../command.js';
import { keyValues, print } from '../output.js';

export const operationCommands: Command[] = [
  {
    words: ['operations', 'show'],
    args: ['id'],
    usage: 'operations show <id>',
    summary: 'show an operation by its id, run id or workflow id',
    run: async (c) => print(c, await answer(c.api.client.GET('/v1/operations/{id}', { params: { path: { id: c.args[0]! } } })), keyValues),
  },
];
