// The QEMU lab as a user runs it: `FERRY_DRIVER=qemu npm start` (scripts/start.ts, a child
// process) prints the lab's hosts; POST /v1/vms from the dirtying template, a live migration on
// real QEMU processes, the guest's console heartbeat ('.' per 256 passes over its 16 MiB)
// continues on the target; Ctrl-C leaves the VM running and a second start re-attaches (a
// migration back needs the target agent's QMP); `npm run lab:down` leaves no QEMU process,
// namespace, guard route or lab file. Bad lab settings stop with one line naming the setting.
import { execFile } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { execa } from 'execa';
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

test('bad lab settings stop with one line naming the setting, before anything starts', async () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ FERRY_LAB_HOSTS: '0' }, /^ferry: FERRY_LAB_HOSTS: "0" must be a whole number of hosts in 1\.\.16$/],
    [{ FERRY_LAB_HOSTS: '50' }, /^ferry: FERRY_LAB_HOSTS: "50" must be/],
    [{ FERRY_API_PORT: '47150', FERRY_LAB_PORT_RANGE: '47100-47399' }, /^ferry: FERRY_LAB_PORT_RANGE: 47100-47399 collides with FERRY_API_PORT 47150$/],
    [{ FERRY_LAB_PORT_RANGE: '47100-47105', FERRY_LAB_HOSTS: '3' }, /^ferry: FERRY_LAB_PORT_RANGE: .*fewer than 4 ports/],
    [{ FERRY_QEMU_BINARY: '/nonexistent/qemu-system-x86_64' }, /^ferry: FERRY_QEMU_BINARY: .*QEMU is not installed/],
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

/** the '.' heartbeats in the console of a VM and the host it came from */
async function heartbeat(e: EmbeddedFerry, vmId: string): Promise<{ hostId: string; dots: number; text: string }> {
  const r = await e.call('GET', `/v1/vms/${vmId}/console?tail=10000`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const text = r.body.lines.join('\n');
  return { hostId: r.body.hostId, dots: (text.match(/\./g) ?? []).length, text };
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

test('FERRY_DRIVER=qemu npm start: lab hosts, provision, live migration, console, re-attach, lab:down', { skip: qemuSkipReason, timeout: 480_000 }, async () => {
  const e = await embeddedFerry({ FERRY_DRIVER: 'qemu', FERRY_LAB_SUBNET: SUBNET, FERRY_LAB_NETNS_PREFIX: PREFIX, FERRY_LAB_PORT_RANGE: '47500-47799' });
  const lab = join(e.dir, 'lab');
  try {
    const out = await e.start();
    for (const h of ['host-a', 'host-b', 'host-c']) assert.match(out(), new RegExp(`^    ${h}  `, 'm'), `the start-up output lists ${h}`);
    assert.match(out(), netns ? /each in its own network namespace \(10\.254\.0\.0\/24/ : /on loopback 127\.0\.0\.1/);
    if (netns) assert.equal(await guardRouteInstalled(SUBNET), true);
    const hosts = (await e.call('GET', '/v1/hosts')).body.items;
    assert.deepEqual(hosts.map((h: { id: string; driver: string }) => [h.id, h.driver]), [['host-a', 'qemu'], ['host-b', 'qemu'], ['host-c', 'qemu']]);

    const templates = (await e.call('GET', '/v1/templates')).body.items.map((t: { id: string }) => t.id).sort();
    assert.deepEqual(templates, ['tpl-dirty', 'tpl-linux'], 'both lab templates were built locally');
    const made = await e.call('POST', '/v1/vms', { name: 'lab-1', cpus: 1, memoryMiB: 64, diskGiB: 1, template: 'tpl-dirty' });
    assert.equal(made.status, 202, JSON.stringify(made.body));
    const vmId: string = made.body.vmId;
    const vm = await waitFor('the VM runs', async () => {
      const v = (await e.call('GET', `/v1/vms/${vmId}`)).body;
      if (v.state === 'error') throw new Error(`provision failed: ${v.error}`);
      return v.state === 'running' ? v : undefined;
    }, 120_000, 250);
    const source: string = vm.hostId;
    const target = source === 'host-a' ? 'host-b' : 'host-a';
    const before = await waitFor('heartbeats on the source console', async () => {
      const h = await heartbeat(e, vmId);
      return h.dots >= 2 ? h : undefined;
    }, 60_000, 250);
    assert.equal(before.hostId, source);
    assert.match(before.text, /^UP/, 'the guest booted on the source');

    await migrate(e, vmId, target);
    const qemus = async (hostId: string) => pidsMentioning(join(lab, hostId, 'vms', vmId) + '/');
    await waitFor('the source QEMU to exit', async () => (await qemus(source)).length === 0, 30_000, 100);
    const [pid] = await qemus(target);
    assert.ok(pid, 'a QEMU runs the VM on the target');
    if (netns) assert.equal((await run('ip', ['netns', 'identify', String(pid)])).stdout.trim(), `${PREFIX}-${target === 'host-a' ? 1 : 2}`, "the target's QEMU runs in its namespace");
    assert.equal((await e.call('GET', `/v1/vms/${vmId}`)).body.hostId, target);
    // the target's console: the guest keeps counting (no second boot), read from the target
    const first = await waitFor('heartbeats on the target console', async () => {
      const h = await heartbeat(e, vmId);
      return h.hostId === target && h.dots >= 1 ? h : undefined;
    }, 60_000, 250);
    assert.doesNotMatch(first.text, /UP/, 'the guest did not boot again on the target');
    await waitFor('the heartbeat to go on', async () => (await heartbeat(e, vmId)).dots > first.dots, 60_000, 250);

    // Ctrl-C: the agents stop, the VM does not
    await e.stop();
    assert.deepEqual(await qemus(target), [pid], 'the QEMU outlived npm start');
    const again = await e.start();
    assert.ok(again().includes('host-a'));
    assert.equal((await e.call('GET', `/v1/vms/${vmId}`)).body.state, 'running');
    // re-attached: the target agent drives its QEMU again (a live migration back)
    await migrate(e, vmId, source);
    assert.equal((await heartbeat(e, vmId)).hostId, source);
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
    for (const pid of await pidsMentioning(lab + '/')) process.kill(pid, 'SIGKILL');
    await e.close();
    if (netns) {
      for (const n of await labNamespacesPresent(PREFIX)) await run('ip', ['netns', 'del', n]).catch(() => undefined);
      if (await guardRouteInstalled(SUBNET)) await run('ip', ['route', 'del', 'unreachable', SUBNET]).catch(() => undefined);
    }
  }
});
