// A chaos process in waiting (bench/chaos/rig.ts keeps one per process kind). Starting a tsx
// process is mostly loading modules: on 2 loaded cores workers/main.ts takes 5 to 20 s to import
// before it does anything, so a killed process came back long after the schedule's 0.2 to 1.7 s.
// A standby loads the modules its entry imports (each a fresh instance in this fresh process:
// nothing is connected, opened or started), then waits for one line on stdin and only then runs
// the entry, which opens the database, connects to Temporal and starts its workers or the API
// like any first start. A restart is still a new OS process with no state of the killed one.
//   node --import tsx bench/chaos/standby.ts <entry.ts>
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The modules `source` imports, statically or with import('...'): what its start would load. */
export function importedModules(source: string): string[] {
  const out = new Set<string>();
  for (const m of source.matchAll(/^\s*import\s+(?!type\b)[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'|\bimport\('([^']+)'\)/gm)) out.add(m[1] ?? m[2] ?? m[3]);
  return [...out];
}

async function main() {
  const entry = resolve(process.argv[2] ?? '');
  const source = readFileSync(entry, 'utf8');
  const t0 = Date.now();
  for (const spec of importedModules(source)) {
    // relative specifiers name .js files that are .ts sources (tsx resolves either)
    await import(spec.startsWith('.') ? pathToFileURL(resolve(dirname(entry), spec)).href : spec);
  }
  console.log(`standby: loaded ${entry} in ${Date.now() - t0} ms, waiting`);
  const go = await new Promise<boolean>((res) => {
    process.stdin.once('data', () => res(true));
    process.stdin.once('end', () => res(false));
  });
  // the harness went away before it needed this process
  if (!go) process.exit(0);
  process.stdin.pause();
  // the entry's "am I the entrypoint" check (workers/main.ts) compares argv[1] with its own path
  process.argv.splice(1, 2, entry);
  await import(pathToFileURL(entry).href);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main().catch((e) => {
    console.error(`standby: ${e instanceof Error ? e.stack : e}`);
    process.exit(1);
  });
}
