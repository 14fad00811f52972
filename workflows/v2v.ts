// V2V (issue 11, "other platforms"): three short workflows around the host activities of
// activities/v2v.ts.
//   inspectVmPackage  open and check a package on the host that will run the VM (the API runs it
//                     to completion before any VM row exists: a refused package leaves nothing)
//   importVm          ProvisionVm's own import method as a child (select, load software from the
//                     staged disk, customize, start), optionally stopped after; the staged
//                     package is discarded however it ends
//   exportVm          a stopped VM's disk to OVA / raw / qcow2 / vhdx on its host
import { CancellationScope, executeChild, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { ExportInput, ExportResult, OpenedPackage, OpenPackageInput, V2vActivities } from '../activities/v2v.js';
import { hostQueue, prefixOfControlQueue, workflowIds, type ImportVmInput, type ProvisionResult } from './definitions.js';
import { provisionVm } from './provision.js';
import { vmLifecycle } from './lifecycle.js';

const NON_RETRYABLE = ['InvalidArgument', 'NotFound', 'Conflict', 'Refused', 'InvalidState'];

function v2vOn(hostId: string, long: boolean) {
  return proxyActivities<V2vActivities>({
    taskQueue: hostQueue(hostId, prefixOfControlQueue(workflowInfo().taskQueue)),
    // unpacking, hashing and converting a disk: minutes per GiB at worst on a slow datastore;
    // heartbeats every 2 s carry cancellation, 30 s without one is a dead agent (retried)
    startToCloseTimeout: long ? '2 hours' : '1 minute',
    // an agent that is down picks nothing up: fail within a minute (the API answers 503 naming
    // the host) instead of holding the request for the 2 hours a copy may take
    scheduleToStartTimeout: '1 minute',
    heartbeatTimeout: long ? '30 seconds' : undefined,
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: NON_RETRYABLE },
    summary: long ? `V2V on ${hostId}` : `discard staged package on ${hostId}`,
  });
}

export async function inspectVmPackage(input: OpenPackageInput & { hostId: string }): Promise<OpenedPackage> {
  return v2vOn(input.hostId, true).openVmPackage({ stageId: input.stageId, path: input.path });
}

export async function discardVmPackage(input: { hostId: string; stageId: string; importPath?: string }): Promise<void> {
  await v2vOn(input.hostId, false).discardVmPackage({ stageId: input.stageId, ...(input.importPath ? { importPath: input.importPath } : {}) });
}

export async function importVm(input: ImportVmInput): Promise<ProvisionResult> {
  const hostId = input.provision.hostId!;
  try {
    const result = await executeChild(provisionVm, { workflowId: workflowIds.provision(input.provision.name), args: [input.provision] });
    if (!input.start) {
      await executeChild(vmLifecycle, { workflowId: workflowIds.lifecycle(input.provision.vmId, 'stop'), args: [{ vmId: input.provision.vmId, action: 'stop', force: true, timeoutMs: 30_000, ...(input.provision.principal ? { principal: input.provision.principal } : {}) }] });
    }
    return result;
  } finally {
    // the converted disk lives in the datastore now (or provisioning undid it): the package copy
    // is not needed either way
    await CancellationScope.nonCancellable(() => v2vOn(hostId, false).discardVmPackage({ stageId: input.stageId, importPath: input.importPath }));
  }
}

export async function exportVm(input: { hostId: string; export: ExportInput }): Promise<ExportResult> {
  return v2vOn(input.hostId, true).exportVmImage(input.export);
}
