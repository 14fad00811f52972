// --watch: polls GET /v1/migrations/:id every WATCH_INTERVAL_MS and renders one line (redrawn in
// place on a terminal, a new line per change otherwise) until the migration ends.
import { answer } from './client.js';
import type { Ctx } from './command.js';
import { ApiError } from './errors.js';
import { endLine, progressLine, type Migration } from './migration-view.js';

export const WATCH_INTERVAL_MS = 500;

/** Exit code: 0 when the migration completed; 1 failed, rolled back, cancelled (or a state this CLI does not know). */
export async function watchMigration(c: Ctx, id: string): Promise<number> {
  const sleep = c.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const tty = c.io.stdout.isTTY === true && !c.json;
  let shown = 0;
  let last = '';
  let failures = 0;
  for (;;) {
    let m: Migration;
    try {
      m = (await answer(c.api.client.GET('/v1/migrations/{id}', { params: { path: { id } } }))) as Migration;
      failures = 0;
    } catch (e) {
      // A blip (API restarting) is ridden out; an answer from the API (404, 401) is final.
      if (!(e instanceof ApiError) || e.status !== undefined || ++failures >= 10) throw e;
      await sleep(WATCH_INTERVAL_MS);
      continue;
    }
    if (c.json) {
      c.out(JSON.stringify(m));
    } else {
      const pct = m.progress?.percent;
      if (typeof pct === 'number' && Number.isFinite(pct)) shown = Math.max(shown, pct);
      if (m.state === 'completed') shown = 100;
      const line = progressLine(m, shown);
      // Redrawn in place; cut to the terminal's width, since a wrapped line cannot be redrawn.
      const cols = c.io.stdout.columns;
      if (tty) c.io.stdout.write(`\r\x1b[2K${cols && cols > 20 && line.length >= cols ? `${line.slice(0, cols - 2)}…` : line}`);
      else if (line !== last) c.out(line);
      last = line;
    }
    if (m.state !== undefined && m.state !== 'running') {
      if (tty) c.io.stdout.write('\n');
      if (!c.json) {
        c.out(endLine(m, id));
        if (m.error) c.out(`  error: ${m.error}`);
      }
      return m.state === 'completed' ? 0 : 1;
    }
    await sleep(WATCH_INTERVAL_MS);
  }
}
