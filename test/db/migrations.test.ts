// Migrations apply on both dialects, are idempotent, match db/entities.ts exactly, survive two
// processes starting at once; DATABASE_URL parsing and the unreachable-database error.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createDb, migrateUp, resolveDatabaseTarget } from '../../db/orm.js';
import { DatabaseUnavailableError, ValidationError } from '../../db/errors.js';
import { sqliteMigrations } from '../../db/migrations/sqlite/index.js';
import { postgresMigrations } from '../../db/migrations/postgres/index.js';
import { createTestDb, dbKinds, PG_TEST_URL, type TestDb } from '../helpers/db.js';

const TABLES = ['allocation', 'datastore', 'host', 'ip_allocation', 'ip_pool', 'network', 'operation', 'template', 'vm'];

for (const kind of dbKinds()) {
  describe(`migrations on ${kind}`, () => {
    let t: TestDb;
    before(async () => {
      t = await createTestDb(kind);
    });
    after(async () => t?.cleanup());

    it('creates every table and records the migration', async () => {
      const conn = t.db.em().getConnection();
      const rows =
        kind === 'sqlite'
          ? await conn.execute<{ name: string }[]>(`select name from sqlite_master where type = 'table'`)
          : await conn.execute<{ name: string }[]>(`select table_name as name from information_schema.tables where table_schema = ?`, [t.db.schema]);
      const names = rows.map((r) => r.name);
      for (const table of [...TABLES, 'mikro_orm_migrations']) assert.ok(names.includes(table), `table ${table} exists (have ${names.join(', ')})`);
      const applied = await t.db.orm.getMigrator().getExecutedMigrations();
      const expected = (kind === 'sqlite' ? sqliteMigrations : postgresMigrations).map((m) => m.name);
      assert.deepEqual(applied.map((m) => m.name), expected);
      assert.ok(expected.length >= 1);
    });

    it('running migrateUp again applies nothing', async () => {
      assert.deepEqual(await migrateUp(t.db), []);
    });

    it('the committed migrations produce exactly the schema db/entities.ts describes', async () => {
      if (kind === 'sqlite') {
        const diff = await t.db.orm.schema.getUpdateSchemaSQL({ wrap: false });
        assert.equal(diff.trim(), '', `entities and migrations differ; run npx tsx db/tools/create-migration.ts:\n${diff}`);
        return;
      }
      // PostgreSQL introspection reads every schema of the database, and other test files create
      // and drop theirs meanwhile: compare in a throw-away database of our own.
      const name = `ferry_diff_${process.pid}_${Date.now()}`;
      const admin = t.db.em().getConnection();
      await admin.execute(`create database "${name}"`);
      try {
        const u = new URL(PG_TEST_URL);
        u.pathname = `/${name}`;
        const own = await createDb({ databaseUrl: u.toString(), dataDir: t.dataDir });
        try {
          await migrateUp(own);
          const diff = await own.orm.schema.getUpdateSchemaSQL({ wrap: false });
          assert.equal(diff.trim(), '', `entities and migrations differ; run npx tsx db/tools/create-migration.ts:\n${diff}`);
        } finally {
          await own.close();
        }
      } finally {
        await admin.execute(`drop database if exists "${name}"`);
      }
    });

    it('two processes migrating a fresh database at once both succeed', async () => {
      const fresh = await createTestDb(kind).catch((e) => {
        throw e;
      });
      // createTestDb migrated already; make a second brand-new target by hand
      await fresh.cleanup();
      const url = kind === 'sqlite' ? join(t.dataDir, 'race.sqlite') : fresh.url;
      const a = await createDb({ databaseUrl: url, dataDir: t.dataDir });
      const b = await createDb({ databaseUrl: url, dataDir: t.dataDir });
      try {
        const [ra, rb] = await Promise.all([migrateUp(a), migrateUp(b)]);
        assert.equal(ra.length + rb.length, (kind === 'sqlite' ? sqliteMigrations : postgresMigrations).length, 'each migration applied exactly once');
        assert.deepEqual(await migrateUp(a), []);
      } finally {
        if (kind === 'postgres') await a.em().getConnection().execute(`drop schema if exists "${a.schema}" cascade`);
        await a.close();
        await b.close();
      }
    });
  });
}

describe('DATABASE_URL', () => {
  it('defaults to <dataDir>/ferry.sqlite and accepts paths and sqlite: URLs', () => {
    assert.deepEqual(resolveDatabaseTarget({ dataDir: '/d' }), { kind: 'sqlite', location: '/d/ferry.sqlite' });
    assert.equal(resolveDatabaseTarget({ dataDir: '/d', databaseUrl: '/x/y.sqlite' }).location, '/x/y.sqlite');
    assert.equal(resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'sqlite:///x/y.sqlite' }).location, '/x/y.sqlite');
    assert.equal(resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'sqlite::memory:' }).location, ':memory:');
  });

  it('takes postgres:// and postgresql:// with an optional schema', () => {
    const t = resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'postgres://u:p@h:5432/db?schema=ferry_a' });
    assert.equal(t.kind, 'postgres');
    assert.equal(t.schema, 'ferry_a');
    assert.ok(!t.location.includes('schema='));
    assert.equal(resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'postgresql://h/db' }).kind, 'postgres');
  });

  it('rejects what it cannot use, naming DATABASE_URL', () => {
    assert.throws(() => resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'mysql://h/db' }), (e: Error) => e instanceof ValidationError && /DATABASE_URL/.test(e.message));
    assert.throws(() => resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'postgres://h/db?schema=Bad-Name' }), /DATABASE_URL.*schema/);
    assert.throws(() => resolveDatabaseTarget({ dataDir: '/d', databaseUrl: 'postgres://h:5432' }), /DATABASE_URL.*database/);
  });

  it('an unreachable PostgreSQL gives one line naming DATABASE_URL and the reason, password redacted', async () => {
    await assert.rejects(createDb({ dataDir: '/tmp', databaseUrl: 'postgres://postgres:secret@127.0.0.1:1/test' }), (e: Error) => {
      assert.ok(e instanceof DatabaseUnavailableError, e.name);
      assert.match(e.message, /^DATABASE_URL \(postgres:\/\/postgres:\*\*\*\*\*@127\.0\.0\.1:1\/test\): cannot connect to PostgreSQL: .*ECONNREFUSED/);
      assert.ok(!e.message.includes('secret'));
      assert.ok(!e.message.includes('\n'));
      return true;
    });
  });

  it('an unusable SQLite file names DATABASE_URL', async () => {
    await assert.rejects(createDb({ dataDir: '/tmp', databaseUrl: '/etc/passwd' }), (e: Error) => e instanceof DatabaseUnavailableError && /^DATABASE_URL \(\/etc\/passwd\): .*not a database/.test(e.message));
  });
});
