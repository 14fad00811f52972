// `npm test`: runs every test file under test/ with node's built-in runner via tsx.
// Node 20 does not expand globs, so the files are listed explicitly. One Temporal dev server is
// started for the whole run (built first if the CLI is missing) and handed to every test file
// through FERRY_TEST_TEMPORAL_ADDRESS; each test isolates itself with its own task queues.
import { execa } from 'execa';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PROJECT_ROOT } from '../workers/temporal-cli.js';
import { startDevServer } from '../workers/dev-server.js';

function findTests(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out.sort();
}

const filter = process.argv.slice(2);
let files = findTests(join(PROJECT_ROOT, 'test')).map((f) => relative(PROJECT_ROOT, f));
if (filter.length) files = files.filter((f) => filter.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}

const server = process.env.FERRY_TEST_TEMPORAL_ADDRESS
  ? undefined
  : await startDevServer({ headless: true, log: (l) => console.error(l), dynamicConfig: { 'frontend.enableUpdateWorkflowExecution': true } });
const address = process.env.FERRY_TEST_TEMPORAL_ADDRESS ?? server!.address;
console.error(`ferry tests: ${files.length} files, Temporal dev server at ${address}`);

let code = 1;
try {
  const r = await execa(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=1200000', ...files],
    { cwd: PROJECT_ROOT, stdio: 'inherit', reject: false, env: { ...process.env, FERRY_TEST_TEMPORAL_ADDRESS: address } },
  );
  code = r.exitCode ?? 1;
} finally {
  await server?.stop();
}
process.exit(code);
