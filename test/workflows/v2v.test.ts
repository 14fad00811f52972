// V2V on the simulator through the real path (API -> inspectVmPackage on the host agent ->
// ImportVm -> ProvisionVm's import method): the package's files are real (an OVA built here from a
// vmdk qemu-img made, a bare image with a JSON descriptor) and checked for real; the simulator
// then provisions from the declared sizes. Hostile packages are refused with a 4xx naming the
// problem, with no VM row, no staged files and no simulator image left. Bad bodies are 4xx.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp } from '../../api/app.js';
import { Vm } from '../../db/entities.js';
import { startTestFerry, stopOwnTemporal, type TestFerry } from '../helpers/ferry.js';
import { ADMIN, testConfig } from '../helpers/api.js';
import { buildOva, type Tamper } from '../helpers/ova.js';

const staging = (hostId: string) => path.join(os.tmpdir(), 'ferry-v2v', hostId);
const entries = async (d: string) => (await fs.readdir(d).catch(() => [] as string[])).sort();

describe('V2V import and export (simulator)', () => {
  let f: TestFerry;
  let app: FastifyInstance;
  let dir: string;
  let image: string;
  const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object, headers: { authorization: `Bearer ${ADMIN}` } });
  const importCount = () => f.sim.store.all<{ path: string }>("SELECT path FROM images WHERE path LIKE 'sim://%/imports/%'").length;

  before(async () => {
    f = await startTestFerry();
    app = await buildApp({ db: f.db, temporal: f.client, config: testConfig(f.dir), registry: new Registry(), taskQueuePrefix: f.prefix });
    await app.ready();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fv2v-sim-'));
    image = path.join(dir, 'legacy.img');
    await fs.writeFile(image, randomBytes(3 * 1024 * 1024));
  });
  after(async () => {
    await app?.close();
    await f?.close();
    await stopOwnTemporal();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  async function waitVm(vmId: string, state: string) {
    for (let i = 0; i < 300; i++) {
      const vm = await f.db.em().findOne(Vm, { id: vmId });
      if (vm?.state === state) return vm;
      if (vm?.state === 'error') assert.fail(`vm ${vmId} error: ${vm.error}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`vm ${vmId} never became ${state}`);
  }

  test('an OVA imports: CPU and memory from the descriptor, running on the simulator, nothing staged after', async () => {
    const { ova } = await buildOva(dir, 'legacy-app', image, { cpus: 3, memoryMiB: 384 });
    const r = await post('/v1/vms/import', { path: ova, hostId: 'h2' });
    assert.equal(r.statusCode, 202, r.body);
    const body = r.json();
    assert.equal(body.name, 'legacy-app');
    assert.deepEqual({ cpus: body.descriptor.cpus, memoryMiB: body.descriptor.memoryMiB, format: body.descriptor.format, kind: body.descriptor.packageKind, verified: body.descriptor.verifiedFiles, nics: body.descriptor.nics }, { cpus: 3, memoryMiB: 384, format: 'vmdk', kind: 'ova', verified: 2, nics: ['VM Network'] });
    const vm = await waitVm(body.vmId, 'running');
    assert.equal(vm.hostId, 'h2');
    assert.equal(vm.cpus, 3);
    assert.equal(vm.memoryMiB, 384);
    const rt = await f.sim.forHost('h2').vmStatus(body.vmId);
    assert.equal(rt?.state, 'running');
    // the import workflow discards the staged package when it ends
    const wf = f.client.workflow.getHandle(body.workflowId);
    await wf.result();
    assert.deepEqual(await entries(staging('h2')), []);
    assert.equal(importCount(), 0);
  });

  test('a bare image with a JSON descriptor imports (start: false leaves it stopped)', async () => {
    const vmdk = path.join(dir, 'bare.vmdk');
    await execa('qemu-img', ['convert', '-O', 'vmdk', image, vmdk]);
    const desc = path.join(dir, 'bare.json');
    await fs.writeFile(desc, JSON.stringify({ name: 'bare-one', cpus: 1, memoryMiB: 128, disk: 'bare.vmdk' }));
    const r = await post('/v1/vms/import', { path: desc, start: false });
    assert.equal(r.statusCode, 202, r.body);
    const { vmId, workflowId, descriptor } = r.json();
    assert.equal(descriptor.packageKind, 'image');
    await f.client.workflow.getHandle(workflowId).result();
    const vm = await waitVm(vmId, 'stopped');
    assert.equal(vm.memoryMiB, 128);
    // export needs disk bytes: the simulator has none, a 409 saying so
    const ex = await post(`/v1/vms/${vmId}/export`, { format: 'ova', to: path.join(dir, 'out.ova') });
    assert.equal(ex.statusCode, 409, ex.body);
    assert.match(ex.json().message, /simulated/);
    await assert.rejects(fs.stat(path.join(dir, 'out.ova')));
  });

  const hostile: Array<[Tamper, RegExp]> = [
    ['bytes', /does not match the manifest.*tampered/],
    ['traversal', /climbs out of the package folder/],
    ['symlink', /symbolic link/],
    ['oversized', /larger than declared: virtual size/],
    ['bad-xml', /not well-formed XML/],
  ];
  for (const [tamper, reason] of hostile) {
    test(`a hostile OVA (${tamper}) is refused with 422 naming it; no VM row, nothing staged`, async () => {
      const name = `evil-${tamper}`;
      const { ova } = await buildOva(dir, name, image, { cpus: 1, memoryMiB: 64, tamper });
      const before = await entries(dir);
      const r = await post('/v1/vms/import', { path: ova, hostId: 'h1' });
      assert.equal(r.statusCode, 422, r.body);
      assert.match(r.json().message, reason);
      assert.equal(await f.db.em().count(Vm, { name }), 0);
      assert.deepEqual(await entries(staging('h1')), []);
      assert.deepEqual(await entries(dir), before, 'nothing written next to the package (no ../ escape)');
      assert.equal(importCount(), 0);
    });
  }

  test('bad bodies are 4xx naming the problem, never 5xx', async () => {
    const cases: Array<[unknown, number, RegExp]> = [
      [{}, 400, /path/],
      [{ path: 'relative/x.ova' }, 400, /absolute/],
      [{ path: '/tmp/../etc/x.ova' }, 400, /\.\./],
      [{ path: '/tmp/x.ova', bogus: 1 }, 400, /bogus/],
      [{ path: '/tmp/x.ova', name: 'Bad Name' }, 400, /name/],
      [{ path: '/tmp/x.ova', hostId: 'nope' }, 422, /host nope/],
      [{ path: '/tmp/x.ova', network: 'nope' }, 422, /network/],
      [{ path: path.join(dir, 'missing.ova') }, 404, /does not exist/],
      [{ path: image }, 400, /none of/],
    ];
    for (const [payload, status, re] of cases) {
      const r = await post('/v1/vms/import', payload);
      assert.equal(r.statusCode, status, `${JSON.stringify(payload)}: ${r.body}`);
      assert.match(r.body, re, JSON.stringify(payload));
    }
    for (const [payload, status] of [
      [{ format: 'ova' }, 400],
      [{ format: 'zip', to: '/tmp/x' }, 400],
      [{ format: 'raw', to: 'x.raw' }, 400],
    ] as Array<[unknown, number]>) {
      const r = await post('/v1/vms/vm-nope/export', payload);
      assert.equal(r.statusCode, status, `${JSON.stringify(payload)}: ${r.body}`);
    }
    assert.equal((await post('/v1/vms/vm-nope/export', { format: 'raw', to: '/tmp/x.raw' })).statusCode, 404);
  });
});
