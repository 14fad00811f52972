import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  activitySummary,
  activityWords,
  bytes,
  coldMigrateSummary,
  evacuateSummary,
  inputsTable,
  liveMigrateSummary,
  provisionSummary,
  rebalanceSummary,
  reconcileSummary,
  seconds,
  storageMigrateSummary,
} from '../../domain/summaries.js';
import { fleetDetails, migrationDetails, provisionDetails } from '../../workflows/lib/current-details.js';
import type { FleetProgress, MigrationProgress, ProvisionProgress } from '../../workflows/definitions.js';

describe('static summaries (domain/summaries.ts)', () => {
  it('names what, which VM, from where to where', () => {
    assert.equal(liveMigrateSummary({ vmId: 'vm-demo-04', sourceHostId: 'host-d', targetHostId: 'host-a', policy: 'default' }), 'live-migrate vm-demo-04 host-d → host-a (policy default)');
    assert.equal(liveMigrateSummary({ vmId: 'vm-1', vmName: 'web', sourceHostId: 'h1' }), 'live-migrate web (vm-1) h1 → (planner picks) (policy default)');
    assert.equal(liveMigrateSummary({ vmId: 'vm-1' }), 'live-migrate vm-1 ? → (planner picks) (policy default)');
    assert.equal(coldMigrateSummary({ vmId: 'vm-1', vmName: 'web', sourceHostId: 'h1', targetHostId: 'h2', targetDatastoreId: 'local-h2' }), 'cold-migrate web (vm-1) h1 → h2 (datastore local-h2)');
    assert.equal(coldMigrateSummary({ vmId: 'vm-1', sourceHostId: 'h1', auto: true }), 'cold-migrate vm-1 h1 → (planner picks) (auto)');
    assert.equal(storageMigrateSummary({ vmId: 'vm-1', vmName: 'web', hostId: 'h1', targetDatastoreId: 'fast' }), 'storage-migrate web (vm-1) on h1 → datastore fast');
    assert.equal(
      provisionSummary({ name: 'web-1', cpus: 2, memoryMiB: 2048, source: { kind: 'template', templateId: 'tpl-1' }, templateName: 'debian-12' }),
      'provision web-1 (2 vCPU, 2048 MiB) from debian-12',
    );
    assert.equal(provisionSummary({ name: 'w', cpus: 1, memoryMiB: 512, source: { kind: 'import', path: '/x/disk.vmdk' } }), 'provision w (1 vCPU, 512 MiB) from import disk.vmdk');
    assert.equal(evacuateSummary({ hostId: 'host-a' }), 'evacuate host-a (max 3 in parallel)');
    assert.equal(evacuateSummary({ hostId: 'host-a', maxParallel: 2, planId: 'plan-1' }), 'evacuate host-a (max 2 in parallel) plan plan-1');
    assert.equal(rebalanceSummary({ cluster: 'default' }), 'rebalance default (level 3, max 5 moves)');
    assert.equal(rebalanceSummary({ cluster: 'default', level: 5, maxMoves: 1, dryRun: true }), 'rebalance default (level 5, max 1 moves) dry run');
    assert.equal(reconcileSummary('default'), 'reconcile default');
  });

  it('writes the inputs as a markdown list that no value can break', () => {
    const t = inputsTable('inputs', { vmId: 'vm-1', policy: undefined, tags: ['a', 'b'], empty: [], note: 'x *y*\nz', overrides: { maxDowntimeMs: 300 } });
    assert.equal(t, ['**inputs**', '', '- **vmId**: vm-1', '- **tags**: a, b', '- **note**: x \\*y\\* z', '- **overrides**: {"maxDowntimeMs":300}'].join('\n'));
  });

  it('words an activity with its phase and host', () => {
    assert.equal(activityWords('allocateIp'), 'allocate IP');
    assert.equal(activityWords('startDestinationContainer'), 'start destination container');
    assert.equal(activitySummary('stage 2 pre-copy', 'host-d', 'watchPrecopy', 'round 3'), 'stage 2 pre-copy on host-d: watch precopy (round 3)');
    assert.equal(activitySummary('step 3 customize', 'control', 'allocateIp'), 'step 3 customize: allocate IP');
    assert.equal(activitySummary('evacuate host-a', 'control', 'fleetSnapshot'), 'evacuate host-a: fleet snapshot');
  });

  it('formats bytes and seconds for a person', () => {
    assert.equal(bytes(1536 * 1024 * 1024), '1.5 GiB');
    assert.equal(bytes(640 * 1024 * 1024), '640 MiB');
    assert.equal(bytes(12 * 1024), '12 KiB');
    assert.equal(seconds(42.4), '42 s');
    assert.equal(seconds(185), '3 min 5 s');
    assert.equal(seconds(Number.NaN), '?');
  });
});

describe('current details (workflows/lib/current-details.ts)', () => {
  it('live migration: stage, round, remaining, dirty rate, downtime, ETA, verdict, last decision', () => {
    const p: MigrationProgress = {
      migrationId: 'migrate-vm-1',
      vmId: 'vm-1',
      kind: 'live',
      state: 'running',
      stage: 'pre-copy',
      stageIndex: 2,
      sourceHostId: 'h1',
      targetHostId: 'h2',
      policy: 'default',
      awaitingApproval: true,
      progress: { round: 3, transferredBytes: 512 * 1024 ** 2, remainingBytes: 64 * 1024 ** 2, totalBytes: 1024 ** 3, dirtyRateBytesPerSec: 8 * 1024 ** 2, transferRateBytesPerSec: 100 * 1024 ** 2, expectedDowntimeMs: 120, percent: 50, etaSeconds: 7, verdict: 'converging', downtimeLimitMs: 300, throttlePct: 0 },
      decisions: [{ atMs: 10, action: 'await-approval', reason: 'converged; waiting for the operator' }],
      stageTimingsMs: {},
      compensations: [],
    };
    const md = migrationDetails(p, 61_000, 0);
    for (const want of ['- **stage**: 2 pre-copy', '- **round**: 3', '- **remaining**: 64.0 MiB', '- **dirty rate**: 8.0 MiB/s', '- **expected downtime**: 120 ms (limit 300 ms)', '- **ETA**: 7 s', '- **verdict**: converging', '- **last decision**: await-approval: converged; waiting for the operator', 'awaiting switchover approval', '- **hosts**: h1 → h2', '- **elapsed**: 1 min 1 s']) {
      assert.ok(md.includes(want), `${want} in\n${md}`);
    }
  });

  it('provisioning: the step and every rejected host with its reasons', () => {
    const p: ProvisionProgress = { vmId: 'vm-1', name: 'web-1', state: 'running', step: 3, stepName: 'customize', hostId: 'h2', datastoreId: 'shared', ip: '10.0.0.10', placement: { chosen: 'h2', rejected: [{ hostId: 'h1', reasons: ['not enough memory', 'in maintenance'] }] }, stepTimingsMs: {}, compensations: [] };
    const md = provisionDetails(p);
    assert.ok(md.includes('- **step**: 3 customize'));
    assert.ok(md.includes('- **placed on**: h2 (datastore shared)'));
    assert.ok(md.includes('- **rejected h1**: not enough memory; in maintenance'));
    assert.ok(md.includes('- **IP**: 10.0.0.10'));
  });

  it('fleet: counts, ETA and the VMs in flight', () => {
    const p: FleetProgress = {
      operationId: 'op',
      kind: 'evacuation',
      subject: 'h1',
      state: 'running',
      dryRun: false,
      maxParallel: 3,
      counts: { moved: 1, inFlight: 1, waiting: 1, failed: 0, left: 1, cancelled: 0 },
      vms: [
        { vmId: 'a', vmName: 'a', from: 'h1', to: 'h2', state: 'moved', attempts: 1, failedTargets: [] },
        { vmId: 'b', vmName: 'b', from: 'h1', to: 'h3', state: 'in-flight', attempts: 1, failedTargets: [] },
        { vmId: 'c', vmName: 'c', from: 'h1', state: 'waiting', attempts: 0, failedTargets: [] },
        { vmId: 'd', vmName: 'd', from: 'h1', state: 'left', attempts: 0, failedTargets: [], reason: 'no host fits' },
      ],
      etaMs: 40_000,
      startedAtMs: 0,
      maxInFlightSeen: 1,
    };
    const md = fleetDetails(p, 10_000);
    assert.ok(md.includes('- **moved**: 1 of 4'));
    assert.ok(md.includes('- **in flight**: b h1 → h3'));
    assert.ok(md.includes('- **ETA**: in 30 s'));
    assert.ok(md.includes('- **left d**: no host fits'));
  });
});
