// --watch: polls one migration (GET /v1/migrations/:id, every WATCH_INTERVAL_MS) and renders one
// line (redrawn in place on a terminal, a new line per change otherwise) until the migration
// ends. `poll` is the loop the fleet watch (fleet-watch.ts) shares: it rides out an API blip.
import { answer } from './client.js';
import type { Ctx } from './command.js';
import { ApiError } from './errors.js';
import { endLine, progressLine, type Migration } from './migration-view.js';

export const WATCH_INTERVAL_MS = 500;

/**
 * Calls `fetch` every `intervalMs` and hands each answer to `show`, until `show` returns an exit
 * code. A blip (API restarting, nothing answered) is retried up to 10 times in a row; an answer
 * from the API (404, 401) is final.
 */
export async function poll<T>(c: Ctx, intervalMs: number, fetch: () => Promise<T>, show: (v: T) => number | undefined): Promise<number> {
  const sleep = c.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let failures = 0;
  for (;;) {
    let v: T;
    try {
      v = await fetch();
      failures = 0;
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== undefined || ++failures >= 10) throw e;
      await sleep(intervalMs);
      continue;
    }
    const code = show(v);
    if (code !== undefined) return code;
    await sleep(intervalMs);
  }
}

/** A line cut to the terminal's width (a wrapped line cannot be redrawn). */
export function fit(line: string, cols: number | undefined): string {
  return cols && cols > 20 && line.length >= cols ? `${line.slice(0, cols - 2)}…` : line;
}

/** Exit code: 0 when the migration completed; 1 failed, rolled back, cancelled (or a state this CLI does not know). */
export async function watchMigration(c: Ctx, id: string): Promise<number> {
  const tty = c.io.stdout.isTTY === true && !c.json;
  let shown = 0;
  let last = '';
  const fetch = async () => (await answer(c.api.client.GET('/v1/migrations/{id}', { params: { path: { id } } }))) as Migration;
  return poll(c, WATCH_INTERVAL_MS, fetch, (m) => {
    if (c.json) {
      c.out(JSON.stringify(m));
    } else {
      const pct = m.progress?.percent;
      if (typeof pct === 'number' && Number.isFinite(pct)) shown = Math.max(shown, pct);
      if (m.state === 'completed') shown = 100;
      const line = progressLine(m, shown);
      if (tty) c.io.stdout.write(`\r\x1b[2K${fit(line, c.io.stdout.columns)}`);
      else if (line !== last) c.out(line);
      last = line;
    }
    if (m.state === undefined || m.state === 'running') return undefined;
    if (tty) c.io.stdout.write('\n');
    if (!c.json) {
      c.out(endLine(m, id));
      if (m.error) c.out(`  error: ${m.error}`);
    }
    return m.state === 'completed' ? 0 : 1;
  });
}
