// The deterministic hypervisor simulator (ARCHITECTURE.md section 2): a whole simulated cluster
// persisted in one SQLite file, and a HypervisorDriver per host over it.
import type { HypervisorDriver } from '../hypervisor.js';
import type { Simulator } from './simulator.js';

export { Simulator } from './simulator.js';
export type { SimulatorOptions } from './cluster.js';
export type { SimHostInput, SimDatastoreInput, SimLinkInput, SimImageInput } from './topology.js';
export type { SimSnapshot, SimVmSnapshot, SimMigrationSnapshot } from './snapshot.js';
export { diskPath, parseDiskPath } from './disks.js';
export { SimDriver } from './driver.js';
export { ManualClock } from './clock.js';
export type { SimFault } from './faults.js';
export { FAULT_KINDS, FAULT_STEPS, type SimFaultInput, type SimFaultKind, type SimFaultStep } from '../../domain/faults.js';
export {
  evaluateMigration,
  DEFAULT_DOWNTIME_LIMIT_MS,
  DEFAULT_LINK_BANDWIDTH_BYTES_PER_SEC,
  type MigrationModelInput,
  type MigrationView,
  type ParamSegment,
} from './model.js';

/** The driver of one simulated host (same as sim.forHost(hostId)). */
export function createSimDriver(sim: Simulator, hostId: string): HypervisorDriver {
  return sim.forHost(hostId);
}
