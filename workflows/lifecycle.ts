// VM lifecycle (start, stop, reboot, delete) and CreateTemplateFromVm: each keeps inventory and
// hypervisor agreeing. Deleting releases disk, IP and capacity, in that order, each idempotent.
import { ApplicationFailure, setHandler, defineQuery, upsertSearchAttributes } from '@temporalio/workflow';
import { isPatched } from './lib/patches.js';
import { SA, type CreateTemplateInput, type LifecycleInput } from './definitions.js';
import { bootProfile, diskProfile, hostQuickProfile } from './profiles.js';
import { workflowContext } from './context.js';
import { activitySummary } from '../domain/summaries.js';
import type { ControlActivities } from '../activities/control.js';
import { describeFailure } from '../domain/failures.js';

const lifecycleProgressQuery = defineQuery<{ action: string; state: string; error?: string }>('progress');
const GiB = 1024 ** 3;

export async function vmLifecycle(input: LifecycleInput): Promise<{ vmId: string; state: string }> {
  const { info, ctl, onHost } = workflowContext((where, type) => activitySummary(`${input.action} ${input.vmId}`, where, type));
  const progress = { action: input.action, state: 'running' as string, error: undefined as string | undefined };
  setHandler(lifecycleProgressQuery, () => progress);
  upsertSearchAttributes([
    { key: SA.VmId, value: input.vmId },
    { key: SA.Stage, value: input.action },
  ]);
  const operationId = info.runId;
  await ctl.beginOperation({ id: operationId, workflowId: info.workflowId, runId: info.runId, kind: 'lifecycle', subkind: input.action, vmId: input.vmId, ...(input.principal ? { principal: input.principal } : {}) });
  try {
    const vm = await ctl.getVmForLifecycle({ vmId: input.vmId, action: input.action });
    const timeoutMs = input.timeoutMs ?? 60_000;
    let state = vm.state;
    if (vm.hostId) {
      const agent = onHost(vm.hostId, hostQuickProfile);
      const boot = onHost(vm.hostId, bootProfile);
      switch (input.action) {
        case 'start':
          await boot.startVm({ vmId: input.vmId, timeoutMs });
          state = 'running';
          break;
        case 'stop':
          await agent.stopVm({ vmId: input.vmId, timeoutMs, force: input.force ?? false });
          state = 'stopped';
          break;
        case 'reboot':
          await boot.rebootVm({ vmId: input.vmId, timeoutMs });
          state = 'running';
          break;
        case 'delete': {
          // stopVm with force: a graceful shutdown within timeoutMs, then powered off; with
          // input.force we skip straight to destroyVm, which forces off and undefines (idempotent)
          if (!input.force && vm.state === 'running') await agent.stopVm({ vmId: input.vmId, timeoutMs, force: true });
          await agent.destroyVm({ vmId: input.vmId });
          for (const path of [...vm.diskPaths, ...(vm.seedPath ? [vm.seedPath] : [])]) await agent.deleteDisk({ path });
          state = 'deleted';
          break;
        }
      }
    } else if (input.action !== 'delete') {
      throw ApplicationFailure.create({ type: 'InvalidState', message: `VM ${input.vmId} has no host`, nonRetryable: true });
    } else {
      state = 'deleted';
    }
    await ctl.recordLifecycle({ vmId: input.vmId, action: input.action, state });
    progress.state = state;
    await ctl.finishOperation({ id: operationId, state: 'completed', details: { action: input.action, state } });
    return { vmId: input.vmId, state };
  } catch (err) {
    progress.error = describeFailure(err);
    await ctl.finishOperation({ id: operationId, state: 'failed', error: progress.error });
    throw ApplicationFailure.create({ type: 'LifecycleFailed', message: `${input.action} of ${input.vmId} failed: ${progress.error}`, nonRetryable: true, cause: err as Error });
  }
}

/** Captures a stopped (or running, via a crash-consistent copy) VM's disk as a new template. */
export async function createTemplateFromVm(input: CreateTemplateInput): Promise<{ templateId: string; imagePath: string }> {
  const { info, ctl, onHost } = workflowContext((where, type) => activitySummary(`template ${input.name}`, where, type));
  const operationId = info.runId;
  upsertSearchAttributes([{ key: SA.VmId, value: input.vmId }]);
  await ctl.beginOperation({ id: operationId, workflowId: info.workflowId, runId: info.runId, kind: 'template', vmId: input.vmId, details: { name: input.name }, ...(input.principal ? { principal: input.principal } : {}) });
  let vm: Awaited<ReturnType<ControlActivities['getVmForLifecycle']>>;
  try {
    vm = await ctl.getVmForLifecycle({ vmId: input.vmId, action: 'template' });
    if (!vm.hostId || !vm.datastoreId || vm.diskPaths.length === 0) {
      throw ApplicationFailure.create({ type: 'InvalidState', message: `VM ${input.vmId} has no disk to capture`, nonRetryable: true });
    }
  } catch (err) {
    // A refusal (unknown VM, wrong state, no disk) closes the audit record like any other
    // failure; it used to leave the Operation 'running' forever. Behind a patch: a history
    // recorded before this change failed right here, without a finishOperation.
    if (!isPatched('template-refusal-closes-operation')) throw err;
    await ctl.finishOperation({ id: operationId, state: 'failed', error: describeFailure(err) });
    throw ApplicationFailure.create({ type: 'TemplateFailed', message: `template ${input.name} from ${input.vmId} failed: ${describeFailure(err)}`, nonRetryable: true });
  }
  const agent = onHost(vm.hostId, diskProfile);
  const name = `tpl-${input.templateId}`;
  try {
    const disk = await agent.createDisk({ name, datastoreId: vm.datastoreId, sizeBytes: vm.diskGiB * GiB, source: { kind: 'clone', sourcePath: vm.diskPaths[0] } });
    await ctl.recordTemplate({ ...input, imagePath: disk.path, datastoreId: vm.datastoreId, diskGiB: vm.diskGiB, minMemoryMiB: vm.memoryMiB });
    await ctl.finishOperation({ id: operationId, state: 'completed', details: { templateId: input.templateId, imagePath: disk.path } });
    return { templateId: input.templateId, imagePath: disk.path };
  } catch (err) {
    await agent.deleteDiskByName({ datastoreId: vm.datastoreId, name });
    await ctl.finishOperation({ id: operationId, state: 'failed', error: describeFailure(err) });
    throw ApplicationFailure.create({ type: 'TemplateFailed', message: `template ${input.name} from ${input.vmId} failed: ${describeFailure(err)}`, nonRetryable: true });
  }
}
