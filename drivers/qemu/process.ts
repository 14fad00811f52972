// Process helpers for daemonized QEMU: liveness through /proc (a daemonized QEMU is not our
// child, and a container's PID 1 may never reap it, so a zombie counts as dead), identity by
// command line (a recycled pid is not our VM), free-port probing.
import { promises as fs } from 'node:fs';
import net from 'node:net';

/** True when `pid` is alive, not a zombie, and its command line contains `marker`. */
export async function isOurProcess(pid: number, marker: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // state is the field after the parenthesised comm (which may itself contain spaces)
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(marker);
  } catch {
    return false;
  }
}

export async function readPidFile(file: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await fs.readFile(file, 'utf8')).trim(), 10);
    return Number.isInteger(n) && n > 1 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** pid of the live QEMU that the pid file names, or undefined (none, dead, or a recycled pid). */
export async function livePid(paths: { pidFile: string; qmpSocket: string }): Promise<number | undefined> {
  const pid = await readPidFile(paths.pidFile);
  if (pid === undefined) return undefined;
  return (await isOurProcess(pid, paths.qmpSocket)) ? pid : undefined;
}

/** Polls until the process is gone (or a zombie); false on timeout. */
export async function waitForExit(pid: number, marker: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isOurProcess(pid, marker)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** FNV-1a 32-bit: a stable hash for picking a deterministic first port per VM. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Whether a TCP port can be bound on `host` right now. */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Ports of the range in probe order: starting at a hash of `key`, wrapping around. */
export function portOrder(key: string, range: readonly [number, number]): number[] {
  const [lo, hi] = range;
  const size = hi - lo + 1;
  const start = fnv1a(key) % size;
  return Array.from({ length: size }, (_, i) => lo + ((start + i) % size));
}
