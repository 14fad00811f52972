// The simulator's state lives in its SQLite file: a restarted process continues the same
// virtual timeline, migrations progress while nobody watches, and several processes share it.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { ManualClock, Simulator } from '../../drivers/sim/index.js';
import { GiB, MiB, TEMPLATE_PATH, openTestCluster, seedTestTopology, startTestVm } from '../../drivers/sim/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SIM_MODULE = pathToFileURL(join(ROOT, 'drivers/sim/index.ts')).href;

describe('sim persistence', () => {
  test('a new Simulator on the same file sees the VMs and a migration that kept progressing', async () => {
    const path = join(dir, 'restart.sqlite');
    const clock = new ManualClock();
    const c1 = openTestCluster({ path, clock });
    const { spec } = await startTestVm(c1.a, 'vm-1', { workload: { dirtyRateBytesPerSec: 100 * MiB, writableWorkingSetBytes: 4 * GiB } });
    const gen = c1.sim.bumpGeneration('host-a', 'vm-1');
    const { uri } = await c1.b.prepareIncoming(spec);
    await c1.a.startMigration('vm-1', { uri, autoSwitchover: true });
    clock.advance(1000);
    assert.equal((await c1.a.migrationStatus('vm-1')).status, 'active');
    c1.sim.close(); // the worker dies

    clock.advance(30_000); // nobody watches for 30 s
    const c2 = openTestCluster({ path, clock, seed: false });
    assert.equal(c2.sim.virtualNow(), 31_000, 'same virtual timeline');
    const s = await c2.a.migrationStatus('vm-1');
    assert.equal(s.status, 'completed');
    assert.equal((await c2.a.vmStatus('vm-1'))?.state, 'postmigrate');
    assert.equal((await c2.b.activateIncoming('vm-1')).state, 'running');
    assert.equal(c2.sim.snapshot().vms.find((v) => v.hostId === 'host-b')?.generation, gen);
    c2.sim.close();
  });

  test('two Simulator instances on one file see each other\'s writes', async () => {
    const path = join(dir, 'shared.sqlite');
    const clock = new ManualClock();
    const one = openTestCluster({ path, clock });
    const two = openTestCluster({ path, clock, seed: false });
    await startTestVm(one.a, 'vm-1');
    assert.deepEqual(two.sim.runningHostsOf('vm-1'), ['host-a']);
    two.sim.injectFault({ id: 'api-fault', kind: 'fail-step', step: 'stopVm' });
    await assert.rejects(one.a.stopVm('vm-1', { timeoutMs: 0, force: true }), /injected fault api-fault/);
    assert.equal(two.sim.listFaults()[0]!.firedCount, 1);
    one.sim.close();
    two.sim.close();
  });

  test('a different timeScale at open rebases the epoch: virtual time stays continuous', () => {
    const path = join(dir, 'scale.sqlite');
    const clock = new ManualClock(1_000_000);
    const s1 = Simulator.open({ path, now: clock.now, timeScale: 1 });
    clock.advance(5000);
    assert.equal(s1.virtualNow(), 5000);
    const s2 = Simulator.open({ path, now: clock.now, timeScale: 100 });
    assert.equal(s2.virtualNow(), 5000);
    clock.advance(10);
    assert.equal(s2.virtualNow(), 6000);
    assert.equal(s1.virtualNow(), 6000, 'the other process follows the persisted epoch');
    assert.equal(s1.timeScale, 100);
    assert.throws(() => Simulator.open({ path, timeScale: 0 }), /timeScale/);
    s1.close();
    s2.close();
  });

  test('another OS process injects a fault into the same file', async () => {
    const path = join(dir, 'process.sqlite');
    const sim = Simulator.open({ path });
    seedTestTopology(sim);
    const code = `import { Simulator } from ${JSON.stringify(SIM_MODULE)};
      const s = Simulator.open({ path: ${JSON.stringify(path)} });
      s.injectFault({ id: 'from-child', kind: 'link-cut', hostId: 'host-a' });
      s.close();`;
    await execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT });
    assert.deepEqual(sim.listFaults().map((f) => f.id), ['from-child']);
    sim.close();
  });

  test('a process killed mid-copy: the retry finds the same disk and waits for it (one disk, not two)', async () => {
    const path = join(dir, 'kill.sqlite');
    const sim = Simulator.open({ path, timeScale: 2 });
    seedTestTopology(sim);
    const spec = { name: 'vm-1-root', datastoreId: 'shared', sizeBytes: 4 * GiB, source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: false } };
    // 2 GiB at 512 MiB/s = 4 s virtual = 2 s wall at scale 2
    const code = `import { Simulator } from ${JSON.stringify(SIM_MODULE)};
      const s = Simulator.open({ path: ${JSON.stringify(path)} });
      await s.forHost('host-a').createDisk(${JSON.stringify(spec)});
      await new Promise(() => {});`;
    const child = execa(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, reject: false });
    const started = await waitFor(() => sim.snapshot().disks.find((d) => d.path === 'sim://shared/vm-1-root.qcow2'));
    child.kill('SIGKILL');
    await child;
    assert.equal(started.ready, false, 'killed while copying');
    const driver = sim.forHost('host-a');
    const disk = await driver.createDisk(spec as Parameters<typeof driver.createDisk>[0]);
    assert.equal(disk.actualSizeBytes, 2 * GiB);
    assert.equal(sim.snapshot().disks.length, 1);
    sim.close();
  });
});

async function waitFor<T>(probe: () => T | undefined, what = 'condition'): Promise<T> {
  for (let i = 0; i < 3000; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}
