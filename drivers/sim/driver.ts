// HypervisorDriver over the simulator, bound to one host. Each call is one transaction on the
// shared state file (see simulator.ts); long disk operations persist their start and end virtual
// times first and then wait, so a retry after the caller died finds the same disk and waits for it.
import {
  DriverError,
  type CloudInitSeed,
  type DiskFormat,
  type DiskInfo,
  type DiskSource,
  type DiskSpec,
  type HostInfo,
  type HypervisorDriver,
  type LongCallOptions,
  type MigrationParams,
  type MigrationStats,
  type StartMigrationOptions,
  type VmPowerState,
  type VmRuntime,
  type VmSpec,
} from '../hypervisor.js';
import { DEFAULT_DEVICE_STATE_BYTES } from '../../domain/precopy-model.js';
import { consume, liveFaults, markFired } from './faults.js';
import type { SimFaultStep } from '../../domain/faults.js';
import {
  CommitThenThrow,
  diskPath,
  OPEN_STATUSES,
  parseDiskPath,
  type DiskCopyPlan,
  type Simulator,
} from './simulator.js';
import type { DiskRow, ImageRow, MigrationRow, VmRow } from './store.js';
import {
  invalid,
  invalidState,
  nonEmptyString,
  nonNegativeInt,
  nonNegativeNumber,
  notFound,
  positiveInt,
  positiveNumber,
  safeName,
  stableJson,
  stringArray,
} from './validate.js';

const DISK_FORMATS: readonly DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vhdx'];
const URI = /^sim:\/\/([^/]+)\/([^/]+)$/;

type DiskMode = { kind: 'create'; source: DiskSource } | { kind: 'copy'; sourcePath: string };

/** A disk or image that can be read as a source. */
interface SourceFile {
  path: string;
  datastoreId: string;
  sizeBytes: number;
  format: string;
  ready: boolean;
}

const fail = (e: DriverError): never => {
  throw new CommitThenThrow(e);
};

export class SimDriver implements HypervisorDriver {
  readonly kind = 'sim' as const;

  constructor(
    private readonly sim: Simulator,
    readonly hostId: string,
  ) {}

  /** One transaction: host exists, fail-step faults, then fn. */
  private op<T>(step: SimFaultStep, vmId: string | undefined, fn: (nowV: number) => T, diskName?: string): T {
    return this.sim.tx((nowV) => {
      this.sim.requireHost(this.hostId);
      this.sim.spendStepFault(step, this.hostId, vmId, nowV, diskName);
      return fn(nowV);
    });
  }

  // ------------------------------------------------------------------ host

  async hostInfo(): Promise<HostInfo> {
    return this.op('hostInfo', undefined, () => {
      const h = this.sim.requireHost(this.hostId);
      return {
        hostId: h.id,
        cpuModel: h.cpu_model,
        cpuFeatures: JSON.parse(h.cpu_features) as string[],
        cpus: h.cpus,
        memoryBytes: h.memory_bytes,
        datastores: this.sim.datastoresOf(h.id).map((d) => ({
          id: d.id,
          path: `sim://${d.id}`,
          shared: d.shared === 1,
          capacityBytes: d.capacity_bytes,
          freeBytes: Math.max(0, d.capacity_bytes - this.sim.usedBytes(d.id)),
          throughputBytesPerSec: d.throughput_bytes_per_sec,
        })),
        networks: this.sim.networksOf(h.id),
        migrationAddress: h.migration_address,
      };
    });
  }

  // ------------------------------------------------------------------ disks

  async createDisk(spec: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    validateDiskSpec(spec, true);
    return this.provisionDisk(spec, { kind: 'create', source: spec.source }, 'createDisk', opts);
  }

  async copyDisk(sourcePath: string, target: DiskSpec, opts: LongCallOptions = {}): Promise<DiskInfo> {
    nonEmptyString('sourcePath', sourcePath);
    validateDiskSpec(target, false);
    return this.provisionDisk(target, { kind: 'copy', sourcePath }, 'copyDisk', opts);
  }

  private async provisionDisk(spec: DiskSpec, mode: DiskMode, step: SimFaultStep, opts: LongCallOptions): Promise<DiskInfo> {
    for (;;) {
      const path = this.op(step, undefined, (nowV) => this.beginDisk(spec, mode, nowV), spec.name);
      const info = await this.waitDisk(path, step, opts);
      // null: the disk vanished while we waited (another caller aborted it); create it again
      if (info) return info;
    }
  }

  private beginDisk(spec: DiskSpec, mode: DiskMode, nowV: number): string {
    const ds = this.sim.datastoreRow(spec.datastoreId);
    if (!ds) throw notFound(`datastoreId: datastore "${spec.datastoreId}" is not in the simulator`);
    const remote = !this.sim.attached(ds.id, this.hostId);
    if (remote && mode.kind === 'create') throw invalid(`datastoreId: datastore ${ds.id} is not attached to host ${this.hostId}`);
    const path = diskPath(ds.id, `${spec.name}.qcow2`);
    const wanted = stableJson({
      datastoreId: spec.datastoreId,
      sizeBytes: spec.sizeBytes,
      source: mode.kind === 'create' ? mode.source : { kind: 'copy', sourcePath: mode.sourcePath },
    });
    const existing = this.sim.diskRow(path);
    if (existing) {
      // the idempotency key is the name: a retry finds its own disk (finished or still copying)
      if (existing.spec !== wanted) throw invalidState(`disk ${path} already exists with a different spec (${existing.spec})`, true);
      return path;
    }
    if (this.sim.store.get('SELECT 1 AS x FROM images WHERE path = ?', path)) throw invalidState(`path ${path} is an image`, true);

    let virtual = spec.sizeBytes;
    let actual = 0;
    let bytes = 0;
    let backing: string | null = null;
    let format: DiskFormat = 'qcow2';
    const srcDatastores: string[] = [];
    const kind = mode.kind === 'create' ? mode.source.kind : 'copy';
    if (kind !== 'blank') {
      const srcPath = mode.kind === 'copy' ? mode.sourcePath : mode.source.kind === 'template' ? mode.source.imagePath : (mode.source as { sourcePath: string }).sourcePath;
      const field = kind === 'template' ? 'source.imagePath' : mode.kind === 'copy' ? 'sourcePath' : 'source.sourcePath';
      const src = this.sourceFile(srcPath);
      if (!src) throw notFound(`${field}: ${kind === 'template' ? 'template image' : 'source'} "${srcPath}" does not exist`);
      if (!this.sim.attached(src.datastoreId, this.hostId)) {
        throw notFound(`${field}: "${srcPath}" is on datastore ${src.datastoreId}, which host ${this.hostId} cannot reach`);
      }
      if (!src.ready) throw invalidState(`${field}: "${srcPath}" is still being created`);
      if (mode.kind === 'create' && mode.source.kind === 'import' && src.format !== mode.source.format) {
        throw invalid(`source.format is ${mode.source.format} but "${srcPath}" is ${src.format}`);
      }
      srcDatastores.push(src.datastoreId);
      virtual = Math.max(spec.sizeBytes, src.sizeBytes);
      if (mode.kind === 'create' && mode.source.kind === 'template' && mode.source.linked) {
        backing = src.path; // copy-on-write overlay: nothing to copy
      } else {
        actual = src.sizeBytes;
        bytes = src.sizeBytes;
      }
      if (mode.kind === 'copy' && src.format !== 'qcow2') format = src.format as DiskFormat;
    }
    const free = ds.capacity_bytes - this.sim.usedBytes(ds.id);
    if (virtual > free) {
      throw new DriverError(`datastore ${ds.id} has ${free} bytes free, disk ${spec.name} needs ${virtual}`, 'INSUFFICIENT_SPACE', true);
    }
    let throughput = ds.throughput_bytes_per_sec;
    for (const id of srcDatastores) throughput = Math.min(throughput, this.sim.datastoreRow(id)!.throughput_bytes_per_sec);
    if (remote) {
      const peers = this.sim.hostsOf(ds.id).filter((h) => h !== this.hostId);
      if (peers.length === 0) throw invalid(`datastoreId: datastore ${ds.id} is attached to no host`);
      const open = peers.filter((p) => !this.sim.linkCut(this.hostId, p));
      if (open.length === 0) {
        const cut = this.sim.linkCut(this.hostId, peers[0]!)!;
        markFired(this.sim.store, cut.id, nowV);
        fail(new DriverError(`link down between ${this.hostId} and ${peers.join(', ')}`, 'UNREACHABLE'));
      }
      throughput = Math.min(throughput, Math.max(...open.map((p) => this.sim.linkBandwidth(this.hostId, p))));
    }
    // the copy's end is persisted (not awaited in memory): a retry after a crash waits for the same
    // disk, and slow-disk faults injected or cleared meanwhile re-time it from their instant
    const rate = bytes > 0 ? throughput / this.sim.slowFactor([ds.id, ...srcDatastores], this.hostId, nowV) : throughput;
    const durationV = bytes > 0 ? (bytes * 1000) / rate : 0;
    this.sim.store.run(
      `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write,
         start_v, end_v, token, content, host_id, src_datastores, base_rate, rate, ckpt_v, ckpt_bytes)
       VALUES (?, ?, ?, 'disk', ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, 0)`,
      path,
      spec.name,
      ds.id,
      format,
      virtual,
      actual,
      backing,
      wanted,
      bytes,
      nowV,
      nowV + durationV,
      `${process.pid}-${nowV}-${Math.random().toString(36).slice(2)}`,
      this.hostId,
      JSON.stringify(srcDatastores),
      throughput,
      rate,
      nowV,
    );
    return path;
  }

  private sourceFile(path: string): SourceFile | undefined {
    const img = this.sim.store.get<ImageRow>('SELECT * FROM images WHERE path = ?', path);
    if (img) return { path, datastoreId: img.datastore_id, sizeBytes: img.size_bytes, format: img.format, ready: true };
    const d = this.sim.diskRow(path);
    if (d) return { path, datastoreId: d.datastore_id, sizeBytes: d.virtual_size_bytes, format: d.format, ready: d.end_v <= this.sim.virtualNow() };
    return undefined;
  }

  /** Waits (wall sleeps in small steps) until the disk's end time; null if the disk vanished. */
  private async waitDisk(path: string, step: string, opts: LongCallOptions): Promise<DiskInfo | null> {
    for (;;) {
      const row = this.sim.diskRow(path);
      if (!row) return null;
      const nowV = this.sim.virtualNow();
      const total = row.bytes_to_write;
      if (nowV >= row.end_v) {
        opts.onProgress?.({ fraction: 1, doneBytes: total, totalBytes: total });
        return this.diskInfoOf(row, nowV);
      }
      if (opts.signal?.aborted) {
        // the partial disk goes (only while it is still being written: a finished one is kept)
        this.sim.tx((v) => this.sim.store.run('DELETE FROM disks WHERE path = ? AND end_v > ?', path, v));
        const err = new DriverError(`${step} ${path} aborted: ${describeReason(opts.signal.reason)}`, 'HYPERVISOR', true);
        err.name = 'AbortError';
        throw err;
      }
      const doneBytes = Math.floor(this.sim.diskDone(row, nowV));
      opts.onProgress?.({ fraction: total > 0 ? doneBytes / total : 0, doneBytes, totalBytes: total, message: `${step} ${path}` });
      await this.sim.sleep(Math.max(0.01, Math.min(this.sim.pollMs, this.sim.wallFor(row.end_v - nowV))));
    }
  }

  async deleteDisk(path: string): Promise<void> {
    const { datastoreId, file } = parseDiskPath(path);
    const name = file.replace(/\.(qcow2|iso|raw)$/, '');
    this.op(
      'deleteDisk',
      undefined,
      () => {
        const row = this.sim.diskRow(path);
        if (!row) return;
        const users = this.sim.store
          .all<VmRow>("SELECT * FROM vms WHERE state IN ('running', 'paused', 'incoming')")
          .filter((v) => {
            const s = JSON.parse(v.spec) as VmSpec;
            return s.disks.includes(path) || s.seedPath === path || s.isoPath === path;
          });
        if (users.length > 0) {
          throw invalidState(`disk ${path} is in use by ${users.map((u) => `${u.vm_id} (${u.state} on ${u.host_id})`).join(', ')}`);
        }
        const children = this.sim.store.all<{ path: string }>('SELECT path FROM disks WHERE backing_path = ?', path);
        if (children.length > 0) throw invalidState(`disk ${path} backs linked clones: ${children.map((c) => c.path).join(', ')}`);
        void datastoreId;
        this.sim.store.run('DELETE FROM disks WHERE path = ?', path);
      },
      name,
    );
  }

  async diskInfo(path: string): Promise<DiskInfo | null> {
    nonEmptyString('path', path);
    return this.op('diskInfo', undefined, (nowV) => {
      const row = this.sim.diskRow(path);
      if (row) return this.diskInfoOf(row, nowV);
      const img = this.sim.store.get<ImageRow>('SELECT * FROM images WHERE path = ?', path);
      if (!img) return null;
      return {
        name: img.path.split('/').pop()!.replace(/\.[a-z0-9]+$/, ''),
        datastoreId: img.datastore_id,
        path: img.path,
        format: img.format as DiskFormat,
        virtualSizeBytes: img.size_bytes,
        actualSizeBytes: img.size_bytes,
      };
    });
  }

  async writeSeed(vmId: string, datastoreId: string, seed: CloudInitSeed): Promise<{ path: string }> {
    safeName('vmId', vmId);
    safeName('datastoreId', datastoreId);
    validateSeed(seed);
    return this.op('writeSeed', vmId, (nowV) => {
      const ds = this.sim.datastoreRow(datastoreId);
      if (!ds) throw notFound(`datastoreId: datastore "${datastoreId}" is not in the simulator`);
      if (!this.sim.attached(ds.id, this.hostId)) throw invalid(`datastoreId: datastore ${ds.id} is not attached to host ${this.hostId}`);
      const path = diskPath(ds.id, `${vmId}-seed.iso`);
      const content = stableJson(seed);
      const size = Buffer.byteLength(content);
      const existing = this.sim.diskRow(path);
      if (existing) {
        if (existing.content !== content) {
          this.sim.store.run('UPDATE disks SET content = ?, actual_size_bytes = ?, virtual_size_bytes = ? WHERE path = ?', content, size, size, path);
        }
        return { path };
      }
      const free = ds.capacity_bytes - this.sim.usedBytes(ds.id);
      if (size > free) throw new DriverError(`datastore ${ds.id} has ${free} bytes free, seed needs ${size}`, 'INSUFFICIENT_SPACE', true);
      this.sim.store.run(
        `INSERT INTO disks (path, name, datastore_id, kind, format, virtual_size_bytes, actual_size_bytes, backing_path, spec, bytes_to_write, start_v, end_v, token, content)
         VALUES (?, ?, ?, 'seed', 'raw', ?, ?, NULL, ?, 0, ?, ?, ?, ?)`,
        path,
        `${vmId}-seed`,
        ds.id,
        size,
        size,
        stableJson({ seedFor: vmId }),
        nowV,
        nowV,
        `seed-${vmId}`,
        content,
      );
      return { path };
    });
  }

  // ------------------------------------------------------------------ VM lifecycle

  async defineVm(spec: VmSpec): Promise<VmRuntime> {
    validateVmSpec(spec);
    return this.op('defineVm', spec.vmId, (nowV) => {
      this.checkHostFits(spec);
      const row = this.sim.vmRow(this.hostId, spec.vmId);
      const json = stableJson(spec);
      if (row) {
        if (row.spec === json) return toRuntime(row);
        if (!['defined', 'stopped', 'crashed'].includes(row.state)) {
          throw invalidState(`vm ${spec.vmId} is ${row.state} on ${this.hostId} with a different spec; stop it before redefining`, true);
        }
        this.sim.store.run('UPDATE vms SET spec = ?, updated_v = ? WHERE host_id = ? AND vm_id = ?', json, nowV, this.hostId, spec.vmId);
      } else {
        this.sim.store.run(
          'INSERT INTO vms (host_id, vm_id, state, spec, generation, updated_v) VALUES (?, ?, ?, ?, 0, ?)',
          this.hostId,
          spec.vmId,
          'defined',
          json,
          nowV,
        );
      }
      return toRuntime(this.sim.vmRow(this.hostId, spec.vmId)!);
    });
  }

  async startVm(vmId: string): Promise<VmRuntime> {
    safeName('vmId', vmId);
    return this.op('startVm', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      switch (row.state) {
        case 'running':
          return toRuntime(row);
        case 'defined':
        case 'stopped':
        case 'crashed': {
          const spec = JSON.parse(row.spec) as VmSpec;
          this.checkFilesPresent(spec, nowV);
          this.sim.store.run(
            "UPDATE vms SET state = 'running', generation = generation + 1, updated_v = ? WHERE host_id = ? AND vm_id = ?",
            nowV,
            this.hostId,
            vmId,
          );
          return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
        }
        case 'paused':
          throw invalidState(`vm ${vmId} is paused on ${this.hostId}; resumeVm resumes it`);
        case 'incoming':
          throw invalidState(`vm ${vmId} on ${this.hostId} is waiting for an incoming migration; activateIncoming resumes it`, true);
        case 'postmigrate':
          throw invalidState(`vm ${vmId} on ${this.hostId} is postmigrate (it migrated away); starting it would run the guest twice`, true);
        default:
          throw invalidState(`vm ${vmId} on ${this.hostId} is ${row.state}`, true);
      }
    });
  }

  async stopVm(vmId: string, opts: { timeoutMs: number; force: boolean }): Promise<VmRuntime> {
    safeName('vmId', vmId);
    nonNegativeNumber('timeoutMs', opts?.timeoutMs);
    if (typeof opts.force !== 'boolean') throw invalid('force must be a boolean');
    return this.op('stopVm', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      if (row.state === 'running' || row.state === 'paused') {
        this.refuseWhileMigrating(vmId, 'stop');
        this.sim.setVmState(this.hostId, vmId, 'stopped', nowV);
        return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
      }
      if (row.state === 'incoming') throw invalidState(`vm ${vmId} on ${this.hostId} is an incoming migration container; destroyVm removes it`, true);
      return toRuntime(row); // defined, stopped, crashed, postmigrate: nothing runs
    });
  }

  async rebootVm(vmId: string): Promise<VmRuntime> {
    safeName('vmId', vmId);
    return this.op('rebootVm', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      if (row.state !== 'running') throw invalidState(`vm ${vmId} on ${this.hostId} is ${row.state}; only a running vm reboots`, row.state !== 'paused');
      this.refuseWhileMigrating(vmId, 'reboot');
      this.sim.store.run('UPDATE vms SET generation = generation + 1, updated_v = ? WHERE host_id = ? AND vm_id = ?', nowV, this.hostId, vmId);
      return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
    });
  }

  async pauseVm(vmId: string): Promise<VmRuntime> {
    safeName('vmId', vmId);
    return this.op('pauseVm', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      if (row.state === 'paused') return toRuntime(row);
      if (row.state !== 'running') throw invalidState(`vm ${vmId} on ${this.hostId} is ${row.state}; only a running vm pauses`, true);
      this.sim.setVmState(this.hostId, vmId, 'paused', nowV);
      return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
    });
  }

  async resumeVm(vmId: string): Promise<VmRuntime> {
    safeName('vmId', vmId);
    return this.op('resumeVm', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      if (row.state === 'running') return toRuntime(row);
      if (row.state === 'postmigrate') {
        // QEMU lets `cont` resume a postmigrate source; the workflow does it only when it knows the
        // commit did not happen (B's copy is then paused, never activated). The simulator refuses
        // when the guest already runs elsewhere: that resume would run it twice.
        const elsewhere = this.sim.store.all<{ host_id: string }>(
          "SELECT host_id FROM vms WHERE vm_id = ? AND host_id != ? AND state = 'running'",
          vmId,
          this.hostId,
        );
        if (elsewhere.length > 0) {
          throw invalidState(
            `vm ${vmId} on ${this.hostId} is postmigrate and the guest runs on ${elsewhere.map((e) => e.host_id).join(', ')}; resuming it would run the guest twice`,
            true,
          );
        }
        this.sim.setVmState(this.hostId, vmId, 'running', nowV);
        return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
      }
      if (row.state !== 'paused') throw invalidState(`vm ${vmId} on ${this.hostId} is ${row.state}; only a paused vm resumes`, true);
      const m = this.openMigrationFrom(vmId);
      if (m) {
        const status = this.sim.evaluate(m, nowV).status;
        if (status === 'pre-switchover' || status === 'device') {
          throw invalidState(`vm ${vmId} is paused by its migration to ${m.target_host} (${status}); cancelMigration or continueSwitchover`);
        }
      }
      this.sim.setVmState(this.hostId, vmId, 'running', nowV);
      return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
    });
  }

  async destroyVm(vmId: string): Promise<void> {
    safeName('vmId', vmId);
    this.op('destroyVm', vmId, (nowV) => {
      if (!this.sim.vmRow(this.hostId, vmId)) return;
      for (const m of this.sim.openMigrations().filter((x) => x.vm_id === vmId)) {
        if (m.source_host === this.hostId) this.sim.abortMigration(m, nowV, 'failed', `source vm destroyed on ${this.hostId}`);
        else if (m.target_host === this.hostId) this.sim.abortMigration(m, nowV, 'failed', `destination vm destroyed on ${this.hostId}`);
      }
      this.sim.store.run('DELETE FROM vms WHERE host_id = ? AND vm_id = ?', this.hostId, vmId);
    });
  }

  async vmStatus(vmId: string): Promise<VmRuntime | null> {
    safeName('vmId', vmId);
    return this.op('vmStatus', vmId, () => {
      const row = this.sim.vmRow(this.hostId, vmId);
      return row ? toRuntime(row) : null;
    });
  }

  async listVms(): Promise<VmRuntime[]> {
    return this.op('listVms', undefined, () =>
      this.sim.store.all<VmRow>('SELECT * FROM vms WHERE host_id = ? ORDER BY vm_id', this.hostId).map(toRuntime),
    );
  }

  // ------------------------------------------------------------------ migration: destination

  async prepareIncoming(spec: VmSpec): Promise<{ uri: string }> {
    validateVmSpec(spec);
    return this.op('prepareIncoming', spec.vmId, (nowV) => {
      const uri = `sim://${this.hostId}/${spec.vmId}`;
      const row = this.sim.vmRow(this.hostId, spec.vmId);
      if (row?.state === 'incoming') return { uri };
      const stage1 = this.sim.findStageFault('fail-stage', 1, [this.hostId], spec.vmId);
      if (stage1) {
        consume(this.sim.store, stage1, nowV);
        fail(new DriverError(`injected fault ${stage1.id}: stage 1 (prepareIncoming) failed on ${this.hostId}`, 'FAULT_INJECTED'));
      }
      const crash = this.sim.findStageFault('destination-crash', 1, [this.hostId], spec.vmId);
      if (crash) {
        consume(this.sim.store, crash, nowV);
        fail(new DriverError(`destination crashed: host ${this.hostId} is unreachable (fault ${crash.id})`, 'UNREACHABLE'));
      }
      if (row) throw invalidState(`vm ${spec.vmId} already exists on ${this.hostId} (${row.state}); cannot receive it`, true);
      this.checkHostFits(spec);
      this.sim.store.run(
        'INSERT INTO vms (host_id, vm_id, state, spec, generation, updated_v) VALUES (?, ?, ?, ?, 0, ?)',
        this.hostId,
        spec.vmId,
        'incoming',
        stableJson(spec),
        nowV,
      );
      return { uri };
    });
  }

  async activateIncoming(vmId: string): Promise<VmRuntime> {
    safeName('vmId', vmId);
    return this.op('activateIncoming', vmId, (nowV) => {
      const row = this.requireVm(vmId);
      if (row.state === 'running') return toRuntime(row);
      if (row.state === 'incoming') {
        const inFlight = this.sim.openMigrations().some((m) => m.vm_id === vmId && m.target_host === this.hostId);
        throw invalidState(`vm ${vmId} on ${this.hostId} is still incoming: no migrated state has arrived`, !inFlight);
      }
      if (row.state !== 'paused') throw invalidState(`vm ${vmId} on ${this.hostId} is ${row.state}; cannot activate`, true);
      const stage5 = this.sim.findStageFault('fail-stage', 5, [this.hostId], vmId);
      if (stage5) {
        consume(this.sim.store, stage5, nowV);
        fail(new DriverError(`injected fault ${stage5.id}: stage 5 (activation) failed on ${this.hostId}`, 'FAULT_INJECTED'));
      }
      const crash = this.sim.findStageFault('destination-crash', 5, [this.hostId], vmId);
      if (crash) {
        consume(this.sim.store, crash, nowV);
        this.sim.setVmState(this.hostId, vmId, 'crashed', nowV);
        fail(new DriverError(`destination crashed: host ${this.hostId} lost vm ${vmId} during activation (fault ${crash.id})`, 'UNREACHABLE'));
      }
      this.sim.setVmState(this.hostId, vmId, 'running', nowV);
      return toRuntime(this.sim.vmRow(this.hostId, vmId)!);
    });
  }

  // ------------------------------------------------------------------ migration: source

  async startMigration(vmId: string, opts: StartMigrationOptions): Promise<void> {
    safeName('vmId', vmId);
    if (!opts || typeof opts.uri !== 'string') throw invalid('uri must be the string returned by prepareIncoming');
    const m = URI.exec(opts.uri);
    if (!m) throw invalid(`uri "${opts.uri}" is not a simulator migration uri (sim://<hostId>/<vmId>)`);
    const [, target, uriVm] = m as unknown as [string, string, string];
    if (uriVm !== vmId) throw invalid(`uri "${opts.uri}" is for vm ${uriVm}, not ${vmId}`);
    if (target === this.hostId) throw invalid(`uri "${opts.uri}" points at the source host itself`);
    validateParams(opts);
    if (opts.copyDisks !== undefined && typeof opts.copyDisks !== 'boolean') throw invalid('copyDisks must be a boolean');
    this.op('startMigration', vmId, (nowV) => {
      this.sim.requireHost(target);
      const src = this.requireVm(vmId);
      const open = this.sim.openMigrations().find((x) => x.vm_id === vmId);
      if (open) {
        if (open.source_host === this.hostId && open.target_host === target) return; // retry of the same start
        throw invalidState(`vm ${vmId} is already migrating from ${open.source_host} to ${open.target_host}`, true);
      }
      if (src.state !== 'running' && src.state !== 'paused') {
        throw invalidState(`vm ${vmId} on ${this.hostId} is ${src.state}; only a running or paused vm migrates live`, true);
      }
      const dst = this.sim.vmRow(target, vmId);
      if (!dst || dst.state !== 'incoming') {
        throw invalidState(`destination ${target} is not waiting for vm ${vmId} (${dst ? dst.state : 'absent'}); call prepareIncoming there first`, true);
      }
      const cut = this.sim.linkCut(this.hostId, target);
      if (cut) {
        markFired(this.sim.store, cut.id, nowV);
        fail(new DriverError(`link down between ${this.hostId} and ${target} (fault ${cut.id})`, 'UNREACHABLE'));
      }
      const spec = JSON.parse(src.spec) as VmSpec;
      const targetHost = this.sim.requireHost(target);
      const offered = new Set(JSON.parse(targetHost.cpu_features) as string[]);
      const missing = spec.cpuFeatures.filter((f) => !offered.has(f));
      if (missing.length > 0) throw invalid(`host ${target} lacks CPU features the guest uses: ${missing.join(', ')}`);

      const plan = this.diskPlan(spec, target, opts.copyDisks === true);
      const diskBytes = plan.reduce((s, p) => s + this.sim.diskRow(p.sourcePath)!.virtual_size_bytes, 0);
      const workload = spec.workload ?? { dirtyRateBytesPerSec: 0, writableWorkingSetBytes: spec.memoryBytes };
      const bound: Record<string, string> = {};
      let failRound1: string | null = null;
      let failPause: string | null = null;
      let failContinue: string | null = null;
      const stage2 = this.sim.findStageFault('fail-stage', 2, [this.hostId, target], vmId);
      if (stage2) {
        consume(this.sim.store, stage2, nowV, false);
        failRound1 = `injected fault ${stage2.id}: migration failed during pre-copy (stage 2)`;
        bound.round1 = stage2.id;
      }
      const crash2 = this.sim.findStageFault('destination-crash', 2, [target], vmId);
      if (crash2 && !failRound1) {
        consume(this.sim.store, crash2, nowV, false);
        failRound1 = 'destination crashed';
        bound.round1 = crash2.id;
      }
      const crash3 = this.sim.findStageFault('destination-crash', 3, [target], vmId);
      if (crash3) {
        consume(this.sim.store, crash3, nowV, false);
        failPause = 'destination crashed';
        bound.pause = crash3.id;
      }
      const stage3 = this.sim.findStageFault('fail-stage', 3, [this.hostId, target], vmId);
      if (stage3) {
        consume(this.sim.store, stage3, nowV, false);
        failContinue = `injected fault ${stage3.id}: stop-and-copy failed (stage 3)`;
        bound.continue = stage3.id;
      }
      const info = this.sim.store.db
        .prepare(
          `INSERT INTO migrations (vm_id, source_host, target_host, uri, start_v, memory_bytes, link_bw, dirty_rate, wws, device_bytes,
             source_prev_state, disk_bytes, disk_plan, fail_round1, fail_pause, fail_continue, bound_faults)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          vmId,
          this.hostId,
          target,
          opts.uri,
          nowV,
          spec.memoryBytes,
          this.sim.linkBandwidth(this.hostId, target),
          workload.dirtyRateBytesPerSec,
          workload.writableWorkingSetBytes,
          DEFAULT_DEVICE_STATE_BYTES,
          src.state,
          diskBytes,
          JSON.stringify(plan),
          failRound1,
          failPause,
          failContinue,
          JSON.stringify(bound),
        );
      const id = Number(info.lastInsertRowid);
      this.sim.addSegment(id, nowV, pickParams(opts));
      const override = liveFaults(this.sim.store, 'dirty-rate').find((f) => f.vm_id === vmId);
      if (override) {
        this.sim.addSegment(id, nowV, { dirtyRateBytesPerSec: override.value ?? 0 });
        markFired(this.sim.store, override.id, nowV);
      }
    });
  }

  /** Disks the destination cannot reach: refused without copyDisks, else planned onto its local (then roomiest) datastore. */
  private diskPlan(spec: VmSpec, target: string, copyDisks: boolean): DiskCopyPlan[] {
    const files = [...spec.disks, ...(spec.seedPath ? [spec.seedPath] : [])];
    const unreachable = files.filter((p) => {
      const d = this.sim.diskRow(p);
      const img = d ? undefined : this.sim.store.get<ImageRow>('SELECT * FROM images WHERE path = ?', p);
      const ds = d?.datastore_id ?? img?.datastore_id;
      return ds !== undefined && !this.sim.attached(ds, target);
    });
    if (unreachable.length === 0) return [];
    if (!copyDisks) {
      throw invalidState(`host ${target} cannot reach ${unreachable.join(', ')}; migrate with copyDisks (no shared storage)`, true);
    }
    const candidates = this.sim
      .datastoresOf(target)
      .map((d) => ({ d, free: d.capacity_bytes - this.sim.usedBytes(d.id) }))
      // the host's own (unshared) datastores first, then the roomiest
      .sort((a, b) => a.d.shared - b.d.shared || b.free - a.free || (a.d.id < b.d.id ? -1 : 1));
    const need = unreachable.reduce((s, p) => s + (this.sim.diskRow(p)?.virtual_size_bytes ?? 0), 0);
    const dest = candidates[0];
    if (!dest || dest.free < need) {
      throw new DriverError(`host ${target} has no datastore with ${need} bytes free for the copied disks`, 'INSUFFICIENT_SPACE', true);
    }
    return unreachable
      .filter((p) => this.sim.diskRow(p))
      .map((p) => {
        const file = parseDiskPath(p).file;
        return { sourcePath: p, targetPath: diskPath(dest.d.id, file), targetDatastoreId: dest.d.id, name: this.sim.diskRow(p)!.name };
      });
  }

  async migrationStatus(vmId: string): Promise<MigrationStats> {
    safeName('vmId', vmId);
    return this.op('migrationStatus', vmId, (nowV) => {
      const m = this.sim.latestMigration(vmId, this.hostId);
      if (!m) {
        return {
          status: 'none',
          round: 0,
          transferredBytes: 0,
          remainingBytes: 0,
          totalBytes: 0,
          dirtyRateBytesPerSec: 0,
          transferRateBytesPerSec: 0,
          expectedDowntimeMs: 0,
          throttlePct: 0,
        };
      }
      return this.sim.evaluate(m, nowV).stats;
    });
  }

  async setMigrationParams(vmId: string, params: MigrationParams): Promise<void> {
    safeName('vmId', vmId);
    validateParams(params);
    this.op('setMigrationParams', vmId, (nowV) => {
      const m = this.openMigrationFrom(vmId);
      if (!m) throw invalidState(`vm ${vmId} has no migration in progress from ${this.hostId}`, true);
      // a new segment: takes effect at the next round boundary (status stays a function of rows + now)
      this.sim.addSegment(m.id, nowV, pickParams(params));
      this.sim.settle(nowV);
    });
  }

  async continueSwitchover(vmId: string): Promise<void> {
    safeName('vmId', vmId);
    this.op('continueSwitchover', vmId, (nowV) => {
      const m = this.sim.store.get<MigrationRow>(
        'SELECT * FROM migrations WHERE vm_id = ? AND source_host = ? ORDER BY id DESC LIMIT 1',
        vmId,
        this.hostId,
      );
      if (!m) throw invalidState(`vm ${vmId} has no migration from ${this.hostId}`, true);
      const v = this.sim.evaluate(m, nowV);
      if (v.status === 'completed' || v.status === 'device') return;
      if (v.status === 'failed' || v.status === 'cancelled') {
        throw new DriverError(`migration of ${vmId} to ${m.target_host} ${v.status}: ${v.stats.error ?? ''}`, 'HYPERVISOR', true);
      }
      if (m.continue_at_v === null) {
        let failContinue = m.fail_continue;
        let bound = m.bound_faults;
        if (!failContinue) {
          const stage3 = this.sim.findStageFault('fail-stage', 3, [this.hostId, m.target_host], vmId);
          if (stage3) {
            consume(this.sim.store, stage3, nowV, false);
            failContinue = `injected fault ${stage3.id}: stop-and-copy failed (stage 3)`;
            bound = JSON.stringify({ ...(JSON.parse(bound) as object), continue: stage3.id });
          }
        }
        this.sim.store.run(
          'UPDATE migrations SET continue_at_v = ?, fail_continue = ?, bound_faults = ? WHERE id = ?',
          nowV,
          failContinue,
          bound,
          m.id,
        );
      }
      this.sim.settle(nowV);
    });
  }

  async cancelMigration(vmId: string): Promise<void> {
    safeName('vmId', vmId);
    this.op('cancelMigration', vmId, (nowV) => {
      const m = this.sim.latestMigration(vmId, this.hostId);
      if (!m) return;
      const v = this.sim.evaluate(m, nowV);
      if (v.status === 'completed') {
        throw invalidState(
          `migration of ${vmId} to ${m.target_host} already completed; the source is postmigrate and must not be resumed (the guest would run twice)`,
          true,
        );
      }
      if (!OPEN_STATUSES.has(v.status)) return; // failed or cancelled already: rolled back by settle
      this.sim.abortMigration(m, nowV, 'cancelled', `cancelled on ${this.hostId}`);
    });
  }

  // ------------------------------------------------------------------ helpers

  private diskInfoOf(row: DiskRow, nowV: number): DiskInfo {
    const done = row.end_v <= nowV || row.bytes_to_write === 0 ? 1 : this.sim.diskDone(row, nowV) / row.bytes_to_write;
    return toDiskInfo(row, done);
  }

  private requireVm(vmId: string): VmRow {
    const row = this.sim.vmRow(this.hostId, vmId);
    if (!row) throw notFound(`vm "${vmId}" is not defined on host ${this.hostId}`);
    return row;
  }

  private openMigrationFrom(vmId: string): MigrationRow | undefined {
    return this.sim.openMigrations().find((m) => m.vm_id === vmId && m.source_host === this.hostId);
  }

  private refuseWhileMigrating(vmId: string, what: string): void {
    const m = this.openMigrationFrom(vmId);
    if (m) throw invalidState(`cannot ${what} vm ${vmId}: it is migrating to ${m.target_host}; cancel the migration first`);
  }

  /** CPU features and network the spec needs must be on this host. */
  private checkHostFits(spec: VmSpec): void {
    const h = this.sim.requireHost(this.hostId);
    const offered = new Set(JSON.parse(h.cpu_features) as string[]);
    const missing = spec.cpuFeatures.filter((f) => !offered.has(f));
    if (missing.length > 0) throw invalid(`cpuFeatures: host ${this.hostId} lacks ${missing.join(', ')}`);
    if (spec.network !== undefined && !this.sim.networksOf(this.hostId).includes(spec.network)) {
      throw invalid(`network: host ${this.hostId} has no network "${spec.network}"`);
    }
  }

  /** Every disk, seed and ISO of the spec exists, is complete and is on a datastore of this host. */
  private checkFilesPresent(spec: VmSpec, nowV: number): void {
    const files: [string, string][] = spec.disks.map((p, i) => [`disks[${i}]`, p]);
    if (spec.seedPath) files.push(['seedPath', spec.seedPath]);
    if (spec.isoPath) files.push(['isoPath', spec.isoPath]);
    for (const [field, p] of files) {
      const d: DiskRow | undefined = this.sim.diskRow(p);
      const img = d ? undefined : this.sim.store.get<ImageRow>('SELECT * FROM images WHERE path = ?', p);
      if (!d && !img) throw invalidState(`${field}: "${p}" does not exist; vm ${spec.vmId} cannot start`, true);
      const ds = d?.datastore_id ?? img!.datastore_id;
      if (!this.sim.attached(ds, this.hostId)) throw invalidState(`${field}: "${p}" is on datastore ${ds}, not reachable from ${this.hostId}`, true);
      if (d && d.end_v > nowV) throw invalidState(`${field}: "${p}" is still being created`);
    }
  }
}

// ------------------------------------------------------------------ pure helpers

function toRuntime(row: VmRow): VmRuntime {
  return { vmId: row.vm_id, state: row.state as VmPowerState, spec: JSON.parse(row.spec) as VmSpec };
}

function toDiskInfo(row: DiskRow, done: number): DiskInfo {
  const info: DiskInfo = {
    name: row.name,
    datastoreId: row.datastore_id,
    path: row.path,
    format: row.format as DiskFormat,
    virtualSizeBytes: row.virtual_size_bytes,
    actualSizeBytes: Math.floor(row.actual_size_bytes * done),
  };
  if (row.backing_path) info.backingPath = row.backing_path;
  return info;
}

function describeReason(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}

function pickParams(p: MigrationParams): MigrationParams {
  const out: MigrationParams = {};
  if (p.maxBandwidthBytesPerSec !== undefined) out.maxBandwidthBytesPerSec = p.maxBandwidthBytesPerSec;
  if (p.downtimeLimitMs !== undefined) out.downtimeLimitMs = p.downtimeLimitMs;
  if (p.throttlePct !== undefined) out.throttlePct = p.throttlePct;
  if (p.hold !== undefined) out.hold = p.hold;
  if (p.autoSwitchover !== undefined) out.autoSwitchover = p.autoSwitchover;
  return out;
}

function validateParams(p: MigrationParams): void {
  if (!p || typeof p !== 'object') throw invalid('migration params must be an object');
  if (p.maxBandwidthBytesPerSec !== undefined) positiveNumber('maxBandwidthBytesPerSec', p.maxBandwidthBytesPerSec);
  if (p.downtimeLimitMs !== undefined) nonNegativeNumber('downtimeLimitMs', p.downtimeLimitMs);
  if (p.throttlePct !== undefined && !(Number.isFinite(p.throttlePct) && p.throttlePct >= 0 && p.throttlePct <= 99)) {
    throw invalid(`throttlePct must be a number in 0..99, got ${p.throttlePct}`);
  }
  for (const k of ['hold', 'autoSwitchover'] as const) {
    if (p[k] !== undefined && typeof p[k] !== 'boolean') throw invalid(`${k} must be a boolean`);
  }
}

function validateDiskSpec(spec: DiskSpec, withSource: boolean): void {
  if (!spec || typeof spec !== 'object') throw invalid('disk spec must be an object');
  safeName('name', spec.name);
  safeName('datastoreId', spec.datastoreId);
  nonNegativeInt('sizeBytes', spec.sizeBytes);
  if (!withSource) return;
  const s = spec.source;
  if (!s || typeof s !== 'object') throw invalid('source must be an object with a kind');
  switch (s.kind) {
    case 'blank':
      return;
    case 'template':
      nonEmptyString('source.imagePath', s.imagePath);
      if (typeof s.linked !== 'boolean') throw invalid('source.linked must be a boolean');
      return;
    case 'clone':
      nonEmptyString('source.sourcePath', s.sourcePath);
      return;
    case 'import':
      nonEmptyString('source.sourcePath', s.sourcePath);
      if (!DISK_FORMATS.includes(s.format)) throw invalid(`source.format must be one of ${DISK_FORMATS.join(', ')}, got ${String(s.format)}`);
      return;
    default:
      throw invalid(`source.kind must be blank, template, clone or import, got ${String((s as { kind?: unknown }).kind)}`);
  }
}

function validateSeed(seed: CloudInitSeed): void {
  if (!seed || typeof seed !== 'object') throw invalid('seed must be an object');
  nonEmptyString('seed.instanceId', seed.instanceId);
  nonEmptyString('seed.hostname', seed.hostname);
  if (!Array.isArray(seed.sshAuthorizedKeys) || seed.sshAuthorizedKeys.some((k) => typeof k !== 'string')) {
    throw invalid('seed.sshAuthorizedKeys must be an array of strings');
  }
}

export function validateVmSpec(spec: VmSpec): void {
  if (!spec || typeof spec !== 'object') throw invalid('vm spec must be an object');
  safeName('vmId', spec.vmId);
  nonEmptyString('name', spec.name);
  positiveInt('cpus', spec.cpus);
  positiveInt('memoryBytes', spec.memoryBytes);
  stringArray('disks', spec.disks);
  stringArray('cpuFeatures', spec.cpuFeatures);
  for (const k of ['seedPath', 'isoPath', 'mac'] as const) if (spec[k] !== undefined) nonEmptyString(k, spec[k]);
  if (spec.network !== undefined) safeName('network', spec.network);
  if (spec.workload !== undefined) {
    if (!spec.workload || typeof spec.workload !== 'object') throw invalid('workload must be an object');
    nonNegativeNumber('workload.dirtyRateBytesPerSec', spec.workload.dirtyRateBytesPerSec);
    nonNegativeInt('workload.writableWorkingSetBytes', spec.workload.writableWorkingSetBytes);
  }
}
