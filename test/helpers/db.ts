/**
 * Databases for tests: a fresh, migrated `Db` on SQLite (temp file) or PostgreSQL (a unique
 * schema in the `test` database, dropped by cleanup), so test files running in parallel never
 * collide. PostgreSQL tests RUN, never skip: when the server is unreachable `createTestDb`
 * throws a DatabaseUnavailableError naming the URL (set FERRY_TEST_PG_URL to point elsewhere).
 *
 * Also a child-process entrypoint (`node --import tsx test/helpers/db.ts reserve-child ...`) used
 * by the multi-process reservation test: several processes racing on one database.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createDb, migrateUp, type Db, type DbKind } from '../../db/orm.js';
import { Datastore, Host, IpPool, Network } from '../../db/entities.js';
import { reserve } from '../../db/repositories/capacity.js';

export const PG_TEST_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const DB_HELPER_PATH = fileURLToPath(import.meta.url);

export function dbKinds(): DbKind[] {
  return ['sqlite', 'postgres'];
}

export interface TestDb {
  db: Db;
  kind: DbKind;
  /** DATABASE_URL that reaches the same database (for more connections or child processes). */
  url: string;
  dataDir: string;
  /** Another Db on the same database: its own connection pool, as another process would have. */
  connectAgain(): Promise<Db>;
  cleanup(): Promise<void>;
}

export async function createTestDb(kind: DbKind): Promise<TestDb> {
  const dataDir = mkdtempSync(join(tmpdir(), `ferry-db-${kind}-`));
  let url: string;
  let schema: string | undefined;
  if (kind === 'sqlite') {
    url = join(dataDir, 'ferry.sqlite');
  } else {
    schema = `t_${process.pid}_${randomBytes(4).toString('hex')}`;
    const u = new URL(PG_TEST_URL);
    u.searchParams.set('schema', schema);
    url = u.toString();
  }
  const extra: Db[] = [];
  const db = await createDb({ databaseUrl: url, dataDir });
  try {
    await migrateUp(db);
  } catch (e) {
    await db.close();
    throw e;
  }
  return {
    db,
    kind,
    url,
    dataDir,
    async connectAgain() {
      const d = await createDb({ databaseUrl: url, dataDir });
      extra.push(d);
      return d;
    },
    async cleanup() {
      for (const d of extra) await d.close().catch(() => undefined);
      if (schema) await db.em().getConnection().execute(`drop schema if exists "${schema}" cascade`);
      await db.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface ClusterOptions {
  hosts: number;
  cpus?: number;
  memoryMiB?: number;
  datastoreGiB?: number;
}

/** Hosts `host-1..n` with one shared datastore `ds-shared` and a network `net-a` (no pool). */
export async function seedCluster(db: Db, opts: ClusterOptions): Promise<{ hostIds: string[] }> {
  const em = db.em();
  const hostIds = Array.from({ length: opts.hosts }, (_, i) => `host-${i + 1}`);
  for (const id of hostIds) {
    em.create(Host, {
      id,
      name: id,
      cpuModel: 'sim-cpu',
      cpuFeatures: ['sse4_2', 'avx2'],
      cpus: opts.cpus ?? 16,
      memoryMiB: opts.memoryMiB ?? 8192,
      tags: [],
    });
  }
  em.create(Datastore, { id: 'ds-shared', name: 'ds-shared', shared: true, capacityGiB: opts.datastoreGiB ?? 10_000, throughputMiBps: 500, hostIds });
  await em.flush();
  return { hostIds };
}

/** Network `name` with `cidr`, gateway = first address + 1, one pool [start, end]. */
export async function seedNetwork(db: Db, o: { id: string; name: string; cidr: string; gateway: string; rangeStart: string; rangeEnd: string }): Promise<void> {
  const em = db.em();
  em.create(Network, { id: o.id, name: o.name, cidr: o.cidr, gateway: o.gateway, dns: ['1.1.1.1'], hostIds: [] });
  em.create(IpPool, { id: `${o.id}-pool`, networkId: o.id, rangeStart: o.rangeStart, rangeEnd: o.rangeEnd });
  await em.flush();
}

// ---- child process: reserve-child <url> <dataDir> <hostId> <count> <tag> ------------------------
// Prints one JSON line per reservation: {ok: true, id} or {ok: false, name, resource, message}.
async function reserveChild(args: string[]): Promise<void> {
  const [url, dataDir, hostId, countText, tag] = args as [string, string, string, string, string];
  const db = await createDb({ databaseUrl: url, dataDir });
  try {
    const results = await Promise.all(
      Array.from({ length: Number(countText) }, (_, i) =>
        reserve(db, { hostId, vmId: `vm-${tag}-${i}`, cpus: 1, memoryMiB: 2048, diskGiB: 10, datastoreId: 'ds-shared', operationId: `op-${tag}-${i}`, kind: 'reservation' }).then(
          (a) => ({ ok: true, id: a.id }),
          (e: Error & { resource?: string }) => ({ ok: false, name: e.name, resource: e.resource, message: e.message }),
        ),
      ),
    );
    for (const r of results) process.stdout.write(JSON.stringify(r) + '\n');
  } finally {
    await db.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === 'reserve-child') {
  reserveChild(process.argv.slice(3)).catch((e: Error) => {
    process.stderr.write(`${e.name}: ${e.message}\n`);
    process.exit(1);
  });
}
