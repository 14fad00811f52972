// The serial console of a VM on this host: QEMU writes the guest's ttyS0 to
// <stateDir>/vms/<vmId>/serial.log (args.ts `-serial file:`); a read returns its last lines.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CONSOLE_READ_MAX_BYTES, lastLines, type ConsoleTail } from '../../domain/console.js';
import { DriverError, assertSafeName } from '../hypervisor.js';

export async function readSerialTail(hostId: string, vmId: string, file: string, tail: number): Promise<ConsoleTail> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new DriverError(`vm "${vmId}" has no console log on host "${hostId}"`, 'NOT_FOUND', true);
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - CONSOLE_READ_MAX_BYTES);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const { lines, truncated } = lastLines(buf.toString('utf8'), tail, start > 0);
    return { vmId, hostId, lines, size, truncated };
  } finally {
    await fh.close();
  }
}

/** The console reader of one qemu host (the driver's layout: <stateDir>/vms/<vmId>/serial.log). */
export function createQemuConsole(hostId: string, stateDir: string): { consoleTail(vmId: string, tail: number): Promise<ConsoleTail> } {
  return {
    consoleTail(vmId, tail) {
      assertSafeName('vmId', vmId);
      return readSerialTail(hostId, vmId, path.join(stateDir, 'vms', vmId, 'serial.log'), tail);
    },
  };
}
