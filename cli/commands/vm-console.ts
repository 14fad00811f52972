// ferry vms console <vm> [--tail N] [--follow]: the guest's serial console from the host that runs
// it now (GET /v1/vms/{id}/console). --follow polls once a second and prints what the guest wrote
// since, and says when the console moved to another host (a live migration's switchover) or
// began again (the VM's process restarted).
import { answer } from '../client.js';
import { flag, type Command, type Ctx } from '../command.js';
import { intInRange } from '../flags.js';
import { printJson } from '../output.js';
import { CONSOLE_TAIL_DEFAULT, CONSOLE_TAIL_MAX } from '../../domain/console.js';

async function read(c: Ctx, id: string, tail: number) {
  return answer(c.api.client.GET('/v1/vms/{id}/console', { params: { path: { id }, query: { tail } } }));
}

export const vmConsoleCommands: Command[] = [
  {
    words: ['vms', 'console'],
    args: ['id'],
    usage: 'vms console <id> [--tail N] [--follow]',
    summary: "the guest's serial console, from the host that runs it now (--follow: keep printing, Ctrl-C stops)",
    options: { tail: { type: 'string' }, follow: { type: 'boolean' } },
    run: async (c) => {
      const id = c.args[0]!;
      const tail = intInRange('tail', flag(c, 'tail'), 1, CONSOLE_TAIL_MAX) ?? CONSOLE_TAIL_DEFAULT;
      let last = await read(c, id, tail);
      if (c.json && !c.opts.follow) return printJson(c, last);
      if (!c.opts.follow) {
        for (const l of last.lines) c.out(l);
        return 0;
      }
      const sleep = c.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
      // Following, what is printed is the log's lines joined by newlines: the newline after the
      // last line comes with what the guest writes next (the API's lines drop a log's final
      // newline, its size counts it), and the bytes that grew are the end of the joined lines.
      // A guest may write half a line; a marker line first ends it.
      let atLineStart = true;
      const write = (s: string) => {
        if (!s) return;
        c.io.stdout.write(s);
        atLineStart = s.endsWith('\n');
      };
      write(last.lines.join('\n'));
      for (;;) {
        await sleep(1000);
        const now = await read(c, id, tail);
        if (now.hostId !== last.hostId) {
          write(`${atLineStart ? '' : '\n'}--- ${id}: console now on ${now.hostId} (was ${last.hostId}) ---\n`);
          write(now.lines.join('\n'));
        } else if (now.size < last.size) {
          // the log began again (QEMU truncates it when the VM's process starts again): a marker, then all of it
          write(`${atLineStart ? '' : '\n'}--- ${id}: console restarted on ${now.hostId} ---\n`);
          write(now.lines.join('\n'));
        } else if (now.size > last.size) {
          const text = Buffer.from(now.lines.join('\n'));
          const grown = now.size - last.size;
          // more grew than the tail holds: a newline ends what was printed, then the whole tail
          write(grown <= text.length ? text.subarray(text.length - grown).toString() : `${atLineStart ? '' : '\n'}${text.toString()}`);
        }
        last = now;
      }
    },
  },
];
