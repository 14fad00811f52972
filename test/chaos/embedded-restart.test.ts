// The embedded default as a user runs it (`npm start` = scripts/start.ts): it comes up with the
// API, the Web UI and the demo cluster; Ctrl-C (SIGINT) stops everything; a second start keeps
// the hosts, the VMs and a migration that was still running, which then completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../workers/dev-server.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { waitFor } from '../helpers/ferry.js';

test('npm start: up, Ctrl-C, up again with the same hosts, VMs and running workflows', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-embedded-'));
  const [api, temporal, ui, metrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = {
    FERRY_DATA_DIR: dir,
    FERRY_API_PORT: String(api),
    FERRY_API_HOST: '127.0.0.1',
    FERRY_TEMPORAL_PORT: String(temporal),
    FERRY_TEMPORAL_UI_PORT: String(ui),
    FERRY_WORKER_METRICS_PORT: String(metrics),
    FERRY_SIM_TIME_SCALE: '10',
  };
  let child: ResultPromise | undefined;
  const start = async () => {
    const c = execa(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], { cwd: PROJECT_ROOT, env, reject: false, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('ferry to print that it runs', () => {
      if (c.exitCode !== null) throw new Error(`npm start exited: ${out}`);
      return out.includes('Ctrl-C stops everything');
    }, 120_000, 100);
    child = c;
    return () => out;
  };
  const stop = async () => {
    child!.kill('SIGINT');
    const r = await child!;
    assert.equal(r.exitCode, 0, `clean exit on Ctrl-C: ${r.stdout}\n${r.stderr}`);
    child = undefined;
  };
  const base = `http://127.0.0.1:${api}`;
  let token = '';
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: (await res.json().catch(() => null)) as any };
  };

  try {
    const output = await start();
    token = readFileSync(join(dir, 'api-token'), 'utf8').trim();
    assert.ok(output().includes(token), 'the generated admin token is printed');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${ui}/`)).status, 200, 'the Web UI answers');
    const hosts = (await call('GET', '/v1/hosts')).body.items.map((h: { id: string }) => h.id);
    assert.deepEqual(hosts, ['host-a', 'host-b', 'host-c', 'host-d']);
    const vms = (await call('GET', '/v1/vms?limit=100')).body.items;
    assert.equal(vms.length, 16, "the demo cluster's 16 VMs");

    // a migration that waits for an operator: it is still running when ferry stops
    const started = await call('POST', '/v1/vms/vm-demo-02/migrations', { kind: 'live', targetHostId: 'host-a', approveSwitchover: true });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const id = started.body.migrationId;
    await waitFor('awaiting approval', async () => (await call('GET', `/v1/migrations/${id}`)).body.awaitingApproval === true, 60_000, 200);
    await stop();

    const again = await start();
    assert.ok(!again().includes('seeded the demo cluster'), 'the second start does not seed again');
    assert.deepEqual((await call('GET', '/v1/hosts')).body.items.map((h: { id: string }) => h.id), hosts);
    assert.equal((await call('GET', '/v1/vms?limit=100')).body.items.length, 16);
    const during = await call('GET', `/v1/migrations/${id}`);
    assert.equal(during.body.state, 'running', 'the migration survived the restart');
    assert.equal((await call('POST', `/v1/migrations/${id}/switchover`)).status < 300, true);
    const done = await waitFor('completed', async () => {
      const m = await call('GET', `/v1/migrations/${id}`);
      return m.body.state === 'completed' ? m.body : undefined;
    }, 60_000, 200);
    assert.equal(done.targetHostId, 'host-a');
    assert.equal((await call('GET', '/v1/vms/vm-demo-02')).body.hostId, 'host-a');
    await stop();
  } finally {
    if (child) {
      child.kill('SIGKILL');
      await child;
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
