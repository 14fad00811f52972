// The QEMU lab as a user runs it: `FERRY_DRIVER=qemu npm start` (scripts/start.ts, a child
// process) prints the lab's hosts; then the README's "Try it" block, read from README.md and run
// as written (its curl bodies and paths, its `ferry vms console --follow` and `ferry migrations
// show --watch`): POST /v1/vms from the debian-12 template (in the lab the boot-sector guest that
// dirties 16 MiB and prints '.' per 256 passes), a live migration on real QEMU processes, and the
// followed console moves to the target where the heartbeat goes on with no second boot. Ctrl-C
// leaves the VM running and a second start re-attaches (a migration back needs the target agent's
// QMP); `npm run lab:down` leaves no QEMU process, namespace, guard route or lab file. Bad lab
// settings stop with one line naming the setting.
import { execFile } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { execa } from 'execa';
import { runCli } from '../../cli/main.js';
import { embeddedFerry, type EmbeddedFerry } from '../helpers/embedded.js';
import { waitFor } from '../helpers/ferry.js';
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { guardRouteInstalled, labNamespacesPresent, namespacesAvailable } from '../../workers/lab/netns.js';
import { pidsMentioning } from '../../workers/lab/procs.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';

const run = promisify(execFile);
const PREFIX = 'ferryle';
const SUBNET = '10.254.0.0/24';
const netns = namespacesAvailable().ok;

async function startWith(env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-labbad-'));
  try {
    const r = await execa(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], {
      cwd: PROJECT_ROOT,
      reject: false,
      timeout: 60_000,
      env: { FERRY_DRIVER: 'qemu', FERRY_DATA_DIR: dir, ...env },
    });
    return { ...r, leftOver: readdirSync(dir) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('bad lab settings stop with one line naming the setting, before anything starts', async (t) => {
  const nodeOnly = mkdtempSync(join(tmpdir(), 'ferry-nodeonly-'));
  symlinkSync(process.execPath, join(nodeOnly, 'node'));
  t.after(() => rmSync(nodeOnly, { recursive: true, force: true }));
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ FERRY_LAB_HOSTS: '0' }, /^ferry: FERRY_LAB_HOSTS: "0" must be a whole number of hosts in 1\.\.16$/],
    [{ FERRY_LAB_HOSTS: '50' }, /^ferry: FERRY_LAB_HOSTS: "50" must be/],
    [{ FERRY_API_PORT: '47150', FERRY_LAB_PORT_RANGE: '47100-47399' }, /^ferry: FERRY_LAB_PORT_RANGE: 47100-47399 collides with FERRY_API_PORT 47150$/],
    [{ FERRY_LAB_PORT_RANGE: '47100-47105', FERRY_LAB_HOSTS: '3' }, /^ferry: FERRY_LAB_PORT_RANGE: .*fewer than 4 ports/],
    [{ FERRY_QEMU_BINARY: '/nonexistent/qemu-system-x86_64' }, /^ferry: FERRY_QEMU_BINARY: .*QEMU is not installed/],
    // no QEMU installed at all: a PATH that holds node and nothing else
    [{ PATH: nodeOnly }, /^ferry: FERRY_QEMU_BINARY: "qemu-system-x86_64" does not run: QEMU is not installed/],
    [{ FERRY_LAB_SUBNET: '10.254.0.1/24' }, /^ferry: FERRY_LAB_SUBNET: .*host bits set/],
  ];
  for (const [env, want] of cases) {
    const r = await startWith(env);
    const lines = String(r.stderr).trim().split('\n');
    assert.equal(r.exitCode, 2, `${JSON.stringify(env)}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0]!, want);
    assert.deepEqual(r.leftOver, [], 'nothing was started or written');
  }
});

/** The README's "Try it" block as a user runs it: every curl (path, JSON body) and every `npx ferry` line (its arguments). */
function readmeTryIt(): { curls: Array<{ path: string; body?: any }>; ferry: string[][] } {
  const readme = readFileSync(join(PROJECT_ROOT, 'README.md'), 'utf8');
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('\n## Try it')))?.[1];
  assert.ok(block, 'the README has a "Try it" block');
  const lines = block.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
  const curls = lines.filter((l) => l.includes('curl ')).map((l) => {
    const body = /-d '([^']*)'/.exec(l)?.[1];
    return { path: /localhost:8080(\/[^\s|)]*)/.exec(l)![1]!, ...(body ? { body: JSON.parse(body) } : {}) };
  });
  const ferry = lines.filter((l) => l.startsWith('npx ferry ')).map((l) => l.slice('npx ferry '.length).split(/\s+/));
  return { curls, ferry };
}

/** `ferry <args>` in-process against the lab's API (the token from its data folder, as the README's TOKEN) */
function ferryCli(e: EmbeddedFerry, args: string[], opts: { stop?: () => boolean } = {}) {
  let out = '';
  const code: Promise<number | 'stopped'> = runCli(args, {
    env: { FERRY_API_URL: e.base, FERRY_DATA_DIR: e.dir },
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (out += s) },
    sleep: async (ms) => {
      if (opts.stop?.()) throw new Error('stopped by the test');
      await new Promise((r) => setTimeout(r, ms));
    },
  }).catch((err: Error) => {
    // --follow runs until the user's Ctrl-C: here, until the test says stop
    if (opts.stop?.() && err.message === 'stopped by the test') return 'stopped' as const;
    throw err;
  });
  return { code, out: () => out };
}

/** the boot-sector guest's heartbeats in console text: a '.' per 256 passes over its 16 MiB */
const dots = (text: string) => (text.match(/\./g) ?? []).length;

async function console_(e: EmbeddedFerry, vmId: string): Promise<{ hostId: string; text: string }> {
  const r = await e.call('GET', `/v1/vms/${vmId}/console?tail=10000`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { hostId: r.body.hostId, text: r.body.lines.join('\n') };
}

async function migrate(e: EmbeddedFerry, vmId: string, targetHostId: string): Promise<void> {
  const started = await e.call('POST', `/v1/vms/${vmId}/migrations`, { kind: 'live', targetHostId });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const done = await waitFor('the migration to end', async () => {
    const m = await e.call('GET', `/v1/migrations/${started.body.migrationId}`);
    // the id names the VM's latest migration: wait for this run's record
    if (m.body?.runId !== started.body.runId) return undefined;
    return ['completed', 'failed', 'rolled-back', 'cancelled'].includes(m.body.state) ? m.body : undefined;
  }, 120_000, 250);
  assert.equal(done.state, 'completed', JSON.stringify(done));
}

test("FERRY_DRIVER=qemu npm start: the README's Try it (provision, live migration, console), re-attach, lab:down", { skip: qemuSkipReason, timeout: 600_000 }, async () => {
  const tryIt = readmeTryIt();
  const create = tryIt.curls.find((c) => c.path === '/v1/vms' && c.body);
  const move = tryIt.curls.find((c) => c.path.endsWith('/migrations') && c.body);
  const follow = tryIt.ferry.find((a) => a[0] === 'vms' && a[1] === 'console');
  const watch = tryIt.ferry.find((a) => a[0] === 'migrations' && a[1] === 'show');
  assert.ok(create && move && follow && watch, `the Try it block provisions, migrates, follows the console and watches: ${JSON.stringify(tryIt)}`);
  const name: string = create.body.name;
  const source: string = create.body.hostId;
  const target: string = move.body.targetHostId;
  assert.ok(source && target && source !== target, 'Try it pins the VM to one host and moves it to another');
  assert.equal(move.path, `/v1/vms/${name}/migrations`);
  assert.deepEqual(follow.slice(2), [name, '--follow']);

  const e = await embeddedFerry({ FERRY_DRIVER: 'qemu', FERRY_LAB_SUBNET: SUBNET, FERRY_LAB_NETNS_PREFIX: PREFIX, FERRY_LAB_PORT_RANGE: '47500-47799' });
  const lab = join(e.dir, 'lab');
  let stopFollow = false;
  try {
    const out = await e.start();
    for (const h of ['host-a', 'host-b', 'host-c']) assert.match(out(), new RegExp(`^    ${h}  `, 'm'), `the start-up output lists ${h}`);
    assert.match(out(), netns ? /each in its own network namespace \(10\.254\.0\.0\/24/ : /on loopback 127\.0\.0\.1/);
    if (netns) assert.equal(await guardRouteInstalled(SUBNET), true);
    const hosts = (await e.call('GET', '/v1/hosts')).body.items;
    assert.deepEqual(hosts.map((h: { id: string; driver: string }) => [h.id, h.driver]), [['host-a', 'qemu'], ['host-b', 'qemu'], ['host-c', 'qemu']]);
    const templates = (await e.call('GET', '/v1/templates')).body.items.map((t: { id: string; name: string }) => `${t.id} ${t.name}`).sort();
    assert.deepEqual(templates, ['tpl-debian-12 debian-12', 'tpl-linux linux-nocloud'], "both lab templates were built locally, the boot-sector guest under the demo's id and name");

    // Try it, command by command
    for (const c of tryIt.curls.filter((c) => !c.body && !c.path.includes('$'))) {
      if (c.path.startsWith(`/v1/vms/${name}`)) continue;
      assert.equal((await e.call('GET', c.path)).status, 200, c.path);
    }
    const made = await e.call('POST', create.path, create.body);
    assert.equal(made.status, 202, JSON.stringify(made.body));
    const vmId: string = made.body.vmId;
    const vm = await waitFor(`${name} runs`, async () => {
      const v = (await e.call('GET', `/v1/vms/${name}`)).body;
      if (v.state === 'error') throw new Error(`provision failed: ${v.error}`);
      return v.state === 'running' ? v : undefined;
    }, 180_000, 250);
    assert.equal(vm.hostId, source);
    const cons = ferryCli(e, follow, { stop: () => stopFollow });
    const booted = await waitFor('the guest to boot and dirty memory on the source console', async () => {
      if (cons.out().includes('console now on')) throw new Error(`the console moved before the migration: ${cons.out()}`);
      return dots(cons.out()) >= 3 ? cons.out() : undefined;
    }, 120_000, 500);
    assert.match(booted, /^UP/, 'the guest booted on the source');

    const started = await e.call('POST', move.path, move.body);
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const mig: string = started.body.migrationId;
    const watched = ferryCli(e, watch.map((a) => a.replace('$MIG', mig)));
    assert.equal(await watched.code, 0, `ferry migrations show --watch ends 0 on completion: ${watched.out()}`);
    for (const c of tryIt.curls.filter((c) => c.path.includes('$MIG'))) {
      const m = await e.call('GET', c.path.replace('$MIG', mig));
      assert.equal(m.status, 200, JSON.stringify(m.body));
      assert.equal(m.body.state, 'completed', JSON.stringify(m.body));
      assert.equal(m.body.targetHostId, target);
    }
    const qemus = async (hostId: string) => pidsMentioning(join(lab, hostId, 'vms', vmId) + '/');
    await waitFor('the source QEMU to exit', async () => (await qemus(source)).length === 0, 30_000, 100);
    const [pid] = await qemus(target);
    assert.ok(pid, 'a QEMU runs the VM on the target');
    if (netns) assert.equal((await run('ip', ['netns', 'identify', String(pid)])).stdout.trim(), `${PREFIX}-${target.charCodeAt(5) - 96}`, "the target's QEMU runs in its namespace");
    assert.equal((await e.call('GET', `/v1/vms/${name}`)).body.hostId, target);

    // the followed console moved to the target and the guest keeps dirtying there: no second boot
    const marker = `--- ${name}: console now on ${target} (was ${source}) ---`;
    const after = () => cons.out().slice(cons.out().indexOf(marker) + marker.length);
    const moved = await waitFor('heartbeats on the target in the followed console', async () => {
      return cons.out().includes(marker) && dots(after()) >= 1 ? after() : undefined;
    }, 90_000, 500).catch((err: Error) => {
      throw new Error(`${err.message}; ferry ${follow.join(' ')} printed:\n${cons.out().slice(-20000)}`);
    });
    await waitFor('the heartbeat to go on on the target', async () => dots(after()) > dots(moved), 60_000, 500);
    stopFollow = true;
    assert.equal(await cons.code, 'stopped', cons.out());
    assert.match(after(), /^\n\.+$/, `only heartbeats on the target, no second boot: ${JSON.stringify(after())}`);
    const fromApi = await console_(e, vmId);
    assert.equal(fromApi.hostId, target);
    assert.doesNotMatch(fromApi.text, /UP/);

    // Ctrl-C: the agents stop, the VM does not
    await e.stop();
    assert.deepEqual(await qemus(target), [pid], 'the QEMU outlived npm start');
    const again = await e.start();
    assert.ok(again().includes('host-a'));
    assert.equal((await e.call('GET', `/v1/vms/${vmId}`)).body.state, 'running');
    // re-attached: the target agent drives its QEMU again (a live migration back), the guest goes on
    await migrate(e, vmId, source);
    const back = await waitFor('heartbeats on the source again', async () => {
      const c = await console_(e, vmId);
      return c.hostId === source && dots(c.text) >= 1 ? c : undefined;
    }, 60_000, 500);
    assert.doesNotMatch(back.text, /UP/, 'no second boot after the migration back');
    await e.stop();

    const down = await execa(process.execPath, ['--import', 'tsx', 'scripts/lab-down.ts'], { cwd: PROJECT_ROOT, reject: false, env: { FERRY_DATA_DIR: e.dir } });
    assert.equal(down.exitCode, 0, `${down.stdout}\n${down.stderr}`);
    assert.match(down.stdout, /1 QEMU process\(es\) stopped/);
    assert.match(down.stdout, new RegExp(`1 VM\\(s\\) recorded as deleted \\(${vmId}\\)`));
    assert.deepEqual(await pidsMentioning(lab + '/'), [], 'no QEMU process of the lab is left');
    assert.deepEqual(await labNamespacesPresent(PREFIX), [], 'no lab namespace is left');
    if (netns) assert.equal(await guardRouteInstalled(SUBNET), false, 'the guard route is gone');
    assert.equal(existsSync(lab), false, 'no lab file is left');
  } finally {
    stopFollow = true;
    for (const pid of await pidsMentioning(lab + '/')) process.kill(pid, 'SIGKILL');
    await e.close();
    if (netns) {
      for (const n of await labNamespacesPresent(PREFIX)) await run('ip', ['netns', 'del', n]).catch(() => undefined);
      if (await guardRouteInstalled(SUBNET)) await run('ip', ['route', 'del', 'unreachable', SUBNET]).catch(() => undefined);
    }
  }
});
