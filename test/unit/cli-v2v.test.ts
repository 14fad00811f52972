// `ferry vms import` and `ferry vms export` against scripted API answers (an injected fetch): the
// bodies they send (absolute paths, start, host, format) and their flag checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, type CliIo } from '../../cli/main.js';

function io(answer: unknown, status = 200) {
  let out = '';
  let err = '';
  const sent: Array<{ url: string; body: unknown }> = [];
  const cli: CliIo = {
    env: { FERRY_API_URL: 'http://127.0.0.1:1', FERRY_API_TOKEN: 'tok' },
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    cwd: '/pkgs',
    fetch: (async (req: Request) => {
      sent.push({ url: req.url, body: await req.json().catch(() => undefined) });
      return new Response(JSON.stringify(answer), { status, headers: { 'content-type': 'application/json' } });
    }) as typeof fetch,
  };
  return { cli, out: () => out, err: () => err, sent };
}

const accepted = { vmId: 'vm-1', name: 'legacy', hostId: 'h1', workflowId: 'import-vm-1', operationId: 'r', webUiUrl: 'http://ui', descriptor: { cpus: 2, memoryMiB: 96, diskGiB: 1, format: 'vmdk', nics: ['VM Network'], packageKind: 'ova', verifiedFiles: 2 } };

test('vms import sends an absolute path, start, name and host; prints what the descriptor said', async () => {
  const t = io(accepted, 202);
  assert.equal(await runCli(['vms', 'import', 'legacy.ova', '--name', 'legacy', '--host', 'h1', '--no-start'], t.cli), 0, t.err());
  assert.match(t.sent[0]!.url, /\/v1\/vms\/import$/);
  assert.deepEqual(t.sent[0]!.body, { path: '/pkgs/legacy.ova', name: 'legacy', hostId: 'h1', start: false });
  assert.match(t.out(), /cpus:\s+2/);
  assert.match(t.out(), /memoryMiB:\s+96/);
  const s = io(accepted, 202);
  assert.equal(await runCli(['vms', 'import', '/abs/x.ova'], s.cli), 0);
  assert.deepEqual(s.sent[0]!.body, { path: '/abs/x.ova', start: true });
  const both = io(accepted, 202);
  assert.notEqual(await runCli(['vms', 'import', 'x.ova', '--start', '--no-start'], both.cli), 0);
  assert.equal(both.sent.length, 0);
});

test('vms import shows the API refusal (a tampered package) and exits non-zero', async () => {
  const t = io({ error: 'refused', message: 'package /pkgs/x.ova refused: x-disk1.vmdk does not match the manifest' }, 422);
  assert.notEqual(await runCli(['vms', 'import', 'x.ova'], t.cli), 0);
  assert.match(t.err(), /does not match the manifest/);
});

test('vms export needs --format (ova|raw|qcow2|vhdx) and --to; sends an absolute path', async () => {
  const t = io({ vmId: 'vm-1', hostId: 'h1', path: '/pkgs/out.ova', format: 'ova', bytes: 10, sha256: 'ab', virtualBytes: 1 });
  assert.equal(await runCli(['vms', 'export', 'vm-1', '--format', 'ova', '--to', 'out.ova'], t.cli), 0, t.err());
  assert.match(t.sent[0]!.url, /\/v1\/vms\/vm-1\/export$/);
  assert.deepEqual(t.sent[0]!.body, { format: 'ova', to: '/pkgs/out.ova' });
  assert.match(t.out(), /sha256:\s+ab/);
  for (const [args, re] of [
    [['vms', 'export', 'vm-1', '--to', 'x'], /--format is required/],
    [['vms', 'export', 'vm-1', '--format', 'zip', '--to', 'x'], /--format must be one of/],
    [['vms', 'export', 'vm-1', '--format', 'raw'], /--to <path> is required/],
  ] as Array<[string[], RegExp]>) {
    const b = io({});
    assert.notEqual(await runCli(args, b.cli), 0);
    assert.match(b.err(), re);
    assert.equal(b.sent.length, 0);
  }
});
