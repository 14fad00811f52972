// The chaos campaign's control worker process: the same workflows and activities as ferry's own
// (workers/create-worker.ts), with one difference the campaign can switch on to prove its checker
// fails: FERRY_CHAOS_PLANT=skip-release-reservation replaces the releaseReservation activity with
// one that does nothing (a saga that "forgets" to give capacity back). Nothing shipped reads it.
import { NativeConnection, Worker } from '@temporalio/worker';
import { join } from 'node:path';
import { createDb } from '../../db/orm.js';
import { Simulator } from '../../drivers/sim/index.js';
import { createControlActivities } from '../../activities/control.js';
import { createFleetActivities } from '../../activities/fleet.js';
import { createDriftActivities } from '../../activities/drift.js';
import { createColdControlActivities } from '../../activities/cold-control.js';
import { createStorageControlActivities } from '../../activities/storage-control.js';
import { simFaultHook } from '../../workers/main.js';
import { workflowBundle } from '../../workers/create-worker.js';
import { controlQueue } from '../../workflows/definitions.js';

import { PLANTS } from './control-worker-plants.js';

async function main() {
  const dataDir = process.env.FERRY_DATA_DIR!;
  const timeScale = Number(process.env.FERRY_SIM_TIME_SCALE);
  const db = await createDb({ databaseUrl: process.env.DATABASE_URL!, dataDir });
  // FERRY_DRIVER=qemu (the qemu campaign): no simulator, no fault hook
  const sim = process.env.FERRY_DRIVER === 'qemu' ? undefined : Simulator.open({ path: join(dataDir, 'sim.sqlite'), timeScale });
  const deps = { db, faults: sim ? simFaultHook(sim) : undefined, prediction: sim ? { timeScale } : undefined };
  const activities: Record<string, (...a: any[]) => Promise<unknown>> = {
    ...createControlActivities(deps),
    ...createFleetActivities({ db, prediction: deps.prediction }),
    ...createDriftActivities({ db }),
    ...createColdControlActivities(deps),
    ...createStorageControlActivities({ db }),
  };
  const plant = process.env.FERRY_CHAOS_PLANT;
  if (plant === 'skip-release-reservation') activities.releaseReservation = async () => undefined;
  else if (plant) throw new Error(`FERRY_CHAOS_PLANT: unknown plant ${plant} (expected one of ${PLANTS.join(', ')})`);
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS! });
  const worker = await Worker.create({
    connection,
    namespace: 'default',
    taskQueue: controlQueue(process.env.FERRY_TASK_QUEUE_PREFIX || ''),
    // the harness bundles the workflows once for every restart (webpack takes seconds on 2 cores)
    workflowBundle: process.env.FERRY_CHAOS_BUNDLE ? { codePath: process.env.FERRY_CHAOS_BUNDLE } : await workflowBundle(),
    activities,
    maxConcurrentActivityTaskExecutions: 50,
    stickyQueueScheduleToStartTimeout: '3 seconds',
    maxConcurrentWorkflowTaskExecutions: 50,
  });
  console.log('ferry: chaos control worker running');
  await worker.run();
}

void main().catch((e) => {
  console.error(`chaos control worker: ${e instanceof Error ? e.stack : e}`);
  process.exit(1);
});
