// Regenerates the committed histories in test/replay/histories/ that replay.test.ts replays.
// Runs each scenario on a test ferry (real dev server, fresh database, simulated cluster) and
// saves `handle.fetchHistory()` in the JSON form other Temporal tools use (the SDK's documented
// `historyToJSON` from @temporalio/common/lib/proto-utils, through ./history-json.ts, which works
// around a split protobufjs install; see there).
//
//   node --import tsx test/replay/record.ts            all scenarios
//   node --import tsx test/replay/record.ts migrate-ok just the named ones
//
// Re-record only on purpose: a history recorded by the old code is what proves that a changed
// workflow still replays (or needs `patched()`). Commit the new files with the change that made
// them necessary and say why.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import { controlQueue, migrationStartAttributes, setMigrationParamsUpdate, workflowIds, type ColdMigrateInput, type LifecycleInput, type LiveMigrateInput, type StorageMigrateInput } from '../../workflows/definitions.js';
import { historyToJSON } from './history-json.js';
import { outcome, smallCluster, startTestFerry, stopOwnTemporal, waitFor, type TestFerry } from '../helpers/ferry.js';

export const HISTORIES_DIR = fileURLToPath(new URL('./histories/', import.meta.url));
const MiB = 1024 ** 2;

interface Scenario {
  /** file name (without .json) */
  name: string;
  /** runs the workflow to its end and returns its handle; `ok` is the expected outcome */
  run(f: TestFerry): Promise<WorkflowHandle>;
  ok: boolean;
}

async function provisionRunning(f: TestFerry, name: string, dirtyMiBps = 100): Promise<string> {
  const vmId = `vm-${name}`;
  await f.provisionRunning({ name, vmId, hostId: 'h1', memoryMiB: 1024, workload: { dirtyRateBytesPerSec: dirtyMiBps * MiB, writableWorkingSetBytes: 512 * MiB } });
  return vmId;
}


function coldMigrate(f: TestFerry, input: ColdMigrateInput): Promise<WorkflowHandle> {
  return f.client.workflow.start('coldMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${f.prefix}`, args: [input] });
}

function storageMigrate(f: TestFerry, input: StorageMigrateInput): Promise<WorkflowHandle> {
  return f.client.workflow.start('storageMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(input.vmId)}-${f.prefix}`, args: [input] });
}

/** The dirty-rate run (several windows, throttle decisions), started as the API starts it: with its search attributes. */
async function migrateAsTheApiDoes(f: TestFerry, name: string): Promise<WorkflowHandle> {
  const vmId = await provisionRunning(f, name, 4000);
  const input: LiveMigrateInput = { vmId, targetHostId: 'h2', policy: 'minimal-downtime', overrides: { maxRounds: 8, throttleStepSec: 0.5 } };
  return f.client.workflow.start('liveMigrate', {
    taskQueue: controlQueue(f.prefix),
    workflowId: `${workflowIds.migrate(vmId)}-${f.prefix}`,
    args: [input],
    typedSearchAttributes: migrationStartAttributes({ vmId, kind: 'live', sourceHostId: 'h1', targetHostId: 'h2' }),
  });
}

export const SCENARIOS: Scenario[] = [
  {
    name: 'provision-ok',
    ok: true,
    run: (f) => f.provision({ name: 'rec-web', vmId: 'vm-rec-web', extraVolumesGiB: [1] }),
  },
  {
    name: 'provision-compensated',
    ok: false,
    async run(f) {
      // step 3 fails on every attempt: the saga undoes the seed, the IP, the disk, the reservation
      f.sim.injectFault({ kind: 'fail-step', step: 'writeSeed', vmId: 'vm-rec-fail', count: -1 });
      return f.provision({ name: 'rec-fail', vmId: 'vm-rec-fail' });
    },
  },
  {
    name: 'migrate-ok',
    ok: true,
    // a dirty rate above the link: several pre-copy windows and throttle decisions (auto-converge)
    // land in the history, so the replay exercises the convergence controller too
    run: async (f) =>
      f.migrate({ vmId: await provisionRunning(f, 'rec-mig', 4000), targetHostId: 'h2', policy: 'minimal-downtime', overrides: { maxRounds: 8, throttleStepSec: 0.5 } }),
  },
  {
    name: 'migrate-ok-fewer-tasks',
    ok: true,
    // the same run recorded after patches 'live-control-local' and 'precopy-start-watches': the
    // control steps as local activities, the first pre-copy window watched by startPrecopy
    run: async (f) =>
      f.migrate({ vmId: await provisionRunning(f, 'rec-mig2', 4000), targetHostId: 'h2', policy: 'minimal-downtime', overrides: { maxRounds: 8, throttleStepSec: 0.5 } }),
  },
  {
    name: 'migrate-ok-epoch',
    ok: true,
    // the same run recorded after the patch epoch (workflows/lib/patches.ts: one marker for
    // every earlier patch) and started as the API starts it, with its search attributes, which
    // the workflow then does not upsert again
    run: (f) => migrateAsTheApiDoes(f, 'rec-mig3'),
  },
  {
    name: 'migrate-rolled-back',
    ok: false,
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-rb');
      f.sim.injectFault({ kind: 'fail-stage', stage: 2, vmId });
      return f.migrate({ vmId, targetHostId: 'h2' });
    },
  },
  {
    name: 'migrate-ok-folded',
    ok: true,
    // the epoch's run recorded after patch 'live-folded-steps': begin, slots + reservation and the
    // commit each one local activity with their stage writes
    run: (f) => migrateAsTheApiDoes(f, 'rec-mig4'),
  },
  {
    name: 'migrate-long-windows',
    ok: true,
    // patch 'precopy-long-windows': a quiet pre-copy (1 GiB dirtying nothing over a 1 MiB/s cap,
    // ~10 s at time scale 100) watched in long windows, one of them interrupted by an operator's
    // parameter change, which is applied at once
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-long', 0);
      const h = await f.migrate({ vmId, targetHostId: 'h2', overrides: { maxBandwidthBytesPerSec: MiB } });
      const longWindow = async () => {
        const history = await h.fetchHistory();
        return (history.events ?? []).some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'watchPrecopy');
      };
      await waitFor('a long watch window', longWindow);
      await h.executeUpdate(setMigrationParamsUpdate, { args: [{ maxBandwidthBytesPerSec: 2 * MiB }] });
      return h;
    },
  },
  {
    name: 'migrate-rolled-back-folded',
    ok: false,
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-rb2');
      f.sim.injectFault({ kind: 'fail-stage', stage: 2, vmId });
      return f.migrate({ vmId, targetHostId: 'h2' });
    },
  },
  {
    name: 'cold-ok',
    ok: true,
    // ColdMigrate as it ran before patch 'cold-fewer-tasks' (control steps as remote activities,
    // the source hashed by describeVmHome, stop / register / cleanup / start as separate tasks)
    run: async (f) => coldMigrate(f, { vmId: await provisionRunning(f, 'rec-cold'), targetHostId: 'h2', targetDatastoreId: 'local-h2' }),
  },
  {
    name: 'cold-rolled-back',
    ok: false,
    async run(f) {
      // the seed's copy fails on every attempt after the disk copied: the saga discards the
      // target's copy and restarts the VM on its source
      const vmId = await provisionRunning(f, 'rec-cold-rb');
      f.sim.injectFault({ kind: 'fail-step', step: 'copyDisk', hostId: 'h2', vmId: `${vmId}-seed`, count: -1 });
      return coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h2' });
    },
  },
  {
    name: 'cold-ok-fewer-tasks',
    ok: true,
    // the same run since patch 'cold-fewer-tasks': control steps as local activities, several per
    // call; stop and listing in one task; register done by the last copy window; the source's
    // clean-up and the start on the target at once
    run: async (f) => coldMigrate(f, { vmId: await provisionRunning(f, 'rec-cold2'), targetHostId: 'h2', targetDatastoreId: 'local-h2' }),
  },
  {
    name: 'cold-rolled-back-fewer-tasks',
    ok: false,
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-cold-rb2');
      f.sim.injectFault({ kind: 'fail-step', step: 'copyDisk', hostId: 'h2', vmId: `${vmId}-seed`, count: -1 });
      return coldMigrate(f, { vmId, targetHostId: 'h2', targetDatastoreId: 'local-h2' });
    },
  },
  {
    name: 'migrate-activation-cold-boot',
    ok: true,
    // B's copy crashes during activation, after the commit (patch 'activation-boots-lost-copy'):
    // the source's stale copy is destroyed and the VM boots on B from its disks
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-act-crash');
      f.sim.injectFault({ kind: 'destination-crash', hostId: 'h2', stage: 5, vmId });
      return f.migrate({ vmId, targetHostId: 'h2' });
    },
  },
  {
    name: 'storage-ok',
    ok: true,
    // recorded before patch 'storage-fewer-tasks': every control step a task of its own
    run: async (f) => storageMigrate(f, { vmId: await provisionRunning(f, 'rec-storage'), targetDatastoreId: 'local-h1' }),
  },
  {
    name: 'storage-ok-fewer-tasks',
    ok: true,
    // since patch 'storage-fewer-tasks': the control steps are local activities (markers)
    run: async (f) => storageMigrate(f, { vmId: await provisionRunning(f, 'rec-storage2'), targetDatastoreId: 'local-h1' }),
  },
  {
    name: 'storage-rolled-back-fewer-tasks',
    ok: false,
    async run(f) {
      // the pivot fails on every attempt: the saga cancels the mirror and releases the space
      const vmId = await provisionRunning(f, 'rec-storage-rb');
      f.sim.injectFault({ kind: 'fail-step', step: 'completeDiskMirror', vmId, count: -1 });
      return storageMigrate(f, { vmId, targetDatastoreId: 'local-h1' });
    },
  },
  {
    name: 'lifecycle-stop',
    ok: true,
    async run(f) {
      const vmId = await provisionRunning(f, 'rec-stop');
      const input: LifecycleInput = { vmId, action: 'stop' };
      return f.client.workflow.start('vmLifecycle', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.lifecycle(vmId, 'stop')}-${f.prefix}`, args: [input] });
    },
  },
];

export async function record(names: string[] = []): Promise<string[]> {
  const chosen = names.length ? SCENARIOS.filter((s) => names.includes(s.name)) : SCENARIOS;
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) throw new Error(`unknown scenario(s): ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  mkdirSync(HISTORIES_DIR, { recursive: true });
  const written: string[] = [];
  // one ferry for all: the migration scenarios need room on h2, as in the live-migrate tests
  // (and a local datastore per host, the cold migrations' targets)
  const cluster = smallCluster({ hosts: 3, memoryMiB: 256 * 1024 });
  for (const h of cluster.hosts) cluster.datastores.push({ id: `local-${h.id}`, shared: false, capacityGiB: 500, throughputMiBps: 1000, hostIds: [h.id] });
  const f = await startTestFerry({ cluster, timeScale: 100 });
  try {
    for (const s of chosen) {
      f.sim.clearFaults();
      const handle = await s.run(f);
      const r = await outcome(handle);
      if (r.ok !== s.ok) throw new Error(`${s.name}: expected ${s.ok ? 'success' : 'failure'}, got ${r.ok ? 'success' : `failure: ${r.message}`}`);
      const history = await handle.fetchHistory();
      const file = join(HISTORIES_DIR, `${s.name}.json`);
      // re-indented so a re-recording shows up as a readable diff
      writeFileSync(file, JSON.stringify(JSON.parse(historyToJSON(history)), null, 2) + '\n');
      written.push(file);
      console.log(`${s.name}: ${history.events?.length ?? 0} events -> ${file}`);
    }
  } finally {
    f.sim.clearFaults();
    await f.close();
  }
  return written;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    await record(process.argv.slice(2));
  } finally {
    await stopOwnTemporal();
  }
}
