// QEMU processes of one host: spawned daemonized (-daemonize -pidfile, so a VM outlives the
// agent), found again through the pid file, ended with QMP `quit` and SIGKILL as the fallback.
import { constants as fsc, promises as fs } from 'node:fs';
import { execa } from 'execa';
import { DriverError, type VmSpec } from '../hypervisor.js';
import { buildQemuArgs } from './args.js';
import type { HostConfig } from './host.js';
import { isOurProcess, livePid, readPidFile, sleep, waitForExit } from './process.js';
import type { QmpSessions } from './sessions.js';
import type { VmStore } from './vm-store.js';

export type Processes = ReturnType<typeof createProcesses>;

/** What the VM-level parts of the driver (lifecycle, migration) work with. */
export interface VmDeps {
  cfg: HostConfig;
  store: VmStore;
  sessions: QmpSessions;
  procs: Processes;
}

export function createProcesses(cfg: HostConfig, store: VmStore, sessions: QmpSessions) {
  let accelResolved: Promise<'tcg' | 'kvm'> | undefined;

  function resolveAccel(): Promise<'tcg' | 'kvm'> {
    accelResolved ??= (async () => {
      const a = cfg.options.accel ?? 'tcg';
      if (a !== 'auto') return a;
      try {
        await fs.access('/dev/kvm', fsc.R_OK | fsc.W_OK);
        return 'kvm';
      } catch {
        return 'tcg';
      }
    })();
    return accelResolved;
  }

  /** pid of the VM's live QEMU, or undefined. */
  function pidOf(vmId: string): Promise<number | undefined> {
    return livePid(store.vmPaths(vmId));
  }

  /** Spawns QEMU daemonized; resolves with its pid once the parent has exited 0. */
  async function spawn(vmId: string, spec: VmSpec, incoming: boolean): Promise<number> {
    const p = store.vmPaths(vmId);
    await fs.mkdir(p.dir, { recursive: true });
    await fs.rm(p.qmpSocket, { force: true });
    await fs.rm(p.pidFile, { force: true });
    const args = buildQemuArgs(spec, p, { accel: await resolveAccel(), cpuModel: cfg.cpuModel, machine: cfg.machine, startPaused: true, incoming });
    // in a lab namespace QEMU is started through `ip netns exec` (which exits once QEMU daemonizes)
    const [cmd, argv]: [string, string[]] = cfg.netns ? ['ip', ['netns', 'exec', cfg.netns, cfg.qemuBinary, ...args]] : [cfg.qemuBinary, args];
    const r = await execa(cmd, argv, { reject: false, stdin: 'ignore', timeout: 60_000 });
    if (r.failed || r.exitCode !== 0) {
      const why = (r as { code?: string }).code === 'ENOENT' ? `binary "${cfg.qemuBinary}" not found` : String(r.stderr ?? '').trim().slice(-800) || r.shortMessage;
      // a parent that timed out may have left a child behind
      const pid = await readPidFile(p.pidFile);
      if (pid && (await isOurProcess(pid, p.qmpSocket))) await kill(vmId, pid);
      throw new DriverError(`qemu failed to start vm "${vmId}": ${why}`, 'HYPERVISOR');
    }
    const pid = await readPidFile(p.pidFile);
    if (!pid) throw new DriverError(`qemu started vm "${vmId}" but wrote no pid file ${p.pidFile}`, 'HYPERVISOR');
    return pid;
  }

  /** quit over QMP, then SIGKILL if the process lingers; resolves when it is gone. */
  async function kill(vmId: string, pid: number): Promise<void> {
    const marker = store.vmPaths(vmId).qmpSocket;
    try {
      const c = await Promise.race([sessions.get(vmId), sleep(3_000).then(() => undefined)]);
      await c?.execute('quit', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
    } catch {
      // unreachable monitor: fall through to SIGKILL
    }
    if (!(await waitForExit(pid, marker, 3_000))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      if (!(await waitForExit(pid, marker, 5_000))) {
        throw new DriverError(`qemu process ${pid} of vm "${vmId}" did not exit after SIGKILL`, 'HYPERVISOR');
      }
    }
    sessions.drop(vmId);
    const p = store.vmPaths(vmId);
    await fs.rm(p.qmpSocket, { force: true });
    await fs.rm(p.pidFile, { force: true });
  }

  /** Kills the VM's QEMU if one is alive (`quiet`: a failure to do so is ignored). */
  async function killIfAlive(vmId: string, quiet = false): Promise<void> {
    const pid = await pidOf(vmId);
    if (pid === undefined) return;
    await (quiet ? kill(vmId, pid).catch(() => undefined) : kill(vmId, pid));
  }

  return { livePid: pidOf, spawn, kill, killIfAlive };
}
