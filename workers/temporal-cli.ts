// Finds the `temporal` CLI (which embeds the dev server), or builds it with Go.
// Order: TEMPORAL_CLI_PATH, the project tools folder, PATH, Go's default GOBIN; else
// `go install github.com/temporalio/cli/cmd/temporal@v1.5.1` (later tags carry a `replace`
// directive that `go install` refuses). The build takes minutes on 2 cores, so we say so.
import { execa } from 'execa';
import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { fileURLToPath } from 'node:url';

export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';
export const PROJECT_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const PROJECT_TOOLS_DIR = join(PROJECT_ROOT, '.tools', 'bin');

export type Log = (line: string) => void;

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where a `temporal` binary may already be, in order of preference. */
export function candidatePaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const paths: string[] = [];
  paths.push(join(PROJECT_TOOLS_DIR, 'temporal'));
  for (const dir of (env.PATH ?? '').split(delimiter)) if (dir) paths.push(join(dir, 'temporal'));
  const gopath = env.GOPATH || join(homedir(), 'go');
  if (env.GOBIN) paths.push(join(env.GOBIN, 'temporal'));
  paths.push(join(gopath, 'bin', 'temporal'));
  return paths;
}

export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const explicit = env.TEMPORAL_CLI_PATH;
  if (explicit) {
    if (!isExecutable(explicit)) {
      throw new Error(`TEMPORAL_CLI_PATH=${explicit} is not an executable file`);
    }
    return explicit;
  }
  return candidatePaths(env).find(isExecutable);
}

export async function findGo(): Promise<string | undefined> {
  for (const p of ['/usr/local/go/bin/go', ...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'go'))]) {
    if (p && isExecutable(p)) return p;
  }
  return undefined;
}

/**
 * Returns a path to the temporal CLI, building it when missing.
 * `installDir` defaults to Go's own GOBIN (machine-wide, so a fresh clone finds it) when
 * writable; the project tools folder otherwise.
 */
export async function ensureTemporalCli(opts: { log?: Log; env?: NodeJS.ProcessEnv; installDir?: string } = {}): Promise<string> {
  const log = opts.log ?? ((l) => console.log(l));
  const env = opts.env ?? process.env;
  const found = findTemporalCli(env);
  if (found) return found;
  const go = await findGo();
  if (!go) {
    throw new Error(
      'temporal CLI not found (set TEMPORAL_CLI_PATH, or install Go so ferry can run `go install ' +
        TEMPORAL_CLI_MODULE +
        '`); @temporalio/testing cannot download a server on this network',
    );
  }
  const installDir = opts.installDir ?? PROJECT_TOOLS_DIR;
  mkdirSync(installDir, { recursive: true });
  log(`ferry: temporal CLI not found; building ${TEMPORAL_CLI_MODULE} into ${installDir} (takes a few minutes on 2 cores)...`);
  const started = Date.now();
  await execa(go, ['install', TEMPORAL_CLI_MODULE], {
    env: { ...env, GOBIN: installDir },
    stdout: 'inherit',
    stderr: 'inherit',
  });
  const path = join(installDir, 'temporal');
  if (!existsSync(path)) throw new Error(`go install finished but ${path} does not exist`);
  log(`ferry: built ${path} in ${Math.round((Date.now() - started) / 1000)} s`);
  return path;
}

// `npm run temporal:cli` prints (and builds if needed) the binary path.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensureTemporalCli({ log: (l) => console.error(l) }).then(
    (p) => console.log(p),
    (e) => {
      console.error(`ferry: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
