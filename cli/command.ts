// What a command is (the table in commands/index.ts is made of these) and what it is handed
// when it runs.
import type { Api, ListItem, ListPath } from './client.js';
import type { Values } from './flags.js';
import { printTable } from './output.js';

export interface CliIo {
  env: Record<string, string | undefined>;
  stdout: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(s: string): unknown };
  fetch?: typeof fetch;
  /** base for relative paths (data dir, --user-data); default process.cwd() */
  cwd?: string;
  /** wait between --watch polls (tests shorten it); default a real timer */
  sleep?: (ms: number) => Promise<void>;
}

export type OptSpec = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };

export interface Ctx {
  api: Api;
  args: string[];
  opts: Values;
  json: boolean;
  io: CliIo;
  out: (line?: string) => void;
  cwd: string;
}

export interface Command {
  words: string[];
  /** positional argument names, in order (all required) */
  args: string[];
  usage: string;
  summary: string;
  options?: Record<string, OptSpec>;
  run(ctx: Ctx): Promise<number>;
}

/** A string flag's value, or undefined when it was not given. */
export function flag(c: Ctx, name: string): string | undefined {
  return c.opts[name] as string | undefined;
}

/** `<group> ls`: every item of a paginated list, as a table (or --json). */
export function listCommand<P extends ListPath>(group: string, summary: string, path: P, head: string[], row: (item: ListItem<P>) => string[]): Command {
  return {
    words: [group, 'ls'],
    args: [],
    usage: `${group} ls`,
    summary,
    run: async (c) => printTable(c, await c.api.list(path), head, row),
  };
}
