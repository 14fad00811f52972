// NoCloud seeds: the three cloud-init files (meta-data, user-data, network-config) rendered into
// a FAT12 image labelled "cidata", written next to the VM's disks as <vmId>-seed.img.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DriverError, assertSafeName, type CloudInitSeed } from '../hypervisor.js';
import { SEED_MAX_BYTES, seedFiles } from '../../domain/nocloud.js';
import { datastore, type HostConfig } from './host.js';
import { qemuImg } from './img.js';

export { seedFiles, SEED_MAX_BYTES } from '../../domain/nocloud.js';

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

/** Writes the VM's seed into a datastore: rewritten every time, atomically by rename. */
export async function writeSeed(cfg: HostConfig, vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }> {
  assertSafeName('vmId', vmId);
  const ds = datastore(cfg, datastoreId);
  await fs.mkdir(ds.path, { recursive: true });
  const final = path.join(ds.path, `${vmId}-seed.img`);
  const tmp = path.join(ds.path, `.${vmId}-seed.img.partial`);
  // rewritten every time (a retry may carry a corrected seed), atomically by rename
  await fs.rm(tmp, { force: true });
  try {
    await buildSeedImage(cfg.qemuImgBinary, seed, tmp);
    await fs.rename(tmp, final);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  return { path: final };
}
