// A small ready-made simulated cluster for tests and demos: three hosts on one shared datastore
// (plus a local datastore each) and a template image. Deterministic with the ManualClock.
import type { HypervisorDriver, SimWorkload, VmRuntime } from '../hypervisor.js';
import { ManualClock } from './clock.js';
import { Simulator } from './simulator.js';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
export const TEMPLATE_PATH = 'sim://shared/templates/debian-12.qcow2';
export const CPU_FEATURES = ['sse4_2', 'avx', 'avx2', 'aes'];

export interface TestCluster {
  sim: Simulator;
  clock: ManualClock;
  hosts: Record<'host-a' | 'host-b' | 'host-c', HypervisorDriver>;
  a: HypervisorDriver;
  b: HypervisorDriver;
  c: HypervisorDriver;
}

export interface TestClusterOptions {
  /** state file; default ':memory:' */
  path?: string;
  clock?: ManualClock;
  timeScale?: number;
  /** host-a <-> host-b bandwidth (default: the 1 GiB/s default link) */
  linkBandwidthBytesPerSec?: number;
  /** skip the topology (reopening an existing file) */
  seed?: boolean;
}

export function openTestCluster(opts: TestClusterOptions = {}): TestCluster {
  const clock = opts.clock ?? new ManualClock();
  const sim = Simulator.open({ path: opts.path ?? ':memory:', now: clock.now, sleep: clock.sleep, timeScale: opts.timeScale });
  if (opts.seed !== false) seedTestTopology(sim, opts.linkBandwidthBytesPerSec);
  const hosts = { 'host-a': sim.forHost('host-a'), 'host-b': sim.forHost('host-b'), 'host-c': sim.forHost('host-c') };
  return { sim, clock, hosts, a: hosts['host-a'], b: hosts['host-b'], c: hosts['host-c'] };
}

export function seedTestTopology(sim: Simulator, linkBandwidthBytesPerSec?: number): void {
  for (const id of ['host-a', 'host-b', 'host-c']) {
    sim.upsertHost({ id, cpuModel: 'EPYC-Milan', cpuFeatures: CPU_FEATURES, cpus: 32, memoryBytes: 256 * GiB, networks: ['default', 'vlan-100'] });
    sim.upsertDatastore({ id: `local-${id.slice(5)}`, shared: false, capacityBytes: 500 * GiB, throughputBytesPerSec: 1 * GiB, hostIds: [id] });
  }
  sim.upsertDatastore({ id: 'shared', shared: true, capacityBytes: 2000 * GiB, throughputBytesPerSec: 512 * MiB, hostIds: ['host-a', 'host-b', 'host-c'] });
  sim.upsertImage({ path: TEMPLATE_PATH, datastoreId: 'shared', sizeBytes: 2 * GiB });
  if (linkBandwidthBytesPerSec !== undefined) sim.upsertLink({ a: 'host-a', b: 'host-b', bandwidthBytesPerSec: linkBandwidthBytesPerSec });
}

/** Linked clone on the shared datastore, define, start: a running guest on `driver`'s host. */
export async function startTestVm(
  driver: HypervisorDriver,
  vmId: string,
  opts: { memoryBytes?: number; workload?: SimWorkload; datastoreId?: string } = {},
): Promise<VmRuntime> {
  const disk = await driver.createDisk({
    name: `${vmId}-root`,
    datastoreId: opts.datastoreId ?? 'shared',
    sizeBytes: 20 * GiB,
    source: { kind: 'template', imagePath: TEMPLATE_PATH, linked: true },
  });
  await driver.defineVm({
    vmId,
    name: vmId,
    cpus: 2,
    memoryBytes: opts.memoryBytes ?? 4 * GiB,
    disks: [disk.path],
    cpuFeatures: ['sse4_2'],
    network: 'default',
    ...(opts.workload ? { workload: opts.workload } : {}),
  });
  return driver.startVm(vmId);
}
