// The embedded default as a user runs it (`npm start` = scripts/start.ts) in a test: its own data
// folder and ports, start and wait for the summary line, stop with Ctrl-C or crash it with
// SIGKILL of its whole process group (the dev server, workers and API it started), and call the
// API with the generated admin token.
import assert from 'node:assert/strict';
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../workers/dev-server.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { waitFor } from './ferry.js';

export interface EmbeddedFerry {
  dir: string;
  uiPort: number;
  base: string;
  /** starts `npm start`; resolves with a reader of its output once it prints that it runs */
  start(): Promise<() => string>;
  /** Ctrl-C: a clean exit, asserted */
  stop(): Promise<void>;
  /** SIGKILL of npm start and everything it started (a process crash, nothing shut down) */
  crash(): Promise<void>;
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

/** `extraEnv`: more settings for npm start (FERRY_DRIVER=qemu and the lab's, for the QEMU lab test). */
export async function embeddedFerry(extraEnv: Record<string, string> = {}): Promise<EmbeddedFerry> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-embedded-'));
  const [api, temporal, ui, metrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = {
    FERRY_DATA_DIR: dir,
    FERRY_API_PORT: String(api),
    FERRY_API_HOST: '127.0.0.1',
    FERRY_TEMPORAL_PORT: String(temporal),
    FERRY_TEMPORAL_UI_PORT: String(ui),
    FERRY_WORKER_METRICS_PORT: String(metrics),
    FERRY_SIM_TIME_SCALE: '10',
    ...extraEnv,
  };
  let child: ResultPromise | undefined;
  const base = `http://127.0.0.1:${api}`;
  const e: EmbeddedFerry = {
    dir,
    uiPort: ui,
    base,
    async start() {
      // its own process group, so a crash can take the dev server and workers with it
      const c = execa(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], { cwd: PROJECT_ROOT, env, reject: false, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor('ferry to print that it runs', () => {
        if (c.exitCode !== null) throw new Error(`npm start exited: ${out}`);
        return out.includes('Ctrl-C stops');
      }, 120_000, 100);
      child = c;
      return () => out;
    },
    async stop() {
      child!.kill('SIGINT');
      const r = await child!;
      assert.equal(r.exitCode, 0, `clean exit on Ctrl-C: ${r.stdout}\n${r.stderr}`);
      child = undefined;
    },
    async crash() {
      process.kill(-child!.pid!, 'SIGKILL');
      await child;
      child = undefined;
      // the group's last members (the dev server) are gone before the next start binds the ports
      await new Promise((r) => setTimeout(r, 500));
    },
    async call(method, path, body) {
      const token = readFileSync(join(dir, 'api-token'), 'utf8').trim();
      const res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: res.status, body: (await res.json().catch(() => null)) as any };
    },
    async close() {
      if (child?.pid) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
        await child;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return e;
}
