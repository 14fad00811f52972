// The simulator a process opens: the cluster core (cluster.ts) plus the per-host drivers over it.
// The one file that knows both sides, so cluster.ts never imports the driver and driver.ts only
// the core.
import type { HypervisorDriver } from '../hypervisor.js';
import { SimCluster, type SimulatorOptions } from './cluster.js';
import { SimDriver } from './driver.js';
import { safeName } from './validate.js';

export class Simulator extends SimCluster {
  /** Opens (creating when missing) the simulated cluster stored at `path`. */
  static open(opts: SimulatorOptions): Simulator {
    return new Simulator(opts);
  }

  /** A driver bound to one host (the host must exist when its methods are called). */
  forHost(hostId: string): HypervisorDriver {
    safeName('hostId', hostId);
    return new SimDriver(this, hostId);
  }
}
