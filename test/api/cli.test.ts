// The CLI (cli/main.ts runCli, in-process) against a real listening API: buildApp with a test
// database and the fake Temporal client (test/helpers/api.ts). Checks the tables, the request
// bodies that reach the API (what the fake was asked to start), the API's error messages with
// exit 1, the token sources, and `--watch` following a scripted sequence of progress answers.
// One subprocess test runs bin/ferry.js (the tsx launcher) for real.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { runCli, type CliIo } from '../../cli/main.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import type { MigrationProgress } from '../../workflows/definitions.js';
import { addOperation, addVm, ADMIN, seedInventory, startTestApi, VIEWER, type TestApi } from '../helpers/api.js';

const MiB = 1024 * 1024;

function progress(over: Partial<MigrationProgress> & { percent?: number; round?: number } = {}): MigrationProgress {
  const { percent = 0, round = 1, ...rest } = over;
  return {
    migrationId: 'migrate-vm-a',
    vmId: 'vm-a',
    kind: 'live',
    state: 'running',
    stage: 'pre-copy',
    stageIndex: 2,
    sourceHostId: 'h1',
    targetHostId: 'h2',
    policy: 'default',
    awaitingApproval: false,
    progress: {
      round,
      transferredBytes: 10 * percent * MiB,
      remainingBytes: 10 * (100 - percent) * MiB,
      totalBytes: 1000 * MiB,
      dirtyRateBytesPerSec: 5 * MiB,
      transferRateBytesPerSec: 100 * MiB,
      expectedDowntimeMs: 30,
      percent,
      etaSeconds: 4,
      verdict: 'converging',
      downtimeLimitMs: 50,
      throttlePct: 0,
    },
    decisions: [],
    stageTimingsMs: {},
    compensations: [],
    ...rest,
  };
}

/** The fake's progress answers in order, one per query; the last one repeats. */
class ScriptedProgress extends Map<string, MigrationProgress> {
  served = 0;
  constructor(readonly script: MigrationProgress[]) {
    super();
  }
  override get(_workflowId: string): MigrationProgress | undefined {
    const p = this.script[Math.min(this.served, this.script.length - 1)];
    this.served++;
    return p;
  }
}

let t: TestApi;
let url: string;

function cli(env: Record<string, string | undefined> = {}) {
  let out = '';
  let err = '';
  let polls = 0;
  const io: CliIo = {
    env: { FERRY_API_URL: url, FERRY_API_TOKEN: ADMIN, ...env },
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    // no real waiting; a watch that never ends fails the test instead of hanging it
    sleep: async () => {
      if (++polls > 100) throw new Error('--watch polled 100 times without an end');
    },
  };
  return {
    io,
    run: (...argv: string[]) => runCli(argv, io),
    get out() {
      return out;
    },
    get err() {
      return err;
    },
  };
}

before(async () => {
  t = await startTestApi();
  await seedInventory(t.db);
  await addVm(t.db, { id: 'vm-a', name: 'a' });
  await addVm(t.db, { id: 'vm-b', name: 'b', hostId: 'h2', ip: '10.0.0.11', state: 'stopped' });
  await t.app.listen({ host: '127.0.0.1', port: 0 });
  const addr = t.app.server.address();
  assert.ok(addr && typeof addr === 'object');
  url = `http://127.0.0.1:${addr.port}`;
});
after(() => t.close());
beforeEach(() => {
  t.temporal.starts.length = 0;
  for (const r of t.temporal.runs.values()) r.status = 'COMPLETED';
});

describe('ferry CLI against a listening API', () => {
  it('hosts ls prints an aligned table', async () => {
    const c = cli();
    assert.equal(await c.run('hosts', 'ls'), 0, c.err);
    const lines = c.out.trimEnd().split('\n');
    assert.equal(lines.length, 4);
    assert.match(lines[0]!, /^ID\s+NAME\s+STATE\s+MAINT\s+VMS\s+CPUS USED\/ALLOC\s+MEMORY MiB USED\/ALLOC$/);
    assert.match(lines[1]!, /^h1\s+h1\s+up\s+no\s/);
    assert.match(lines[3]!, /^h3\s+h3\s+up\s+yes\s/);
    // aligned: every column starts at the same offset on every line
    const col = (l: string) => l.indexOf(l.split(/\s{2,}/)[2]!);
    assert.equal(new Set(lines.map(col)).size, 1, c.out);
  });

  it('--json prints the API answer', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'ls', '--json'), 0, c.err);
    const items = JSON.parse(c.out) as Array<{ id: string }>;
    assert.deepEqual(items.map((v) => v.id).sort(), ['vm-a', 'vm-b']);
  });

  it('vms ls filters by --state and --host', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'ls', '--host', 'h2'), 0, c.err);
    assert.match(c.out, /^ID\s+NAME\s+STATE\s+HOST\s+IP/);
    assert.match(c.out, /vm-b\s+b\s+stopped\s+h2\s+10\.0\.0\.11/);
    assert.doesNotMatch(c.out, /vm-a/);
    const d = cli();
    assert.equal(await d.run('vms', 'ls', '--state', 'running'), 0, d.err);
    assert.match(d.out, /vm-a/);
    assert.doesNotMatch(d.out, /vm-b/);
  });

  it('vms ls --state with a bad state: the API names the field, exit 1', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'ls', '--state', 'sleepy'), 1);
    assert.match(c.err, /state/);
    assert.match(c.err, /HTTP 400/);
  });

  it('vms show, templates ls, networks ls', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'show', 'a'), 0, c.err);
    assert.match(c.out, /^id:\s+vm-a$/m);
    assert.match(c.out, /^hostId:\s+h1$/m);
    const d = cli();
    assert.equal(await d.run('templates', 'ls'), 0, d.err);
    assert.match(d.out, /tpl-small\s+small\s+test-os\s+2\s+64\s+-\s+base/);
    const e = cli();
    assert.equal(await e.run('networks', 'ls'), 0, e.err);
    assert.match(e.out, /net1\s+net1\s+-\s+10\.0\.0\.0\/24\s+10\.0\.0\.1\s+10\.0\.0\.10-10\.0\.0\.209/);
  });

  it('vms create sends the right body and prints the vmId and workflowId', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    try {
      writeFileSync(join(dir, 'ud.yaml'), '#cloud-config\n');
      const c = cli();
      c.io.cwd = dir;
      const code = await c.run(
        'vms', 'create', 'web-1', '--cpus', '2', '--memory', '1024', '--disk', '8', '--template', 'small',
        '--network', 'net1', '--host', 'h2', '--user-data', 'ud.yaml', '--ssh-key', 'ssh-ed25519 AAAAkey me@x', '--tag', 'web', '--tag', 'prod',
      );
      assert.equal(code, 0, c.err);
      assert.equal(t.temporal.starts.length, 1);
      const s = t.temporal.starts[0]!;
      assert.equal(s.workflowType, 'provisionVm');
      const input = s.args[0] as Record<string, unknown>;
      assert.equal(input.name, 'web-1');
      assert.equal(input.cpus, 2);
      assert.equal(input.memoryMiB, 1024);
      assert.equal(input.diskGiB, 8);
      assert.deepEqual(input.source, { kind: 'template', templateId: 'tpl-small' });
      assert.equal(input.networkId, 'net1');
      assert.equal(input.hostId, 'h2');
      assert.equal(input.userData, '#cloud-config\n');
      assert.deepEqual(input.sshKeys, ['ssh-ed25519 AAAAkey me@x']);
      assert.deepEqual(input.tags, ['web', 'prod']);
      assert.ok(c.out.includes(`vm ${input.vmId as string} provisioning (workflow ${s.workflowId})`), c.out);
      assert.equal(s.workflowId, 'provision-web-1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('vms create refused by the API: its message (naming the field) and exit 1, nothing started', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'create', 'web-2', '--cpus', '2', '--memory', '1024', '--disk', '8', '--template', 'nope'), 1);
    assert.match(c.err, /^ferry: template: template nope does not exist \[HTTP 422 POST \/v1\/vms\]$/m);
    assert.equal(t.temporal.starts.length, 0);
    const d = cli();
    assert.equal(await d.run('vms', 'create', 'Bad_Name', '--cpus', '1', '--memory', '64', '--disk', '2', '--template', 'small'), 1);
    assert.match(d.err, /name must be lowercase/);
  });

  it('vms stop --force and delete --force reach the lifecycle workflow', async () => {
    const c = cli();
    assert.equal(await c.run('vms', 'stop', 'vm-a', '--force'), 0, c.err);
    assert.match(c.out, /vm vm-a: stop started \(workflow vm-stop-vm-a\)/);
    assert.deepEqual(t.temporal.starts[0]!.args[0], { vmId: 'vm-a', action: 'stop', principal: 'bootstrap-admin', force: true });
    t.temporal.finish('vm-stop-vm-a');
    const d = cli();
    assert.equal(await d.run('vms', 'delete', 'vm-b', '--force'), 0, d.err);
    assert.deepEqual(t.temporal.starts[1]!.args[0], { vmId: 'vm-b', action: 'delete', principal: 'bootstrap-admin', force: true });
    const e = cli();
    assert.equal(await e.run('vms', 'start', 'vm-a'), 1);
    assert.match(e.err, /cannot start vm vm-a while it is running/);
  });

  it('hosts maintenance on/off needs admin: the viewer token gets the 403 message and exit 1', async () => {
    const c = cli();
    assert.equal(await c.run('hosts', 'maintenance', 'h2', 'on'), 0, c.err);
    assert.match(c.out, /host h2: maintenance on/);
    assert.equal(await c.run('hosts', 'maintenance', 'h2', 'off'), 0, c.err);
    assert.match(c.out, /host h2: maintenance off/);
    const v = cli({ FERRY_API_TOKEN: undefined });
    assert.equal(await v.run('--token', VIEWER, 'hosts', 'maintenance', 'h2', 'on'), 1);
    assert.match(v.err, /HTTP 403/);
  });

  it('token from <FERRY_DATA_DIR>/api-token; none at all is a 401 saying how to give one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-data-'));
    try {
      const none = cli({ FERRY_API_TOKEN: undefined, FERRY_DATA_DIR: dir });
      assert.equal(await none.run('hosts', 'ls'), 1);
      assert.match(none.err, /HTTP 401/);
      assert.match(none.err, /--token, set FERRY_API_TOKEN/);
      writeFileSync(join(dir, 'api-token'), `${ADMIN}\n`);
      const file = cli({ FERRY_API_TOKEN: undefined, FERRY_DATA_DIR: dir });
      assert.equal(await file.run('hosts', 'ls'), 0, file.err);
      assert.match(file.out, /^h1 /m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an unreachable API is one line naming the address, exit 1', async () => {
    const c = cli({ FERRY_API_URL: 'http://127.0.0.1:1' });
    assert.equal(await c.run('vms', 'ls'), 1);
    assert.match(c.err, /cannot reach the ferry API at http:\/\/127\.0\.0\.1:1 .*FERRY_API_URL/);
  });

  it('migrate sends the knobs and prints the migration id', async () => {
    const c = cli();
    assert.equal(await c.run('migrate', 'vm-a', '--to', 'h2', '--policy', 'minimal-downtime', '--max-downtime', '200', '--bandwidth', '64', '--approve-switchover'), 0, c.err);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'liveMigrate');
    const input = s.args[0] as { vmId: string; targetHostId: string; policy: string; overrides: Record<string, unknown> };
    assert.equal(input.vmId, 'vm-a');
    assert.equal(input.targetHostId, 'h2');
    assert.equal(input.policy, 'minimal-downtime');
    assert.equal(input.overrides.maxDowntimeMs, 200);
    assert.equal(input.overrides.maxBandwidthBytesPerSec, 64 * MiB);
    assert.equal(input.overrides.approveSwitchover, true);
    assert.match(c.out, /migration migrate-vm-a of vm vm-a started/);
  });

  it('migrate --kind cold sends the cold knobs and names the kind', async () => {
    const c = cli();
    assert.equal(await c.run('migrate', 'vm-a', '--kind', 'cold', '--to', 'h2', '--force', '--no-start', '--keep-chain', '--shutdown-timeout', '90'), 0, c.err);
    const s = t.temporal.starts[0]!;
    assert.equal(s.workflowType, 'coldMigrate');
    const input = s.args[0] as Record<string, unknown>;
    assert.equal(input.vmId, 'vm-a');
    assert.equal(input.targetHostId, 'h2');
    assert.equal(input.force, true);
    assert.equal(input.start, false);
    assert.equal(input.flatten, false);
    assert.equal(input.shutdownTimeoutMs, 90_000);
    assert.match(c.out, /^cold migration migrate-vm-a of vm vm-a started/m);
  });

  const usage: Array<[string, string[], RegExp]> = [
    ['an unknown kind', ['--kind', 'warp'], /--kind must be one of live, cold, storage, auto, got "warp"/],
    ['--flatten with --keep-chain', ['--kind', 'cold', '--flatten', '--keep-chain'], /--flatten and --keep-chain exclude each other/],
    ['a shutdown timeout out of range', ['--kind', 'cold', '--shutdown-timeout', '0'], /--shutdown-timeout must be a whole number from 1 to 3600/],
  ];
  for (const [what, flags, msg] of usage) {
    it(`migrate with ${what}: exit 2 naming the flag, nothing sent`, async () => {
      const c = cli();
      assert.equal(await c.run('migrate', 'vm-a', ...flags), 2);
      assert.match(c.err, msg);
      assert.equal(t.temporal.starts.length, 0);
    });
  }

  it('migrate --kind storage without --datastore: the API names targetDatastoreId, exit 1', async () => {
    const c = cli();
    assert.equal(await c.run('migrate', 'vm-a', '--kind', 'storage'), 1);
    assert.match(c.err, /targetDatastoreId/);
    assert.equal(t.temporal.starts.length, 0);
  });

  it('migrate to a host in maintenance: the API names targetHostId, exit 1', async () => {
    const c = cli();
    assert.equal(await c.run('migrate', 'vm-a', '--to', 'h3'), 1);
    assert.match(c.err, /targetHostId: host h3 is in maintenance/);
    assert.equal(t.temporal.starts.length, 0);
  });

  it('migrate --watch renders the progress (never backwards) and exits 0 when completed', async () => {
    const script = new ScriptedProgress([
      progress({ stage: 'pre-migration', percent: 0, round: 0 }),
      progress({ percent: 20, round: 1 }),
      progress({ percent: 55, round: 2, awaitingApproval: false }),
      progress({ percent: 50, round: 3 }), // an estimate that dipped: the bar must not
      progress({ stage: 'stop-and-copy', percent: 97, round: 4, progress: { ...progress({ percent: 97 }).progress, verdict: 'converging' } }),
      progress({ state: 'completed', stage: 'done', percent: 100, round: 4, downtimeMs: 42, durationMs: 12_300 }),
    ]);
    t.temporal.progress = script;
    const c = cli();
    assert.equal(await c.run('migrate', 'vm-a', '--to', 'h2', '--watch'), 0, c.err);
    assert.equal(script.served, 6, 'one GET per poll until the final state');
    const lines = c.out.trimEnd().split('\n');
    assert.match(lines[0]!, /migration migrate-vm-a of vm vm-a started/);
    const bars = lines.filter((l) => l.includes('%'));
    const percents = bars.map((l) => Number(/(\d+\.\d)%/.exec(l)![1]));
    assert.deepEqual(percents, [0, 20, 55, 55, 97, 100]);
    for (let i = 1; i < percents.length; i++) assert.ok(percents[i]! >= percents[i - 1]!, 'never backwards');
    assert.match(bars[2]!, /^pre-copy\s+\[#{13}-{11}\]\s+55\.0%\s+round 2\s+sent 550 MiB\s+left 450 MiB\s+dirty 5\.0 MiB\/s\s+downtime ~30 ms\s+converging\s+ETA 4\.0 s/);
    assert.match(bars[3]!, /round 3/);
    assert.match(lines.at(-1)!, /^migration migrate-vm-a completed \(h1 -> h2\): downtime 42 ms, duration 12\.3 s$/);
  });

  it('migrations show --watch exits 1 when the migration rolled back, with its error', async () => {
    const run = await t.temporal.workflow.start('liveMigrate', { workflowId: 'migrate-vm-b', taskQueue: 'q' });
    await addOperation(t.db, { id: 'op-rb', runId: run.firstExecutionRunId, workflowId: 'migrate-vm-b', kind: 'migration', subkind: 'live', vmId: 'vm-b', state: 'running', sourceHostId: 'h2', targetHostId: 'h1' });
    const script = new ScriptedProgress([
      progress({ vmId: 'vm-b', percent: 30 }),
      progress({ vmId: 'vm-b', state: 'rolled-back', stage: 'rollback', percent: 30, error: 'destination host h1 crashed', durationMs: 800 }),
    ]);
    t.temporal.progress = script;
    const c = cli();
    assert.equal(await c.run('migrations', 'show', 'op-rb', '--watch'), 1, c.err);
    assert.match(c.out, /migration op-rb rolled-back \(h1 -> h2\): downtime -, duration 800 ms/);
    assert.match(c.out, /error: destination host h1 crashed/);
  });

  it('migrations ls, show, set, cancel, switchover', async () => {
    await addOperation(t.db, {
      id: 'op-done',
      runId: 'op-done',
      workflowId: 'migrate-vm-x',
      kind: 'migration',
      subkind: 'live',
      vmId: 'vm-x',
      state: 'completed',
      stage: 'done',
      sourceHostId: 'h1',
      targetHostId: 'h2',
      details: { downtimeMs: 37, durationMs: 4_000 },
    });
    const c = cli();
    assert.equal(await c.run('migrations', 'ls'), 0, c.err);
    assert.match(c.out, /^ID\s+VM\s+KIND\s+STATE\s+STAGE\s+FROM\s+TO\s+DOWNTIME\s+DURATION\s+STARTED$/m);
    assert.match(c.out, /^op-done\s+vm-x\s+live\s+completed\s+done\s+h1\s+h2\s+37 ms\s+4\.0 s\s/m);
    const d = cli();
    assert.equal(await d.run('migrations', 'show', 'op-done'), 0, d.err);
    assert.match(d.out, /^state:\s+completed$/m);
    assert.match(d.out, /^downtime:\s+37 ms$/m);

    // a running one (migrate-vm-b from the previous test is running in the fake)
    t.temporal.progress = new Map([['migrate-vm-b', progress({ vmId: 'vm-b', percent: 40 })]]);
    t.temporal.runs.get('migrate-vm-b')!.status = 'RUNNING';
    const e = cli();
    assert.equal(await e.run('migrations', 'set', 'op-rb', '--bandwidth', '32', '--max-downtime', '100'), 0, e.err);
    assert.deepEqual(t.temporal.updates.at(-1)!.args, [{ maxBandwidthBytesPerSec: 32 * MiB, maxDowntimeMs: 100 }]);
    const f = cli();
    assert.equal(await f.run('migrations', 'switchover', 'op-rb'), 0, f.err);
    assert.equal(t.temporal.updates.at(-1)!.name, 'switchover');
    const g = cli();
    assert.equal(await g.run('migrations', 'cancel', 'op-rb'), 0, g.err);
    assert.match(g.out, /cancel requested/);
    assert.equal(t.temporal.signals.at(-1)!.name, 'cancel');
    t.temporal.refuseUpdates = 'past commitment';
    const h = cli();
    assert.equal(await h.run('migrations', 'switchover', 'op-rb'), 1);
    assert.match(h.err, /refused: past commitment/);
    t.temporal.refuseUpdates = undefined;
    const i = cli();
    assert.equal(await i.run('migrations', 'show', 'nope'), 1);
    assert.match(i.err, /migration nope not found \[HTTP 404/);
  });

  it('operations show', async () => {
    const c = cli();
    assert.equal(await c.run('operations', 'show', 'op-done'), 0, c.err);
    assert.match(c.out, /^workflowId:\s+migrate-vm-x$/m);
    assert.match(c.out, /^webUiUrl:\s+http:\/\/ui\.test/m);
  });
});

describe('bin/ferry.js', () => {
  it('node bin/ferry.js --help runs the TypeScript CLI through tsx and exits 0', async () => {
    const r = await execa(process.execPath, ['bin/ferry.js', '--help'], { cwd: PROJECT_ROOT, reject: false, env: { FERRY_API_URL: 'http://127.0.0.1:1' } });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /usage: ferry/);
    assert.match(r.stdout, /migrate <vmId>/);
  });

  it('node bin/ferry.js with a bad flag exits 2 naming it', async () => {
    const r = await execa(process.execPath, ['bin/ferry.js', 'vms', 'ls', '--nope'], { cwd: PROJECT_ROOT, reject: false });
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /unknown flag --nope/);
  });
});
