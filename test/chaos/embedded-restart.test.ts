// The embedded default as a user runs it (`npm start` = scripts/start.ts): it comes up with the
// API, the Web UI and the demo cluster; Ctrl-C (SIGINT) stops everything; a second start keeps
// the hosts, the VMs and a migration that was still running, which then completes. And a process
// crash (SIGKILL of npm start and all it started) loses no workflow, no inventory row and no
// audit record (the dev server and ferry's SQLite run WAL with synchronous=NORMAL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../helpers/ferry.js';
import { embeddedFerry, type EmbeddedFerry } from '../helpers/embedded.js';

/** Starts a migration that waits for an operator's approval: still running when ferry goes down. */
async function heldMigration(e: EmbeddedFerry, vmId: string, targetHostId: string): Promise<string> {
  const started = await e.call('POST', `/v1/vms/${vmId}/migrations`, { kind: 'live', targetHostId, approveSwitchover: true });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const id = started.body.migrationId;
  await waitFor('awaiting approval', async () => (await e.call('GET', `/v1/migrations/${id}`)).body.awaitingApproval === true, 60_000, 200);
  return id;
}

/** The migration is still running after the restart; approved, it completes on `targetHostId`. */
async function finishes(e: EmbeddedFerry, id: string, vmId: string, targetHostId: string): Promise<void> {
  const during = await e.call('GET', `/v1/migrations/${id}`);
  assert.equal(during.body.state, 'running', 'the migration survived the restart');
  assert.equal((await e.call('POST', `/v1/migrations/${id}/switchover`)).status < 300, true);
  const done = await waitFor('completed', async () => {
    const m = await e.call('GET', `/v1/migrations/${id}`);
    return m.body.state === 'completed' ? m.body : undefined;
  }, 60_000, 200);
  assert.equal(done.targetHostId, targetHostId);
  assert.equal((await e.call('GET', `/v1/vms/${vmId}`)).body.hostId, targetHostId);
}

test('npm start: up, Ctrl-C, up again with the same hosts, VMs and running workflows', { timeout: 240_000 }, async () => {
  const e = await embeddedFerry();
  try {
    const output = await e.start();
    const token = readFileSync(join(e.dir, 'api-token'), 'utf8').trim();
    assert.ok(output().includes(token), 'the generated admin token is printed');
    assert.equal((await fetch(`${e.base}/healthz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${e.uiPort}/`)).status, 200, 'the Web UI answers');
    const hosts = (await e.call('GET', '/v1/hosts')).body.items.map((h: { id: string }) => h.id);
    assert.deepEqual(hosts, ['host-a', 'host-b', 'host-c', 'host-d']);
    assert.equal((await e.call('GET', '/v1/vms?limit=100')).body.items.length, 16, "the demo cluster's 16 VMs");

    const id = await heldMigration(e, 'vm-demo-02', 'host-a');
    await e.stop();

    const again = await e.start();
    assert.ok(!again().includes('seeded the demo cluster'), 'the second start does not seed again');
    assert.deepEqual((await e.call('GET', '/v1/hosts')).body.items.map((h: { id: string }) => h.id), hosts);
    assert.equal((await e.call('GET', '/v1/vms?limit=100')).body.items.length, 16);
    await finishes(e, id, 'vm-demo-02', 'host-a');
    await e.stop();
  } finally {
    await e.close();
  }
});

test('npm start: SIGKILL of everything it started loses no workflow, inventory row or audit record', { timeout: 240_000 }, async () => {
  const e = await embeddedFerry();
  try {
    await e.start();
    // a VM provisioned and a migration in flight right before the crash
    const made = await e.call('POST', '/v1/vms', { name: 'crash-1', cpus: 1, memoryMiB: 512, diskGiB: 2, template: 'alpine-3' });
    assert.equal(made.status, 202, JSON.stringify(made.body));
    const vmId = made.body.vmId;
    await waitFor('the new VM runs', async () => (await e.call('GET', `/v1/vms/${vmId}`)).body.state === 'running', 60_000, 200);
    const id = await heldMigration(e, 'vm-demo-03', 'host-d');
    const opsBefore = (await e.call('GET', '/v1/operations?limit=500')).body.items.map((o: { id: string }) => o.id).sort();
    await e.crash();

    await e.start();
    assert.equal((await e.call('GET', '/v1/vms?limit=100')).body.items.length, 17, 'the 16 demo VMs and the one provisioned before the crash');
    assert.equal((await e.call('GET', `/v1/vms/${vmId}`)).body.state, 'running');
    const opsAfter = (await e.call('GET', '/v1/operations?limit=500')).body.items.map((o: { id: string }) => o.id);
    for (const op of opsBefore) assert.ok(opsAfter.includes(op), `audit record ${op} survived the crash`);
    await finishes(e, id, 'vm-demo-03', 'host-d');
    await e.stop();
  } finally {
    await e.close();
  }
});
