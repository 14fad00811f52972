// workers/libvirt-agent.ts reads its environment once: every bad value is a ConfigError naming its
// variable (the entrypoint prints it and exits 2), good values reach the driver options.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../config/index.js';
import { loadLibvirtAgentConfig } from '../../workers/libvirt-agent.js';

const GOOD = {
  FERRY_HOST_ID: 'lv1',
  FERRY_LIBVIRT_URI: 'qemu+unix:///system?socket=/srv/ferrylv/lv1/run/libvirt-sock',
  FERRY_LIBVIRT_MIGRATION_URI: 'qemu+tcp://10.252.0.1/system',
  FERRY_LIBVIRT_STATE_DIR: '/srv/ferrylv/lv1/ferry-state',
  FERRY_LIBVIRT_DATASTORES: JSON.stringify([{ id: 'lvshared', pool: 'ferry-shared', shared: true }]),
  TEMPORAL_ADDRESS: '127.0.0.1:7233',
  DATABASE_URL: '/tmp/x.sqlite',
};

test('a good environment becomes driver options', () => {
  const c = loadLibvirtAgentConfig({ ...GOOD, FERRY_LIBVIRT_CPUS: '4', FERRY_LIBVIRT_NETWORKS: 'a,b' }, '/tmp');
  assert.equal(c.ferry.driver, 'libvirt');
  assert.equal(c.driver.uri, GOOD.FERRY_LIBVIRT_URI);
  assert.equal(c.driver.migrationUri, GOOD.FERRY_LIBVIRT_MIGRATION_URI);
  assert.deepEqual(c.driver.datastores, [{ id: 'lvshared', pool: 'ferry-shared', shared: true }]);
  assert.deepEqual(c.driver.networks, ['a', 'b']);
  assert.equal(c.driver.cpus, 4);
  assert.equal(c.driver.domainType, 'qemu');
  assert.equal(c.pollMs, 200);
});

test('every bad value names its variable', () => {
  const cases: Array<[Record<string, string | undefined>, string, RegExp]> = [
    [{ FERRY_HOST_ID: undefined }, 'FERRY_HOST_ID', /must be set/],
    [{ FERRY_HOST_ID: 'Bad;Id' }, 'FERRY_HOST_ID', /host id/],
    [{ FERRY_LIBVIRT_URI: 'qemu:///system; rm -rf /' }, 'FERRY_LIBVIRT_URI', /not a libvirt qemu URI/],
    [{ FERRY_LIBVIRT_URI: 'http://example.com/' }, 'FERRY_LIBVIRT_URI', /not a libvirt qemu URI/],
    [{ FERRY_LIBVIRT_MIGRATION_URI: undefined }, 'FERRY_LIBVIRT_MIGRATION_URI', /not a libvirt qemu URI/],
    [{ FERRY_LIBVIRT_STATE_DIR: 'relative' }, 'FERRY_LIBVIRT_STATE_DIR', /absolute/],
    [{ FERRY_LIBVIRT_DATASTORES: undefined }, 'FERRY_LIBVIRT_DATASTORES', /must be set/],
    [{ FERRY_LIBVIRT_DATASTORES: '{' }, 'FERRY_LIBVIRT_DATASTORES', /not JSON/],
    [{ FERRY_LIBVIRT_DATASTORES: '[{"id":"a","pool":"p"}]' }, 'FERRY_LIBVIRT_DATASTORES', /shared must be true or false/],
    [{ FERRY_LIBVIRT_DATASTORES: '[{"id":"a","pool":"x y","shared":true}]' }, 'FERRY_LIBVIRT_DATASTORES', /pool/],
    [{ FERRY_LIBVIRT_DOMAIN_TYPE: 'xen' }, 'FERRY_LIBVIRT_DOMAIN_TYPE', /qemu or kvm/],
    [{ FERRY_LIBVIRT_CPUS: '0' }, 'FERRY_LIBVIRT_CPUS', /whole number/],
    [{ TEMPORAL_ADDRESS: undefined }, 'TEMPORAL_ADDRESS', /must be set/],
  ];
  for (const [over, variable, re] of cases) {
    const env: Record<string, string> = { ...GOOD };
    for (const [k, v] of Object.entries(over)) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    assert.throws(() => loadLibvirtAgentConfig(env, '/tmp'), (e: unknown) => e instanceof ConfigError && e.variable === variable && re.test(e.message), `${variable} ${JSON.stringify(over)}`);
  }
});
