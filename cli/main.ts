// ferry's command-line interface: a thin client of the HTTP API (ARCHITECTURE.md section 4).
// The core is `runCli(argv, io)`, callable in-process (tests pass their own stdout/stderr/env/
// fetch); bin/ferry.js runs it with the process's. The commands live in commands/, the parser in
// parse.ts, the typed API client (generated from the API's OpenAPI document) in client.ts.
//
// Exit codes: 0 success; 1 the API refused or failed (its message is printed), or a watched
// migration ended failed / rolled back / cancelled; 2 bad usage (nothing was sent); 3 a watched
// evacuation or rebalance ended with VMs that stayed (cli/fleet-watch.ts).
import { createApi, resolveConnection } from './client.js';
import type { CliIo } from './command.js';
import { ApiError, UsageError } from './errors.js';
import { parseCommandLine } from './parse.js';

export type { CliIo } from './command.js';

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const err = (line: string) => io.stderr.write(`${line}\n`);
  try {
    const parsed = parseCommandLine(argv);
    if (parsed.kind === 'help') {
      io.stdout.write(parsed.text);
      return 0;
    }
    const cwd = io.cwd ?? process.cwd();
    const out = (line = '') => io.stdout.write(`${line}\n`);
    const api = createApi(resolveConnection(parsed.opts, io.env, cwd), io.fetch ?? globalThis.fetch);
    return await parsed.cmd.run({ api, args: parsed.args, opts: parsed.opts, json: parsed.opts.json === true, io, out, cwd });
  } catch (e) {
    if (e instanceof UsageError) {
      err(`ferry: ${e.message}`);
      return 2;
    }
    if (e instanceof ApiError) {
      err(`ferry: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
