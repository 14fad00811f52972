// The cluster's topology: hosts (CPU, memory, networks), datastores and which hosts reach them,
// migration links, template images. Operator calls (SimCluster's topology API): every input is
// checked, field by field, before anything is written.
import { datastoreRow, hostRow, networksOf, requireHost } from './lookups.js';
import type { HostRow, MigrationRow, Store } from './store.js';
import { invalid, invalidState, nonEmptyString, nonNegativeInt, notFound, positiveInt, positiveNumber, safeName, stringArray } from './validate.js';

export interface SimHostInput {
  id: string;
  cpuModel: string;
  cpuFeatures: string[];
  cpus: number;
  memoryBytes: number;
  networks: string[];
  migrationAddress?: string;
}

export interface SimDatastoreInput {
  id: string;
  shared: boolean;
  capacityBytes: number;
  throughputBytesPerSec: number;
  hostIds: string[];
}

export interface SimLinkInput {
  a: string;
  b: string;
  bandwidthBytesPerSec: number;
}

export interface SimImageInput {
  /** e.g. sim://<datastoreId>/templates/debian-12.qcow2 */
  path: string;
  datastoreId: string;
  sizeBytes: number;
  format?: 'qcow2' | 'raw' | 'vmdk' | 'vhdx';
}

export function upsertHost(store: Store, h: SimHostInput): void {
  const id = safeName('host.id', h?.id);
  const cpuModel = nonEmptyString('host.cpuModel', h.cpuModel);
  const features = stringArray('host.cpuFeatures', h.cpuFeatures);
  const cpus = positiveInt('host.cpus', h.cpus);
  const mem = positiveInt('host.memoryBytes', h.memoryBytes);
  const nets = stringArray('host.networks', h.networks);
  nets.forEach((n, i) => safeName(`host.networks[${i}]`, n));
  const addr = h.migrationAddress === undefined ? `sim://${id}` : nonEmptyString('host.migrationAddress', h.migrationAddress);
  store.tx(() => {
    store.run(
      `INSERT INTO hosts (id, cpu_model, cpu_features, cpus, memory_bytes, migration_address) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET cpu_model = excluded.cpu_model, cpu_features = excluded.cpu_features,
         cpus = excluded.cpus, memory_bytes = excluded.memory_bytes, migration_address = excluded.migration_address`,
      id,
      cpuModel,
      JSON.stringify(features),
      cpus,
      mem,
      addr,
    );
    store.run('DELETE FROM networks WHERE host_id = ?', id);
    for (const n of new Set(nets)) store.run('INSERT INTO networks (host_id, name) VALUES (?, ?)', id, n);
  });
}

/** Removes a host with no VMs and no open migration (its links and datastore attachments go too). Inside SimCluster.tx. */
export function removeHost(store: Store, hostId: string): void {
  requireHost(store, hostId);
  const vms = store.all<{ vm_id: string }>('SELECT vm_id FROM vms WHERE host_id = ?', hostId);
  if (vms.length > 0) throw invalidState(`host ${hostId} still has VMs: ${vms.map((v) => v.vm_id).join(', ')}`);
  const m = store.get<MigrationRow>('SELECT * FROM migrations WHERE finalized = 0 AND (source_host = ? OR target_host = ?)', hostId, hostId);
  if (m) throw invalidState(`host ${hostId} has a migration in progress (vm ${m.vm_id})`);
  store.run('DELETE FROM hosts WHERE id = ?', hostId);
  store.run('DELETE FROM networks WHERE host_id = ?', hostId);
  store.run('DELETE FROM datastore_hosts WHERE host_id = ?', hostId);
  store.run('DELETE FROM links WHERE a = ? OR b = ?', hostId, hostId);
}

export function upsertDatastore(store: Store, d: SimDatastoreInput): void {
  const id = safeName('datastore.id', d?.id);
  if (typeof d.shared !== 'boolean') throw invalid('datastore.shared must be a boolean');
  const cap = nonNegativeInt('datastore.capacityBytes', d.capacityBytes);
  const tput = positiveNumber('datastore.throughputBytesPerSec', d.throughputBytesPerSec);
  const hostIds = [...new Set(stringArray('datastore.hostIds', d.hostIds))];
  if (!d.shared && hostIds.length > 1) throw invalid(`datastore ${id} is not shared but names ${hostIds.length} hosts (datastore.hostIds)`);
  store.tx(() => {
    for (const h of hostIds) if (!hostRow(store, h)) throw notFound(`datastore.hostIds: host "${h}" is not in the simulator`);
    store.run(
      `INSERT INTO datastores (id, shared, capacity_bytes, throughput_bytes_per_sec) VALUES (?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET shared = excluded.shared, capacity_bytes = excluded.capacity_bytes,
         throughput_bytes_per_sec = excluded.throughput_bytes_per_sec`,
      id,
      d.shared ? 1 : 0,
      cap,
      tput,
    );
    store.run('DELETE FROM datastore_hosts WHERE datastore_id = ?', id);
    for (const h of hostIds) store.run('INSERT INTO datastore_hosts (datastore_id, host_id) VALUES (?, ?)', id, h);
  });
}

/** Undirected migration link; hosts without a link row talk at 1 GiB/s. */
export function upsertLink(store: Store, l: SimLinkInput): void {
  const a = safeName('link.a', l?.a);
  const b = safeName('link.b', l.b);
  if (a === b) throw invalid(`link.a and link.b must differ, both are "${a}"`);
  const bw = positiveNumber('link.bandwidthBytesPerSec', l.bandwidthBytesPerSec);
  const [x, y] = a < b ? [a, b] : [b, a];
  store.tx(() => {
    for (const h of [a, b]) if (!hostRow(store, h)) throw notFound(`link: host "${h}" is not in the simulator`);
    store.run(
      `INSERT INTO links (a, b, bandwidth_bytes_per_sec) VALUES (?, ?, ?)
       ON CONFLICT (a, b) DO UPDATE SET bandwidth_bytes_per_sec = excluded.bandwidth_bytes_per_sec`,
      x,
      y,
      bw,
    );
  });
}

/** A template (or importable) image file on a datastore. */
export function upsertImage(store: Store, i: SimImageInput): void {
  const path = nonEmptyString('image.path', i?.path);
  if (/\s/.test(path)) throw invalid(`image.path "${path}" must not contain whitespace`);
  const ds = safeName('image.datastoreId', i.datastoreId);
  const size = positiveInt('image.sizeBytes', i.sizeBytes);
  const format = i.format ?? 'qcow2';
  if (!['qcow2', 'raw', 'vmdk', 'vhdx'].includes(format)) throw invalid(`image.format must be qcow2, raw, vmdk or vhdx, got ${format}`);
  store.tx(() => {
    if (!datastoreRow(store, ds)) throw notFound(`image.datastoreId: datastore "${ds}" is not in the simulator`);
    if (store.get('SELECT path FROM disks WHERE path = ?', path)) throw invalid(`image.path "${path}" is already a disk`);
    store.run(
      `INSERT INTO images (path, datastore_id, size_bytes, format) VALUES (?, ?, ?, ?)
       ON CONFLICT (path) DO UPDATE SET datastore_id = excluded.datastore_id, size_bytes = excluded.size_bytes, format = excluded.format`,
      path,
      ds,
      size,
      format,
    );
  });
}

export function listHosts(store: Store): SimHostInput[] {
  return store.all<HostRow>('SELECT * FROM hosts ORDER BY id').map((h) => ({
    id: h.id,
    cpuModel: h.cpu_model,
    cpuFeatures: JSON.parse(h.cpu_features) as string[],
    cpus: h.cpus,
    memoryBytes: h.memory_bytes,
    networks: networksOf(store, h.id),
    migrationAddress: h.migration_address,
  }));
}
