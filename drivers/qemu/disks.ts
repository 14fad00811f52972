// Disks in the host's datastores: create (blank, linked clone, full copy, import), copy, delete,
// info. Idempotent by name: a disk is written as `.<name>.qcow2.partial` and renamed when
// complete, so only a whole disk ever has the final name. qemu-img itself is `img.ts`.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DriverError, assertSafeName, type DiskInfo, type DiskSpec, type LongCallOptions } from '../hypervisor.js';
import { datastore, datastoreOf, type HostConfig, type QemuDatastoreConfig } from './host.js';
import { abortReason, imgConvert, imgInfo, isDiskFormat, qemuImg } from './img.js';

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

export function createDisks(cfg: HostConfig) {
  const { hostId, qemuImgBinary } = cfg;

  async function toDiskInfo(file: string): Promise<DiskInfo> {
    const info = await imgInfo(qemuImgBinary, file);
    const ds = datastoreOf(cfg, file);
    const format = isDiskFormat(info.format) ? info.format : 'raw';
    const out: DiskInfo = {
      name: path.basename(file).replace(/\.(qcow2|img|raw|vmdk|vhdx)$/, ''),
      datastoreId: ds?.id ?? '',
      path: file,
      format,
      virtualSizeBytes: info['virtual-size'],
      actualSizeBytes: info['actual-size'] ?? 0,
    };
    const backing = info['full-backing-filename'] ?? info['backing-filename'];
    if (backing) out.backingPath = backing;
    return out;
  }

  function validateDiskSpec(spec: DiskSpec): QemuDatastoreConfig {
    assertSafeName('disk name', spec.name);
    if (!Number.isSafeInteger(spec.sizeBytes) || spec.sizeBytes < 0) {
      throw new DriverError(`sizeBytes ${spec.sizeBytes} of disk "${spec.name}" must be a non-negative integer`, 'INVALID_ARGUMENT', true);
    }
    const src = spec.source;
    const srcPath = src.kind === 'template' ? src.imagePath : src.kind === 'clone' || src.kind === 'import' ? src.sourcePath : undefined;
    if (srcPath !== undefined && (typeof srcPath !== 'string' || !path.isAbsolute(srcPath))) {
      throw new DriverError(`source path "${srcPath}" of disk "${spec.name}" must be an absolute path`, 'INVALID_ARGUMENT', true);
    }
    if (src.kind === 'import' && !isDiskFormat(src.format)) {
      throw new DriverError(`source.format "${String(src.format)}" must be one of qcow2, raw, vmdk, vhdx`, 'INVALID_ARGUMENT', true);
    }
    if (src.kind === 'blank' && spec.sizeBytes <= 0) {
      throw new DriverError(`sizeBytes of blank disk "${spec.name}" must be > 0`, 'INVALID_ARGUMENT', true);
    }
    return datastore(cfg, spec.datastoreId);
  }

  async function sourceInfo(file: string, what: string) {
    if (!(await exists(file))) throw new DriverError(`${what} "${file}" does not exist`, 'NOT_FOUND', true);
    return imgInfo(qemuImgBinary, file);
  }

  async function createDisk(spec: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    const ds = validateDiskSpec(spec);
    await fs.mkdir(ds.path, { recursive: true });
    const final = path.join(ds.path, `${spec.name}.qcow2`);
    // idempotent by name: only a complete disk has the final name (written under a temp name, renamed)
    if (await exists(final)) return toDiskInfo(final);
    const tmp = path.join(ds.path, `.${spec.name}.qcow2.partial`);
    await fs.rm(tmp, { force: true });
    const src = spec.source;
    try {
      if (opts.signal?.aborted) throw abortReason(opts.signal, `createDisk "${spec.name}"`);
      let convertedFrom: { path: string; format?: string } | undefined;
      if (src.kind === 'blank') {
        await qemuImg(qemuImgBinary, ['create', '-q', '-f', 'qcow2', tmp, String(spec.sizeBytes)], opts);
      } else if (src.kind === 'template' && src.linked) {
        const base = await sourceInfo(src.imagePath, 'source.imagePath');
        const size = Math.max(spec.sizeBytes, base['virtual-size']);
        await qemuImg(qemuImgBinary, ['create', '-q', '-f', 'qcow2', '-b', path.resolve(src.imagePath), '-F', base.format, tmp, String(size)], opts);
      } else if (src.kind === 'template') {
        convertedFrom = { path: src.imagePath };
      } else if (src.kind === 'clone') {
        convertedFrom = { path: src.sourcePath };
      } else {
        convertedFrom = { path: src.sourcePath, format: src.format };
      }
      if (convertedFrom) {
        const info = await sourceInfo(convertedFrom.path, src.kind === 'template' ? 'source.imagePath' : 'source.sourcePath');
        if (convertedFrom.format && info.format !== convertedFrom.format) {
          throw new DriverError(`source.format "${convertedFrom.format}" does not match ${convertedFrom.path} (qemu-img says ${info.format})`, 'INVALID_ARGUMENT', true);
        }
        await imgConvert(
          qemuImgBinary,
          { src: convertedFrom.path, srcFormat: info.format, dst: tmp, dstFormat: 'qcow2' },
          { ...opts, totalBytes: info['virtual-size'] },
        );
        if (spec.sizeBytes > info['virtual-size']) {
          await qemuImg(qemuImgBinary, ['resize', '-q', '-f', 'qcow2', tmp, String(spec.sizeBytes)], opts);
        }
      }
      await fs.rename(tmp, final);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    opts.onProgress?.({ fraction: 1, message: `disk ${spec.name} ready` });
    return toDiskInfo(final);
  }

  const copyDisk = (sourcePath: string, target: DiskSpec, opts?: LongCallOptions): Promise<DiskInfo> =>
    createDisk({ ...target, source: { kind: 'clone', sourcePath } }, opts);

  async function deleteDisk(file: string): Promise<void> {
    if (typeof file !== 'string' || !path.isAbsolute(file) || !datastoreOf(cfg, file)) {
      throw new DriverError(`path "${file}" is not a disk in a datastore of host "${hostId}"`, 'INVALID_ARGUMENT', true);
    }
    await fs.rm(file, { force: true });
  }

  async function diskInfo(file: string): Promise<DiskInfo | null> {
    if (typeof file !== 'string' || !path.isAbsolute(file)) {
      throw new DriverError(`path "${file}" must be an absolute path`, 'INVALID_ARGUMENT', true);
    }
    if (!(await exists(file))) return null;
    return toDiskInfo(file);
  }

  return { createDisk, copyDisk, deleteDisk, diskInfo };
}
