// A simulated cluster described once and written to both sides: the inventory database and the
// simulator. Used by the embedded default (the demo cluster) and by tests (small clusters).
// Seeding is idempotent: rows that exist are left alone, so a second start keeps its data.
import type { Db } from '../db/orm.js';
import { Allocation, Datastore, Host, IpAllocation, IpPool, Network, Template, Vm } from '../db/entities.js';
import type { Simulator } from '../drivers/sim/index.js';
import { macFor } from '../activities/control.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export interface ClusterSpec {
  hosts: Array<{
    id: string;
    rack?: string;
    cpuModel: string;
    cpuFeatures: string[];
    cpus: number;
    memoryMiB: number;
    networks?: string[];
    tags?: string[];
    cpuOvercommit?: number;
    memoryOvercommit?: number;
    maintenance?: boolean;
    /** default 'sim'; qemu and libvirt hosts are written to the database only (their agent owns the driver) */
    driver?: 'sim' | 'qemu' | 'libvirt';
    migrationAddress?: string;
  }>;
  datastores: Array<{ id: string; shared: boolean; capacityGiB: number; throughputMiBps: number; hostIds: string[] }>;
  links?: Array<{ a: string; b: string; bandwidthMiBps: number }>;
  templates: Array<{
    id: string;
    name: string;
    os: string;
    datastoreIds: string[];
    diskGiB: number;
    minMemoryMiB: number;
    requiredCpuFeatures?: string[];
    owner?: string;
    department?: string;
    tags?: string[];
    /** real image file (qemu); default: a simulator image on the first datastore */
    imagePath?: string;
  }>;
  networks: Array<{ id: string; name: string; cidr: string; gateway: string; dns: string[]; vlan?: number; rangeStart: string; rangeEnd: string; hostIds: string[] }>;
  /** VMs that already run when the cluster comes up (demo); written straight to both sides */
  vms?: Array<{
    id: string;
    name: string;
    hostId: string;
    datastoreId: string;
    templateId: string;
    networkId: string;
    ip: string;
    cpus: number;
    memoryMiB: number;
    diskGiB: number;
    cpuFeatures: string[];
    dirtyRateMiBps: number;
    writableWorkingSetMiB: number;
    tags?: string[];
    antiAffinityTag?: string;
    affinityTag?: string;
  }>;
}

export function templateImagePath(t: { id: string; datastoreIds: string[]; imagePath?: string }): string {
  return t.imagePath ?? `sim://${t.datastoreIds[0]}/templates/${t.id}.qcow2`;
}

export async function seedCluster(db: Db, sim: Simulator | undefined, spec: ClusterSpec): Promise<{ created: boolean }> {
  const em = db.em();
  const created = (await em.count(Host, {})) === 0;
  const netNames = (hostId: string) => spec.networks.filter((n) => n.hostIds.includes(hostId)).map((n) => n.name);

  for (const h of spec.hosts) {
    if ((h.driver ?? 'sim') === 'sim') sim?.upsertHost({ id: h.id, cpuModel: h.cpuModel, cpuFeatures: h.cpuFeatures, cpus: h.cpus, memoryBytes: h.memoryMiB * MiB, networks: h.networks ?? netNames(h.id) });
    if (await em.findOne(Host, { id: h.id })) continue;
    em.create(Host, {
      id: h.id,
      name: h.id,
      rack: h.rack ?? null,
      cpuModel: h.cpuModel,
      cpuFeatures: h.cpuFeatures,
      cpus: h.cpus,
      memoryMiB: h.memoryMiB,
      cpuOvercommit: h.cpuOvercommit ?? 4,
      memoryOvercommit: h.memoryOvercommit ?? 1,
      maintenance: h.maintenance ?? false,
      state: 'up',
      driver: h.driver ?? 'sim',
      migrationAddress: h.migrationAddress ?? null,
      tags: h.tags ?? [],
      maxOutgoingMigrations: 2,
      maxIncomingMigrations: 2,
    });
  }
  for (const d of spec.datastores) {
    sim?.upsertDatastore({ id: d.id, shared: d.shared, capacityBytes: d.capacityGiB * GiB, throughputBytesPerSec: d.throughputMiBps * MiB, hostIds: d.hostIds });
    if (await em.findOne(Datastore, { id: d.id })) continue;
    em.create(Datastore, { id: d.id, name: d.id, shared: d.shared, capacityGiB: d.capacityGiB, throughputMiBps: d.throughputMiBps, hostIds: d.hostIds });
  }
  for (const l of spec.links ?? []) sim?.upsertLink({ a: l.a, b: l.b, bandwidthBytesPerSec: l.bandwidthMiBps * MiB });
  for (const t of spec.templates) {
    const imagePath = templateImagePath(t);
    if (!t.imagePath) for (const ds of t.datastoreIds) sim?.upsertImage({ path: ds === t.datastoreIds[0] ? imagePath : `sim://${ds}/templates/${t.id}.qcow2`, datastoreId: ds, sizeBytes: t.diskGiB * GiB });
    if (await em.findOne(Template, { id: t.id })) continue;
    em.create(Template, {
      id: t.id,
      name: t.name,
      os: t.os,
      imagePath,
      datastoreIds: t.datastoreIds,
      diskGiB: t.diskGiB,
      minMemoryMiB: t.minMemoryMiB,
      requiredCpuFeatures: t.requiredCpuFeatures ?? [],
      owner: t.owner ?? null,
      department: t.department ?? null,
      tags: t.tags ?? [],
      sourceVmId: null,
    });
  }
  for (const n of spec.networks) {
    if (await em.findOne(Network, { id: n.id })) continue;
    em.create(Network, { id: n.id, name: n.name, cidr: n.cidr, gateway: n.gateway, dns: n.dns, vlan: n.vlan ?? null, hostIds: n.hostIds });
    em.create(IpPool, { id: `${n.id}-pool`, networkId: n.id, rangeStart: n.rangeStart, rangeEnd: n.rangeEnd });
  }
  await em.flush();

  for (const v of spec.vms ?? []) {
    if (await em.findOne(Vm, { id: v.id })) continue;
    const tpl = spec.templates.find((t) => t.id === v.templateId)!;
    const diskPath = `sim://${v.datastoreId}/${v.id}-root.qcow2`;
    const workload = { dirtyRateBytesPerSec: v.dirtyRateMiBps * MiB, writableWorkingSetBytes: v.writableWorkingSetMiB * MiB };
    if (sim) {
      const driver = sim.forHost(v.hostId);
      const disk = await driver.createDisk({ name: `${v.id}-root`, datastoreId: v.datastoreId, sizeBytes: v.diskGiB * GiB, source: { kind: 'template', imagePath: templateImagePath(tpl), linked: true } });
      await driver.defineVm({ vmId: v.id, name: v.name, cpus: v.cpus, memoryBytes: v.memoryMiB * MiB, disks: [disk.path], cpuFeatures: v.cpuFeatures, mac: macFor(v.id), workload });
      await driver.startVm(v.id);
    }
    em.create(Vm, {
      id: v.id,
      name: v.name,
      state: 'running',
      hostId: v.hostId,
      datastoreId: v.datastoreId,
      ip: v.ip,
      networkId: v.networkId,
      mac: macFor(v.id),
      cpus: v.cpus,
      memoryMiB: v.memoryMiB,
      diskGiB: v.diskGiB,
      templateId: v.templateId,
      diskPaths: [diskPath],
      seedPath: null,
      cpuFeatures: v.cpuFeatures,
      tags: v.tags ?? [],
      antiAffinityTag: v.antiAffinityTag ?? null,
      affinityTag: v.affinityTag ?? null,
      workload,
      error: null,
    });
    em.create(Allocation, { id: `alloc-${v.id}`, hostId: v.hostId, vmId: v.id, kind: 'vm', cpus: v.cpus, memoryMiB: v.memoryMiB, diskGiB: v.diskGiB, datastoreId: v.datastoreId, operationId: null });
    em.create(IpAllocation, { id: `ip-${v.id}`, networkId: v.networkId, address: v.ip, vmId: v.id });
  }
  await em.flush();
  return { created };
}

const EPYC = ['sse4_2', 'avx', 'avx2', 'aes', 'x2apic', 'sha-ni'];
const SKYLAKE = ['sse4_2', 'avx', 'avx2', 'aes', 'x2apic', 'avx512f'];

/** The embedded default's demo: 4 hosts in 2 racks, two CPU models, shared + local storage. */
export function demoCluster(): ClusterSpec {
  const hosts = ['host-a', 'host-b', 'host-c', 'host-d'];
  const spec: ClusterSpec = {
    hosts: [
      { id: 'host-a', rack: 'rack-1', cpuModel: 'AMD EPYC-Rome', cpuFeatures: EPYC, cpus: 32, memoryMiB: 64 * 1024 },
      { id: 'host-b', rack: 'rack-1', cpuModel: 'AMD EPYC-Rome', cpuFeatures: EPYC, cpus: 32, memoryMiB: 64 * 1024 },
      { id: 'host-c', rack: 'rack-2', cpuModel: 'Intel Skylake-Server', cpuFeatures: SKYLAKE, cpus: 24, memoryMiB: 48 * 1024 },
      { id: 'host-d', rack: 'rack-2', cpuModel: 'Intel Skylake-Server', cpuFeatures: SKYLAKE, cpus: 24, memoryMiB: 48 * 1024 },
    ],
    datastores: [
      { id: 'ds-shared', shared: true, capacityGiB: 4096, throughputMiBps: 1000, hostIds: hosts },
      ...hosts.map((h) => ({ id: `ds-local-${h.slice(-1)}`, shared: false, capacityGiB: 1024, throughputMiBps: 500, hostIds: [h] })),
    ],
    links: [
      // same rack: 10 GbE; across racks: one 10 GbE uplink shared, modelled at half
      { a: 'host-a', b: 'host-b', bandwidthMiBps: 1150 },
      { a: 'host-c', b: 'host-d', bandwidthMiBps: 1150 },
      { a: 'host-a', b: 'host-c', bandwidthMiBps: 575 },
      { a: 'host-a', b: 'host-d', bandwidthMiBps: 575 },
      { a: 'host-b', b: 'host-c', bandwidthMiBps: 575 },
      { a: 'host-b', b: 'host-d', bandwidthMiBps: 575 },
    ],
    templates: [
      { id: 'tpl-debian-12', name: 'debian-12', os: 'debian-12', datastoreIds: ['ds-shared'], diskGiB: 10, minMemoryMiB: 512, requiredCpuFeatures: ['sse4_2'], owner: 'platform', department: 'infrastructure', tags: ['linux'] },
      { id: 'tpl-alpine-3', name: 'alpine-3', os: 'alpine-3.20', datastoreIds: ['ds-shared'], diskGiB: 2, minMemoryMiB: 128, owner: 'web', department: 'engineering', tags: ['linux', 'small'] },
    ],
    networks: [
      { id: 'net-prod', name: 'prod', cidr: '10.20.0.0/24', gateway: '10.20.0.1', dns: ['10.20.0.2'], vlan: 100, rangeStart: '10.20.0.10', rangeEnd: '10.20.0.250', hostIds: hosts },
    ],
    vms: [],
  };
  // 16 VMs skewed on purpose (host-a 8, host-b 5, host-c 2, host-d 1): an evacuation of host-a
  // and a rebalance both have something to show
  const sizes = [1024, 2048, 4096, 8192, 1024, 2048, 4096, 2048, 1024, 8192, 4096, 2048, 1024, 2048, 4096, 1024];
  const dirty = [5, 20, 50, 100, 0, 200, 30, 400, 10, 60, 1500, 80, 15, 40, 25, 5];
  const homes = [0, 1, 2, 0, 0, 1, 0, 1, 0, 2, 0, 1, 0, 3, 1, 0];
  sizes.forEach((mem, i) => {
    const host = hosts[homes[i]];
    const common = ['sse4_2', 'avx', 'avx2', 'aes', 'x2apic'];
    spec.vms!.push({
      id: `vm-demo-${String(i + 1).padStart(2, '0')}`,
      name: `demo-${String(i + 1).padStart(2, '0')}`,
      hostId: host,
      datastoreId: 'ds-shared',
      templateId: i % 2 ? 'tpl-alpine-3' : 'tpl-debian-12',
      networkId: 'net-prod',
      ip: `10.20.0.${100 + i}`,
      cpus: 1 + (i % 4),
      memoryMiB: mem,
      diskGiB: i % 2 ? 2 : 10,
      // VMs started on Skylake with avx512f cannot move to the EPYC hosts (a refusal to demo)
      cpuFeatures: host === 'host-c' && i === 2 ? [...common, 'avx512f'] : common,
      dirtyRateMiBps: dirty[i],
      writableWorkingSetMiB: Math.min(mem / 2, 512),
      tags: [i % 3 === 0 ? 'web' : 'db'],
    });
  });
  return spec;
}
