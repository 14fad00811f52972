// Pure argv builder for qemu-system-x86_64. No I/O: unit-tested without QEMU.
import { createHash } from 'node:crypto';
import { DriverError, type VmSpec } from '../hypervisor.js';
import { validateVmSpecFields } from '../common.js';

export interface QemuPaths {
  qmpSocket: string;
  pidFile: string;
  serialLog: string;
}

export interface QemuArgOptions {
  accel: 'tcg' | 'kvm';
  cpuModel: string;
  /** machine type; both ends of a migration must use the same one */
  machine: string;
  /** start paused (`-S`): the driver issues `cont` itself */
  startPaused: boolean;
  /** wait for migration state (`-incoming defer`); implies -S so the copy stays paused until activated */
  incoming: boolean;
}

/** 52:54:00:xx:xx:xx derived from the vmId, the same on every host (migration keeps the MAC). */
export function defaultMac(vmId: string): string {
  const h = createHash('sha256').update(vmId).digest();
  return ['52', '54', '00', ...[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** QEMU option values: a comma is written as ",,"; control characters are refused. */
export function qemuOptValue(what: string, value: string): string {
  // eslint-disable-next-line no-control-regex
  if (value.length === 0 || /[\u0000-\u001f]/.test(value)) {
    throw new DriverError(`${what} ${JSON.stringify(value)} is empty or contains control characters`, 'INVALID_ARGUMENT', true);
  }
  return value.replaceAll(',', ',,');
}


/** Validates the spec fields that reach argv or the file system (throws DriverError INVALID_ARGUMENT). */
export function validateVmSpec(spec: VmSpec): void {
  validateVmSpecFields(spec, { checkPath: (what, p) => void qemuOptValue(what, p) });
}

/**
 * The full argv (without the binary) for one VM. Always daemonized with a pid file, a QMP unix
 * socket, no display, no default devices, serial to a file; disks as virtio, the seed read-only.
 */
export function buildQemuArgs(spec: VmSpec, paths: QemuPaths, opts: QemuArgOptions): string[] {
  validateVmSpec(spec);
  for (const [k, v] of Object.entries(paths)) {
    if (!v.startsWith('/')) throw new DriverError(`paths.${k} "${v}" must be an absolute path`, 'INVALID_ARGUMENT', true);
    qemuOptValue(`paths.${k}`, v);
  }
  if (!/^[A-Za-z0-9_.+-]+$/.test(opts.cpuModel)) {
    throw new DriverError(`cpuModel "${opts.cpuModel}" is not a valid CPU model name`, 'INVALID_ARGUMENT', true);
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(opts.machine)) {
    throw new DriverError(`machine "${opts.machine}" is not a valid machine type`, 'INVALID_ARGUMENT', true);
  }
  const args: string[] = [
    '-name', `${spec.vmId},process=ferry-${spec.vmId}`,
    '-machine', opts.machine,
    '-accel', opts.accel,
    '-cpu', opts.cpuModel,
    '-smp', String(spec.cpus),
    '-m', `${spec.memoryBytes / (1024 * 1024)}M`,
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    // a guest power-off leaves the process in runstate "shutdown" so the driver sees it
    '-no-shutdown',
    '-serial', `file:${qemuOptValue('paths.serialLog', paths.serialLog)}`,
    '-qmp', `unix:${qemuOptValue('paths.qmpSocket', paths.qmpSocket)},server=on,wait=off`,
    '-pidfile', paths.pidFile,
    '-daemonize',
  ];
  spec.disks.forEach((d, i) => {
    args.push('-drive', `file=${qemuOptValue(`spec.disks[${i}]`, d)},format=qcow2,if=virtio,id=disk${i}`);
  });
  if (spec.seedPath) {
    args.push('-drive', `file=${qemuOptValue('spec.seedPath', spec.seedPath)},format=raw,if=virtio,readonly=on,id=seed`);
  }
  if (spec.isoPath) {
    args.push('-drive', `file=${qemuOptValue('spec.isoPath', spec.isoPath)},format=raw,if=ide,media=cdrom,id=cdrom`);
  }
  if (spec.network) {
    // user-mode networking (no bridge on CI machines); romfile= skips the iPXE option ROM
    const mac = spec.mac ?? defaultMac(spec.vmId);
    args.push('-netdev', 'user,id=net0', '-device', `virtio-net-pci,netdev=net0,romfile=,mac=${mac},id=nic0`);
  }
  if (opts.startPaused || opts.incoming) args.push('-S');
  if (opts.incoming) args.push('-incoming', 'defer');
  return args;
}
