// Live storage migration checks (pure): may a VM's disks move to `target`, a datastore of its own
// host? Used by the API (4xx naming targetDatastoreId) and by StorageMigrate's stage 0.

export interface StorageTargetCheck {
  vm: { id: string; hostId: string | null; datastoreId: string | null; diskGiB: number; state: string };
  /** undefined: no such datastore */
  target?: { id: string; hostIds: string[]; freeGiB: number };
}

/** The problem with the target, or null when the move may start. */
export function storageTargetProblem({ vm, target }: StorageTargetCheck): string | null {
  if (!target) return 'unknown datastore';
  if (!vm.hostId) return `vm ${vm.id} has no host`;
  if (vm.datastoreId === target.id) return `vm ${vm.id} is already on datastore ${target.id}`;
  if (!target.hostIds.includes(vm.hostId)) return `datastore ${target.id} is not reachable from host ${vm.hostId}, where vm ${vm.id} runs`;
  if (target.freeGiB < vm.diskGiB) return `datastore ${target.id} has ${target.freeGiB} GiB free, vm ${vm.id} needs ${vm.diskGiB} GiB`;
  return null;
}
