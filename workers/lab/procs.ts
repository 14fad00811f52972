// Processes of the lab found by what their command line mentions: daemonized QEMUs are nobody's
// children (QEMU setsid()s), so the lab (and the qemu tests) find them through /proc.
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
