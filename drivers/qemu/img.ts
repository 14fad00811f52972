// qemu-img through execa (argument arrays, never a shell): create, convert with progress and
// abort, info; and the NoCloud seed image.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { DriverError, type CloudInitSeed, type DiskFormat, type LongCallOptions } from '../hypervisor.js';

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

// ---- NoCloud seed ----

const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The three NoCloud files. JSON is valid YAML, so values need no YAML quoting of their own. */
export function seedFiles(seed: CloudInitSeed): Record<'meta-data' | 'user-data' | 'network-config', string> {
  if (typeof seed.instanceId !== 'string' || !seed.instanceId || seed.instanceId.length > 200) {
    throw new DriverError('seed.instanceId must be a non-empty string (at most 200 chars)', 'INVALID_ARGUMENT', true);
  }
  if (!HOSTNAME.test(seed.hostname ?? '') || seed.hostname.length > 253) {
    throw new DriverError(`seed.hostname "${seed.hostname}" is not a valid host name`, 'INVALID_ARGUMENT', true);
  }
  if (!Array.isArray(seed.sshAuthorizedKeys)) {
    throw new DriverError('seed.sshAuthorizedKeys must be an array', 'INVALID_ARGUMENT', true);
  }
  seed.sshAuthorizedKeys.forEach((k, i) => {
    if (typeof k !== 'string' || !/^[a-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\r\n]*)?$/.test(k)) {
      throw new DriverError(`seed.sshAuthorizedKeys[${i}] is not a single-line OpenSSH public key`, 'INVALID_ARGUMENT', true);
    }
  });
  const meta = { 'instance-id': seed.instanceId, 'local-hostname': seed.hostname, 'public-keys': seed.sshAuthorizedKeys };
  let userData: string;
  if (seed.userData !== undefined) {
    if (typeof seed.userData !== 'string') throw new DriverError('seed.userData must be a string', 'INVALID_ARGUMENT', true);
    userData = seed.userData;
  } else {
    userData = '#cloud-config\n' + JSON.stringify({ hostname: seed.hostname, ssh_authorized_keys: seed.sshAuthorizedKeys }, null, 2) + '\n';
  }
  let network: unknown = { version: 2, ethernets: {} };
  const n = seed.network;
  if (n) {
    if (!IPV4.test(n.address)) throw new DriverError(`seed.network.address "${n.address}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    if (!Number.isInteger(n.prefixLength) || n.prefixLength < 0 || n.prefixLength > 32) {
      throw new DriverError(`seed.network.prefixLength ${n.prefixLength} must be 0..32`, 'INVALID_ARGUMENT', true);
    }
    if (!IPV4.test(n.gateway)) throw new DriverError(`seed.network.gateway "${n.gateway}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    n.dns.forEach((d, i) => {
      if (!IPV4.test(d)) throw new DriverError(`seed.network.dns[${i}] "${d}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    });
    if (!MAC.test(n.mac)) throw new DriverError(`seed.network.mac "${n.mac}" is not a lowercase MAC address`, 'INVALID_ARGUMENT', true);
    if (n.vlan !== undefined && (!Number.isInteger(n.vlan) || n.vlan < 1 || n.vlan > 4094)) {
      throw new DriverError(`seed.network.vlan ${n.vlan} must be 1..4094`, 'INVALID_ARGUMENT', true);
    }
    const ipCfg = {
      addresses: [`${n.address}/${n.prefixLength}`],
      routes: [{ to: 'default', via: n.gateway }],
      nameservers: { addresses: n.dns },
    };
    network =
      n.vlan === undefined
        ? { version: 2, ethernets: { eth0: { match: { macaddress: n.mac }, 'set-name': 'eth0', ...ipCfg } } }
        : {
            version: 2,
            ethernets: { eth0: { match: { macaddress: n.mac }, 'set-name': 'eth0', dhcp4: false } },
            vlans: { [`eth0.${n.vlan}`]: { id: n.vlan, link: 'eth0', ...ipCfg } },
          };
  }
  return {
    'meta-data': JSON.stringify(meta, null, 2) + '\n',
    'user-data': userData,
    'network-config': JSON.stringify(network, null, 2) + '\n',
  };
}

/** Largest seed content that fits the 1.44 MB FAT12 image with room to spare. */
export const SEED_MAX_BYTES = 1024 * 1024;

/**
 * Builds a NoCloud seed: a FAT12 image labelled "cidata" holding user-data, meta-data and
 * network-config. No mkfs.vfat/genisoimage on the machine, so QEMU's own `vvfat` block driver
 * renders a folder as FAT and `qemu-img convert` writes that out as a raw image.
 */
export async function buildSeedImage(bin: string, seed: CloudInitSeed, dst: string): Promise<void> {
  const files = seedFiles(seed);
  const total = Object.values(files).reduce((s, v) => s + Buffer.byteLength(v), 0);
  if (total > SEED_MAX_BYTES) {
    throw new DriverError(`seed.userData is too large: seed content ${total} bytes > ${SEED_MAX_BYTES}`, 'INVALID_ARGUMENT', true);
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-seed-'));
  try {
    for (const [name, content] of Object.entries(files)) await fs.writeFile(path.join(dir, name), content);
    const spec = { driver: 'vvfat', dir, label: 'cidata', 'fat-type': 12, floppy: true, rw: false };
    await qemuImg(bin, ['convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, dst]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
