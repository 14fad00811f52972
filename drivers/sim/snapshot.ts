// What invariant checkers and tests read (settled at virtual now, inside SimCluster.tx): the whole
// cluster, migrations with their stats, where a guest runs; and the guest's own memory writes.
import type { MigrationStats, VmPowerState, VmSpec } from '../hypervisor.js';
import { listFaults, type SimFault } from './faults.js';
import { datastoresOf, networksOf, vmRow } from './lookups.js';
import { evaluate } from './migrations.js';
import type { DiskRow, HostRow, MigrationRow, Store, VmRow } from './store.js';
import { invalidState, notFound } from './validate.js';

export interface SimVmSnapshot {
  hostId: string;
  vmId: string;
  state: VmPowerState;
  generation: number;
  memoryBytes: number;
  disks: string[];
}

export interface SimMigrationSnapshot {
  id: number;
  vmId: string;
  sourceHostId: string;
  targetHostId: string;
  startedAtV: number;
  endedAtV?: number;
  stats: MigrationStats;
}

export interface SimSnapshot {
  virtualNowMs: number;
  hosts: { id: string; datastores: string[]; networks: string[] }[];
  vms: SimVmSnapshot[];
  disks: { path: string; datastoreId: string; kind: 'disk' | 'seed'; ready: boolean; virtualSizeBytes: number }[];
  migrations: SimMigrationSnapshot[];
  faults: SimFault[];
}

/** Everything at nowV. */
export function snapshot(store: Store, nowV: number): SimSnapshot {
  const hosts = store.all<HostRow>('SELECT * FROM hosts ORDER BY id').map((h) => ({
    id: h.id,
    datastores: datastoresOf(store, h.id).map((d) => d.id),
    networks: networksOf(store, h.id),
  }));
  const vms = store.all<VmRow>('SELECT * FROM vms ORDER BY vm_id, host_id').map((r) => {
    const spec = JSON.parse(r.spec) as VmSpec;
    return { hostId: r.host_id, vmId: r.vm_id, state: r.state as VmPowerState, generation: r.generation, memoryBytes: spec.memoryBytes, disks: spec.disks };
  });
  const disks = store.all<DiskRow>('SELECT * FROM disks ORDER BY path').map((d) => ({
    path: d.path,
    datastoreId: d.datastore_id,
    kind: d.kind,
    ready: d.end_v <= nowV,
    virtualSizeBytes: d.virtual_size_bytes,
  }));
  return { virtualNowMs: nowV, hosts, vms, disks, migrations: migrationSnapshots(store, nowV), faults: listFaults(store) };
}

/** Every migration (newest last) with its stats at nowV. */
export function migrationSnapshots(store: Store, nowV: number): SimMigrationSnapshot[] {
  return store.all<MigrationRow>('SELECT * FROM migrations ORDER BY id').map((m) => {
    const v = evaluate(store, m, nowV);
    const out: SimMigrationSnapshot = {
      id: m.id,
      vmId: m.vm_id,
      sourceHostId: m.source_host,
      targetHostId: m.target_host,
      startedAtV: m.start_v,
      stats: v.stats,
    };
    if (v.endedAtV !== undefined) out.endedAtV = v.endedAtV;
    return out;
  });
}

/** Hosts on which the guest vmId is running (an invariant checker wants at most one). */
export function runningHostsOf(store: Store, vmId: string): string[] {
  return store.all<{ host_id: string }>("SELECT host_id FROM vms WHERE vm_id = ? AND state = 'running' ORDER BY host_id", vmId).map((r) => r.host_id);
}

/** The guest writes to its memory: its generation counter goes up (a migrated guest keeps it). */
export function bumpGeneration(store: Store, hostId: string, vmId: string): number {
  const vm = vmRow(store, hostId, vmId);
  if (!vm) throw notFound(`vm "${vmId}" is not on host ${hostId}`);
  if (vm.state !== 'running') throw invalidState(`vm ${vmId} on ${hostId} is ${vm.state}; only a running guest writes memory`);
  store.run('UPDATE vms SET generation = generation + 1 WHERE host_id = ? AND vm_id = ?', hostId, vmId);
  return vm.generation + 1;
}
