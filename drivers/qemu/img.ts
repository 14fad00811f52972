// qemu-img through execa (argument arrays, never a shell): create, convert with progress and
// abort, info.
import path from 'node:path';
import { execa } from 'execa';
import { DriverError, type DiskFormat, type LongCallOptions } from '../hypervisor.js';

export interface QemuImgInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
}

const DISK_FORMATS: readonly DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vhdx'];

export function isDiskFormat(f: string): f is DiskFormat {
  return (DISK_FORMATS as readonly string[]).includes(f);
}

function stderrTail(s: unknown): string {
  const t = String(s ?? '').trim();
  return t.length > 600 ? '…' + t.slice(-600) : t;
}

/** Runs qemu-img; a non-zero exit becomes a DriverError naming the subcommand and qemu-img's message. */
export async function qemuImg(bin: string, args: string[], opts: { signal?: AbortSignal } = {}): Promise<string> {
  const r = await execa(bin, args, { reject: false, stdin: 'ignore', cancelSignal: opts.signal, timeout: 10 * 60_000 });
  if (opts.signal?.aborted) throw abortReason(opts.signal, `qemu-img ${args[0]}`);
  if (r.failed || r.exitCode !== 0) {
    const e = (r as { code?: string }).code === 'ENOENT' ? `binary "${bin}" not found` : stderrTail(r.stderr) || r.shortMessage;
    throw new DriverError(`qemu-img ${args[0]} failed: ${e}`, 'HYPERVISOR');
  }
  return String(r.stdout);
}

export function abortReason(signal: AbortSignal, what: string): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  return new DriverError(`${what} aborted${r !== undefined ? `: ${String(r)}` : ''}`, 'INVALID_STATE');
}

export async function imgInfo(bin: string, file: string): Promise<QemuImgInfo> {
  // -U: readable while a running VM holds the image lock
  const out = await qemuImg(bin, ['info', '--output=json', '-U', file]);
  try {
    return JSON.parse(out) as QemuImgInfo;
  } catch {
    throw new DriverError(`qemu-img info ${file}: output is not JSON`, 'HYPERVISOR');
  }
}

/**
 * `qemu-img convert -p`: progress parsed from "(12.34/100%)"; the signal kills the child (the
 * caller removes the partial file).
 */
export async function imgConvert(
  bin: string,
  args: { src: string; srcFormat?: string; dst: string; dstFormat: 'qcow2' | 'raw' },
  opts: LongCallOptions & { totalBytes?: number } = {},
): Promise<void> {
  const argv = ['convert', '-p'];
  if (args.srcFormat) argv.push('-f', args.srcFormat);
  argv.push('-O', args.dstFormat, args.src, args.dst);
  if (opts.signal?.aborted) throw abortReason(opts.signal, 'qemu-img convert');
  const child = execa(bin, argv, { reject: false, stdin: 'ignore', cancelSignal: opts.signal, buffer: { stdout: false } });
  let last = -1;
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    const all = [...chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
    const m = all.at(-1);
    if (!m || !opts.onProgress) return;
    const fraction = Math.min(1, Number(m[1]) / 100);
    if (fraction === last) return;
    last = fraction;
    opts.onProgress({
      fraction,
      totalBytes: opts.totalBytes,
      doneBytes: opts.totalBytes !== undefined ? Math.round(opts.totalBytes * fraction) : undefined,
      message: `converting ${path.basename(args.src)}`,
    });
  });
  const r = await child;
  if (opts.signal?.aborted) throw abortReason(opts.signal, 'qemu-img convert');
  if (r.failed || r.exitCode !== 0) {
    throw new DriverError(`qemu-img convert ${args.src} failed: ${stderrTail(r.stderr) || r.shortMessage}`, 'HYPERVISOR');
  }
}
