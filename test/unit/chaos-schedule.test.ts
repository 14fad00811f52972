// The chaos campaign's pure parts: a run's schedule is a function of its seed alone (replay), the
// fault mix gives a campaign cut short by its time budget enough dev server restarts, database
// outages and SIGKILLs, and a standby process preloads exactly what its entry imports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { schedule } from '../../bench/chaos/schedule.js';
import { importedModules } from '../../bench/chaos/standby.js';
import { SHAPE } from '../../bench/chaos/run.js';
import { FAULT_KINDS } from '../../domain/faults.js';

test('a seed gives the same schedule every time, and another seed another one', () => {
  assert.deepEqual(schedule(1061, SHAPE), schedule(1061, SHAPE));
  assert.notDeepEqual(schedule(1061, SHAPE), schedule(1062, SHAPE));
  for (const a of schedule(7, SHAPE)) assert.ok(a.at >= 0 && a.at <= SHAPE.spanMs, JSON.stringify(a));
});

test('200 runs from seed 1 hold at least 100 SIGKILLs, 50 dev server kills, 50 database outages and every simulator fault kind', () => {
  const n: Record<string, number> = {};
  for (let seed = 1; seed <= 200; seed++) for (const a of schedule(seed, SHAPE)) if (a.type === 'fault' || a.type === 'sim') n[a.fault] = (n[a.fault] ?? 0) + 1;
  const kills = (n['kill-control'] ?? 0) + (n['kill-agents'] ?? 0) + (n['kill-api'] ?? 0) + (n['kill-temporal'] ?? 0);
  assert.ok(kills >= 100, `SIGKILLs ${kills}`);
  assert.ok((n['kill-temporal'] ?? 0) >= 50, `dev server kills ${n['kill-temporal']}`);
  assert.ok((n['db-outage'] ?? 0) >= 50, `outages ${n['db-outage']}`);
  for (const k of FAULT_KINDS) assert.ok((n[k] ?? 0) > 0, `no ${k}`);
});

test('a standby preloads the modules its entry imports, static and dynamic, but not type-only ones', () => {
  const src = `import { a } from './x.js';\nimport type { T } from './types.js';\nimport {\n  b,\n  type C,\n} from '@scope/pkg';\nimport './side.js';\nconst m = await import('../api/server.js');\n`;
  assert.deepEqual(importedModules(src).sort(), ['../api/server.js', './side.js', './x.js', '@scope/pkg'].sort());
  // the entries the rig starts
  const main = importedModules(readFileSync(new URL('../../workers/main.ts', import.meta.url), 'utf8'));
  assert.ok(main.includes('./create-worker.js') && main.includes('../api/server.js'), main.join(' '));
  const control = importedModules(readFileSync(new URL('../../bench/chaos/control-worker.ts', import.meta.url), 'utf8'));
  assert.ok(control.includes('@temporalio/worker') && control.includes('../../activities/control.js'), control.join(' '));
});
