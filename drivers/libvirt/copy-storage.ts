// Live migration without shared storage (copyDisks) on libvirt: `virsh migrate --copy-storage-all`.
// libvirt copies every writable disk over NBD inside the migration job, to the SAME path on the
// destination unless the destination XML says otherwise; ferry's datastores are per host (another
// pool, another folder), so:
//   destination (prepareIncoming): the copies are made empty on the target datastore's pool
//     (`vol-create-as`, the disk's virtual size, no backing: the copy is the whole chain), recorded
//     in stateDir/incoming/<vmId>.json before they exist (a destroy after a crash finds them), and
//     the answer's uri carries the path each source file gets: `<p2p uri>#ferry-copy=<base64url
//     JSON {source: destination}>`. The uri is the destination's opaque answer; only the source's
//     driver reads it, and virsh never sees the fragment.
//   source (startMigration): `dumpxml --migratable` with the disk sources (and ferry's spec in the
//     metadata) moved to those paths is the destination XML (`--xml` and `--persistent-xml`).
// The NoCloud seed is a read-only cdrom, which libvirt never copies ("Cannot migrate empty or
// read-only disk"): the destination copies its bytes itself when it can read the source's file
// (hosts sharing a machine or a mount, as in the lab), and otherwise refuses with the reason.
// Disks of an activated VM are its own: activateIncoming forgets the record.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DriverError, type IncomingDiskCopy, type VmSpec } from '../hypervisor.js';
import { datastore, poolInfo, type HostConfig } from './host.js';

const FRAGMENT = '#ferry-copy=';

const bad = (m: string) => new DriverError(m, 'INVALID_ARGUMENT', true);

function checkPath(what: string, p: unknown): string {
  if (typeof p !== 'string' || !path.isAbsolute(p) || /[\0\n]/.test(p)) throw bad(`${what} "${String(p)}" must be an absolute path`);
  return p;
}

/** The uri a copyDisks destination hands out: its p2p URI and where each source file goes. */
export function copyStorageUri(destUri: string, moves: Record<string, string>): string {
  return `${destUri}${FRAGMENT}${Buffer.from(JSON.stringify(moves)).toString('base64url')}`;
}

/** A destination's uri split into the URI virsh dials and the moves of a copyDisks migration. */
export function parseMigrationUri(uri: string): { destUri: string; moves?: Record<string, string> } {
  const i = uri.indexOf(FRAGMENT);
  if (i < 0) return { destUri: uri };
  let moves: unknown;
  try {
    moves = JSON.parse(Buffer.from(uri.slice(i + FRAGMENT.length), 'base64url').toString('utf8'));
  } catch {
    throw bad(`uri "${uri.slice(0, i)}…": the ${FRAGMENT.slice(1)} part is not what a libvirt destination hands out`);
  }
  if (!moves || typeof moves !== 'object' || Array.isArray(moves) || Object.keys(moves).length === 0) throw bad(`uri "${uri.slice(0, i)}…": the ${FRAGMENT.slice(1)} part names no disk`);
  for (const [from, to] of Object.entries(moves as Record<string, unknown>)) {
    checkPath('copyDisks source', from);
    checkPath('copyDisks destination', to);
  }
  return { destUri: uri.slice(0, i), moves: moves as Record<string, string> };
}

interface IncomingRecord {
  datastoreId: string;
  pool: string;
  /** source path -> this host's copy */
  moves: Record<string, string>;
}

export function createCopyStorage(cfg: HostConfig) {
  const { virsh, hostId } = cfg;
  const dir = path.join(cfg.stateDir, 'incoming');
  const recPath = (vmId: string) => path.join(dir, `${vmId}.json`);

  async function readRecord(vmId: string): Promise<IncomingRecord | undefined> {
    return fs.readFile(recPath(vmId), 'utf8').then((t) => JSON.parse(t) as IncomingRecord, () => undefined);
  }

  /**
   * Destination, stage 1: empty copies of the disks and a byte copy of the seed on the target
   * datastore; returns the moves (source path -> copy). Idempotent: a retry keeps the copies.
   */
  async function prepareCopies(spec: VmSpec, copy: { datastoreId: string; disks: IncomingDiskCopy[] }): Promise<Record<string, string>> {
    if (!copy || !Array.isArray(copy.disks) || copy.disks.length === 0) throw bad('copyDisks.disks must list the disks to copy');
    const ds = datastore(cfg, copy.datastoreId);
    const pool = await poolInfo(cfg, ds.pool);
    const own = new Set([...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])]);
    const moves: Record<string, string> = {};
    for (const d of copy.disks) {
      checkPath('copyDisks.disks[].sourcePath', d?.sourcePath);
      if (!own.has(d.sourcePath)) throw bad(`copyDisks: ${d.sourcePath} is not a disk or the seed of vm "${spec.vmId}"`);
      if (!Number.isSafeInteger(d.virtualSizeBytes) || d.virtualSizeBytes <= 0) throw bad(`copyDisks: the virtual size of ${d.sourcePath} must be a positive integer`);
      const to = path.join(pool.targetPath, path.basename(d.sourcePath));
      if (to === d.sourcePath) throw bad(`copyDisks: ${d.sourcePath} is already on datastore "${ds.id}" of host "${hostId}"`);
      moves[d.sourcePath] = to;
    }
    const seed = spec.seedPath && moves[spec.seedPath] ? spec.seedPath : undefined;
    // the seed's bytes must be readable here before anything is made
    if (seed) {
      await fs.access(seed).catch(() => {
        throw new DriverError(
          `copyDisks: the seed ${seed} of vm "${spec.vmId}" is a read-only cdrom, which virsh migrate --copy-storage-all does not copy, and host "${hostId}" cannot read it to copy it itself`,
          'INVALID_STATE',
          true,
        );
      });
    }
    const rec: IncomingRecord = { datastoreId: ds.id, pool: ds.pool, moves: { ...((await readRecord(spec.vmId))?.moves ?? {}), ...moves } };
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(`${recPath(spec.vmId)}.tmp`, JSON.stringify(rec));
    await fs.rename(`${recPath(spec.vmId)}.tmp`, recPath(spec.vmId));
    for (const d of copy.disks) {
      const to = moves[d.sourcePath]!;
      const name = path.basename(to);
      const format = to.endsWith('.qcow2') ? 'qcow2' : 'raw';
      if ((await virsh.maybe(['vol-dumpxml', '--pool', ds.pool, name])) === null) {
        await virsh.run(['vol-create-as', ds.pool, name, String(d.virtualSizeBytes), '--format', format]);
      }
      if (d.sourcePath === seed) await virsh.run(['vol-upload', '--pool', ds.pool, name, seed]);
    }
    return moves;
  }

  /** The copies this host made for a migration that never activated: deleted. Idempotent. */
  async function discardCopies(vmId: string): Promise<void> {
    const rec = await readRecord(vmId);
    if (!rec) return;
    for (const to of Object.values(rec.moves)) {
      if ((await virsh.maybe(['vol-delete', to])) === null) await fs.rm(to, { force: true });
    }
    await virsh.maybe(['pool-refresh', rec.pool]);
    await fs.rm(recPath(vmId), { force: true });
  }

  /** activateIncoming: the copies are the VM's disks from now on. */
  async function keepCopies(vmId: string): Promise<void> {
    await fs.rm(recPath(vmId), { force: true });
  }

  return { prepareCopies, discardCopies, keepCopies };
}
