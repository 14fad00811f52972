// V2V on REAL QEMU under TCG through the API: an OVA built here (hand-written DMTF OVF, a
// streamOptimized vmdk qemu-img made from the test guest, SHA256 manifest, GNU tar) imports with
// ProvisionVm's import method, boots (the guest's counter advances) with the descriptor's CPUs
// and memory on QEMU's command line; stopped, it exports to an OVA that re-imports with the same
// disk content (sha256 of the raw content), and to raw/qcow2/vhdx images qemu-img compares equal;
// tampered packages are refused with 422 naming the problem, no VM row, no files in the datastore
// or staging. Every QEMU started here is killed in `after`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp } from '../../api/app.js';
import { Vm } from '../../db/entities.js';
import { waitFor } from '../helpers/ferry.js';
import { ADMIN, testConfig } from '../helpers/api.js';
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';
import { buildOva, rawContentSha, type Tamper } from '../helpers/ova.js';

const skip = qemuSkipReason;
const HOST = 'va';
const staging = path.join(os.tmpdir(), 'ferry-v2v', HOST);
const entries = async (d: string) => (await fs.readdir(d).catch(() => [] as string[])).sort();

describe('V2V import and export on qemu', { skip }, () => {
  let f: QemuFerry;
  let app: FastifyInstance;
  let dir: string;
  const vmIds: string[] = [];
  const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object, headers: { authorization: `Bearer ${ADMIN}` } });

  before(async () => {
    f = await startQemuFerry({ hosts: [HOST], basePort: 48900 });
    app = await buildApp({ db: f.db, temporal: f.client, config: testConfig(f.root), registry: new Registry(), taskQueuePrefix: f.prefix });
    await app.ready();
    dir = path.join(f.root, 'pkgs');
    await fs.mkdir(dir);
  });
  after(async () => {
    for (const id of vmIds) await f?.destroyEverywhere(id).catch(() => undefined);
    await app?.close();
    await f?.close();
  });

  async function importAndWait(payload: Record<string, unknown>, state: 'running' | 'stopped') {
    const r = await post('/v1/vms/import', { hostId: HOST, ...payload });
    assert.equal(r.statusCode, 202, r.body);
    const body = r.json();
    vmIds.push(body.vmId);
    await f.client.workflow.getHandle(body.workflowId).result();
    const vm = await f.db.em().findOneOrFail(Vm, { id: body.vmId });
    assert.equal(vm.state, state, vm.error ?? '');
    return { body, vm };
  }

  let first: Vm;

  test('an OVA from another platform imports, boots, and runs with the CPUs and memory of its descriptor', async () => {
    const { ova } = await buildOva(dir, 'legacy-app', f.guest.raw, { cpus: 2, memoryMiB: 96 });
    const { body, vm } = await importAndWait({ path: ova }, 'running');
    first = vm;
    assert.deepEqual({ cpus: body.descriptor.cpus, memoryMiB: body.descriptor.memoryMiB, verifiedFiles: body.descriptor.verifiedFiles }, { cpus: 2, memoryMiB: 96, verifiedFiles: 2 });
    assert.equal(vm.cpus, 2);
    assert.equal(vm.memoryMiB, 96);
    // QEMU itself runs with them
    const procs = await f.qemuProcesses(vm.id);
    assert.equal(procs.length, 1);
    const argv = readFileSync(`/proc/${procs[0].pid}/cmdline`, 'utf8').split('\0');
    assert.match(argv[argv.indexOf('-smp') + 1], /^2\b/, argv.join(' '));
    assert.match(argv[argv.indexOf('-m') + 1], /^96(M)?\b/, argv.join(' '));
    // the guest boots: its counter advances
    const c0 = await f.heartbeat(HOST, vm.id);
    await waitFor('the guest counter advances', async () => (await f.heartbeat(HOST, vm.id)) > c0, 60_000, 200);
    assert.ok(vm.diskPaths[0].startsWith(f.datastore.path), 'the disk is converted into the datastore');
    assert.deepEqual(await entries(staging), [], 'the unpacked package is gone');
  });

  test('stopped, it exports to an OVA that re-imports with the same disk content, and to raw/qcow2/vhdx', async () => {
    assert.ok(first, 'the import test ran');
    const running = await post(`/v1/vms/${first.id}/export`, { format: 'ova', to: path.join(dir, 'early.ova') });
    assert.equal(running.statusCode, 409, running.body);
    const stop = await post(`/v1/vms/${first.id}/stop`, { force: true, timeoutMs: 500 });
    assert.equal(stop.statusCode, 202, stop.body);
    await waitFor('stopped', async () => (await f.db.em().findOneOrFail(Vm, { id: first.id })).state === 'stopped', 60_000, 200);

    const out = path.join(dir, 'exported.ova');
    const ex = await post(`/v1/vms/${first.id}/export`, { format: 'ova', to: out });
    assert.equal(ex.statusCode, 200, ex.body);
    const e = ex.json();
    assert.equal(e.bytes, (await fs.stat(out)).size);
    // an OVA is a tar: descriptor first, the streamOptimized vmdk, the manifest
    const list = (await execa('tar', ['-tf', out])).stdout.split('\n');
    assert.deepEqual(list, ['legacy-app.ovf', 'legacy-app-disk1.vmdk', 'legacy-app.mf']);
    const again = await post(`/v1/vms/${first.id}/export`, { format: 'ova', to: out });
    assert.equal(again.statusCode, 409, 'no overwrite');

    const { vm: back, body } = await importAndWait({ path: out, name: 'legacy-back', start: false }, 'stopped');
    assert.equal(body.descriptor.cpus, 2);
    assert.equal(body.descriptor.memoryMiB, 96);
    assert.equal(await rawContentSha(back.diskPaths[0], dir), await rawContentSha(first.diskPaths[0], dir), 'round trip keeps the disk content');

    for (const format of ['raw', 'qcow2', 'vhdx'] as const) {
      const to = path.join(dir, `exported.${format}`);
      const r = await post(`/v1/vms/${first.id}/export`, { format, to });
      assert.equal(r.statusCode, 200, r.body);
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', to])).stdout) as { format: string };
      assert.equal(info.format, format);
      await execa('qemu-img', ['compare', '-U', first.diskPaths[0], to]);
    }
    assert.deepEqual((await entries(dir)).filter((n) => n.startsWith('.')), [], 'no partial export files');
  });

  const hostile: Array<[Tamper, RegExp]> = [
    ['bytes', /does not match the manifest.*tampered/],
    ['traversal', /climbs out of the package folder/],
    ['oversized', /larger than declared/],
    ['bad-xml', /not well-formed XML/],
  ];
  for (const [tamper, reason] of hostile) {
    test(`tampered OVA (${tamper}): 422 naming the problem, no VM row, nothing in the datastore or staging`, async () => {
      const name = `evil-${tamper}`;
      const { ova } = await buildOva(dir, name, f.guest.raw, { cpus: 1, memoryMiB: 64, tamper });
      const ds = await entries(f.datastore.path);
      const r = await post('/v1/vms/import', { path: ova, hostId: HOST });
      assert.equal(r.statusCode, 422, r.body);
      assert.match(r.json().message, reason);
      assert.equal(await f.db.em().count(Vm, { name }), 0);
      assert.deepEqual(await entries(f.datastore.path), ds);
      assert.deepEqual(await entries(staging), []);
      assert.deepEqual((await entries(f.root)).filter((n) => n.includes(name)), [], 'nothing escaped the staging folder');
    });
  }
});
