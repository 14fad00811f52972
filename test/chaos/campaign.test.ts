// The chaos campaign's CI sample (bench/chaos, npm run chaos): a fixed few seeded runs on the
// real dev server and real processes (SIGKILLs, dev server restarts, database outages,
// simulator faults, steers) must end with 0 invariant violations; and the same harness with a
// planted bug (the saga's release-reservation made a no-op in the campaign's own control
// worker, nothing in ferry changed) must be caught by the checker, as a leaked reservation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCampaign } from '../../bench/chaos/campaign.js';

/** The CI sample: seeds chosen once, fixed so a failure is replayable from the log. */
const CI_SEED = 1060;
const CI_RUNS = Number(process.env.FERRY_CHAOS_CI_RUNS ?? 6);
/** Runs whose schedules roll operations back (cancels, faults), where a skipped release shows. */
const PLANT_SEED = 1060;
const PLANT_RUNS = 2;

test('CI sample of the chaos campaign: every run ends consistent (0 violations)', async (t) => {
  const r = await runCampaign({ runs: CI_RUNS, seed: CI_SEED, log: (l) => t.diagnostic(l) });
  assert.equal(r.runs, CI_RUNS);
  // a sample that started nothing or injected nothing would prove nothing
  assert.ok(Object.values(r.operations).reduce((a, b) => a + b, 0) >= CI_RUNS, `operations started: ${JSON.stringify(r.operations)}`);
  assert.ok(Object.values(r.faults).reduce((a, b) => a + b, 0) >= CI_RUNS, `faults: ${JSON.stringify(r.faults)}`);
  assert.equal(r.violations, 0, r.text);
  assert.match(r.text, new RegExp(`\\n${CI_RUNS} runs, 0 violations$`));
});

test('a planted bug (release-reservation skipped) is caught by the checker within the sample', async (t) => {
  const r = await runCampaign({ runs: PLANT_RUNS, seed: PLANT_SEED, plant: 'skip-release-reservation', log: (l) => t.diagnostic(l) });
  assert.ok(r.violations > 0, `the planted bug went unnoticed:\n${r.text}`);
  assert.ok((r.byKind['leaked-reservation'] ?? 0) > 0, `expected a leaked reservation among: ${JSON.stringify(r.byKind)}`);
  assert.ok(r.failingSeeds.length > 0);
  assert.match(r.text, /replay the failing runs:\n {2}npm run chaos -- --runs 1 --seed \d+ --plant skip-release-reservation/);
  assert.match(r.text, /\d+ runs, [1-9]\d* violations$/);
});
