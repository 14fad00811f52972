// Worker factories: the control worker (all workflows + database activities) and one host agent
// per hypervisor host (task queue ferry-host-<hostId>, driver activities). Composition happens in
// the entrypoints; these only wire what they are given.
import { bundleWorkflowCode, NativeConnection, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import type { HypervisorDriver } from '../drivers/hypervisor.js';
import { createHostActivities } from '../activities/host.js';
import { createControlActivities, type ControlActivityDeps } from '../activities/control.js';
import { createFleetActivities, type FleetPredictionConfig } from '../activities/fleet.js';
import { createDriftActivities } from '../activities/drift.js';
import { createColdHostActivities } from '../activities/cold.js';
import { consoleReaderOf, createConsoleActivities, type ConsoleReader } from '../activities/console.js';
import { createColdControlActivities } from '../activities/cold-control.js';
import { createStorageControlActivities } from '../activities/storage-control.js';
import { createV2vActivities } from '../activities/v2v.js';
import { controlQueue, hostQueue } from '../workflows/definitions.js';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

let bundlePromise: Promise<WorkflowBundleWithSourceMap> | undefined;
/** Bundles the workflows once per process (webpack takes a second or two). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundlePromise ??= bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietBundlerLogger });
  return bundlePromise;
}

const quietBundlerLogger = {
  log() {},
  trace() {},
  debug() {},
  info() {},
  warn(message: string, meta?: Record<string, unknown>) {
    console.warn(message, meta ?? '');
  },
  error(message: string, meta?: Record<string, unknown>) {
    console.error(message, meta ?? '');
  },
};

export interface WorkerBase {
  connection: NativeConnection;
  namespace: string;
  /** task-queue prefix (tests isolate themselves with one) */
  prefix?: string;
}

export type ControlWorkerDeps = ControlActivityDeps & {
  /** how fleet plans predict a move's wall-clock time (the simulator passes its time scale) */
  prediction?: Partial<FleetPredictionConfig>;
};

export async function createControlWorker(opts: WorkerBase & { deps: ControlWorkerDeps }): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: controlQueue(opts.prefix),
    workflowBundle: await workflowBundle(),
    activities: { ...createControlActivities(opts.deps), ...createFleetActivities({ db: opts.deps.db, prediction: opts.deps.prediction }), ...createDriftActivities({ db: opts.deps.db }), ...createColdControlActivities(opts.deps), ...createStorageControlActivities({ db: opts.deps.db }) },
    // Slots: 50 activities and 50 workflow tasks (SDK defaults 100 and 40), chosen from bench 8
    // (closed loops of 10 and 100 live migrations, bench/README.md): the server's rate of history
    // events is the limit there (ferry and a bare worker with the SDK's defaults write the same
    // events/s, and at C = 100 both queue ~5 s for workflow tasks on the server), while ferry's
    // own activity tasks wait under 0.5 s p95, i.e. the worker never holds them back. More slots
    // buy nothing on one server; fewer would queue on the worker. Main-thread work (SQLite is
    // synchronous) is what delays the worker's event loop (p99 0.4-0.7 s), not the slot count.
    maxConcurrentActivityTaskExecutions: 50,
    // after a SIGKILL the server keeps sending a workflow's next task to the dead worker's sticky
    // queue until this expires (SDK default 10 s); 3 s brings recovery down without thrashing
    stickyQueueScheduleToStartTimeout: '3 seconds',
    maxConcurrentWorkflowTaskExecutions: 50,
  });
}

/** `console`: how this host reads VM consoles (default: the driver's own consoleTail, when it has one). */
export async function createHostAgent(opts: WorkerBase & { driver: HypervisorDriver; pollMs?: number; console?: ConsoleReader }): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: hostQueue(opts.driver.hostId, opts.prefix),
    activities: {
      ...createHostActivities({ driver: opts.driver, pollMs: opts.pollMs }),
      ...createColdHostActivities({ driver: opts.driver }),
      ...createConsoleActivities({ hostId: opts.driver.hostId, reader: opts.console ?? consoleReaderOf(opts.driver) }),
      ...createV2vActivities({ hostId: opts.driver.hostId, driver: opts.driver }),
    },
    maxConcurrentActivityTaskExecutions: 40,
    // heartbeats carry cancellation: send them at least every second so a cancelled disk copy
    // or pre-copy watch stops promptly (the default throttle is 80% of the heartbeat timeout)
    maxHeartbeatThrottleInterval: '1 second',
  });
}

/** Runs workers until `stop()`; shutdown drains in-flight tasks (graceful). */
export function runWorkers(workers: Worker[]): { done: Promise<void>; stop: () => Promise<void> } {
  const done = Promise.all(workers.map((w) => w.run())).then(() => undefined);
  return {
    done,
    async stop() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done;
    },
  };
}
