// docker-compose.yml kept true without a container engine: Compose v1's `docker-compose config`
// (Debian's docker-compose 1.29: parses, interpolates and validates against the Compose schema,
// no engine needed) accepts it, and it runs the very files prod:local runs: the server config
// (rendered here by the real temporal-server with the compose environment), the dynamic config,
// the Prometheus config and rules, the Grafana provisioning and dashboard.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { findOnPath, promtoolCheckRules, renderPrometheusConfig } from '../../workers/prometheus-local.js';
import { findTemporalServer, TEMPORAL_CONFIG_FILE, temporalDbTarget, temporalPorts, temporalServerEnv } from '../../workers/temporal-server.js';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const COMPOSE = join(PROJECT_ROOT, 'docker-compose.yml');
const composeText = readFileSync(COMPOSE, 'utf8');
const dockerCompose = findOnPath('docker-compose');
const promtool = findOnPath('promtool');
const server = findTemporalServer();

describe('docker-compose.yml', () => {
  test('docker-compose config accepts it, with every service of the production layout', { skip: !dockerCompose && 'docker-compose (Debian package) is not installed' }, async () => {
    const r = await execa(dockerCompose!, ['-f', COMPOSE, 'config', '-q'], { cwd: PROJECT_ROOT, reject: false });
    assert.equal(r.exitCode, 0, r.stderr);
    const services = (await execa(dockerCompose!, ['-f', COMPOSE, 'config', '--services'], { cwd: PROJECT_ROOT })).stdout.split('\n').sort();
    assert.deepEqual(services, ['api', 'control-worker', 'ferry-db', 'grafana', 'postgresql', 'prometheus', 'sim-agents', 'temporal', 'temporal-schema', 'temporal-setup', 'temporal-ui']);
  });

  test('no auto-setup image, no swallowed set-up failure, set-up after the health check', () => {
    assert.doesNotMatch(composeText, /auto-setup/);
    assert.doesNotMatch(composeText, /\|\|\s*true/);
    assert.match(composeText, /temporal-setup:[\s\S]*?depends_on: \{ temporal: \{ condition: service_healthy \} \}/);
    assert.match(composeText, /temporal:\n    image: temporalio\/server:[\s\S]*?healthcheck:/);
  });

  test('it mounts the files prod:local runs with, and they exist', () => {
    const mounts = [...composeText.matchAll(/'\.\/([^':]+):/g)].map((m) => m[1]);
    assert.deepEqual(mounts.sort(), ['deploy/grafana', 'deploy/grafana/provisioning', 'deploy/prometheus-rules.yml', 'deploy/prometheus.yml', 'deploy/temporal']);
    for (const m of mounts) assert.ok(existsSync(join(PROJECT_ROOT, m)), m);
    assert.match(composeText, /TEMPORAL_SERVER_CONFIG_FILE_PATH: \/etc\/temporal\/ferry\/config\.yaml/);
    // Prometheus discovers the compose services by name: each job's DNS name is a service
    const prom = readFileSync(join(PROJECT_ROOT, 'deploy', 'prometheus.yml'), 'utf8');
    for (const [, name] of prom.matchAll(/names: \[([\w-]+)\]/g)) assert.match(composeText, new RegExp(`\\n  ${name}:\\n`), `service ${name}`);
  });

  test('the Grafana dashboard uses the provisioned datasource', () => {
    const ds = readFileSync(join(PROJECT_ROOT, 'deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8');
    const uid = /uid: (\S+)/.exec(ds)![1];
    const dash = JSON.parse(readFileSync(join(PROJECT_ROOT, 'deploy', 'grafana', 'ferry-dashboard.json'), 'utf8'));
    assert.ok(dash.panels.length >= 10);
    for (const panel of dash.panels) {
      assert.equal(panel.datasource.uid, uid, panel.title);
      assert.ok(panel.targets.length > 0 && panel.targets.every((t: { expr: string }) => t.expr.length > 0), panel.title);
    }
  });
});

describe('Prometheus config and rules', { skip: !promtool && 'promtool (Debian package prometheus) is not installed' }, () => {
  test('promtool check rules, and the rules unit tests', async () => {
    const r = await promtoolCheckRules();
    assert.equal(r.exitCode, 0, r.output);
    const t = await execa(promtool!, ['test', 'rules', 'prometheus-rules.test.yml'], { cwd: join(PROJECT_ROOT, 'deploy'), reject: false });
    assert.equal(t.exitCode, 0, `${t.stdout}\n${t.stderr}`);
  });

  test('the rendered config (local targets) passes promtool check config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-prom-'));
    try {
      const file = join(dir, 'prometheus.yml');
      writeFileSync(file, renderPrometheusConfig({ 'ferry-api': ['127.0.0.1:1', '127.0.0.1:2'], 'ferry-control': ['127.0.0.1:3'], 'ferry-agents': ['127.0.0.1:4'], temporal: ['127.0.0.1:5'] }, { interval: '1s' }));
      const r = await execa(promtool!, ['check', 'config', file], { reject: false });
      assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
      assert.throws(() => renderPrometheusConfig({ nope: [] }), /no job nope/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/temporal/config.yaml, rendered by temporal-server', { skip: !server && 'temporal-server is not installed (.ci/run builds it)' }, () => {
  // render-config reads only a config folder (<dir>/<env>.yaml), not --config-file: the same file, copied
  const render = async (env: Record<string, string>) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-tcfg-'));
    try {
      copyFileSync(TEMPORAL_CONFIG_FILE, join(dir, 'ferry.yaml'));
      const r = await execa(server!.server, ['--config', dir, '--env', 'ferry', 'render-config'], { env: { PATH: process.env.PATH ?? '', ...env }, extendEnv: false, reject: false });
      assert.equal(r.exitCode, 0, r.stderr);
      return r.stdout;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  test('with the compose environment: the postgresql service, the container address, standard ports', async () => {
    const out = await render({ TEMPORAL_DB_HOST: 'postgresql', BIND_ON_IP: '172.18.0.5', TEMPORAL_DYNAMIC_CONFIG_FILE: '/etc/temporal/ferry/dynamicconfig.yaml' });
    assert.match(out, /connectaddr: postgresql:5432/i);
    assert.match(out, /rpcaddress: 172\.18\.0\.5:7233/i);
    assert.match(out, /listenaddress: 0\.0\.0\.0:8000/i);
  });
  test("with prod:local's environment: 127.0.0.1, ports away from 7233, small pools", async () => {
    const out = await render(temporalServerEnv({ db: temporalDbTarget('postgres://postgres@127.0.0.1:5432/temporal'), ports: temporalPorts(17233, 18000) }));
    assert.match(out, /rpcaddress: 127\.0\.0\.1:17233/i);
    assert.match(out, /maxconns: 5/i);
    assert.doesNotMatch(out, /7233\b(?<!17233)/);
  });
});
