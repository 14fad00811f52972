// The workflow sandbox stays free of Node modules: the lint rule passes on workflows/, catches a
// planted violation, and the real bundle builds without execa, the ORM or a driver inside.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bundleWorkflowCode } from '@temporalio/worker';
import { lintWorkflowSource, lintWorkflows } from '../../scripts/lint-workflows.js';
import { WORKFLOWS_PATH } from '../../workers/create-worker.js';

test('workflows/ has no runtime imports of Node modules, drivers, activities or the database', () => {
  assert.deepEqual(lintWorkflows(), []);
});

test('the lint rule catches forbidden imports and allows type-only ones', () => {
  const file = '/x/workflows/bad.ts';
  const src = [
    "import { execa } from 'execa';",
    "import { readFileSync } from 'node:fs';",
    "import { createHostActivities } from '../activities/host.js';",
    "import type { HostActivities } from '../activities/host.js';",
    "import { proxyActivities } from '@temporalio/workflow';",
    "import { Saga } from './lib/saga.js';",
  ].join('\n');
  const problems = lintWorkflowSource(file, src, '/x/workflows');
  assert.deepEqual(problems.map((p) => p.line), [1, 2, 3]);
});

test('the workflow bundle builds and contains no execa, MikroORM or simulator code', async () => {
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } });
  assert.ok(code.length > 100_000, 'bundle has the SDK and ferry workflows');
  assert.match(code, /provisionVm/);
  assert.match(code, /liveMigrate/);
  for (const forbidden of ['execa', '@mikro-orm', 'better-sqlite3', 'createHostActivities']) {
    assert.ok(!code.includes(forbidden), `bundle must not contain ${forbidden}`);
  }
});
