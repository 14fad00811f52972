// Processes of the lab found by what their command line mentions: daemonized QEMUs are nobody's
// children (QEMU setsid()s), so the lab (and the qemu tests) find them through /proc; and the
// small process facts both labs need (does a binary run, is a pid alive, a daemon's pid file, a
// stop that waits).
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';

/** pids of live processes whose argv contains `needle`. */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      const cmd = await fs.readFile(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.includes(needle)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** SIGKILLs every process started under `root`, then removes the folder. */
export async function sweep(root: string): Promise<void> {
  for (const pid of await pidsMentioning(root)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await fs.rm(root, { recursive: true, force: true });
}

/** Whether `bin` runs (`bin --version`, or the given arguments, exits 0). */
export function runs(bin: string, args: string[] = ['--version']): boolean {
  try {
    execFileSync(bin, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid in a daemon's pid file (undefined when there is none or it holds no pid). */
export async function readPid(file: string): Promise<number | undefined> {
  const t = await fs.readFile(file, 'utf8').catch(() => '');
  return /^\d+$/.test(t.trim()) ? Number(t.trim()) : undefined;
}

/** SIGTERM, up to 5 s for the exit, then SIGKILL; throws when the process still does not go. */
export async function killAndWait(pid: number, what: string): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(pid)) throw new Error(`${what} (pid ${pid}) does not exit`);
}
