// Live migration WITHOUT shared storage on real libvirt (TCG): every host has only its local pool,
// so LiveMigrate runs `virsh migrate --copy-storage-all` onto the destination's copies. The same
// test bodies as on the qemu driver (test/helpers/workflow-suite.ts copyDisksSuite): the disk
// content (a pattern written through the guest's disk), the seed and the guest's counter arrive on
// lv2 and lv1 holds nothing; the destination QEMU killed while the disks are copied and during the
// memory pre-copy both roll back with the VM running on lv1 on its own disks and no copy on lv2.
import { ensureLibvirt } from '../../workers/lab/libvirt-lab.js';
import { startLibvirtFerry, type LibvirtFerry } from '../helpers/libvirt-ferry.js';
import { copyDisksSuite } from '../helpers/copy-disks-suite.js';

const avail = await ensureLibvirt();
const skip: string | false = avail.ok ? false : `libvirt cannot be installed here: ${avail.reason}`;
if (skip) console.log(`# SKIP libvirt copy-disks tests: ${skip}`);

copyDisksSuite<LibvirtFerry>({
  title: 'live migration without shared storage on real libvirt (copyDisks: --copy-storage-all)',
  skip,
  hosts: { a: 'lv1', b: 'lv2' },
  // its own lab (prefix, subnet, root): node runs two test files at a time
  start: () => startLibvirtFerry({ hosts: 2, storage: 'local', lab: { prefix: 'ferrylvc', subnet: '10.252.1.0/26', root: '/srv/ferrylvc' } }),
  // the job fails with libvirt's reason, as the memory pre-copy's does
  diskCopyFailure: /pre-copy failed|socket|NBD|mirror|disconnect/i,
});
