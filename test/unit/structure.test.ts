// The layer rules of ARCHITECTURE.md section 7 hold for the whole tree, and the checker that
// says so catches each kind of violation when one is planted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkStructure, edgeProblem, findCycles, parseImports, type ImportEdge } from '../../scripts/check-structure.js';

test('the tree has no forbidden import, no cycle and no unexplained long file', () => {
  const { files, problems } = checkStructure();
  assert.ok(files > 50, `checked ${files} files`);
  assert.deepEqual(problems, []);
});

test('api/, workflows/ and drivers/ keep to their rooms (measured on the real tree)', () => {
  const { edges } = checkStructure();
  const local = edges.filter((e) => e.pkg === undefined);
  assert.deepEqual(local.filter((e) => e.from.startsWith('api/') && e.to.startsWith('drivers/')), []);
  assert.deepEqual(local.filter((e) => e.from.startsWith('workflows/') && e.to.startsWith('drivers/')), []);
  assert.deepEqual(local.filter((e) => e.from.startsWith('drivers/') && !e.to.startsWith('drivers/') && !e.to.startsWith('domain/')), []);
  assert.deepEqual(edges.filter((e) => e.from.startsWith('domain/') && (e.pkg !== undefined || !e.to.startsWith('domain/'))), []);
});

test('parseImports resolves relative paths and tells type-only imports apart', () => {
  const src = [
    "import { a } from '../domain/names.js';",
    "import type { B } from '../activities/host.js';",
    "import { type C, type D } from '../activities/control.js';",
    "import { type E, f } from '../drivers/hypervisor.js';",
    "export { g } from './lib/saga.js';",
    "import { proxyActivities } from '@temporalio/workflow';",
    "import { readFileSync } from 'node:fs';",
  ].join('\n');
  const edges = parseImports('workflows/x.ts', src);
  assert.deepEqual(
    edges.map((e) => [e.line, e.to, e.typeOnly]),
    [
      [1, 'domain/names.ts', false],
      [2, 'activities/host.ts', true],
      [3, 'activities/control.ts', true],
      [4, 'drivers/hypervisor.ts', false],
      [5, 'workflows/lib/saga.ts', false],
      [6, '@temporalio/workflow', false],
      [7, 'node:fs', false],
    ],
  );
});

test('every forbidden arrow is caught; allowed ones pass', () => {
  const e = (from: string, to: string, typeOnly = false, pkg?: string): ImportEdge => ({ from, to, line: 1, typeOnly, pkg });
  // forbidden
  assert.match(edgeProblem(e('api/routes/x.ts', 'drivers/hypervisor.ts'))!, /api\/ may not import drivers/);
  assert.match(edgeProblem(e('api/routes/x.ts', 'drivers/sim/faults.ts', true))!, /api\/ may not import/);
  assert.match(edgeProblem(e('workflows/x.ts', 'drivers/hypervisor.ts', true))!, /workflows\/ may not import/);
  assert.match(edgeProblem(e('workflows/x.ts', 'activities/host.ts'))!, /not even at runtime/);
  assert.match(edgeProblem(e('drivers/sim/x.ts', 'workflows/lib/saga.ts'))!, /drivers\/ may not import/);
  assert.match(edgeProblem(e('drivers/sim/x.ts', 'drivers/qemu/qmp.ts'))!, /another driver/);
  assert.match(edgeProblem(e('domain/x.ts', 'db/entities.ts', true))!, /domain\/ may not import/);
  assert.match(edgeProblem(e('domain/x.ts', 'node:fs', false, 'node:fs'))!, /package "node:fs"/);
  assert.match(edgeProblem(e('domain/x.ts', '@temporalio/workflow', false, '@temporalio/workflow'))!, /package/);
  assert.match(edgeProblem(e('workflows/x.ts', 'execa', false, 'execa'))!, /package "execa"/);
  assert.match(edgeProblem(e('cli/x.ts', 'api/app.ts'))!, /cli\/ may not import/);
  assert.match(edgeProblem(e('activities/x.ts', 'test/helpers/ferry.ts'))!, /test code/);
  // allowed
  assert.equal(edgeProblem(e('workflows/x.ts', 'activities/host.ts', true)), undefined);
  assert.equal(edgeProblem(e('workflows/x.ts', 'domain/placement.ts')), undefined);
  assert.equal(edgeProblem(e('api/x.ts', 'workflows/definitions.ts')), undefined);
  assert.equal(edgeProblem(e('activities/x.ts', 'drivers/hypervisor.ts')), undefined);
  assert.equal(edgeProblem(e('drivers/qemu/x.ts', 'drivers/hypervisor.ts')), undefined);
  assert.equal(edgeProblem(e('workers/x.ts', 'drivers/qemu/index.ts')), undefined);
  assert.equal(edgeProblem(e('bench/x.ts', 'test/helpers/ferry.ts')), undefined);
});

test('findCycles finds a cycle of two and of three files and ignores a diamond', () => {
  const e = (from: string, to: string): ImportEdge => ({ from, to, line: 1, typeOnly: false });
  assert.deepEqual(findCycles([e('a.ts', 'b.ts'), e('b.ts', 'a.ts')]), [['a.ts', 'b.ts']]);
  assert.deepEqual(findCycles([e('a.ts', 'b.ts'), e('b.ts', 'c.ts'), e('c.ts', 'a.ts')]), [['a.ts', 'b.ts', 'c.ts']]);
  assert.deepEqual(findCycles([e('a.ts', 'b.ts'), e('a.ts', 'c.ts'), e('b.ts', 'd.ts'), e('c.ts', 'd.ts')]), []);
});
