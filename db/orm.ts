/**
 * ORM set-up: one function turns DATABASE_URL (+ FERRY_DATA_DIR) into a connected, typed `Db`.
 *
 * - SQLite (better-sqlite3) by default, file `<dataDir>/ferry.sqlite`; WAL + busy_timeout so the
 *   worker and the API (separate processes) share the file.
 * - PostgreSQL when the URL starts with postgres:// or postgresql://; `?schema=name` (or the
 *   `schema` option) puts every table in that schema (tests use one schema per file).
 *
 * Callers never get the global EntityManager: `db.em()` returns a fresh fork every time
 * (one per activity / request).
 */
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdirSync } from 'node:fs';
import { MikroORM as SqliteOrm, BetterSqliteDriver } from '@mikro-orm/better-sqlite';
import { MikroORM as PostgresOrm, PostgreSqlDriver } from '@mikro-orm/postgresql';
import { LockWaitTimeoutException, TableExistsException, type MigrationObject, type Options } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/knex';
import { Migrator } from '@mikro-orm/migrations';
import { entities } from './entities.js';
import { DatabaseUnavailableError, ValidationError } from './errors.js';
import { sqliteMigrations } from './migrations/sqlite/index.js';
import { postgresMigrations } from './migrations/postgres/index.js';

export type DbKind = 'sqlite' | 'postgres';
/** The two ORM flavours ferry runs on. Both expose a SqlEntityManager. */
export type FerryOrm = SqliteOrm | PostgresOrm;
/** What repositories take: any SQL entity manager of either driver. */
export type Em = SqlEntityManager;

export interface CreateOrmOptions {
  /** DATABASE_URL: empty -> `<dataDir>/ferry.sqlite`; a path or `sqlite:`/`file:` URL; or postgres(ql)://. */
  databaseUrl?: string;
  /** FERRY_DATA_DIR, home of the default SQLite file. */
  dataDir: string;
  /** Log SQL. */
  debug?: boolean;
  /** PostgreSQL schema (default: `?schema=` in the URL, else public). Ignored by SQLite. */
  schema?: string;
  /** PostgreSQL pool size (default 10). */
  poolMax?: number;
}

export interface Db {
  readonly kind: DbKind;
  readonly orm: FerryOrm;
  /** Where it points, password redacted (for logs and error messages). */
  readonly target: string;
  /** PostgreSQL schema in use (undefined on SQLite). */
  readonly schema?: string;
  /** A fresh fork of the global EntityManager: one per activity / request, never shared. */
  em(): Em;
  close(): Promise<void>;
}

export interface ResolvedTarget {
  kind: DbKind;
  /** SQLite file path (or ':memory:') or the PostgreSQL URL without `schema`. */
  location: string;
  schema?: string;
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;
const here = fileURLToPath(new URL('.', import.meta.url));
export const MIGRATIONS_DIR: Record<DbKind, string> = {
  sqlite: join(here, 'migrations', 'sqlite'),
  postgres: join(here, 'migrations', 'postgres'),
};

/** Parses DATABASE_URL. Throws ValidationError naming DATABASE_URL for what it cannot use. */
export function resolveDatabaseTarget(opts: Pick<CreateOrmOptions, 'databaseUrl' | 'dataDir' | 'schema'>): ResolvedTarget {
  const raw = opts.databaseUrl?.trim() ?? '';
  if (raw === '') {
    if (!opts.dataDir) throw new ValidationError('FERRY_DATA_DIR', 'is required when DATABASE_URL is not set');
    return { kind: 'sqlite', location: resolve(opts.dataDir, 'ferry.sqlite') };
  }
  if (/^postgres(ql)?:\/\//i.test(raw)) {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ValidationError('DATABASE_URL', 'is not a valid postgres URL');
    }
    const schema = opts.schema ?? url.searchParams.get('schema') ?? undefined;
    url.searchParams.delete('schema');
    if (schema !== undefined && !SCHEMA_RE.test(schema)) {
      throw new ValidationError('DATABASE_URL', `schema "${schema}" must match ${SCHEMA_RE}`);
    }
    if (url.pathname.replace(/^\//, '') === '') throw new ValidationError('DATABASE_URL', 'names no database (postgres://host:5432/<db>)');
    return { kind: 'postgres', location: url.toString(), schema };
  }
  let path = raw;
  const m = /^(sqlite|file):(.*)$/i.exec(raw);
  if (m) {
    path = m[2]!;
    if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path -> /abs/path, sqlite://rel -> rel
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    throw new ValidationError('DATABASE_URL', `unsupported scheme in "${redact(raw)}" (use a SQLite path, sqlite:, postgres:// or postgresql://)`);
  }
  if (path === '') throw new ValidationError('DATABASE_URL', 'names no SQLite file');
  return { kind: 'sqlite', location: path === ':memory:' ? path : isAbsolute(path) ? path : resolve(path) };
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:*****@');
}

function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown })?.code;
  const first = msg.split('\n').find((l) => l.trim() !== '') ?? msg;
  return (typeof code === 'string' && !first.includes(code) ? `${code}: ` : '') + first.trim();
}

function migrationsOptions(kind: DbKind) {
  const list: MigrationObject[] = kind === 'sqlite' ? sqliteMigrations : postgresMigrations;
  return {
    path: MIGRATIONS_DIR[kind],
    pathTs: MIGRATIONS_DIR[kind],
    glob: '!(*.d|index).{js,ts}',
    emit: 'ts' as const,
    // Explicit list: no file-system scan at run time (works the same under tsx and bundlers).
    migrationsList: list,
    snapshot: false,
    silent: true,
    transactional: true,
    allOrNothing: true,
  };
}

/** Builds (without connecting) the MikroORM options for a target; used by createOrm and db/tools. */
export function ormOptions(target: ResolvedTarget, opts: { debug?: boolean; poolMax?: number; withMigrationsList?: boolean } = {}): Options {
  const migrations = migrationsOptions(target.kind);
  if (opts.withMigrationsList === false) delete (migrations as Partial<typeof migrations>).migrationsList;
  const common = {
    entities,
    debug: opts.debug ?? false,
    extensions: [Migrator],
    migrations,
    // Never create databases implicitly: a typo in DATABASE_URL must fail, not create an empty DB.
    ensureDatabase: false,
    // Repositories always flush explicitly.
    allowGlobalContext: false,
    forceUtcTimezone: true,
  } satisfies Options;
  if (target.kind === 'sqlite') {
    return {
      ...common,
      driver: BetterSqliteDriver,
      dbName: target.location,
      pool: {
        min: 1,
        max: 1,
        afterCreate: (conn: { pragma(sql: string): unknown }, done: (err: Error | null, conn: unknown) => void) => {
          try {
            // WAL: readers never block the writer; busy_timeout: a writer waits for another
            // process's write transaction instead of failing at once. synchronous=NORMAL in WAL
            // mode: a process crash loses nothing committed (the WAL is in the OS's hands once
            // commit returns); power loss may roll back the last commits since the WAL's last
            // sync, never corrupt the file (the same trade as the dev server, workers/dev-server.ts).
            if (target.location !== ':memory:') conn.pragma('journal_mode = WAL');
            conn.pragma('busy_timeout = 10000');
            conn.pragma('synchronous = NORMAL');
            conn.pragma('foreign_keys = ON');
            done(null, conn);
          } catch (e) {
            done(e as Error, conn);
          }
        },
      },
    } as Options;
  }
  return {
    ...common,
    driver: PostgreSqlDriver,
    clientUrl: target.location,
    ...(target.schema ? { schema: target.schema } : {}),
    pool: { min: 0, max: opts.poolMax ?? 10 },
    driverOptions: {
      connection: {
        // Unqualified SQL (the committed migrations) lands in the chosen schema.
        ...(target.schema ? { options: `-c search_path=${target.schema}` } : {}),
        connectionTimeoutMillis: 5000,
        application_name: 'ferry',
      },
    },
  } as Options;
}

/** Connects and verifies the connection; throws DatabaseUnavailableError naming DATABASE_URL. */
export async function createOrm(opts: CreateOrmOptions): Promise<FerryOrm> {
  const target = resolveDatabaseTarget(opts);
  const shown = target.kind === 'sqlite' ? target.location : redact(target.location);
  if (target.kind === 'sqlite' && target.location !== ':memory:') {
    try {
      mkdirSync(join(target.location, '..'), { recursive: true });
    } catch (e) {
      throw new DatabaseUnavailableError(`DATABASE_URL (${shown}): cannot create the SQLite folder: ${oneLine(e)}`);
    }
  }
  const options = ormOptions(target, opts);
  let orm: FerryOrm;
  try {
    orm =
      target.kind === 'sqlite'
        ? await SqliteOrm.init({ ...(options as Options<BetterSqliteDriver>), connect: false })
        : await PostgresOrm.init({ ...(options as Options<PostgreSqlDriver>), connect: false });
  } catch (e) {
    throw new DatabaseUnavailableError(`DATABASE_URL (${shown}): cannot initialise the ORM: ${oneLine(e)}`);
  }
  try {
    await orm.em.getDriver().connect();
    const check = await orm.checkConnection();
    if (!check.ok) throw check.error ?? new Error(check.reason);
    if (target.kind === 'postgres' && target.schema) {
      const conn = orm.em.getConnection();
      // two processes starting at once may both try; "if not exists" is not race-free in PostgreSQL
      await conn.execute(`create schema if not exists "${target.schema}"`).catch(async (e: unknown) => {
        const rows = await conn.execute<{ n: number }[]>('select 1 as n from pg_namespace where nspname = ?', [target.schema]);
        if (rows.length === 0) throw e;
      });
    }
  } catch (e) {
    await orm.close(true).catch(() => undefined);
    throw new DatabaseUnavailableError(`DATABASE_URL (${shown}): cannot connect to ${target.kind === 'sqlite' ? 'SQLite' : 'PostgreSQL'}: ${oneLine(e)}`);
  }
  return orm;
}

/** createOrm + the `Db` wrapper every repository function accepts. */
export async function createDb(opts: CreateOrmOptions): Promise<Db> {
  const target = resolveDatabaseTarget(opts);
  const orm = await createOrm(opts);
  return wrapOrm(orm, target);
}

export function wrapOrm(orm: FerryOrm, target: ResolvedTarget): Db {
  return {
    kind: target.kind,
    orm,
    target: target.kind === 'sqlite' ? target.location : redact(target.location),
    schema: target.schema,
    em: () => orm.em.fork() as Em,
    close: () => orm.close(true),
  };
}

export function isDb(x: Db | Em): x is Db {
  return typeof (x as Db).em === 'function' && 'orm' in x;
}

/** An EntityManager for one unit of work: a fresh fork of the Db, or the caller's own EM. */
export function emOf(x: Db | Em): Em {
  return isDb(x) ? x.em() : x;
}

/**
 * Applies pending migrations (the committed files under db/migrations/<dialect>/). Safe when
 * several processes start at once: PostgreSQL serialises them on an advisory lock; SQLite's
 * write lock makes the loser retry and find the migrations already applied.
 */
export async function migrateUp(db: Db | FerryOrm): Promise<string[]> {
  const orm = 'orm' in db ? db.orm : db;
  const isPg = orm.config.getDriver() instanceof PostgreSqlDriver;
  const migrator = orm.getMigrator();
  const run = async () => (await migrator.up()).map((m) => m.name);
  if (isPg) {
    const knex = (orm.em as unknown as Em).getKnex();
    // Transaction-scoped advisory lock held on its own connection while the migrator uses another.
    return knex.transaction(async (trx) => {
      await trx.raw('select pg_advisory_xact_lock(?)', [0x66657272]); // 'ferr'
      return run();
    });
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (e) {
      // the loser of a race sees the winner's tables (the migrations table is created outside the
      // migration transaction), or the write lock: either way the next attempt finds them applied
      const transient = e instanceof LockWaitTimeoutException || e instanceof TableExistsException || /already exists|database is locked/i.test(String((e as Error)?.message));
      if (!transient || attempt >= 5) throw e;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}
