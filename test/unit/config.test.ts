// loadConfig: defaults, and one clear line naming the variable for every bad value; the real
// entrypoint exits with that line (no stack trace) before it starts anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { ConfigError, loadConfig } from '../../config/index.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';

test('defaults: sim driver, SQLite under ./data, API 8080, Web UI 8233', () => {
  const c = loadConfig({}, '/srv/ferry');
  assert.equal(c.driver, 'sim');
  assert.equal(c.dataDir, '/srv/ferry/data');
  assert.equal(c.databaseUrl, '/srv/ferry/data/ferry.sqlite');
  assert.equal(c.apiPort, 8080);
  assert.equal(c.temporalUiPort, 8233);
  assert.equal(c.temporalAddress, undefined);
  assert.equal(c.workerMetricsPort, 9464);
});

test('FERRY_DRIVER=libvirt is accepted (host agents: workers/libvirt-agent.ts)', () => {
  assert.equal(loadConfig({ FERRY_DRIVER: 'libvirt' }, '/tmp').driver, 'libvirt');
});

test('every bad value names its variable', () => {
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ FERRY_DRIVER: 'xen' }, 'FERRY_DRIVER', /unknown driver "xen"/],
    [{ FERRY_API_PORT: '99999' }, 'FERRY_API_PORT', /outside 1-65535/],
    [{ FERRY_API_PORT: '80a' }, 'FERRY_API_PORT', /not a port/],
    [{ FERRY_WORKER_METRICS_PORT: '0' }, 'FERRY_WORKER_METRICS_PORT', /outside/],
    [{ FERRY_SIM_TIME_SCALE: '-3' }, 'FERRY_SIM_TIME_SCALE', /positive/],
    [{ DATABASE_URL: 'mysql://db/ferry' }, 'DATABASE_URL', /unsupported scheme/],
    [{ TEMPORAL_ADDRESS: 'not an address' }, 'TEMPORAL_ADDRESS', /host:port/],
    [{ FERRY_API_TOKEN: 'short' }, 'FERRY_API_TOKEN', /16 characters/],
    [{ FERRY_MAX_OUTGOING_MIGRATIONS: '1.5' }, 'FERRY_MAX_OUTGOING_MIGRATIONS', /whole number/],
  ];
  for (const [env, variable, re] of cases) {
    assert.throws(
      () => loadConfig(env),
      (e: unknown) => e instanceof ConfigError && e.variable === variable && re.test(e.message) && e.message.startsWith(`${variable}: `) && !e.message.includes('\n'),
      `${JSON.stringify(env)}`,
    );
  }
});

test('npm start with a bad variable prints one line naming it and exits 2', async () => {
  for (const [env, variable] of [
    [{ FERRY_DRIVER: 'xen' }, 'FERRY_DRIVER'],
    [{ FERRY_API_PORT: 'http' }, 'FERRY_API_PORT'],
  ] as const) {
    const r = await execa(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], { cwd: PROJECT_ROOT, reject: false, env: { ...env, FERRY_DATA_DIR: '/tmp/ferry-config-test' } });
    assert.equal(r.exitCode, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`^ferry: ${variable}: `));
  }
});
