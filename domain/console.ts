// A VM's serial console as ferry returns it (GET /v1/vms/:id/console, `ferry vms console`): the
// last N lines the guest wrote, from the host that runs it now. Pure: the limits and the tail cut.

export const CONSOLE_TAIL_DEFAULT = 100;
export const CONSOLE_TAIL_MAX = 10_000;
/** the most a console read returns: the log's last bytes, so a guest that never prints a newline stays bounded */
export const CONSOLE_READ_MAX_BYTES = 1024 * 1024;

export interface ConsoleTail {
  vmId: string;
  /** the host whose console log this is (the VM's host when the read ran) */
  hostId: string;
  lines: string[];
  /**
   * how much the guest has written to this host's console log so far, counted as the lines show
   * it: UTF-8 bytes of the whole log's lines joined by "\n" (carriage returns and the final
   * newline not counted). A follower prints the last (size - its last size) bytes of the joined
   * lines, which is exactly what the guest wrote since, half lines included.
   */
  size: number;
  /** true when the log holds more than the lines returned */
  truncated: boolean;
}

/** `tail` must be a whole number 1..CONSOLE_TAIL_MAX; returns the problem, or undefined when fine. */
export function tailProblem(tail: number): string | undefined {
  if (!Number.isInteger(tail) || tail < 1 || tail > CONSOLE_TAIL_MAX) return `tail must be a whole number of lines in 1..${CONSOLE_TAIL_MAX}, got ${tail}`;
  return undefined;
}

/**
 * The last `n` lines of `text` (the end of a log, perhaps cut at its start: `cut` says so, and
 * the first partial line then counts like any other). A final newline ends the last line; it
 * does not start an empty one.
 */
export function lastLines(text: string, n: number, cut = false): { lines: string[]; truncated: boolean } {
  const all = text.replace(/\r/g, '').split('\n');
  if (all.length && all[all.length - 1] === '') all.pop();
  const lines = all.slice(-n);
  return { lines, truncated: cut || lines.length < all.length };
}
