// The CLI's argument handling (cli/main.ts) without an API: every bad flag or argument is one
// line naming it, exit 2, and no request sent (the fetch stand-in records every call); plus the
// pure pieces (request bodies from flags, connection settings, table and progress formatting).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConnection } from '../../cli/client.js';
import { vmCreateBody } from '../../cli/commands/vm-create.js';
import { runCli } from '../../cli/main.js';
import { progressBar, progressLine } from '../../cli/migration-view.js';
import { table } from '../../cli/output.js';
import { parseCommandLine } from '../../cli/parse.js';

function io(env: Record<string, string | undefined> = {}) {
  const calls: Array<{ url: string; init?: RequestInit }> = [];
  let out = '';
  let err = '';
  const fetchStub = (async (url: string | URL | Request, init?: RequestInit) => {
    calls.push({ url: String(url), init });
    return new Response(JSON.stringify({ items: [], nextCursor: null }), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof fetch;
  return {
    calls,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    io: {
      env: { FERRY_API_TOKEN: 'tok', ...env },
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      fetch: fetchStub,
      sleep: async () => {},
    },
  };
}

/** runs argv, expects exit 2 with one stderr line matching `re`, and nothing sent */
async function refused(argv: string[], re: RegExp) {
  const t = io();
  const code = await runCli(argv, t.io);
  assert.equal(code, 2, `exit code for ${argv.join(' ')} (stderr: ${t.err})`);
  assert.match(t.err, re);
  assert.equal(t.err.trim().split('\n').length, 1, `one line: ${t.err}`);
  assert.equal(t.calls.length, 0, `nothing sent for ${argv.join(' ')}`);
  assert.equal(t.out, '');
}

describe('cli argument errors: exit 2, the flag named, nothing sent', () => {
  it('unknown flag', () => refused(['vms', 'ls', '--bogus'], /unknown flag --bogus/));
  it('unknown flag given as --name=value', () => refused(['vms', 'ls', '--stat=running'], /unknown flag --stat\b/));
  it('flag of another command', () => refused(['vms', 'start', 'vm-1', '--force'], /unknown flag --force/));
  it('unknown global flag before the command', () => refused(['--verbose', 'vms', 'ls'], /unknown flag --verbose/));
  it('unknown command', () => refused(['vm', 'ls'], /unknown command "vm"/));
  it('unknown subcommand', () => refused(['vms', 'list'], /unknown command "vms list".*ls/));
  it('missing subcommand', () => refused(['migrations'], /migrations needs a subcommand/));
  it('missing positional', () => refused(['vms', 'show'], /missing <id>/));
  it('extra positional', () => refused(['vms', 'show', 'a', 'b'], /unexpected argument "b"/));
  it('string flag without a value', () => refused(['vms', 'ls', '--state'], /--state.*needs a value/));
  it('a flag swallowed as a value', () => refused(['migrate', 'vm-1', '--to', '--watch'], /flag --to needs a value/));
  it('boolean flag with a value', () => refused(['migrate', 'vm-1', '--watch=yes'], /--watch takes no value/));
  it('bad number', () => refused(['migrate', 'vm-1', '--max-downtime', 'fast'], /flag --max-downtime must be a positive number/));
  it('zero bandwidth', () => refused(['migrations', 'set', 'm-1', '--bandwidth', '0'], /flag --bandwidth must be a positive number/));
  it('set with nothing to set', () => refused(['migrations', 'set', 'm-1'], /--bandwidth and\/or --max-downtime/));
  it('maintenance mode not on|off', () => refused(['hosts', 'maintenance', 'h1', 'yes'], /must be on or off, got "yes"/));
  it('vms create: missing --cpus', () => refused(['vms', 'create', 'web', '--memory', '512', '--disk', '4', '--template', 'small'], /flag --cpus is required/));
  it('vms create: fractional --memory', () => refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '1.5', '--disk', '4', '--template', 'small'], /flag --memory must be a positive whole number/));
  it('vms create: no source', () => refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4'], /needs one source/));
  it('vms create: two sources', () =>
    refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--template', 'a', '--iso', '/x.iso'], /one source, got --template and --iso/));
  it('vms create: --import without --format', () => refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--import', '/x.vmdk'], /--format is required with --import/));
  it('vms create: bad --format', () =>
    refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--import', '/x.vmdk', '--format', 'vdi'], /--format must be one of vmdk, vhdx, raw, qcow2/));
  it('vms create: --format without --import', () =>
    refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--template', 't', '--format', 'raw'], /--format applies only with --import/));
  it('vms create: unreadable --user-data', () =>
    refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--template', 't', '--user-data', '/nonexistent/ud.yaml'], /--user-data: cannot read .*ENOENT/));
  it('vms create: --ssh-key neither key nor file', () =>
    refused(['vms', 'create', 'web', '--cpus', '1', '--memory', '512', '--disk', '4', '--template', 't', '--ssh-key', 'not-a-key'], /--ssh-key: "not-a-key" is neither/));
  it('--api not a URL', () => refused(['--api', 'not a url', 'hosts', 'ls'], /flag --api: "not a url" is not a URL/));
  it('--api without http(s)', () => refused(['--api', 'localhost:8080', 'hosts', 'ls'], /flag --api: localhost:8080 must be an http\(s\) URL/));
  it('FERRY_API_URL not a URL is named', async () => {
    const t = io({ FERRY_API_URL: '::nope' });
    assert.equal(await runCli(['hosts', 'ls'], t.io), 2);
    assert.match(t.err, /FERRY_API_URL: "::nope" is not a URL/);
    assert.equal(t.calls.length, 0);
  });
  it('evacuate: a bad --max-parallel is named, exit 2, nothing sent', () => refused(['evacuate', 'host-a', '--max-parallel', '0'], /--max-parallel/));
  it('evacuate: bad flag still named', () => refused(['evacuate', 'host-a', '--dryrun'], /unknown flag --dryrun/));
});

describe('cli help', () => {
  it('--help and no arguments print the commands, exit 0, nothing sent', async () => {
    for (const argv of [['--help'], [], ['-h']]) {
      const t = io();
      assert.equal(await runCli(argv, t.io), 0);
      assert.match(t.out, /migrate <vmId>/);
      assert.match(t.out, /hosts maintenance <id> on\|off/);
      assert.equal(t.calls.length, 0);
    }
  });
  it('<command> --help prints its usage with flags', async () => {
    const t = io();
    assert.equal(await runCli(['vms', 'create', '--help'], t.io), 0);
    assert.match(t.out, /--cpus N --memory MiB --disk GiB/);
    assert.equal(t.calls.length, 0);
  });
});

describe('cli pure pieces', () => {
  it('global flags are accepted before and after the command', () => {
    const a = parseCommandLine(['--api', 'http://x:1', '--json', 'vms', 'ls', '--state', 'running']);
    const b = parseCommandLine(['vms', 'ls', '--state', 'running', '--api=http://x:1', '--json']);
    for (const r of [a, b]) {
      assert.equal(r.kind, 'run');
      if (r.kind !== 'run') continue;
      assert.deepEqual(r.cmd.words, ['vms', 'ls']);
      assert.equal(r.opts.api, 'http://x:1');
      assert.equal(r.opts.json, true);
      assert.equal(r.opts.state, 'running');
    }
  });

  it('vms create body: sources, user-data file, ssh keys (inline and from a file), tags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    try {
      writeFileSync(join(dir, 'ud.yaml'), '#cloud-config\npackages: [nginx]\n');
      writeFileSync(join(dir, 'keys.pub'), 'ssh-ed25519 AAAAC3Nza one@x\n\nssh-rsa AAAAB3Nza two@y\n');
      const body = vmCreateBody(
        'web',
        { cpus: '2', memory: '1024', disk: '8', import: '/img/w.vmdk', format: 'vmdk', 'user-data': 'ud.yaml', 'ssh-key': ['ssh-ed25519 AAAAinline me@z', 'keys.pub'], tag: ['a', 'b'], network: 'net1', host: 'h2' },
        dir,
      );
      assert.deepEqual(body, {
        name: 'web',
        cpus: 2,
        memoryMiB: 1024,
        diskGiB: 8,
        import: { path: '/img/w.vmdk', format: 'vmdk' },
        network: 'net1',
        hostId: 'h2',
        userData: '#cloud-config\npackages: [nginx]\n',
        sshKeys: ['ssh-ed25519 AAAAinline me@z', 'ssh-ed25519 AAAAC3Nza one@x', 'ssh-rsa AAAAB3Nza two@y'],
        tags: ['a', 'b'],
      });
      assert.deepEqual(vmCreateBody('c', { cpus: '1', memory: '64', disk: '1', clone: 'web' }, dir), { name: 'c', cpus: 1, memoryMiB: 64, diskGiB: 1, cloneOf: 'web' });
      assert.deepEqual(vmCreateBody('i', { cpus: '1', memory: '64', disk: '1', iso: '/iso/x.iso' }, dir), { name: 'i', cpus: 1, memoryMiB: 64, diskGiB: 1, iso: '/iso/x.iso' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('connection: --api/--token over the environment over the token file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    try {
      writeFileSync(join(dir, 'api-token'), 'from-file\n');
      assert.deepEqual(resolveConnection({}, { FERRY_DATA_DIR: dir }, '/'), { url: 'http://127.0.0.1:8080', token: 'from-file', tokenSource: join(dir, 'api-token') });
      const env = { FERRY_DATA_DIR: dir, FERRY_API_TOKEN: 'from-env', FERRY_API_URL: 'http://api:9000/' };
      assert.deepEqual(resolveConnection({}, env, '/'), { url: 'http://api:9000', token: 'from-env', tokenSource: 'FERRY_API_TOKEN' });
      assert.deepEqual(resolveConnection({ api: 'https://f.example', token: 'flag' }, env, '/'), { url: 'https://f.example', token: 'flag', tokenSource: '--token' });
      // ./data relative to the working directory when FERRY_DATA_DIR is unset
      const cwd = mkdtempSync(join(tmpdir(), 'ferry-cli-cwd-'));
      try {
        assert.equal(resolveConnection({}, {}, cwd).tokenSource, 'none');
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('table aligns columns', () => {
    const lines = table(['ID', 'NAME'], [['h1', 'alpha'], ['host-long', 'b']]).split('\n');
    assert.deepEqual(lines, ['ID         NAME', 'h1         alpha', 'host-long  b']);
  });

  it('progress bar fills with the percent and is clamped', () => {
    assert.equal(progressBar(0, 10), '[----------]');
    assert.equal(progressBar(50, 10), '[#####-----]');
    assert.equal(progressBar(100, 10), '[##########]');
    assert.equal(progressBar(140, 10), '[##########]');
    const line = progressLine(
      {
        id: 'migrate-vm-1',
        stage: 'pre-copy',
        awaitingApproval: true,
        progress: { round: 3, transferredBytes: 900 * 2 ** 20, remainingBytes: 2 ** 20 * 100, dirtyRateBytesPerSec: 10 * 2 ** 20, expectedDowntimeMs: 40, verdict: 'converging', etaSeconds: 5 },
      },
      90,
    );
    for (const part of ['pre-copy', '90.0%', 'round 3', 'sent 900 MiB', 'left 100 MiB', 'dirty 10.0 MiB/s', 'downtime ~40 ms', 'converging', 'ETA 5.0 s', 'ferry migrations switchover migrate-vm-1']) {
      assert.ok(line.includes(part), `${JSON.stringify(part)} in ${line}`);
    }
  });
});
