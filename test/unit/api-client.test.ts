// cli/generated/api.d.ts is what scripts/gen-api-client.ts makes from the OpenAPI document the
// API serves today: a change to api/schemas or api/routes without `npm run gen:client` fails here
// (the CLI would otherwise compile against the document as it was).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { GENERATED_CLIENT, generateApiClient } from '../../scripts/gen-api-client.js';

describe('generated API client types', () => {
  it('cli/generated/api.d.ts matches the current OpenAPI document (else: run npm run gen:client)', async () => {
    const committed = readFileSync(GENERATED_CLIENT, 'utf8');
    const fresh = await generateApiClient();
    if (committed === fresh) return;
    const a = committed.split('\n');
    const b = fresh.split('\n');
    const i = a.findIndex((l, n) => l !== b[n]);
    const at = i === -1 ? a.length : i;
    assert.fail(`cli/generated/api.d.ts is out of date with the OpenAPI document: run npm run gen:client and commit the result\n  line ${at + 1} committed: ${a[at] ?? '(end)'}\n  line ${at + 1} generated: ${b[at] ?? '(end)'}`);
  });
});
