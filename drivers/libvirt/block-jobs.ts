// Live storage migration on one host: `virsh blockcopy --transient-job` of every disk onto another
// datastore's pool (the full chain, flattened), progress from `blockjob --raw`, pivot with
// `blockjob --pivot` (libvirt also rewrites the persistent definition), then ferry's metadata gets
// the new disk paths (`virsh metadata --set`); cancel is `blockjob --abort` and the partial copies
// are deleted. A record in stateDir/mirrors/ lets a restarted agent find what it started.
// Disk mirrors to another host's NBD server are not how libvirt moves disks (that is
// `migrate --copy-storage-all`), so that target kind is refused.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { DriverError, type DiskMirrorStats, type DiskMirrorTarget } from '../hypervisor.js';
import { currentSpec, parseDomainXml } from './domain-xml.js';
import { datastore, poolInfo, type HostConfig } from './host.js';
import type { Lifecycle } from './lifecycle.js';
import { parseBlockJob } from './parse.js';
import { bandwidthMiB } from './migration.js';

interface MirrorRecord {
  datastoreId: string;
  pool: string;
  disks: Array<{ target: string; source: string; dest: string }>;
}

const metaBuilder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });

export function createBlockJobs(cfg: HostConfig, life: Lifecycle) {
  const { virsh, hostId } = cfg;
  const { dom } = life;
  const dir = path.join(cfg.stateDir, 'mirrors');
  const recPath = (vmId: string) => path.join(dir, `${vmId}.json`);

  async function readRecord(vmId: string): Promise<MirrorRecord | undefined> {
    return fs.readFile(recPath(vmId), 'utf8').then((t) => JSON.parse(t) as MirrorRecord, () => undefined);
  }

  async function liveDisks(vmId: string) {
    return parseDomainXml(await virsh.run(['dumpxml', dom(vmId)])).disks.filter((d) => d.device === 'disk' && d.file);
  }

  async function startDiskMirror(vmId: string, target: DiskMirrorTarget): Promise<void> {
    if (target?.kind !== 'datastore') {
      throw new DriverError('a disk mirror to another host (nbd) is not supported by the libvirt driver: libvirt moves disks between hosts with migrate --copy-storage-all', 'INVALID_ARGUMENT', true);
    }
    const cur = await life.requireStatus(vmId);
    if (cur.state !== 'running' && cur.state !== 'paused') throw new DriverError(`vm "${vmId}" is ${cur.state}: blockcopy needs a running domain`, 'INVALID_STATE', true);
    if (await readRecord(vmId)) return; // idempotent: the mirror is kept
    const ds = datastore(cfg, target.datastoreId);
    const pool = await poolInfo(cfg, ds.pool);
    const disks = (await liveDisks(vmId)).map((d) => ({ target: d.target, source: d.file!, dest: path.join(pool.targetPath, path.basename(d.file!)) }));
    for (const d of disks) {
      if (path.dirname(d.source) === pool.targetPath) throw new DriverError(`disk ${d.source} of vm "${vmId}" is already on datastore "${ds.id}"`, 'INVALID_ARGUMENT', true);
    }
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(recPath(vmId), JSON.stringify({ datastoreId: ds.id, pool: ds.pool, disks } satisfies MirrorRecord));
    for (const d of disks) {
      const speed = target.speedBytesPerSec ? ['--bandwidth', String(bandwidthMiB(target.speedBytesPerSec))] : [];
      await virsh.run(['blockcopy', dom(vmId), d.target, d.dest, '--format', 'qcow2', '--transient-job', ...speed]);
    }
  }

  async function diskMirrorStatus(vmId: string): Promise<DiskMirrorStats> {
    const rec = await readRecord(vmId);
    const none: DiskMirrorStats = { status: 'none', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: false };
    if (!rec) return none;
    const live = await liveDisks(vmId);
    let copied = 0;
    let total = 0;
    let ready = 0;
    let pivoted = 0;
    for (const d of rec.disks) {
      if (live.find((l) => l.target === d.target)?.file === d.dest) {
        pivoted++;
        continue;
      }
      const job = parseBlockJob(await virsh.run(['blockjob', dom(vmId), d.target, '--raw']));
      if (!job) return { ...none, status: 'failed', error: `the block copy of ${d.target} (${d.source}) ended without a pivot` };
      copied += job.cur;
      total += job.end;
      if (job.end > 0 && job.cur === job.end) ready++;
    }
    if (pivoted === rec.disks.length) return { status: 'completed', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: true, diskPaths: live.map((l) => l.file!) };
    const inSync = ready + pivoted === rec.disks.length;
    return { status: inSync ? 'ready' : 'running', copiedBytes: copied, totalBytes: total, dirtyBytes: total - copied, inSync };
  }

  async function completeDiskMirror(vmId: string): Promise<DiskMirrorStats> {
    const rec = await readRecord(vmId);
    const st = await diskMirrorStatus(vmId);
    if (!rec) throw new DriverError(`vm "${vmId}" has no disk mirror on host "${hostId}"`, 'INVALID_STATE', true);
    if (st.status !== 'ready' && st.status !== 'completed') throw new DriverError(`the disk mirror of vm "${vmId}" is ${st.status}, not in sync`, 'INVALID_STATE', st.status === 'failed');
    const t0 = Date.now();
    const live = await liveDisks(vmId);
    for (const d of rec.disks) {
      if (live.find((l) => l.target === d.target)?.file !== d.dest) await virsh.run(['blockjob', dom(vmId), d.target, '--pivot']);
    }
    const pivotMs = Date.now() - t0;
    // ferry's spec in the metadata follows the disks (live and persistent definition)
    const spec = currentSpec(parseDomainXml(await virsh.run(['dumpxml', dom(vmId)])))!;
    const meta = metaBuilder.build({ vm: JSON.stringify(spec) }) as string;
    await virsh.run(['metadata', dom(vmId), 'urn:ferry:vm:1', '--key', 'ferry', '--set', meta, '--live', '--config']);
    for (const d of rec.disks) await virsh.maybe(['vol-delete', d.source]).catch(() => fs.rm(d.source, { force: true }));
    await virsh.run(['pool-refresh', rec.pool]);
    await fs.rm(recPath(vmId), { force: true });
    return { status: 'completed', copiedBytes: 0, totalBytes: 0, dirtyBytes: 0, inSync: true, diskPaths: spec.disks, ...(spec.seedPath ? { seedPath: spec.seedPath } : {}), pivotMs };
  }

  async function cancelDiskMirror(vmId: string): Promise<void> {
    const rec = await readRecord(vmId);
    if (!rec) return;
    const live = (await life.status(vmId)) ? await liveDisks(vmId) : [];
    for (const d of rec.disks) {
      const onCopy = live.find((l) => l.target === d.target)?.file === d.dest;
      if (onCopy) throw new DriverError(`vm "${vmId}" already runs on its copy ${d.dest}: the storage migration completed`, 'INVALID_STATE', true);
      if (live.length) await virsh.run(['blockjob', dom(vmId), d.target, '--abort']).catch(() => undefined);
      await fs.rm(d.dest, { force: true });
    }
    await virsh.maybe(['pool-refresh', rec.pool]);
    await fs.rm(recPath(vmId), { force: true });
  }

  return { startDiskMirror, diskMirrorStatus, completeDiskMirror, cancelDiskMirror };
}
