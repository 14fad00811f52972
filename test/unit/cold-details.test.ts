// The Web UI's current details of a cold migration (workflows/lib/current-details.ts coldDetails):
// stage, hosts, the copy's bytes/files/rate/ETA, a resume after a crash, downtime and errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coldDetails } from '../../workflows/lib/current-details.js';
import type { ColdMigrationProgress } from '../../workflows/definitions.js';

const MiB = 1024 ** 2;
const base: ColdMigrationProgress = {
  migrationId: 'migrate-vm-1', vmId: 'vm-1', kind: 'cold', state: 'running', stage: 'copy', stageIndex: 3, sourceHostId: 'qa', targetHostId: 'qb', targetDatastoreId: 'qlocal-qb',
  policy: 'cold', awaitingApproval: false,
  progress: { transferredBytes: 64 * MiB, totalBytes: 256 * MiB, remainingBytes: 192 * MiB, transferRateBytesPerSec: 32 * MiB, percent: 25, etaSeconds: 6, file: 'vm-1-root.qcow2', filesDone: 1, filesTotal: 3, resumedFromBytes: 0, attempts: 1, perFile: [] },
  decisions: [{ atMs: 10, action: 'backing', reason: 'keep the chain: base on the target' }], stageTimingsMs: {}, compensations: [],
};

test('during the copy: stage, hosts and datastore, bytes, files, rate, ETA, last decision', () => {
  const md = coldDetails(base, 5000, 0);
  assert.match(md, /cold migration of vm-1/);
  assert.match(md, /3 copy/);
  assert.match(md, /qa → qb \(datastore qlocal-qb\)/);
  assert.match(md, /64(\.0)? MiB of 256(\.0)? MiB \(25 %\), 1\/3 files, now vm-1-root\.qcow2/);
  assert.match(md, /keep the chain/);
  assert.doesNotMatch(md, /resumed/);
});

test('a resume, the downtime, an error and compensations appear when they exist', () => {
  const md = coldDetails({ ...base, stage: 'rollback', state: 'rolled-back', progress: { ...base.progress, resumedFromBytes: 24 * MiB }, downtimeMs: 2500, error: 'verification failed', compensations: [{ name: 'discard-target-copy', ok: true, attempts: 1 }] }, 9000, 0);
  assert.match(md, /rollback/);
  assert.match(md, /resumed.*24(\.0)? MiB/);
  assert.match(md, /downtime/);
  assert.match(md, /verification failed/);
  assert.match(md, /discard-target-copy ok/);
});
