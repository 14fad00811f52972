// The help texts: `ferry --help`, `ferry <group> --help`, `ferry <command> --help`.
import { DEFAULT_API_URL } from './client.js';
import type { Command } from './command.js';
import { COMMANDS } from './commands/index.js';

export function mainHelp(): string {
  const label = (c: Command) => [...c.words, ...c.args.map((a) => (a.includes('|') ? a : `<${a}>`))].join(' ');
  const w = Math.max(...COMMANDS.map((c) => label(c).length));
  return [
    'ferry: provision VMs and move them between hosts (a client of the ferry HTTP API)',
    '',
    'usage: ferry [--api URL] [--token T] [--json] <command> [args] [flags]',
    '',
    'commands (`ferry <command> --help` lists its flags):',
    ...COMMANDS.map((c) => `  ${label(c).padEnd(w)}  ${c.summary}`),
    '',
    'global flags:',
    `  --api URL    API address (env FERRY_API_URL, default ${DEFAULT_API_URL})`,
    '  --token T    bearer token (env FERRY_API_TOKEN, else <FERRY_DATA_DIR or ./data>/api-token)',
    '  --json       print the API\'s JSON answers instead of tables',
    '  -h, --help   this help; `ferry <command> --help` for one command',
    '',
    'exit codes: 0 ok, 1 the API refused or a watched migration did not complete, 2 bad usage (nothing sent),',
    '            3 a watched evacuation or rebalance ended with VMs that did not move (failed, left, cancelled)',
    '',
  ].join('\n');
}

export function groupHelp(group: string): string {
  return [`ferry ${group}:`, ...COMMANDS.filter((c) => c.words[0] === group).map((c) => `  ferry ${c.usage}\n      ${c.summary}`), ''].join('\n');
}

export function commandHelp(c: Command): string {
  return `usage: ferry ${c.usage}\n  ${c.summary}\nglobal flags: --api URL, --token T, --json\n`;
}
