// The chaos campaign's CI sample (bench/chaos, npm run chaos): a fixed few seeded runs on the
// real dev server and real processes (SIGKILLs, dev server restarts, database outages,
// simulator faults, steers) must end with 0 invariant violations. That the checker can fail on
// the same sample: test/chaos/planted-bug.test.ts (its own file: each gets the runner's limit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCampaign } from '../../bench/chaos/campaign.js';

/** The CI sample: seeds chosen once, fixed so a failure is replayable from the log. */
const CI_SEED = 1060;
const CI_RUNS = Number(process.env.FERRY_CHAOS_CI_RUNS ?? 6);

test('CI sample of the chaos campaign: every run ends consistent (0 violations)', async (t) => {
  const r = await runCampaign({ runs: CI_RUNS, seed: CI_SEED, log: (l) => t.diagnostic(l) });
  assert.equal(r.runs, CI_RUNS);
  // a sample that started nothing or injected nothing would prove nothing
  assert.ok(Object.values(r.operations).reduce((a, b) => a + b, 0) >= CI_RUNS, `operations started: ${JSON.stringify(r.operations)}`);
  assert.ok(Object.values(r.faults).reduce((a, b) => a + b, 0) >= CI_RUNS, `faults: ${JSON.stringify(r.faults)}`);
  assert.equal(r.violations, 0, r.text);
  assert.match(r.text, new RegExp(`\\n${CI_RUNS} runs, 0 violations$`));
});
