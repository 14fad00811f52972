// Bookkeeping in the state folder: <stateDir>/vms/<vmId>/ holds spec.json and runtime.json (and
// QEMU's qmp.sock, qemu.pid, serial.log). Every fact about a VM that matters after an agent crash
// is written here (atomically) or lives in QEMU itself, never only in this process's memory.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DriverError, assertSafeName, type VmSpec } from '../hypervisor.js';
import type { QemuPaths } from './args.js';

export interface VmPaths extends QemuPaths {
  dir: string;
  spec: string;
  runtime: string;
}

/** Source-side migration settings that must survive an agent restart. */
export interface MigrationRecord {
  uri: string;
  hold: boolean;
  autoSwitchover: boolean;
  /** the downtime limit the caller wants once not held */
  downtimeLimitMs: number;
  throttlePct: number;
  maxBandwidthBytesPerSec: number;
  /** the source ran before the migration: a rollback resumes it */
  wasRunning: boolean;
}

export interface RuntimeRecord {
  /** incoming = migration container waiting for / holding received state, not yet activated */
  role: 'normal' | 'incoming';
  /** the VM has been started at least once */
  started: boolean;
  /** the process should be alive (set on start, cleared on a deliberate stop) */
  expectRunning: boolean;
  incomingUri?: string;
  migration?: MigrationRecord;
  /** destination of a copyDisks migration: the empty copies it created (deleted if never activated) */
  diskCopies?: string[];
  /** destination of a copyDisks migration: the NBD server and exports (block-jobs.ts) */
  nbd?: NbdExportRecord;
  /** source: disk mirror jobs in flight (block-jobs.ts) */
  mirror?: MirrorRecord;
}

export interface NbdExportRecord {
  host: string;
  port: number;
  exportIds: string[];
  /** extra writable nodes opened only for the export (the read-only seed) */
  sideNodes: string[];
  exports: Array<{ device: string; exportName: string }>;
}

export interface MirrorJobRecord {
  job: string;
  device: string;
  /** the target node added with blockdev-add */
  node: string;
  /** datastore mirrors: the new file; the old one is `sourcePath` */
  targetPath?: string;
  sourcePath?: string;
}

export interface MirrorRecord {
  kind: 'nbd' | 'datastore';
  jobs: MirrorJobRecord[];
  datastoreId?: string;
  /** nbd: the destination's export server */
  host?: string;
  port?: number;
  /** the seed is copied as a file (immutable) for datastore mirrors */
  seed?: { sourcePath: string; targetPath: string };
  /** nbd: the jobs were cancelled in sync at switchover (the target holds a consistent copy) */
  finished?: boolean;
  /** datastore: the VM runs on the copies now */
  pivoted?: boolean;
  pivotMs?: number;
  /** bytes the mirror covered, kept for progress once the jobs are gone */
  totalBytes?: number;
}

export type VmStore = ReturnType<typeof createVmStore>;

const SUN_PATH_MAX = 107;

export function createVmStore(stateDir: string, hostId: string) {
  const vmsDir = path.join(stateDir, 'vms');
  const locks = new Map<string, Promise<unknown>>();

  function vmPaths(vmId: string): VmPaths {
    assertSafeName('vmId', vmId);
    const dir = path.join(vmsDir, vmId);
    const p: VmPaths = {
      dir,
      spec: path.join(dir, 'spec.json'),
      runtime: path.join(dir, 'runtime.json'),
      qmpSocket: path.join(dir, 'qmp.sock'),
      pidFile: path.join(dir, 'qemu.pid'),
      serialLog: path.join(dir, 'serial.log'),
    };
    if (Buffer.byteLength(p.qmpSocket) > SUN_PATH_MAX) {
      throw new DriverError(
        `stateDir "${stateDir}" is too long: the QMP socket path for vm "${vmId}" exceeds ${SUN_PATH_MAX} bytes`,
        'INVALID_ARGUMENT',
        true,
      );
    }
    return p;
  }

  /** Serializes lifecycle operations per VM (two concurrent startVm must not spawn twice). */
  async function withLock<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(vmId) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    locks.set(vmId, tail);
    try {
      return await run;
    } finally {
      if (locks.get(vmId) === tail) locks.delete(vmId);
    }
  }

  async function readJson<T>(file: string): Promise<T | undefined> {
    try {
      return JSON.parse(await fs.readFile(file, 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DriverError(`cannot read ${file}: ${(err as Error).message}`, 'HYPERVISOR');
    }
  }

  /** Atomic write (temp + rename): a crash never leaves a half-written state file. */
  async function writeJson(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.tmp-${process.pid}`;
    await fs.writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
    await fs.rename(tmp, file);
  }

  async function readSpec(vmId: string): Promise<VmSpec | undefined> {
    return readJson<VmSpec>(vmPaths(vmId).spec);
  }

  async function readRuntime(vmId: string): Promise<RuntimeRecord> {
    return (await readJson<RuntimeRecord>(vmPaths(vmId).runtime)) ?? { role: 'normal', started: false, expectRunning: false };
  }

  /** Merges `patch` into runtime.json; a key set to undefined is removed. */
  async function updateRuntime(vmId: string, patch: Partial<RuntimeRecord>): Promise<RuntimeRecord> {
    const cur = await readRuntime(vmId);
    const next = { ...cur, ...patch };
    for (const k of Object.keys(patch) as (keyof RuntimeRecord)[]) if (patch[k] === undefined) delete next[k];
    await writeJson(vmPaths(vmId).runtime, next);
    return next;
  }

  async function requireSpec(vmId: string): Promise<VmSpec> {
    const spec = await readSpec(vmId);
    if (!spec) throw new DriverError(`vm "${vmId}" is not defined on host "${hostId}"`, 'NOT_FOUND', true);
    return spec;
  }

  /** Creates the VM's folder with a fresh runtime.json (never started) and its spec. */
  async function createVm(spec: VmSpec, role: RuntimeRecord['role']): Promise<void> {
    const p = vmPaths(spec.vmId);
    await fs.mkdir(p.dir, { recursive: true });
    await writeJson(p.runtime, { role, started: false, expectRunning: false } satisfies RuntimeRecord);
    await writeJson(p.spec, spec);
  }

  async function writeSpec(vmId: string, spec: VmSpec): Promise<void> {
    await writeJson(vmPaths(vmId).spec, spec);
  }

  async function removeVm(vmId: string): Promise<void> {
    await fs.rm(vmPaths(vmId).dir, { recursive: true, force: true });
  }

  /** The VM folders of this host with a valid vmId, sorted. */
  async function listVmIds(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(vmsDir);
    } catch {
      return [];
    }
    return names.sort().filter((n) => {
      try {
        assertSafeName('vmId', n);
        return true;
      } catch {
        return false;
      }
    });
  }

  /** Incoming uris handed to this host's other VMs (their QEMU may not be listening yet). */
  async function incomingUrisExcept(vmId: string): Promise<Set<string>> {
    const taken = new Set<string>();
    for (const other of await fs.readdir(vmsDir).catch(() => [] as string[])) {
      if (other === vmId) continue;
      const u = (await readJson<RuntimeRecord>(path.join(vmsDir, other, 'runtime.json')).catch(() => undefined))?.incomingUri;
      if (u) taken.add(u);
    }
    return taken;
  }

  return { vmPaths, withLock, readSpec, readRuntime, updateRuntime, requireSpec, createVm, writeSpec, removeVm, listVmIds, incomingUrisExcept };
}
