// `ferry vms console` against scripted API answers (an injected fetch): the tail is passed and
// checked, --follow prints only what the guest wrote since the last read and says when the
// console moved to another host (a live migration's switchover) or began again (a restart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, type CliIo } from '../../cli/main.js';

type Answer = { hostId: string; lines: string[]; size: number };

function io(answers: Answer[], reads: number) {
  let out = '';
  let err = '';
  const urls: string[] = [];
  let served = 0;
  const cli: CliIo = {
    env: { FERRY_API_URL: 'http://127.0.0.1:1', FERRY_API_TOKEN: 'tok' },
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    fetch: (async (req: Request) => {
      urls.push(req.url);
      const a = answers[Math.min(served++, answers.length - 1)]!;
      return new Response(JSON.stringify({ vmId: 'vm-1', truncated: false, ...a }), { status: 200, headers: { 'content-type': 'application/json' } });
    }) as typeof fetch,
    // the follow loop ends when the scripted reads are used up
    sleep: async () => {
      if (served >= reads) throw new Error('end of script');
    },
  };
  return { cli, out: () => out, err: () => err, urls };
}

test('vms console prints the tail; --tail is passed and checked', async () => {
  const t = io([{ hostId: 'h1', lines: ['UP', '....'], size: 8 }], 1);
  assert.equal(await runCli(['vms', 'console', 'vm-1', '--tail', '2'], t.cli), 0);
  assert.equal(t.out(), 'UP\n....\n');
  assert.match(t.urls[0]!, /\/v1\/vms\/vm-1\/console\?tail=2$/);
  for (const bad of ['0', '10001', 'x']) {
    const b = io([], 0);
    assert.notEqual(await runCli(['vms', 'console', 'vm-1', '--tail', bad], b.cli), 0);
    assert.match(b.err(), /--tail must be a whole number from 1 to 10000/);
  }
});

test('vms console --follow prints what grew and says when the console moved host', async () => {
  const t = io(
    [
      // size: the joined lines' bytes (domain/console.ts)
      { hostId: 'h1', lines: ['UP', 'tick 1'], size: 9 },
      { hostId: 'h1', lines: ['UP', 'tick 1'], size: 9 },
      { hostId: 'h1', lines: ['UP', 'tick 1', 'tick 2'], size: 16 },
      { hostId: 'h2', lines: ['tick 3'], size: 6 },
    ],
    4,
  );
  // follow runs until interrupted: here until the script's end
  await assert.rejects(runCli(['vms', 'console', 'vm-1', '--follow'], t.cli), /end of script/);
  // the joined lines, each newline printed with the line after it: no blank line where the log has none
  assert.equal(t.out(), 'UP\ntick 1\ntick 2\n--- vm-1: console now on h2 (was h1) ---\ntick 3');
});

test('vms console --follow: a half line grows in place; more than the tail grew prints the whole tail on a new line', async () => {
  const t = io(
    [
      { hostId: 'h1', lines: ['UP', '...'], size: 6 },
      { hostId: 'h1', lines: ['UP', '.....'], size: 8 },
      { hostId: 'h1', lines: ['tick 9'], size: 30 },
    ],
    3,
  );
  await assert.rejects(runCli(['vms', 'console', 'vm-1', '--follow', '--tail', '2'], t.cli), /end of script/);
  assert.equal(t.out(), 'UP\n.....\ntick 9');
});

test('vms console --follow: a log that began again (shorter than before) is said and printed whole', async () => {
  const t = io(
    [
      { hostId: 'h1', lines: ['UP', 'tick 1', 'tick 2'], size: 16 },
      { hostId: 'h1', lines: ['UP'], size: 2 },
      { hostId: 'h1', lines: ['UP', 'tick 1'], size: 9 },
    ],
    3,
  );
  await assert.rejects(runCli(['vms', 'console', 'vm-1', '--follow'], t.cli), /end of script/);
  assert.equal(t.out(), 'UP\ntick 1\ntick 2\n--- vm-1: console restarted on h1 ---\nUP\ntick 1');
});
