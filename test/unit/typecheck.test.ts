// The whole project type-checks under strict TypeScript (tsx runs code without checking types,
// so without this test a type error would only show in an editor).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';

test('tsc -p . --noEmit reports no error', { timeout: 180_000 }, async () => {
  const r = await execa(process.execPath, [join(PROJECT_ROOT, 'node_modules/typescript/bin/tsc'), '-p', '.', '--noEmit'], { cwd: PROJECT_ROOT, reject: false });
  assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
});
