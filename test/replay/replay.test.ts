// Replay of committed histories (STYLE.md tier 4): every history in ./histories, recorded by
// ./record.ts from real runs on the simulator, must replay against today's workflow code; and a
// liveMigrate changed without patched() (./incompatible-workflows.ts) must fail replay with a
// DeterminismViolationError, so a failure here is known to mean something. No dev server needed:
// the tests read JSON files.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { WORKFLOWS_PATH } from '../../workers/create-worker.js';
import { historyFromJSON, type History } from './history-json.js';

// replay workers log every state change at INFO; only warnings and errors are worth reading
try {
  Runtime.install({ logger: new DefaultLogger('WARN') });
} catch {
  /* already installed */
}

const HISTORIES_DIR = fileURLToPath(new URL('./histories/', import.meta.url));
const INCOMPATIBLE_PATH = fileURLToPath(new URL('./incompatible-workflows.ts', import.meta.url));

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** What each committed history must be: its workflow, how it ended, activities it must contain. */
const EXPECTED: Record<string, { workflowType: string; ended: 'COMPLETED' | 'FAILED'; activities: string[] }> = {
  'provision-ok': {
    workflowType: 'provisionVm',
    ended: 'COMPLETED',
    activities: ['placeAndReserve', 'createDisk', 'allocateIp', 'writeSeed', 'defineAndStart', 'recordVmRunning'],
  },
  'provision-compensated': {
    workflowType: 'provisionVm',
    ended: 'FAILED',
    // step 3 failed at writeSeed; the saga ran newest first
    activities: ['writeSeed', 'deleteDiskByName', 'releaseIp', 'deleteDiskByName', 'releaseReservation', 'markVmError'],
  },
  'migrate-ok': {
    workflowType: 'liveMigrate',
    ended: 'COMPLETED',
    activities: ['reserveMigrationTarget', 'startPrecopy', 'watchPrecopy', 'setMigrationParams', 'stopAndCopy', 'commitMigration', 'activateOnTarget', 'cleanupSource'],
  },
  'migrate-ok-fewer-tasks': {
    workflowType: 'liveMigrate',
    ended: 'COMPLETED',
    // commitMigration and the other control steps are local activities (markers, not tasks)
    activities: ['vmStatus', 'startDestinationContainer', 'startPrecopy', 'setMigrationParams', 'stopAndCopy', 'confirmDestinationImage', 'activateOnTarget', 'cleanupSource'],
  },
  'migrate-ok-epoch': {
    workflowType: 'liveMigrate',
    ended: 'COMPLETED',
    // as migrate-ok-fewer-tasks, with one patch marker and no upsert of the start's search attributes
    activities: ['vmStatus', 'startDestinationContainer', 'startPrecopy', 'setMigrationParams', 'stopAndCopy', 'confirmDestinationImage', 'activateOnTarget', 'cleanupSource'],
  },
  'migrate-activation-cold-boot': {
    workflowType: 'liveMigrate',
    ended: 'COMPLETED',
    // B's copy lost after the commit: activation failed, A's copy destroyed, the VM booted on B
    activities: ['stopAndCopy', 'confirmDestinationImage', 'activateOnTarget', 'cleanupSource', 'recoverOnTarget'],
  },
  'storage-ok': {
    workflowType: 'storageMigrate',
    ended: 'COMPLETED',
    // recorded before patch 'storage-fewer-tasks': every control step a task of its own
    activities: ['beginOperation', 'planStorageMigration', 'updateOperation', 'vmStatus', 'reserveStorageTarget', 'startDiskMirror', 'watchDiskMirror', 'completeDiskMirror', 'commitStorageMigration', 'deleteDisks', 'finishOperation'],
  },
  'storage-ok-fewer-tasks': {
    workflowType: 'storageMigrate',
    ended: 'COMPLETED',
    // since patch 'storage-fewer-tasks': control steps as local activities, the start watches the first window
    activities: ['vmStatus', 'startDiskMirror', 'completeDiskMirror', 'deleteDisks'],
  },
  'storage-rolled-back-fewer-tasks': {
    workflowType: 'storageMigrate',
    ended: 'FAILED',
    // the pivot failed; the saga ran newest first
    activities: ['startDiskMirror', 'completeDiskMirror', 'cancelDiskMirror', 'releaseReservation', 'restoreVmAfterRollback'],
  },
  // as migrate-ok-epoch; the control steps folded into fewer local activities (markers)
  'migrate-ok-folded': { workflowType: 'liveMigrate', ended: 'COMPLETED', activities: ['vmStatus', 'startDestinationContainer', 'startPrecopy', 'stopAndCopy', 'confirmDestinationImage', 'activateOnTarget', 'cleanupSource'] },
  'migrate-long-windows': {
    workflowType: 'liveMigrate',
    ended: 'COMPLETED',
    // a long watch window interrupted (its activity cancelled) by the parameter change applied next
    activities: ['startPrecopy', 'watchPrecopy', 'setMigrationParams', 'stopAndCopy', 'activateOnTarget'],
  },
  'migrate-rolled-back-folded': {
    workflowType: 'liveMigrate',
    ended: 'FAILED',
    activities: ['startPrecopy', 'rollbackSource', 'destroyDestinationContainer', 'releaseReservation', 'restoreVmAfterRollback'],
  },
  'migrate-rolled-back': {
    workflowType: 'liveMigrate',
    ended: 'FAILED',
    activities: ['startPrecopy', 'watchPrecopy', 'rollbackSource', 'destroyDestinationContainer', 'releaseReservation', 'restoreVmAfterRollback'],
  },
  'cold-ok': {
    workflowType: 'coldMigrate',
    ended: 'COMPLETED',
    // recorded before patch 'cold-fewer-tasks': every step a task of its own
    activities: ['planColdMigration', 'reserveColdTarget', 'stopVm', 'describeVmHome', 'copyVmHome', 'registerColdCopy', 'commitColdMigration', 'deleteSourceHome', 'startVm', 'recordColdMigrated'],
  },
  'cold-rolled-back': {
    workflowType: 'coldMigrate',
    ended: 'FAILED',
    // the copy failed; the saga ran newest first
    activities: ['stopVm', 'describeVmHome', 'copyVmHome', 'discardColdCopy', 'startVm', 'releaseReservation', 'restoreVmAfterRollback'],
  },
  'cold-ok-fewer-tasks': {
    workflowType: 'coldMigrate',
    ended: 'COMPLETED',
    // since patch 'cold-fewer-tasks': the control steps are local activities (markers)
    activities: ['vmStatus', 'stopAndDescribeVmHome', 'copyVmHome', 'deleteSourceHome', 'startVm'],
  },
  'cold-rolled-back-fewer-tasks': {
    workflowType: 'coldMigrate',
    ended: 'FAILED',
    activities: ['stopAndDescribeVmHome', 'copyVmHome', 'discardColdCopy', 'startVm', 'releaseReservation', 'restoreVmAfterRollback'],
  },
  'lifecycle-stop': {
    workflowType: 'vmLifecycle',
    ended: 'COMPLETED',
    activities: ['getVmForLifecycle', 'stopVm', 'recordLifecycle'],
  },
};

function load(name: string): History {
  return historyFromJSON(JSON.parse(readFileSync(join(HISTORIES_DIR, `${name}.json`), 'utf8')));
}

/** Raw JSON view (event types as names), for checking what a committed history contains. */
function summary(name: string) {
  const events = (JSON.parse(readFileSync(join(HISTORIES_DIR, `${name}.json`), 'utf8')) as { events: Array<Record<string, any>> }).events;
  return {
    workflowType: events[0].workflowExecutionStartedEventAttributes?.workflowType?.name as string,
    last: String(events.at(-1)!.eventType).replace('EVENT_TYPE_WORKFLOW_EXECUTION_', ''),
    activities: events.filter((e) => e.activityTaskScheduledEventAttributes).map((e) => e.activityTaskScheduledEventAttributes.activityType.name as string),
  };
}

/** `sub` appears in `seq` in order (not necessarily adjacent). */
function inOrder(seq: string[], sub: string[]): boolean {
  let i = 0;
  for (const s of seq) if (s === sub[i]) i++;
  return i === sub.length;
}

describe('committed histories', () => {
  test('are exactly the recorded scenarios, each a finished run of the expected workflow', () => {
    const files = readdirSync(HISTORIES_DIR).filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, '')).sort();
    assert.deepEqual(files, Object.keys(EXPECTED).sort());
    for (const [name, want] of Object.entries(EXPECTED)) {
      const s = summary(name);
      assert.equal(s.workflowType, want.workflowType, name);
      assert.equal(s.last, want.ended, name);
      assert.ok(inOrder(s.activities, want.activities), `${name}: expected ${want.activities.join(' > ')} in order, got ${s.activities.join(', ')}`);
    }
  });
});

describe('replay', () => {
  let current: WorkflowBundle;
  let incompatible: WorkflowBundle;
  before(async () => {
    // bundled once each (webpack takes seconds); the same entry point the control worker uses
    current = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quiet });
    incompatible = await bundleWorkflowCode({ workflowsPath: INCOMPATIBLE_PATH, logger: quiet });
  });

  for (const name of Object.keys(EXPECTED)) {
    test(`${name} replays against the current workflows`, async () => {
      await Worker.runReplayHistory({ workflowBundle: current, replayName: `replay-${name}` }, load(name), name);
    });
  }

  test('all histories replay in one batch (runReplayHistories): no errors', async () => {
    const results = [];
    for await (const r of Worker.runReplayHistories({ workflowBundle: current }, Object.keys(EXPECTED).map((name) => ({ workflowId: name, history: load(name) })))) {
      results.push(r);
    }
    assert.equal(results.length, Object.keys(EXPECTED).length);
    for (const r of results) assert.equal(r.error, undefined, `${r.workflowId}: ${r.error?.message}`);
  });

  for (const name of ['migrate-ok', 'migrate-rolled-back']) {
    test(`${name} against a liveMigrate with an extra activity before stage 1 fails with DeterminismViolationError`, async () => {
      await assert.rejects(
        Worker.runReplayHistory({ workflowBundle: incompatible, replayName: `incompatible-${name}` }, load(name), name),
        (err: unknown) => {
          assert.ok(err instanceof DeterminismViolationError, `expected DeterminismViolationError, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
          // the first command that differs: the real workflow's first search-attribute upsert
          // meets the inserted activity
          assert.match(err.message, /nondeterminism.*UpsertWorkflowSearchAttributes/i);
          return true;
        },
      );
    });
  }
});
