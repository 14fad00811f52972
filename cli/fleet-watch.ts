// --watch of a fleet operation (evacuation, rebalance): polls it every FLEET_WATCH_INTERVAL_MS
// and shows the counts and one line per VM. On a terminal the block is redrawn in place; else
// only the lines that changed are printed (the counts line, or a VM's line), so a log stays short.
// Also what a started fleet workflow prints, and the GETs a watch polls.
import { answer, type Api } from './client.js';
import type { Ctx } from './command.js';
import { countsLine, endLines, FLEET_ENDED, nameWidth, stayed, vmLine, type Fleet } from './fleet-view.js';
import { print, str } from './output.js';
import { fit, poll } from './watch.js';

export const FLEET_WATCH_INTERVAL_MS = 1000;
/** A watched fleet operation ended with VMs that did not move (failed, left or cancelled). */
export const EXIT_STAYED = 3;

/** Exit code: 0 every VM moved; 3 some stayed; 1 the operation failed or was refused with none stayed. */
export async function watchFleet(c: Ctx, fetch: () => Promise<Fleet>, label?: string): Promise<number> {
  const tty = c.io.stdout.isTTY === true && !c.json;
  let drawn = 0;
  const last = new Map<string, string>();
  return poll(c, FLEET_WATCH_INTERVAL_MS, fetch, (f) => {
    const ended = f.state !== undefined && FLEET_ENDED.includes(f.state);
    if (c.json) {
      c.out(JSON.stringify(f));
    } else {
      const vms = f.vms ?? [];
      const w = nameWidth(vms);
      if (tty) {
        const now = Date.now();
        const eta = typeof f.etaMs === 'number' && !ended ? `  ETA ${Math.max(0, Math.round((f.etaMs - now) / 1000))} s` : '';
        const lines = [countsLine(f, label) + eta, ...vms.map((v) => vmLine(v, w, ended ? undefined : now))].map((l) => fit(l, c.io.stdout.columns));
        // back to the first line of the previous block, clear to the end of the screen, draw again
        c.io.stdout.write(`${drawn ? `\x1b[${drawn}A\r\x1b[J` : ''}${lines.join('\n')}\n`);
        drawn = lines.length;
      } else {
        const lines: [string, string][] = [['', countsLine(f, label)], ...vms.map((v): [string, string] => [v.vmId ?? v.vmName ?? '?', vmLine(v, w)])];
        for (const [key, line] of lines) {
          if (last.get(key) === line) continue;
          last.set(key, line);
          c.out(line);
        }
      }
    }
    if (!ended) return undefined;
    if (!c.json) for (const l of endLines(f, label)) c.out(l);
    if (stayed(f).length) return EXIT_STAYED;
    return f.state === 'completed' ? 0 : 1;
  });
}

export const getEvacuation = (api: Api, id: string) => async () => (await answer(api.client.GET('/v1/evacuations/{id}', { params: { path: { id } } }))) as Fleet;
export type Rebalance = Fleet & { imbalanceBefore?: number | null; imbalanceAfter?: number | null };
export const getRebalance = (api: Api, id: string) => async () => (await answer(api.client.GET('/v1/rebalances/{id}', { params: { path: { id } } }))) as Rebalance;

/** What a started fleet workflow prints: its id, workflow, Web UI link, and how to follow it. */
export function startedText(what: string, r: Record<string, unknown>, id: unknown, follow?: string): string {
  return [
    `${what} started`,
    `  id:       ${str(id)}`,
    `  workflow: ${str(r.workflowId)} (run ${str(r.runId)})`,
    ...(r.webUiUrl ? [`  web UI:   ${str(r.webUiUrl)}`] : []),
    ...(follow ? [`  follow it: ${follow}`] : []),
  ].join('\n');
}

/** Prints the start and, with --watch, follows it (exit code of the watch); else exit 0. */
export async function startedOrWatch(c: Ctx, r: Record<string, unknown>, what: string, id: string, watch: (() => Promise<Fleet>) | undefined, follow: string): Promise<number> {
  if (!watch) return print(c, r, () => startedText(what, r, id, follow));
  if (!c.json) c.out(startedText(what, r, id));
  return watchFleet(c, watch, id);
}
