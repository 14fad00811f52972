// The command line: global flags, the command words, then the command's flags and arguments,
// parsed strictly with node:util parseArgs. Every problem is a UsageError of one line naming the
// flag or argument (exit 2, nothing sent). A small hand parser rather than commander: see
// cli/README.md for why.
import { parseArgs } from 'node:util';
import type { Command, OptSpec } from './command.js';
import type { Values } from './flags.js';
import { COMMANDS, GROUPS } from './commands/index.js';
import { UsageError } from './errors.js';
import { commandHelp, groupHelp, mainHelp } from './help.js';

const GLOBAL_OPTIONS: Record<string, OptSpec> = {
  api: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

export type Parsed = { kind: 'help'; text: string } | { kind: 'run'; cmd: Command; opts: Values; args: string[] };

/** Finds the command words (after any global flags), then parses the rest strictly. */
export function parseCommandLine(argv: string[]): Parsed {
  let i = 0;
  const pre: string[] = [];
  while (i < argv.length) {
    const t = argv[i]!;
    if (t === '--api' || t === '--token') {
      pre.push(t, ...(i + 1 < argv.length ? [argv[i + 1]!] : []));
      i += 2;
    } else if (t.startsWith('--api=') || t.startsWith('--token=') || t === '--json' || t === '--help' || t === '-h') {
      pre.push(t);
      i++;
    } else break;
  }
  const group = argv[i];
  const wantsHelp = pre.includes('--help') || pre.includes('-h');
  if (group === undefined || group === 'help') return { kind: 'help', text: mainHelp() };
  if (group.startsWith('-')) throw new UsageError(`unknown flag ${flagName(group)} (see ferry --help)`);
  if (!GROUPS.includes(group)) throw new UsageError(`unknown command ${JSON.stringify(group)}; commands: ${GROUPS.join(', ')} (see ferry --help)`);

  let cmd = COMMANDS.find((c) => c.words.length === 1 && c.words[0] === group);
  let rest: string[];
  if (cmd) {
    rest = argv.slice(i + 1);
  } else {
    const sub = argv[i + 1];
    const subs = COMMANDS.filter((c) => c.words[0] === group);
    if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help' || wantsHelp) {
      if (sub === undefined && !wantsHelp) throw new UsageError(`${group} needs a subcommand: ${subs.map((c) => c.words[1]).join(', ')}`);
      return { kind: 'help', text: groupHelp(group) };
    }
    cmd = subs.find((c) => c.words[1] === sub);
    if (!cmd) throw new UsageError(`unknown command "${group} ${sub}"; ${group} has: ${subs.map((c) => c.words[1]).join(', ')}`);
    rest = argv.slice(i + 2);
  }
  const name = cmd.words.join(' ');

  const options = { ...GLOBAL_OPTIONS, ...(cmd.options ?? {}) };
  let values: Values;
  let positionals: string[];
  try {
    const r = parseArgs({ args: [...pre, ...rest], options, strict: true, allowPositionals: true });
    values = r.values as Values;
    positionals = r.positionals;
  } catch (e) {
    throw new UsageError(parseArgsProblem(e, name, options));
  }
  if (values.help === true) return { kind: 'help', text: commandHelp(cmd) };
  for (const [k, spec] of Object.entries(options)) {
    const v = values[k];
    // parseArgs accepts `--to --watch` as to="--watch"; a value that is a flag is a missing value.
    if (spec.type === 'string' && v !== undefined) {
      for (const x of Array.isArray(v) ? v : [v as string]) {
        if (/^--[a-zA-Z]/.test(x)) throw new UsageError(`flag --${k} needs a value (got the flag ${x})`);
      }
    }
  }
  if (positionals.length < cmd.args.length) {
    throw new UsageError(`${name}: missing <${cmd.args[positionals.length]}> (usage: ferry ${cmd.usage})`);
  }
  if (positionals.length > cmd.args.length) {
    throw new UsageError(`${name}: unexpected argument ${JSON.stringify(positionals[cmd.args.length])} (usage: ferry ${cmd.usage})`);
  }
  for (const [n, p] of positionals.entries()) if (p.trim() === '') throw new UsageError(`${name}: <${cmd.args[n]}> must not be empty`);
  return { kind: 'run', cmd, opts: values, args: positionals };
}

function flagName(token: string): string {
  return token.split('=')[0]!;
}

function parseArgsProblem(e: unknown, name: string, options: Record<string, OptSpec>): string {
  const code = (e as { code?: string }).code;
  const msg = e instanceof Error ? e.message : String(e);
  const flag = /'(-{1,2}[^' ]+)/.exec(msg)?.[1];
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `${name}: unknown flag ${flag ?? msg}; its flags: ${Object.keys(options).map((o) => `--${o}`).join(' ')}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const f = flag?.split(' ')[0] ?? '';
      const spec = options[f.replace(/^-+/, '')];
      return spec?.type === 'boolean' ? `${name}: flag ${f} takes no value` : `${name}: flag ${f || msg} needs a value`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `${name}: unexpected argument (${msg})`;
    default:
      return `${name}: ${msg}`;
  }
}
