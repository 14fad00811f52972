// ColdMigrate on REAL QEMU under TCG: a running 64 MiB guest whose disk holds 128 MiB written
// through QEMU moves from the shared datastore to qb's own datastore; the target host agent
// (a child process, the one that copies) is SIGKILLed mid-copy and restarted: the copy resumes
// from its heartbeat checkpoint (fewer bytes copied after the restart than in total) and
// completes; sha256 of every file read back equals the source's, the source holds nothing, the VM
// runs once, on qb. Every QEMU started here is killed in `after`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { Vm } from '../../db/entities.js';
import { coldProgressQuery, controlQueue, workflowIds, type ColdMigrateInput, type MigrationResult } from '../../workflows/definitions.js';
import { outcome, waitFor } from '../helpers/ferry.js';
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type AgentProcess, type QemuFerry } from '../helpers/qemu-ferry.js';

const MiB = 1024 ** 2;
const skip = qemuSkipReason;

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

describe('ColdMigrate on qemu', { skip }, () => {
  let f: QemuFerry;
  let agent: AgentProcess | undefined;
  before(async () => {
    f = await startQemuFerry({ hosts: ['qa', 'qb'], processAgents: ['qb'], storage: 'shared+local', basePort: 48300 });
    agent = await f.spawnAgent('qb');
  });
  after(async () => {
    await agent?.kill('SIGKILL').catch(() => undefined);
    await f?.close();
  });

  test('target agent SIGKILLed mid-copy: resumed from its checkpoint, checksums equal, source empty, runs once on qb', async () => {
    const vmId = 'vm-qcold';
    const p = await f.provision({ name: 'qcold', vmId, hostId: 'qa' });
    await p.result();
    // 128 MiB of data in the linked clone's own layer, written through QEMU while the guest runs
    await f.driver('qa').hmp(vmId, 'qemu-io disk0 "write -P 0xab 0 128M"');
    const before = await f.db.em().findOneOrFail(Vm, { id: vmId });
    const input: ColdMigrateInput = { vmId, targetHostId: 'qb', targetDatastoreId: 'qlocal-qb', force: true, shutdownTimeoutMs: 1000, maxBandwidthBytesPerSec: 16 * MiB };
    const h = await f.client.workflow.start('coldMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(vmId)}-${f.prefix}`, args: [input] });
    await waitFor('the copy past 24 MiB', async () => {
      const q = await h.query(coldProgressQuery);
      return q.stage === 'copy' && q.progress.transferredBytes > 24 * MiB;
    }, 120_000, 100);
    await agent!.kill('SIGKILL');
    agent = await f.spawnAgent('qb');
    const r = await outcome<MigrationResult>(h);
    assert.ok(r.ok, !r.ok ? r.message : '');

    const q = await h.query(coldProgressQuery);
    const total = q.progress.totalBytes;
    assert.ok(total > 128 * MiB, `the disk holds the written data (${total})`);
    assert.ok(q.progress.resumedFromBytes > 0, 'the retried copy started from a checkpoint');
    assert.ok(total - q.progress.resumedFromBytes < total, 'fewer bytes copied after the restart than in total');
    assert.ok(q.decisions.some((d) => d.action === 'copy-resumed'), JSON.stringify(q.decisions));

    // real checksums, read here from both sides' files (the source's as the manifest recorded them)
    assert.ok(q.files && q.files.length >= 2, 'disk and seed (and the serial log) copied');
    for (const file of q.files!) {
      assert.equal(file.targetSha256, file.sourceSha256, file.source);
      assert.equal(await sha256(file.target), file.sourceSha256, `${file.target} read back`);
      assert.ok(!existsSync(file.source) || file.kind === 'log', `${file.source} gone from the source`);
    }
    const vm = await f.db.em().findOneOrFail(Vm, { id: vmId });
    assert.equal(vm.hostId, 'qb');
    assert.equal(vm.state, 'running');
    assert.equal(vm.datastoreId, 'qlocal-qb');
    assert.ok(vm.diskPaths.every((d) => d.includes('qb-ds')), vm.diskPaths.join(', '));
    for (const d of [...before.diskPaths, before.seedPath!]) assert.ok(!existsSync(d), `${d} deleted`);
    assert.ok(!existsSync(f.vmFolder('qa', vmId)), 'qa holds nothing of it');
    const procs = await f.qemuProcesses(vmId);
    assert.deepEqual(procs.map((x) => x.hostId), ['qb'], 'one QEMU, on qb');
  });
});
