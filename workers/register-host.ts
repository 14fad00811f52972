// The Host row of a real host agent (qemu-agent.ts, libvirt-agent.ts), written from what its
// driver reports.
import { Datastore, Host, Network } from '../db/entities.js';
import type { Db } from '../db/orm.js';
import type { HostInfo } from '../domain/hypervisor.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

export type HostDriver = 'qemu' | 'libvirt';

/**
 * Writes what the driver reports into the inventory: the Host row (created, or updated when it
 * changed), this host in the hostIds of its datastores (created when missing) and of the existing
 * networks it has. Idempotent; retried on optimistic-lock conflicts with other agents.
 */
export async function registerHost(db: Db, info: HostInfo, driver: HostDriver, defaults: { maxOutgoingMigrations?: number; maxIncomingMigrations?: number } = {}): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await db.em().transactional(async (em) => {
        const memoryMiB = Math.floor(info.memoryBytes / MiB);
        const host = await em.findOne(Host, { id: info.hostId });
        if (!host) {
          em.create(Host, {
            id: info.hostId,
            name: info.hostId,
            rack: null,
            cpuModel: info.cpuModel,
            cpuFeatures: info.cpuFeatures,
            cpus: info.cpus,
            memoryMiB,
            cpuOvercommit: 4,
            memoryOvercommit: 1,
            maintenance: false,
            state: 'up',
            driver,
            migrationAddress: info.migrationAddress,
            tags: [],
            maxOutgoingMigrations: defaults.maxOutgoingMigrations ?? 2,
            maxIncomingMigrations: defaults.maxIncomingMigrations ?? 2,
          });
        } else {
          const want = { cpuModel: info.cpuModel, cpuFeatures: info.cpuFeatures, cpus: info.cpus, memoryMiB, migrationAddress: info.migrationAddress, driver, state: 'up' as const };
          // only write what changed: every write bumps the row's version, and reservations
          // claim the host row under an optimistic lock
          const changed = (Object.keys(want) as (keyof typeof want)[]).filter((k) => JSON.stringify(host[k]) !== JSON.stringify(want[k]));
          if (changed.length) em.assign(host, Object.fromEntries(changed.map((k) => [k, want[k]])));
        }
        for (const ds of info.datastores) {
          const row = await em.findOne(Datastore, { id: ds.id });
          if (!row) {
            em.create(Datastore, {
              id: ds.id,
              name: ds.id,
              shared: ds.shared,
              capacityGiB: Math.max(1, Math.floor(ds.capacityBytes / GiB)),
              throughputMiBps: Math.max(1, Math.round(ds.throughputBytesPerSec / MiB)),
              hostIds: [info.hostId],
            });
          } else if (!row.hostIds.includes(info.hostId)) {
            row.hostIds = [...row.hostIds, info.hostId];
          }
        }
        for (const name of info.networks) {
          const net = await em.findOne(Network, { name });
          if (net && !net.hostIds.includes(info.hostId)) net.hostIds = [...net.hostIds, info.hostId];
        }
      });
      return;
    } catch (e) {
      const name = (e as Error).name;
      const retryable = name === 'OptimisticLockError' || name === 'UniqueConstraintViolationException' || /SQLITE_BUSY|database is locked/.test((e as Error).message);
      if (!retryable || attempt >= 8) throw e;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

