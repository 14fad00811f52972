// Row lookups every part of the simulator makes inside its transactions: hosts, datastores,
// networks, links, images, disks and vm rows. Plain reads of the Store (plus the one vm state
// write every part shares); they never settle, never spend a fault and never wait.
import type { VmPowerState } from '../hypervisor.js';
import { DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC } from './model.js';
import type { DatastoreRow, DiskRow, HostRow, ImageRow, Store, VmRow } from './store.js';
import { notFound } from './validate.js';

export function hostRow(store: Store, id: string): HostRow | undefined {
  return store.get<HostRow>('SELECT * FROM hosts WHERE id = ?', id);
}

export function requireHost(store: Store, id: string): HostRow {
  const h = hostRow(store, id);
  if (!h) throw notFound(`host "${id}" is not in the simulator`);
  return h;
}

export function datastoreRow(store: Store, id: string): DatastoreRow | undefined {
  return store.get<DatastoreRow>('SELECT * FROM datastores WHERE id = ?', id);
}

export function networksOf(store: Store, hostId: string): string[] {
  return store.all<{ name: string }>('SELECT name FROM networks WHERE host_id = ? ORDER BY name', hostId).map((r) => r.name);
}

export function datastoresOf(store: Store, hostId: string): DatastoreRow[] {
  return store.all<DatastoreRow>(
    'SELECT d.* FROM datastores d JOIN datastore_hosts h ON h.datastore_id = d.id WHERE h.host_id = ? ORDER BY d.id',
    hostId,
  );
}

export function hostsOf(store: Store, datastoreId: string): string[] {
  return store.all<{ host_id: string }>('SELECT host_id FROM datastore_hosts WHERE datastore_id = ? ORDER BY host_id', datastoreId).map((r) => r.host_id);
}

export function attached(store: Store, datastoreId: string, hostId: string): boolean {
  return !!store.get('SELECT 1 AS x FROM datastore_hosts WHERE datastore_id = ? AND host_id = ?', datastoreId, hostId);
}

/** Bytes allocated on a datastore: disks (virtual size), seeds and images. */
export function usedBytes(store: Store, datastoreId: string): number {
  const d = store.get<{ s: number | null }>("SELECT SUM(CASE WHEN kind = 'seed' THEN actual_size_bytes ELSE virtual_size_bytes END) AS s FROM disks WHERE datastore_id = ?", datastoreId);
  const i = store.get<{ s: number | null }>('SELECT SUM(size_bytes) AS s FROM images WHERE datastore_id = ?', datastoreId);
  return (d?.s ?? 0) + (i?.s ?? 0);
}

/** Bytes free on a datastore (capacity minus usedBytes; negative when over-committed). */
export function freeBytes(store: Store, ds: DatastoreRow): number {
  return ds.capacity_bytes - usedBytes(store, ds.id);
}

export function linkBandwidth(store: Store, a: string, b: string): number {
  const [x, y] = a < b ? [a, b] : [b, a];
  const r = store.get<{ bandwidth_bytes_per_sec: number }>('SELECT bandwidth_bytes_per_sec FROM links WHERE a = ? AND b = ?', x, y);
  return r?.bandwidth_bytes_per_sec ?? DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC;
}

export function imageRow(store: Store, path: string): ImageRow | undefined {
  return store.get<ImageRow>('SELECT * FROM images WHERE path = ?', path);
}

export function diskRow(store: Store, path: string): DiskRow | undefined {
  return store.get<DiskRow>('SELECT * FROM disks WHERE path = ?', path);
}

export function vmRow(store: Store, hostId: string, vmId: string): VmRow | undefined {
  return store.get<VmRow>('SELECT * FROM vms WHERE host_id = ? AND vm_id = ?', hostId, vmId);
}

export function setVmState(store: Store, hostId: string, vmId: string, state: VmPowerState, nowV: number): void {
  store.run('UPDATE vms SET state = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?', state, nowV, hostId, vmId);
}
