// ferry's workflows on REAL QEMU (TCG) end to end, through the test bodies every real driver runs
// (test/helpers/workflow-suite.ts liveMigrationSuite): provisionVm makes a linked clone of the test
// guest's template and boots it on host qa; liveMigrate moves it to qb while the guest dirties
// memory (its counter continues) and back; cancellation, a killed destination QEMU and a SIGKILLed
// source host agent (qc, a process) roll back or complete with exactly one QEMU left; bad VM names
// are refused. Every test ends with the invariant checker (inventory against the QEMU processes and
// datastore files). The Temporal dev server is the run's (test/helpers/ferry.ts); every QEMU
// started here is killed in `after` (sweep of the root).
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';
import { liveMigrationSuite } from '../helpers/workflow-suite.js';

liveMigrationSuite<QemuFerry>({
  title: 'ferry workflows on real QEMU (TCG)',
  skip: qemuSkipReason,
  hosts: { a: 'qa', b: 'qb', agentHost: 'qc' },
  start: () => startQemuFerry({ hosts: ['qa', 'qb', 'qc'], processAgents: ['qc'] }),
});
