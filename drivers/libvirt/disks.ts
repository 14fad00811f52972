// Disks as libvirt storage volumes: a datastore is a dir pool; a disk is `<name>.qcow2` in it.
// Blank disks and linked clones are made by libvirtd itself (`vol-create-as`, with --backing-vol
// for a template); full copies and imports are `qemu-img convert` into the pool's folder followed
// by `pool-refresh` (the pool folder is reachable from the agent); the NoCloud seed is built as a
// FAT image locally and sent with `vol-upload`. Lookups go by path (`vol-dumpxml <path>`), so a
// retry finds the disk its first attempt made.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { DriverError, assertSafeName, type CloudInitSeed, type DiskInfo, type DiskSpec, type LongCallOptions } from '../hypervisor.js';
import { SEED_MAX_BYTES, seedFiles } from '../../domain/nocloud.js';
import { buildVolXml, parseVolXml } from './domain-xml.js';
import { datastore, datastoreOf, poolInfo, type HostConfig } from './host.js';

const FORMATS = new Set(['qcow2', 'raw', 'vmdk', 'vhdx']);

async function qemuImg(cfg: HostConfig, args: string[], signal?: AbortSignal): Promise<void> {
  const r = await execa(cfg.qemuImgBinary, args, { reject: false, stdin: 'ignore', cancelSignal: signal, timeout: 30 * 60_000 });
  if (signal?.aborted) throw new DriverError(`qemu-img ${args[0]} aborted`, 'INVALID_STATE');
  if (r.exitCode !== 0 || r.failed) throw new DriverError(`qemu-img ${args[0]} failed: ${String(r.stderr || r.shortMessage).trim().slice(-600)}`, 'HYPERVISOR');
}

export function createDisks(cfg: HostConfig) {
  const { virsh } = cfg;

  async function toInfo(xml: string, fallbackDs?: string): Promise<DiskInfo> {
    const v = parseVolXml(xml);
    const ds = (await datastoreOf(cfg, v.path))?.ds.id ?? fallbackDs ?? '';
    const format = FORMATS.has(v.format) ? (v.format as DiskInfo['format']) : 'raw';
    return {
      name: v.name.replace(/\.(qcow2|img|raw)$/, ''),
      datastoreId: ds,
      path: v.path,
      format,
      virtualSizeBytes: v.capacityBytes,
      actualSizeBytes: v.allocationBytes,
      ...(v.backingPath ? { backingPath: v.backingPath } : {}),
    };
  }

  async function diskInfo(file: string): Promise<DiskInfo | null> {
    if (typeof file !== 'string' || !path.isAbsolute(file)) throw new DriverError(`disk path "${file}" must be absolute`, 'INVALID_ARGUMENT', true);
    let xml = await virsh.maybe(['vol-dumpxml', file]);
    if (xml === null) {
      // a file written outside libvirt (qemu-img convert) is a volume once its pool is refreshed
      const owner = await datastoreOf(cfg, file);
      if (!owner) return null;
      await virsh.run(['pool-refresh', owner.ds.pool]);
      xml = await virsh.maybe(['vol-dumpxml', file]);
      if (xml === null) return null;
    }
    return toInfo(xml);
  }

  async function backingFormat(file: string): Promise<string> {
    const xml = await virsh.maybe(['vol-dumpxml', file]);
    if (xml) return parseVolXml(xml).format;
    return file.endsWith('.qcow2') ? 'qcow2' : 'raw';
  }

  async function createDisk(spec: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    assertSafeName('disk name', spec?.name);
    if (!Number.isSafeInteger(spec.sizeBytes) || spec.sizeBytes <= 0) throw new DriverError(`disk "${spec.name}": sizeBytes must be a positive integer`, 'INVALID_ARGUMENT', true);
    const ds = datastore(cfg, spec.datastoreId);
    const pool = await poolInfo(cfg, ds.pool);
    const volName = `${spec.name}.qcow2`;
    const target = path.join(pool.targetPath, volName);
    const existing = await diskInfo(target);
    if (existing) return existing; // idempotent by name: a retry finds its own disk
    const src = spec.source;
    if (src.kind === 'blank') {
      await virsh.run(['vol-create-as', ds.pool, volName, String(spec.sizeBytes), '--format', 'qcow2']);
    } else if (src.kind === 'template' && src.linked) {
      if (!path.isAbsolute(src.imagePath)) throw new DriverError(`template imagePath "${src.imagePath}" must be absolute`, 'INVALID_ARGUMENT', true);
      // the template need not be a volume of a pool (vol-create-as --backing-vol would insist)
      const xml = buildVolXml(volName, spec.sizeBytes, { path: src.imagePath, format: await backingFormat(src.imagePath) });
      await virsh.withXmlFile(xml, (file) => virsh.run(['vol-create', ds.pool, file]));
    } else {
      const from = src.kind === 'template' ? src.imagePath : src.sourcePath;
      const fmt = src.kind === 'import' ? src.format : undefined;
      if (fmt !== undefined && !FORMATS.has(fmt)) throw new DriverError(`import format "${fmt}" must be one of qcow2, raw, vmdk, vhdx`, 'INVALID_ARGUMENT', true);
      await convertInto(from, fmt, ds.pool, pool.targetPath, volName, spec.sizeBytes, opts);
    }
    const info = await diskInfo(target);
    if (!info) throw new DriverError(`disk "${spec.name}" was created in pool "${ds.pool}" but libvirt does not list ${target}`, 'HYPERVISOR');
    return info;
  }

  /** qemu-img convert to a hidden partial file, grow to sizeBytes, rename, pool-refresh. */
  async function convertInto(from: string, fmt: string | undefined, pool: string, dir: string, volName: string, sizeBytes: number, opts: LongCallOptions): Promise<void> {
    if (!path.isAbsolute(from)) throw new DriverError(`source path "${from}" must be absolute`, 'INVALID_ARGUMENT', true);
    await fs.access(from).catch(() => {
      throw new DriverError(`source disk ${from} does not exist`, 'NOT_FOUND', true);
    });
    const partial = path.join(dir, `.${volName}.partial`);
    await fs.rm(partial, { force: true });
    try {
      opts.onProgress?.({ fraction: 0, message: `copying ${path.basename(from)}` });
      await qemuImg(cfg, ['convert', ...(fmt ? ['-f', fmt] : []), '-O', 'qcow2', from, partial], opts.signal);
      await qemuImg(cfg, ['resize', '-f', 'qcow2', partial, String(sizeBytes)]).catch(() => undefined); // never shrinks: a larger image stays as it is
      await fs.rename(partial, path.join(dir, volName));
      opts.onProgress?.({ fraction: 1, message: `copied ${path.basename(from)}` });
    } finally {
      await fs.rm(partial, { force: true });
    }
    await virsh.run(['pool-refresh', pool]);
  }

  async function deleteDisk(file: string): Promise<void> {
    if ((await diskInfo(file)) === null) return; // idempotent: a missing disk is not an error
    await virsh.maybe(['vol-delete', file]);
  }

  async function copyDisk(sourcePath: string, target: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    return createDisk({ ...target, source: { kind: 'clone', sourcePath } }, opts);
  }

  /** The seed volume `<vmId>-seed.img`, rewritten every time (a retry may carry a corrected seed). */
  async function writeSeed(vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }> {
    assertSafeName('vmId', vmId);
    const ds = datastore(cfg, datastoreId);
    const files = seedFiles(seed);
    const total = Object.values(files).reduce((s, v) => s + Buffer.byteLength(v), 0);
    if (total > SEED_MAX_BYTES) throw new DriverError(`seed.userData is too large: seed content ${total} bytes > ${SEED_MAX_BYTES}`, 'INVALID_ARGUMENT', true);
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-lv-seed-'));
    try {
      const dir = path.join(tmp, 'files');
      await fs.mkdir(dir);
      for (const [name, content] of Object.entries(files)) await fs.writeFile(path.join(dir, name), content);
      const img = path.join(tmp, 'seed.img');
      // no mkfs.vfat here: QEMU's vvfat driver renders the folder as a FAT12 "cidata" image
      const spec = { driver: 'vvfat', dir, label: 'cidata', 'fat-type': 12, floppy: true, rw: false };
      await qemuImg(cfg, ['convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, img]);
      const size = (await fs.stat(img)).size;
      const volName = `${vmId}-seed.img`;
      const pool = await poolInfo(cfg, ds.pool);
      const volPath = path.join(pool.targetPath, volName);
      if ((await virsh.maybe(['vol-dumpxml', '--pool', ds.pool, volName])) === null) {
        await virsh.run(['vol-create-as', ds.pool, volName, String(size), '--format', 'raw']);
      }
      await virsh.run(['vol-upload', '--pool', ds.pool, volName, img]);
      return { path: volPath };
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  return { createDisk, deleteDisk, diskInfo, copyDisk, writeSeed };
}
