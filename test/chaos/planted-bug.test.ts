// The chaos campaign's checker can fail: the CI sample's first two seeds (1060, 1061; 1061
// cancels a live migration in pre-copy) run with a planted bug, the saga's release-reservation
// made a no-op in the campaign's own control worker (bench/chaos/control-worker.ts, nothing in
// ferry changed), and the report must name a leaked reservation and the command replaying it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCampaign } from '../../bench/chaos/campaign.js';

const PLANT_SEED = 1060;
const PLANT_RUNS = 2;

test('a planted bug (release-reservation skipped) is caught by the checker within the sample', async (t) => {
  const r = await runCampaign({ runs: PLANT_RUNS, seed: PLANT_SEED, plant: 'skip-release-reservation', log: (l) => t.diagnostic(l) });
  assert.ok(r.violations > 0, `the planted bug went unnoticed:\n${r.text}`);
  assert.ok((r.byKind['leaked-reservation'] ?? 0) > 0, `expected a leaked reservation among: ${JSON.stringify(r.byKind)}`);
  assert.ok(r.failingSeeds.length > 0);
  assert.match(r.text, /replay the failing runs:\n {2}npm run chaos -- --runs 1 --seed \d+ --plant skip-release-reservation/);
  assert.match(r.text, /\d+ runs, [1-9]\d* violations$/);
});
