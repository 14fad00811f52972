// Live migration WITHOUT shared storage on real QEMU (TCG), through the test bodies every real
// driver runs (test/helpers/workflow-suite.ts copyDisksSuite): every host has only a local
// datastore, so LiveMigrate copies the disks (destination: empty copies exported over NBD; source:
// blockdev-mirror until in sync, then the memory pre-copy, the mirrors cancelled in sync at
// pre-switchover). The guest's disk gets a pattern written through QEMU before the move; after it
// the destination reads the same pattern through its own QEMU and the guest's counter goes on.
// Faults during the disk mirror and during the memory pre-copy (destination QEMU SIGKILLed) roll
// back: the VM runs on qa on its own disks, qb holds no process and no file of it.
import { qemuSkipReason } from '../helpers/qemu-env.js';
import { startQemuFerry, type QemuFerry } from '../helpers/qemu-ferry.js';
import { copyDisksSuite } from '../helpers/copy-disks-suite.js';

copyDisksSuite<QemuFerry>({
  title: 'live migration without shared storage on real QEMU (copyDisks)',
  skip: qemuSkipReason,
  hosts: { a: 'qa', b: 'qb' },
  start: () => startQemuFerry({ hosts: ['qa', 'qb'], storage: 'local', basePort: 48200 }),
  // the workflow's disk-mirror watcher names the phase
  diskCopyFailure: /disk mirror/i,
});
