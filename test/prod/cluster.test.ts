// The production layout, end to end (issue 15): the real Temporal server on PostgreSQL, two
// control workers, the host agents, two API replicas on PostgreSQL, the Web UI, and Prometheus
// scraping every process: the cluster `npm run prod:local` starts, started once for this file.
// Everything goes through the API, as an operator's client would: provision, live migration,
// cancel, a rollback on a simulator fault, SIGKILL of the control worker that runs a migration
// (the other finishes it), an API replica killed while a client polls the other; then the
// invariant checker, Prometheus's view of the fleet, promtool and the Grafana dashboard's queries.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { assertNoViolations } from '../helpers/invariants.js';
import { prodSkipReason, startTestProd, type TestProd } from '../helpers/prod.js';
import { waitFor } from '../helpers/ferry.js';
import { promtoolCheckMetrics } from '../../workers/prometheus-local.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';

const skip = await prodSkipReason();
if (skip) console.error(`test/prod: skipped: ${skip}`);

const FINISHED = ['completed', 'failed', 'cancelled', 'rolled-back'];

describe('production layout: temporal-server on PostgreSQL, 2 control workers, 2 API replicas', { skip }, () => {
  let p: TestProd;
  let temporal: Client;
  let conn: Connection;
  const completedLive: string[] = [];

  before(async () => {
    const t0 = Date.now();
    p = await startTestProd({ log: (l) => console.error(l) });
    conn = await Connection.connect({ address: p.cluster.temporal.address });
    temporal = new Client({ connection: conn, namespace: 'default' });
    console.error(`test/prod: cluster and Prometheus up in ${Date.now() - t0} ms`);
  });
  after(async () => {
    await conn?.close();
    await p?.close();
  });

  async function migrate(vmId: string, body: Record<string, unknown>, replica = 0): Promise<string> {
    const r = await p.call('POST', `/v1/vms/${vmId}/migrations`, { kind: 'live', ...body }, replica);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.migrationId as string;
  }
  const finished = (path: string, replica = 0) => p.pollUntil(path, (b) => FINISHED.includes(b.state), { replica });
  /** until the migration holds for the operator's switchover (approveSwitchover), failing if it ends instead */
  const holding = async (id: string, replica = 0, onEach?: () => void) => {
    const b = await p.pollUntil(`/v1/migrations/${id}`, (m) => FINISHED.includes(m.state) || m.awaitingApproval === true, { replica, onEach });
    assert.equal(b.state, 'running', `${id} holds for approval: ${JSON.stringify(b)}`);
  };

  test('provision: the four steps on the cluster, the VM runs where inventory says', async () => {
    const r = await p.call('POST', '/v1/vms', { name: 'prod-web-1', cpus: 1, memoryMiB: 1024, diskGiB: 2, template: 'alpine-3' });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const vm = await p.pollUntil(`/v1/vms/${r.body.vmId}`, (b) => b.state !== 'provisioning');
    assert.equal(vm.state, 'running', JSON.stringify(vm));
    assert.ok(vm.hostId && vm.ip, JSON.stringify(vm));
    // visibility on PostgreSQL: the workflow is found by ferry's search attribute
    await waitFor('the provision in visibility', async () => {
      for await (const w of temporal.workflow.list({ query: `VmId = '${r.body.vmId}'` })) if (w.status.name === 'COMPLETED') return true;
      return false;
    }, 30_000, 200);
  });

  test('live migration completes', async () => {
    const id = await migrate('vm-demo-01', { targetHostId: 'host-b' });
    const m = await finished(`/v1/migrations/${id}`);
    assert.equal(m.state, 'completed', JSON.stringify(m));
    assert.equal((await p.call('GET', '/v1/vms/vm-demo-01')).body.hostId, 'host-b');
    completedLive.push(id);
  });

  test('cancel during pre-copy resumes the VM on its source', async () => {
    const id = await migrate('vm-demo-05', { targetHostId: 'host-b', approveSwitchover: true });
    await holding(id);
    assert.equal((await p.call('POST', `/v1/migrations/${id}/cancel`, { reason: 'test' })).status, 202);
    const m = await finished(`/v1/migrations/${id}`);
    assert.equal(m.state, 'cancelled', JSON.stringify(m));
    assert.equal((await p.call('GET', '/v1/vms/vm-demo-05')).body.hostId, 'host-a');
  });

  test('rollback: a simulator fault in stop-and-copy leaves the VM on its source', async () => {
    const f = await p.call('POST', '/v1/sim/faults', { kind: 'fail-stage', stage: 3, vmId: 'vm-demo-09' });
    assert.equal(f.status, 201, JSON.stringify(f.body));
    const id = await migrate('vm-demo-09', { targetHostId: 'host-b' });
    const m = await finished(`/v1/migrations/${id}`);
    assert.equal(m.state, 'rolled-back', JSON.stringify(m));
    assert.equal((await p.call('GET', '/v1/vms/vm-demo-09')).body.hostId, 'host-a');
  });

  test('SIGKILL of the control worker running a migration: the other control worker finishes it', async () => {
    const id = await migrate('vm-demo-13', { targetHostId: 'host-b', approveSwitchover: true });
    await holding(id);
    // the worker that completed the workflow's last task holds it in its cache (sticky queue)
    const history = await temporal.workflow.getHandle(id).fetchHistory();
    const identity = [...(history.events ?? [])].reverse().find((e) => e.workflowTaskCompletedEventAttributes)?.workflowTaskCompletedEventAttributes?.identity ?? '';
    const controls = p.cluster.processes.filter((x) => x.role === 'control');
    const victim = controls.find((c) => identity.startsWith(`${c.pid()}@`));
    assert.ok(victim, `the last workflow task ran on a control worker (identity ${identity}; pids ${controls.map((c) => c.pid()).join(', ')})`);
    const survivor = controls.find((c) => c !== victim)!;
    await victim.kill('SIGKILL');
    const t0 = Date.now();
    // the switchover update needs a workflow task: the survivor replays the history and takes it
    assert.equal((await p.call('POST', `/v1/migrations/${id}/switchover`, {})).status < 300, true);
    const m = await finished(`/v1/migrations/${id}`);
    assert.equal(m.state, 'completed', JSON.stringify(m));
    const after = await temporal.workflow.getHandle(id).fetchHistory();
    const last = [...(after.events ?? [])].reverse().find((e) => e.workflowTaskCompletedEventAttributes)?.workflowTaskCompletedEventAttributes?.identity ?? '';
    assert.ok(last.startsWith(`${survivor.pid()}@`), `finished by ${survivor.name} (identity ${last})`);
    console.error(`test/prod: ${victim.name} killed; ${survivor.name} finished the migration ${Date.now() - t0} ms later`);
    completedLive.push(id);
    await victim.start();
  });

  test('an API replica killed while a client polls the other: every poll answers', async () => {
    const id = await migrate('vm-demo-16', { targetHostId: 'host-b', approveSwitchover: true }, 0);
    let polls = 0;
    await holding(id, 1, () => polls++);
    await p.cluster.byName('api-1').kill('SIGKILL');
    // the client keeps polling replica 2 (pollUntil fails on any non-200) and steers through it
    assert.equal((await p.call('POST', `/v1/migrations/${id}/switchover`, {}, 1)).status < 300, true);
    const m = await p.pollUntil(`/v1/migrations/${id}`, (b) => FINISHED.includes(b.state), { replica: 1, onEach: () => polls++ });
    assert.equal(m.state, 'completed', JSON.stringify(m));
    assert.ok(polls > 3, `polled ${polls} times`);
    completedLive.push(id);
    await p.cluster.byName('api-1').start();
    assert.equal((await p.call('GET', `/v1/migrations/${id}`, undefined, 0)).body.state, 'completed');
  });

  test('invariants: every VM on exactly one host, nothing leaked or left running', async () => {
    await assertNoViolations({ db: p.db, sim: p.sim });
  });

  test('Prometheus scraped both API replicas, every worker and the server; migrations counted once', async () => {
    const targets = await waitFor('every target up', async () => {
      const t = await p.prometheus.targets();
      return t.length === 6 && t.every((x) => x.health === 'up') ? t : undefined;
    }, 30_000, 250);
    assert.deepEqual([...new Set(targets.map((t) => t.labels.job))].sort(), ['ferry-agents', 'ferry-api', 'ferry-control', 'temporal']);
    const n = completedLive.length;
    // each replica reports the fleet from the database: the same count, not a share of it
    const perReplica = await waitFor(`ferry_migrations_total = ${n} on both replicas`, async () => {
      const r = await p.prometheus.query('ferry_migrations_total{kind="live",result="completed"}');
      return r.length === 2 && r.every((s) => Number(s.value[1]) === n) ? r : undefined;
    }, 30_000, 250);
    assert.deepEqual(perReplica.map((s) => s.metric.instance).sort(), [...p.cluster.apiUrls.map((u) => new URL(u).host)].sort());
    const once = await p.prometheus.query('max without (instance) (ferry_migrations_total{kind="live"})');
    const byResult = Object.fromEntries(once.map((s) => [s.metric.result, Number(s.value[1])]));
    assert.deepEqual(byResult, { completed: n, cancelled: 1, 'rolled-back': 1 });
    // worker SDK metrics from both control workers (workflow tasks) and the agents (activities)
    // (over the run: the killed worker's restart has served no workflow task yet)
    const wft = await p.prometheus.query('count by (instance) (max_over_time(temporal_workflow_task_execution_latency_count{job="ferry-control"}[15m]))');
    assert.equal(wft.length, 2, `workflow-task metrics from both control workers: ${JSON.stringify(wft)}`);
    const act = await p.prometheus.query('sum(temporal_activity_execution_latency_count{job="ferry-agents"})');
    assert.ok(Number(act[0]?.value[1]) > 0, 'activity metrics from the host agents');
    assert.ok((await p.prometheus.query('sum(service_requests{service_name="frontend"})')).length === 1, 'Temporal server metrics');
  });

  test('promtool check metrics accepts every ferry endpoint', async () => {
    // the one finding allowed: prom-client's default Node gauges nodejs_active_*_total, whose
    // names every Node dashboard expects (ferry's own metrics and the SDK's lint clean)
    const PROM_CLIENT = /^ferry_process_nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;
    for (const proc of p.cluster.processes) {
      const page = await (await fetch(proc.metricsUrl)).text();
      const r = await promtoolCheckMetrics(page);
      const findings = r.output.split('\n').filter((l) => l.trim() && !PROM_CLIENT.test(l.trim()));
      assert.ok(r.exitCode === 0 || (r.exitCode === 3 && findings.length === 0), `${proc.name} ${proc.metricsUrl} (rc ${r.exitCode}): ${findings.join('\n')}`);
    }
    // the server's own page parses; its names are Temporal's (lint findings, rc 3, are theirs)
    const server = await promtoolCheckMetrics(await (await fetch(p.cluster.temporal.metricsUrl)).text());
    assert.ok(server.exitCode === 0 || server.exitCode === 3, server.output.slice(0, 500));
  });

  test('every Grafana dashboard panel returns data', async () => {
    const dash = JSON.parse(readFileSync(join(PROJECT_ROOT, 'deploy', 'grafana', 'ferry-dashboard.json'), 'utf8'));
    const empty: string[] = [];
    for (const panel of dash.panels) {
      for (const t of panel.targets) {
        const r = await p.prometheus.query(t.expr);
        if (!r.some((s) => Number.isFinite(Number(s.value[1])))) empty.push(`${panel.title}: ${t.expr}`);
      }
    }
    assert.deepEqual(empty, []);
  });

  test('the standalone Web UI lists the workflows', async () => {
    const ui = p.cluster.ui;
    assert.ok(ui, 'Web UI running');
    const r = await fetch(`${ui.url}/api/v1/namespaces/default/workflows?query=${encodeURIComponent("WorkflowType='liveMigrate'")}`);
    assert.equal(r.status, 200);
    const body = (await r.json()) as { executions?: unknown[] };
    assert.ok((body.executions?.length ?? 0) >= 5, JSON.stringify(body).slice(0, 300));
  });
});
