// The serial console of a VM on this host: QEMU writes the guest's ttyS0 to
// <stateDir>/vms/<vmId>/serial.log (args.ts `-serial file:`); a read returns its last lines.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CONSOLE_READ_MAX_BYTES, lastLines, type ConsoleTail } from '../../domain/console.js';
import { DriverError, assertSafeName } from '../hypervisor.js';

/**
 * Carriage returns counted so far per log file (device, inode, birth time), so `size` counts what
 * the lines show: a guest's tty writes "\r\n", the lines drop the "\r", and a follower that
 * prints the last `size` growth bytes of the joined lines must not print a byte per line too
 * many. Only the bytes appended since the last read are scanned.
 */
const carriageReturns = new Map<string, { scanned: number; count: number }>();

async function countCarriageReturns(fh: fs.FileHandle, key: string, size: number): Promise<number> {
  let seen = carriageReturns.get(key);
  // a log that shrank was replaced or truncated: count it again
  if (!seen || seen.scanned > size) seen = { scanned: 0, count: 0 };
  const chunk = Buffer.alloc(Math.min(CONSOLE_READ_MAX_BYTES, Math.max(1, size - seen.scanned)));
  while (seen.scanned < size) {
    const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, size - seen.scanned), seen.scanned);
    if (bytesRead === 0) break;
    for (let i = 0; i < bytesRead; i++) if (chunk[i] === 13) seen.count++;
    seen.scanned += bytesRead;
  }
  carriageReturns.set(key, seen);
  return seen.count;
}

export async function readSerialTail(hostId: string, vmId: string, file: string, tail: number): Promise<ConsoleTail> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new DriverError(`vm "${vmId}" has no console log on host "${hostId}"`, 'NOT_FOUND', true);
    throw e;
  }
  try {
    const st = await fh.stat();
    const size = st.size;
    const start = Math.max(0, size - CONSOLE_READ_MAX_BYTES);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const { lines, truncated } = lastLines(buf.toString('utf8'), tail, start > 0);
    const cr = await countCarriageReturns(fh, `${st.dev}:${st.ino}:${st.birthtimeMs}`, size);
    // the log's final newline is not in the lines (it ends the last one): not in the size either
    let end = buf.length - 1;
    while (end >= 0 && buf[end] === 13) end--;
    const finalNewline = end >= 0 && buf[end] === 10 ? 1 : 0;
    return { vmId, hostId, lines, size: size - cr - finalNewline, truncated };
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
