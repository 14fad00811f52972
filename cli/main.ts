// ferry's command-line interface: a thin client of the HTTP API (ARCHITECTURE.md section 4).
// Node built-ins only (fetch, util.parseArgs). The core is `runCli(argv, io)`, callable in-process
// (tests pass their own stdout/stderr/env/fetch); bin/ferry.js runs it with the process's.
//
// Exit codes: 0 success; 1 the API refused or failed (its message is printed), or a watched
// migration ended failed / rolled back / cancelled; 2 bad usage (nothing was sent).
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

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

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';
export const WATCH_INTERVAL_MS = 500;
const MiB = 1024 * 1024;

/** Bad usage: printed as one line, exit 2, nothing sent. */
export class UsageError extends Error {}
/** The API answered an error (or could not be reached): printed, exit 1. */
class ApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------- command table
type OptSpec = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };
type Values = Record<string, string | boolean | string[] | undefined>;

interface Ctx {
  api: Api;
  args: string[];
  opts: Values;
  json: boolean;
  io: CliIo;
  out: (line?: string) => void;
  cwd: string;
}

interface Command {
  words: string[];
  /** positional argument names, in order (all required) */
  args: string[];
  usage: string;
  summary: string;
  options?: Record<string, OptSpec>;
  run(ctx: Ctx): Promise<number>;
}

const GLOBAL_OPTIONS: Record<string, OptSpec> = {
  api: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

const COMMANDS: Command[] = [
  {
    words: ['hosts', 'ls'],
    args: [],
    usage: 'hosts ls',
    summary: 'list hosts with capacity and usage',
    run: async (c) => {
      const items = await c.api.list('/v1/hosts');
      if (c.json) return printJson(c, items);
      c.out(
        table(
          ['ID', 'NAME', 'STATE', 'MAINT', 'VMS', 'CPUS USED/ALLOC', 'MEMORY MiB USED/ALLOC'],
          items.map((h) => [
            str(h.id),
            str(h.name),
            str(h.state),
            h.maintenance ? 'yes' : 'no',
            str(get(h, 'usage.vms')),
            `${str(get(h, 'usage.cpus'))}/${str(get(h, 'allocatable.cpus'))}`,
            `${str(get(h, 'usage.memoryMiB'))}/${str(get(h, 'allocatable.memoryMiB'))}`,
          ]),
        ),
      );
      return 0;
    },
  },
  {
    words: ['hosts', 'maintenance'],
    args: ['id', 'on|off'],
    usage: 'hosts maintenance <id> on|off',
    summary: 'enter or leave maintenance (no new placements while on; admin token)',
    run: async (c) => {
      const [id, mode] = c.args as [string, string];
      if (mode !== 'on' && mode !== 'off') throw new UsageError(`the second argument of hosts maintenance must be on or off, got ${JSON.stringify(mode)}`);
      const h = await c.api.request('POST', `/v1/hosts/${enc(id)}/maintenance`, { enabled: mode === 'on' });
      if (c.json) return printJson(c, h);
      c.out(`host ${str(get(h, 'id'))}: maintenance ${get(h, 'maintenance') ? 'on' : 'off'}`);
      return 0;
    },
  },
  {
    words: ['vms', 'ls'],
    args: [],
    usage: 'vms ls [--state S] [--host H]',
    summary: 'list VMs',
    options: { state: { type: 'string' }, host: { type: 'string' } },
    run: async (c) => {
      const q = new URLSearchParams();
      if (c.opts.state !== undefined) q.set('state', nonEmpty('state', c.opts.state as string));
      if (c.opts.host !== undefined) q.set('hostId', nonEmpty('host', c.opts.host as string));
      const items = await c.api.list('/v1/vms', q);
      if (c.json) return printJson(c, items);
      c.out(
        table(
          ['ID', 'NAME', 'STATE', 'HOST', 'IP', 'CPUS', 'MEMORY MiB', 'DISK GiB'],
          items.map((v) => [str(v.id), str(v.name), str(v.state), str(v.hostId), str(v.ip), str(v.cpus), str(v.memoryMiB), str(v.diskGiB)]),
        ),
      );
      return 0;
    },
  },
  {
    words: ['vms', 'show'],
    args: ['id'],
    usage: 'vms show <id>',
    summary: 'show one VM (id or name)',
    run: async (c) => {
      const v = await c.api.request('GET', `/v1/vms/${enc(c.args[0]!)}`);
      if (c.json) return printJson(c, v);
      c.out(keyValues(v as Record<string, unknown>));
      return 0;
    },
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
      const r = await c.api.request('POST', '/v1/vms', body);
      if (c.json) return printJson(c, r);
      c.out(`vm ${str(get(r, 'vmId'))} provisioning (workflow ${str(get(r, 'workflowId'))})`);
      if (get(r, 'webUiUrl')) c.out(`  ${str(get(r, 'webUiUrl'))}`);
      return 0;
    },
  },
  ...(['start', 'stop', 'reboot', 'delete'] as const).map(
    (action): Command => ({
      words: ['vms', action],
      args: ['id'],
      usage: `vms ${action} <id>${action === 'stop' || action === 'delete' ? ' [--force]' : ''}`,
      summary: {
        start: 'start a stopped VM',
        stop: 'stop a VM (graceful; --force powers off after the timeout)',
        reboot: 'reboot a running VM',
        delete: 'delete a VM (stops it first; --force powers off after the timeout)',
      }[action],
      options: action === 'stop' || action === 'delete' ? { force: { type: 'boolean' } } : {},
      run: async (c) => {
        const id = enc(c.args[0]!);
        const force = c.opts.force === true;
        const r =
          action === 'delete'
            ? await c.api.request('DELETE', `/v1/vms/${id}${force ? '?force=true' : ''}`)
            : await c.api.request('POST', `/v1/vms/${id}/${action}`, action === 'stop' ? (force ? { force: true } : {}) : undefined);
        if (c.json) return printJson(c, r);
        c.out(`vm ${str(get(r, 'vmId'))}: ${action} started (workflow ${str(get(r, 'workflowId'))})`);
        return 0;
      },
    }),
  ),
  {
    words: ['migrate'],
    args: ['vmId'],
    usage: 'migrate <vmId> [--to HOST] [--policy P] [--max-downtime MS] [--bandwidth MiBps] [--approve-switchover] [--watch]',
    summary: 'live-migrate a VM (--approve-switchover: hold before switchover until `migrations switchover`)',
    options: {
      to: { type: 'string' },
      policy: { type: 'string' },
      'max-downtime': { type: 'string' },
      bandwidth: { type: 'string' },
      'approve-switchover': { type: 'boolean' },
      watch: { type: 'boolean' },
    },
    run: async (c) => {
      const body: Record<string, unknown> = { kind: 'live' };
      if (c.opts.to !== undefined) body.targetHostId = nonEmpty('to', c.opts.to as string);
      if (c.opts.policy !== undefined) body.policy = nonEmpty('policy', c.opts.policy as string);
      if (c.opts['max-downtime'] !== undefined) body.maxDowntimeMs = positive('max-downtime', c.opts['max-downtime'] as string);
      if (c.opts.bandwidth !== undefined) body.maxBandwidthMiBps = positive('bandwidth', c.opts.bandwidth as string);
      if (c.opts['approve-switchover'] === true) body.approveSwitchover = true;
      const r = await c.api.request('POST', `/v1/vms/${enc(c.args[0]!)}/migrations`, body);
      const id = str(get(r, 'migrationId'));
      if (c.opts.watch !== true) {
        if (c.json) return printJson(c, r);
        c.out(`migration ${id} of vm ${str(get(r, 'vmId'))} started (workflow ${str(get(r, 'workflowId'))})`);
        c.out(`  follow it: ferry migrations show ${id} --watch`);
        return 0;
      }
      if (!c.json) c.out(`migration ${id} of vm ${str(get(r, 'vmId'))} started`);
      return watchMigration(c, id);
    },
  },
  {
    words: ['migrations', 'ls'],
    args: [],
    usage: 'migrations ls',
    summary: 'list migrations, newest first',
    run: async (c) => {
      const items = await c.api.list('/v1/migrations');
      if (c.json) return printJson(c, items);
      c.out(
        table(
          ['ID', 'VM', 'KIND', 'STATE', 'STAGE', 'FROM', 'TO', 'DOWNTIME', 'DURATION', 'STARTED'],
          items.map((m) => [
            str(m.id),
            str(m.vmId),
            str(m.kind),
            str(m.state),
            str(m.stage),
            str(m.sourceHostId),
            str(m.targetHostId),
            typeof m.downtimeMs === 'number' ? `${Math.round(m.downtimeMs)} ms` : '-',
            typeof m.durationMs === 'number' ? fmtDuration(m.durationMs) : '-',
            str(m.startedAt),
          ]),
        ),
      );
      return 0;
    },
  },
  {
    words: ['migrations', 'show'],
    args: ['id'],
    usage: 'migrations show <id> [--watch]',
    summary: 'show a migration (--watch: follow it until it ends)',
    options: { watch: { type: 'boolean' } },
    run: async (c) => {
      if (c.opts.watch === true) return watchMigration(c, c.args[0]!);
      const m = (await c.api.request('GET', `/v1/migrations/${enc(c.args[0]!)}`)) as Migration;
      if (c.json) return printJson(c, m);
      c.out(describeMigration(m));
      return 0;
    },
  },
  {
    words: ['migrations', 'cancel'],
    args: ['id'],
    usage: 'migrations cancel <id>',
    summary: 'cancel (roll back) a running migration; refused after commitment',
    run: async (c) => {
      const r = await c.api.request('POST', `/v1/migrations/${enc(c.args[0]!)}/cancel`, {});
      if (c.json) return printJson(c, r);
      c.out(`migration ${str(get(r, 'migrationId'))}: cancel requested (it rolls back)`);
      return 0;
    },
  },
  {
    words: ['migrations', 'switchover'],
    args: ['id'],
    usage: 'migrations switchover <id>',
    summary: 'force the switchover now, or approve a held one',
    run: async (c) => {
      const m = (await c.api.request('POST', `/v1/migrations/${enc(c.args[0]!)}/switchover`)) as Migration;
      if (c.json) return printJson(c, m);
      c.out(`migration ${str(m.id)}: switchover requested (stage ${str(m.stage)})`);
      return 0;
    },
  },
  {
    words: ['migrations', 'set'],
    args: ['id'],
    usage: 'migrations set <id> [--bandwidth MiBps] [--max-downtime MS]',
    summary: 'change the bandwidth cap and/or max downtime of a running migration',
    options: { bandwidth: { type: 'string' }, 'max-downtime': { type: 'string' } },
    run: async (c) => {
      const body: Record<string, unknown> = {};
      if (c.opts.bandwidth !== undefined) body.maxBandwidthMiBps = positive('bandwidth', c.opts.bandwidth as string);
      if (c.opts['max-downtime'] !== undefined) body.maxDowntimeMs = positive('max-downtime', c.opts['max-downtime'] as string);
      if (Object.keys(body).length === 0) throw new UsageError('migrations set needs --bandwidth and/or --max-downtime');
      const m = (await c.api.request('PATCH', `/v1/migrations/${enc(c.args[0]!)}`, body)) as Migration;
      if (c.json) return printJson(c, m);
      c.out(`migration ${str(m.id)}: ${Object.entries(body).map(([k, v]) => `${k}=${v}`).join(', ')} applied`);
      return 0;
    },
  },
  {
    words: ['templates', 'ls'],
    args: [],
    usage: 'templates ls',
    summary: 'list templates',
    run: async (c) => {
      const items = await c.api.list('/v1/templates');
      if (c.json) return printJson(c, items);
      c.out(
        table(
          ['ID', 'NAME', 'OS', 'DISK GiB', 'MIN MEMORY MiB', 'OWNER', 'TAGS'],
          items.map((t) => [str(t.id), str(t.name), str(t.os), str(t.diskGiB), str(t.minMemoryMiB), str(t.owner), list(t.tags)]),
        ),
      );
      return 0;
    },
  },
  {
    words: ['networks', 'ls'],
    args: [],
    usage: 'networks ls',
    summary: 'list networks and their IP pools',
    run: async (c) => {
      const items = await c.api.list('/v1/networks');
      if (c.json) return printJson(c, items);
      c.out(
        table(
          ['ID', 'NAME', 'VLAN', 'CIDR', 'GATEWAY', 'POOLS'],
          items.map((n) => [
            str(n.id),
            str(n.name),
            str(n.vlan),
            str(n.cidr),
            str(n.gateway),
            Array.isArray(n.pools) ? n.pools.map((p: { start?: unknown; end?: unknown }) => `${str(p.start)}-${str(p.end)}`).join(',') || '-' : '-',
          ]),
        ),
      );
      return 0;
    },
  },
  {
    words: ['operations', 'show'],
    args: ['id'],
    usage: 'operations show <id>',
    summary: 'show an operation by its id, run id or workflow id',
    run: async (c) => {
      const o = await c.api.request('GET', `/v1/operations/${enc(c.args[0]!)}`);
      if (c.json) return printJson(c, o);
      c.out(keyValues(o as Record<string, unknown>));
      return 0;
    },
  },
  {
    words: ['evacuate'],
    args: ['hostId'],
    usage: 'evacuate <hostId> [--dry-run] [--max-parallel N] [--allow-cold]',
    summary: 'move every VM off a host (not implemented by the API yet)',
    options: { 'dry-run': { type: 'boolean' }, 'max-parallel': { type: 'string' }, 'allow-cold': { type: 'boolean' } },
    run: async () => {
      throw new UsageError(
        'evacuate is not implemented yet: the API has no POST /v1/hosts/:id/evacuate. Meanwhile: `ferry hosts maintenance <host> on`, then `ferry migrate <vm>` for each VM of `ferry vms ls --host <host>`',
      );
    },
  },
];

const GROUPS = [...new Set(COMMANDS.map((c) => c.words[0]!))];

// ---------------------------------------------------------------- entry point
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const err = (line: string) => io.stderr.write(`${line}\n`);
  let cmd: Command | undefined;
  let parsed: { opts: Values; args: string[] };
  try {
    const r = parseCommandLine(argv);
    if (r.kind === 'help') {
      io.stdout.write(r.text);
      return 0;
    }
    cmd = r.cmd;
    parsed = r;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`ferry: ${e.message}`);
      return 2;
    }
    throw e;
  }

  const cwd = io.cwd ?? process.cwd();
  const out = (line = '') => io.stdout.write(`${line}\n`);
  try {
    const api = new Api(resolveConnection(parsed.opts, io.env, cwd), io.fetch ?? globalThis.fetch);
    return await cmd.run({ api, args: parsed.args, opts: parsed.opts, json: parsed.opts.json === true, io, out, cwd });
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

type Parsed = { kind: 'help'; text: string } | { kind: 'run'; cmd: Command; opts: Values; args: string[] };

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

// ---------------------------------------------------------------- flag values
function nonEmpty(flag: string, v: string): string {
  if (v.trim() === '') throw new UsageError(`flag --${flag} must not be empty`);
  return v;
}

function positiveInt(flag: string, v: string | undefined): number {
  if (v === undefined) throw new UsageError(`flag --${flag} is required`);
  if (!/^[0-9]+$/.test(v) || Number(v) < 1) throw new UsageError(`flag --${flag} must be a positive whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`flag --${flag} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

const FORMATS = ['vmdk', 'vhdx', 'raw', 'qcow2'];
const SSH_KEY = /^(ssh|ecdsa|sk)-\S+ \S+/;

/** The POST /v1/vms body from `vms create` flags; every problem a UsageError naming its flag. */
export function vmCreateBody(name: string, o: Values, cwd: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    name,
    cpus: positiveInt('cpus', o.cpus as string | undefined),
    memoryMiB: positiveInt('memory', o.memory as string | undefined),
    diskGiB: positiveInt('disk', o.disk as string | undefined),
  };
  const sources = (['template', 'clone', 'import', 'iso'] as const).filter((s) => o[s] !== undefined);
  if (sources.length === 0) throw new UsageError('vms create needs one source: --template T, --clone VM, --import PATH --format F or --iso PATH');
  if (sources.length > 1) throw new UsageError(`vms create takes one source, got ${sources.map((s) => `--${s}`).join(' and ')}`);
  const src = sources[0]!;
  const val = nonEmpty(src, o[src] as string);
  if (o.format !== undefined && src !== 'import') throw new UsageError('flag --format applies only with --import');
  if (src === 'template') body.template = val;
  else if (src === 'clone') body.cloneOf = val;
  else if (src === 'iso') body.iso = val;
  else {
    if (o.format === undefined) throw new UsageError(`flag --format is required with --import (one of ${FORMATS.join(', ')})`);
    if (!FORMATS.includes(o.format as string)) throw new UsageError(`flag --format must be one of ${FORMATS.join(', ')}, got ${JSON.stringify(o.format)}`);
    body.import = { path: val, format: o.format };
  }
  if (o.network !== undefined) body.network = nonEmpty('network', o.network as string);
  if (o.host !== undefined) body.hostId = nonEmpty('host', o.host as string);
  if (o['user-data'] !== undefined) {
    const file = resolve(cwd, nonEmpty('user-data', o['user-data'] as string));
    try {
      body.userData = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`flag --user-data: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (o['ssh-key'] !== undefined) {
    const keys: string[] = [];
    for (const k of o['ssh-key'] as string[]) {
      if (SSH_KEY.test(k.trim())) {
        keys.push(k.trim());
        continue;
      }
      // Not a key line: a public key file (e.g. ~/.ssh/id_ed25519.pub), one key per line.
      let text: string;
      try {
        text = readFileSync(resolve(cwd, k), 'utf8');
      } catch {
        throw new UsageError(`flag --ssh-key: ${JSON.stringify(k)} is neither an OpenSSH public key line nor a readable file`);
      }
      const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
      const bad = lines.find((l) => !SSH_KEY.test(l));
      if (lines.length === 0 || bad !== undefined) throw new UsageError(`flag --ssh-key: ${k} does not hold OpenSSH public key lines`);
      keys.push(...lines);
    }
    body.sshKeys = keys;
  }
  if (o.tag !== undefined) body.tags = (o.tag as string[]).map((t) => nonEmpty('tag', t));
  return body;
}

// ---------------------------------------------------------------- API client
interface Connection {
  url: string;
  token?: string;
  tokenSource: string;
}

export function resolveConnection(opts: Values, env: Record<string, string | undefined>, cwd: string): Connection {
  const raw = (opts.api as string | undefined) ?? env.FERRY_API_URL ?? DEFAULT_API_URL;
  const from = opts.api !== undefined ? '--api' : env.FERRY_API_URL !== undefined ? 'FERRY_API_URL' : 'the default';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${from === '--api' ? 'flag --api' : from}: ${JSON.stringify(raw)} is not a URL (like ${DEFAULT_API_URL})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${from === '--api' ? 'flag --api' : from}: ${raw} must be an http(s) URL`);
  const base = url.toString().replace(/\/+$/, '');
  if (opts.token !== undefined) return { url: base, token: nonEmpty('token', opts.token as string), tokenSource: '--token' };
  if (env.FERRY_API_TOKEN) return { url: base, token: env.FERRY_API_TOKEN, tokenSource: 'FERRY_API_TOKEN' };
  const file = join(resolve(cwd, env.FERRY_DATA_DIR || './data'), 'api-token');
  try {
    const t = readFileSync(file, 'utf8').trim();
    if (t) return { url: base, token: t, tokenSource: file };
  } catch {
    // no token file: requests go without one and the API answers 401, explained below
  }
  return { url: base, tokenSource: 'none' };
}

type Item = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

class Api {
  constructor(
    readonly conn: Connection,
    readonly fetchFn: typeof fetch,
  ) {}

  async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.conn.token) headers.authorization = `Bearer ${this.conn.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchFn(`${this.conn.url}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ApiError(`cannot reach the ferry API at ${this.conn.url} (${cause?.code ?? cause?.message ?? (e as Error).message}); set --api or FERRY_API_URL`);
    }
    const text = await res.text();
    let data: unknown = undefined;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!res.ok) {
      const b = (data && typeof data === 'object' ? data : {}) as Record<string, unknown>;
      let msg = typeof b.message === 'string' ? b.message : typeof data === 'string' && data ? data : res.statusText;
      if (res.status === 409 && typeof b.workflowId === 'string' && !msg.includes(b.workflowId)) msg += ` (workflow ${b.workflowId})`;
      if (res.status === 401) {
        msg +=
          this.conn.tokenSource === 'none'
            ? ' (no token: pass --token, set FERRY_API_TOKEN, or run where <FERRY_DATA_DIR>/api-token exists)'
            : ` (token from ${this.conn.tokenSource})`;
      }
      throw new ApiError(`${msg} [HTTP ${res.status} ${method} ${path.split('?')[0]}]`, res.status, data);
    }
    return data;
  }

  /** Every item of a paginated list, following nextCursor. */
  async list(path: string, query = new URLSearchParams()): Promise<Item[]> {
    const items: Item[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 10_000; pages++) {
      const q = new URLSearchParams(query);
      q.set('limit', '500');
      if (cursor) q.set('cursor', cursor);
      const r = (await this.request('GET', `${path}?${q}`)) as { items?: Item[]; nextCursor?: string | null };
      items.push(...(r.items ?? []));
      cursor = r.nextCursor ?? null;
      if (!cursor) break;
    }
    return items;
  }
}

// ---------------------------------------------------------------- migrations
interface Migration {
  id?: string;
  vmId?: string | null;
  kind?: string;
  state?: string;
  stage?: string | null;
  sourceHostId?: string | null;
  targetHostId?: string | null;
  policy?: string | null;
  awaitingApproval?: boolean;
  queue?: { reason?: string } | null;
  progress?: {
    round?: number;
    transferredBytes?: number;
    remainingBytes?: number;
    dirtyRateBytesPerSec?: number;
    expectedDowntimeMs?: number;
    percent?: number;
    etaSeconds?: number;
    verdict?: string;
  };
  downtimeMs?: number | null;
  durationMs?: number | null;
  error?: string;
  progressUnavailable?: string;
}

const BAR_WIDTH = 24;

export function progressBar(percent: number, width = BAR_WIDTH): string {
  const p = Math.max(0, Math.min(100, percent));
  const full = Math.floor((p / 100) * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`;
}

const mib = (bytes: number | undefined) => (typeof bytes === 'number' ? `${(bytes / MiB).toFixed(bytes >= 100 * MiB ? 0 : 1)} MiB` : '-');

/** One status line of a running migration; `percent` is the shown (never decreasing) value. */
export function progressLine(m: Migration, percent: number): string {
  const p = m.progress ?? {};
  const parts = [
    (m.stage ?? '-').padEnd(13),
    `${progressBar(percent)} ${percent.toFixed(1).padStart(5)}%`,
    `round ${p.round ?? 0}`,
    `sent ${mib(p.transferredBytes)}`,
    `left ${mib(p.remainingBytes)}`,
    `dirty ${typeof p.dirtyRateBytesPerSec === 'number' ? `${(p.dirtyRateBytesPerSec / MiB).toFixed(1)} MiB/s` : '-'}`,
    `downtime ${typeof p.expectedDowntimeMs === 'number' ? `~${Math.round(p.expectedDowntimeMs)} ms` : '-'}`,
    p.verdict ?? 'unknown',
    `ETA ${typeof p.etaSeconds === 'number' ? fmtDuration(p.etaSeconds * 1000) : '-'}`,
  ];
  if (m.queue?.reason) parts.push(`queued: ${m.queue.reason}`);
  if (m.awaitingApproval) parts.push(`AWAITING APPROVAL: ferry migrations switchover ${m.id ?? ''}`.trimEnd());
  return parts.join('  ');
}

async function watchMigration(c: Ctx, id: string): Promise<number> {
  const sleep = c.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const tty = c.io.stdout.isTTY === true && !c.json;
  let shown = 0;
  let last = '';
  let failures = 0;
  for (;;) {
    let m: Migration;
    try {
      m = (await c.api.request('GET', `/v1/migrations/${enc(id)}`)) as Migration;
      failures = 0;
    } catch (e) {
      // A blip (API restarting) is ridden out; an answer from the API (404, 401) is final.
      if (!(e instanceof ApiError) || e.status !== undefined || ++failures >= 10) throw e;
      await sleep(WATCH_INTERVAL_MS);
      continue;
    }
    if (c.json) {
      c.out(JSON.stringify(m));
    } else {
      const pct = m.progress?.percent;
      if (typeof pct === 'number' && Number.isFinite(pct)) shown = Math.max(shown, pct);
      if (m.state === 'completed') shown = 100;
      const line = progressLine(m, shown);
      // Redrawn in place; cut to the terminal's width, since a wrapped line cannot be redrawn.
      const cols = c.io.stdout.columns;
      if (tty) c.io.stdout.write(`\r\x1b[2K${cols && cols > 20 && line.length >= cols ? `${line.slice(0, cols - 2)}…` : line}`);
      else if (line !== last) c.out(line);
      last = line;
    }
    if (m.state !== undefined && m.state !== 'running') {
      if (tty) c.io.stdout.write('\n');
      if (!c.json) {
        const where = m.targetHostId ? ` (${m.sourceHostId ?? '?'} -> ${m.targetHostId})` : '';
        c.out(
          `migration ${m.id ?? id} ${m.state}${where}: downtime ${typeof m.downtimeMs === 'number' ? `${Math.round(m.downtimeMs)} ms` : '-'}, duration ${typeof m.durationMs === 'number' ? fmtDuration(m.durationMs) : '-'}`,
        );
        if (m.error) c.out(`  error: ${m.error}`);
      }
      // completed = 0; failed, rolled-back, cancelled (or a state this CLI does not know) = 1
      return m.state === 'completed' ? 0 : 1;
    }
    await sleep(WATCH_INTERVAL_MS);
  }
}

function describeMigration(m: Migration): string {
  const p = m.progress ?? {};
  const rows: [string, string][] = [
    ['id', str(m.id)],
    ['vm', str(m.vmId)],
    ['kind', str(m.kind)],
    ['state', str(m.state)],
    ['stage', str(m.stage)],
    ['from', str(m.sourceHostId)],
    ['to', str(m.targetHostId)],
    ['policy', str(m.policy)],
  ];
  if (typeof p.percent === 'number') rows.push(['progress', `${progressBar(p.percent)} ${p.percent.toFixed(1)}%`]);
  rows.push(
    ['round', str(p.round)],
    ['sent', mib(p.transferredBytes)],
    ['remaining', mib(p.remainingBytes)],
    ['dirty rate', typeof p.dirtyRateBytesPerSec === 'number' ? `${(p.dirtyRateBytesPerSec / MiB).toFixed(1)} MiB/s` : '-'],
    ['expected downtime', typeof p.expectedDowntimeMs === 'number' ? `${Math.round(p.expectedDowntimeMs)} ms` : '-'],
  );
  if (p.verdict) rows.push(['verdict', p.verdict]);
  if (typeof p.etaSeconds === 'number') rows.push(['eta', fmtDuration(p.etaSeconds * 1000)]);
  if (m.awaitingApproval) rows.push(['awaiting approval', `yes: ferry migrations switchover ${str(m.id)}`]);
  rows.push(['downtime', typeof m.downtimeMs === 'number' ? `${Math.round(m.downtimeMs)} ms` : '-'], ['duration', typeof m.durationMs === 'number' ? fmtDuration(m.durationMs) : '-']);
  if (m.error) rows.push(['error', m.error]);
  if (m.progressUnavailable) rows.push(['live progress unavailable', m.progressUnavailable]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w + 1)} ${v}`).join('\n');
}

// ---------------------------------------------------------------- formatting
function enc(s: string): string {
  return encodeURIComponent(s);
}

function str(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function list(v: unknown): string {
  return Array.isArray(v) && v.length ? v.join(',') : '-';
}

function get(o: unknown, path: string): unknown {
  let cur = o;
  for (const k of path.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Columns padded to their widest cell (the last column is not padded). */
export function table(head: string[], rows: string[][]): string {
  if (rows.length === 0) return `${head.join('  ')}\n(none)`;
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

function keyValues(o: Record<string, unknown>): string {
  const keys = Object.keys(o);
  const w = Math.max(0, ...keys.map((k) => k.length));
  return keys.map((k) => `${`${k}:`.padEnd(w + 1)} ${Array.isArray(o[k]) ? list(o[k]) : str(o[k])}`).join('\n');
}

function printJson(c: Ctx, v: unknown): number {
  c.out(JSON.stringify(v, null, 2));
  return 0;
}

// ---------------------------------------------------------------- help
function mainHelp(): string {
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
    'exit codes: 0 ok, 1 the API refused or a watched migration did not complete, 2 bad usage (nothing sent)',
    '',
  ].join('\n');
}

function groupHelp(group: string): string {
  return [`ferry ${group}:`, ...COMMANDS.filter((c) => c.words[0] === group).map((c) => `  ferry ${c.usage}\n      ${c.summary}`), ''].join('\n');
}

function commandHelp(c: Command): string {
  return `usage: ferry ${c.usage}\n  ${c.summary}\nglobal flags: --api URL, --token T, --json\n`;
}
