// One host of the cluster as its driver sees it: every driver call is one SimCluster transaction
// that first checks the host exists and spends a matching fail-step fault (op), plus what the
// disk, VM and migration calls ask of the host itself (hostInfo, does a spec fit, its vm rows).
import type { HostInfo, VmPowerState, VmRuntime, VmSpec } from '../hypervisor.js';
import type { SimFaultStep } from '../../domain/faults.js';
import type { SimCluster } from './cluster.js';
import { spendStepFault } from './faults.js';
import { datastoresOf, freeBytes, networksOf, requireHost, vmRow } from './lookups.js';
import type { Store, VmRow } from './store.js';
import { invalid, notFound, safeName } from './validate.js';

export class SimHost {
  readonly store: Store;

  constructor(
    readonly sim: SimCluster,
    readonly hostId: string,
  ) {
    this.store = sim.store;
  }

  /** One transaction: host exists, fail-step faults, then fn. */
  op<T>(step: SimFaultStep, vmId: string | undefined, fn: (nowV: number) => T, diskName?: string): T {
    return this.sim.tx((nowV) => {
      requireHost(this.store, this.hostId);
      spendStepFault(this.store, step, this.hostId, vmId, nowV, diskName);
      return fn(nowV);
    });
  }

  /** op on one VM of this host: vmId is checked first, then (in the transaction) its row must exist. */
  vmOp<T>(step: SimFaultStep, vmId: string, fn: (row: VmRow, nowV: number) => T): T {
    safeName('vmId', vmId);
    return this.op(step, vmId, (nowV) => fn(this.requireVm(vmId), nowV));
  }

  hostInfo(): HostInfo {
    return this.op('hostInfo', undefined, () => {
      const h = requireHost(this.store, this.hostId);
      return {
        hostId: h.id,
        cpuModel: h.cpu_model,
        cpuFeatures: JSON.parse(h.cpu_features) as string[],
        cpus: h.cpus,
        memoryBytes: h.memory_bytes,
        datastores: datastoresOf(this.store, h.id).map((d) => ({
          id: d.id,
          path: `sim://${d.id}`,
          shared: d.shared === 1,
          capacityBytes: d.capacity_bytes,
          freeBytes: Math.max(0, freeBytes(this.store, d)),
          throughputBytesPerSec: d.throughput_bytes_per_sec,
        })),
        networks: networksOf(this.store, h.id),
        migrationAddress: h.migration_address,
        // the links with a row (pairs without one run at the default 1 GiB/s): fleet plans
        // predict each move's transfer from them
        links: this.store
          .all<{ a: string; b: string; bandwidth_bytes_per_sec: number }>('SELECT a, b, bandwidth_bytes_per_sec FROM links WHERE a = ? OR b = ? ORDER BY a, b', h.id, h.id)
          .map((l) => ({ peerHostId: l.a === h.id ? l.b : l.a, bandwidthBytesPerSec: l.bandwidth_bytes_per_sec })),
      };
    });
  }

  /** CPU features and network the spec needs must be on this host. */
  checkHostFits(spec: VmSpec): void {
    const h = requireHost(this.store, this.hostId);
    const offered = new Set(JSON.parse(h.cpu_features) as string[]);
    const missing = spec.cpuFeatures.filter((f) => !offered.has(f));
    if (missing.length > 0) throw invalid(`cpuFeatures: host ${this.hostId} lacks ${missing.join(', ')}`);
    if (spec.network !== undefined && !networksOf(this.store, this.hostId).includes(spec.network)) {
      throw invalid(`network: host ${this.hostId} has no network "${spec.network}"`);
    }
  }

  vmRow(vmId: string): VmRow | undefined {
    return vmRow(this.store, this.hostId, vmId);
  }

  requireVm(vmId: string): VmRow {
    const row = this.vmRow(vmId);
    if (!row) throw notFound(`vm "${vmId}" is not defined on host ${this.hostId}`);
    return row;
  }

  /** The vm row as the driver returns it (read again: call it after a write). */
  runtime(vmId: string): VmRuntime {
    return toRuntime(this.vmRow(vmId)!);
  }
}

export function toRuntime(row: VmRow): VmRuntime {
  return { vmId: row.vm_id, state: row.state as VmPowerState, spec: JSON.parse(row.spec) as VmSpec };
}
