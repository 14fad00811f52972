// Shared plumbing for the real-QEMU tests: skip reason when QEMU is absent, unique temp state
// folders, and the lab's sweeper (workers/lab/procs.ts) that SIGKILLs every process whose command
// line mentions a test folder (daemonized QEMUs are not our children, nothing else reaps them).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { runs } from '../../workers/lab/procs.js';

export { pidsMentioning, sweep } from '../../workers/lab/procs.js';

/** The only reason the qemu tier may skip: the binaries are not installed. */
export const qemuSkipReason: string | false = runs('qemu-system-x86_64') && runs('qemu-img')
  ? false
  : 'qemu-system-x86_64 / qemu-img not installed (apt-get install qemu-system-x86 qemu-utils)';
if (qemuSkipReason) console.log(`# SKIP qemu tests: ${qemuSkipReason}`);

/** A short unique temp folder (QMP socket paths must stay under 108 bytes). */
export async function tempRoot(prefix = 'fq-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Polls `cond` until true; fails with `what` after timeoutMs (conditions, not sleeps). */
export async function waitFor<T>(what: string, cond: () => Promise<T | false | undefined | null>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Every file left under `dir`, relative (empty when dir is missing). */
export async function filesUnder(dir: string): Promise<string[]> {
  try {
    const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
    return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath ?? e.path, e.name)));
  } catch {
    return [];
  }
}
