// How answers are printed: tables, `key: value` blocks, --json, and the small cell formatters.

/** A cell: '-' for nothing, JSON for an object. */
export function str(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function list(v: unknown): string {
  return Array.isArray(v) && v.length ? v.join(',') : '-';
}

/** A nested field by dotted path (`usage.cpus`), undefined where any step is missing. */
export function get(o: unknown, path: string): unknown {
  let cur = o;
  for (const k of path.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** `37 ms`, or '-' when the value is not a number. */
export function ms(v: unknown): string {
  return typeof v === 'number' ? `${Math.round(v)} ms` : '-';
}

/** fmtDuration, or '-' when the value is not a number. */
export function duration(v: unknown): string {
  return typeof v === 'number' ? fmtDuration(v) : '-';
}

/** Columns padded to their widest cell (the last column is not padded). */
export function table(head: string[], rows: string[][]): string {
  if (rows.length === 0) return `${head.join('  ')}\n(none)`;
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** `key: value` lines, the values aligned. */
export function aligned(rows: [string, string][]): string {
  const w = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w + 1)} ${v}`).join('\n');
}

export function keyValues(o: Record<string, unknown>): string {
  return aligned(Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? list(v) : str(v)]));
}

/** --json: the API's answer as it came; else the text made of it. Exit 0. */
export function print<T>(c: { json: boolean; out: (line?: string) => void }, v: T, text: (v: T) => string): number {
  if (c.json) return printJson(c, v);
  c.out(text(v));
  return 0;
}

/** --json: the items as they came; else a table of them, a row an item. Exit 0. */
export function printTable<T>(c: { json: boolean; out: (line?: string) => void }, items: T[], head: string[], row: (item: T) => string[]): number {
  return print(c, items, (xs) => table(head, xs.map(row)));
}

/** --json: the API's answer as it came; exit 0. */
export function printJson(c: { out: (line?: string) => void }, v: unknown): number {
  c.out(JSON.stringify(v, null, 2));
  return 0;
}
