// ProvisionVm: the seed lecture's four steps as a saga (ARCHITECTURE.md section 3).
//   1 select   placement + atomic reservation           comp: release reservation
//   2 load     disk from template/clone/import/ISO       comp: delete disk
//   3 customize IP from the pool, cloud-init seed, volumes comp: release IP, delete seed/volumes
//   4 start    define, start, wait running, inventory    comp: stop + undefine
// Each compensation is registered BEFORE its step (a step that crashes half way still gets
// undone) and runs non-cancellable, in reverse order, also when the workflow is cancelled.
import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import {
  PROVISION_STEPS,
  SA,
  provisionProgressQuery,
  type ProvisionInput,
  type ProvisionProgress,
  type ProvisionResult,
} from './definitions.js';
import { bootProfile, compensationProfile, diskProfile } from './profiles.js';
import { Saga } from './lib/saga.js';
import { workflowContext } from './context.js';
import { provisionDetails } from './lib/current-details.js';
import { activitySummary } from '../domain/summaries.js';
import { describeFailure } from '../domain/failures.js';
import { nameProblem } from '../domain/names.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export async function provisionVm(input: ProvisionInput): Promise<ProvisionResult> {
  // every activity names its step (and host) in the Web UI: `step 3 customize: allocate IP`
  const { info, ctl, ctlComp, writeAudit, onHost } = workflowContext((where, type) =>
    activitySummary(
      progress.error !== undefined ? `undo step ${progress.step} ${progress.stepName}` : `step ${progress.step} ${progress.stepName}`,
      where,
      type,
      type === 'writeSeed' && progress.ip ? `IP ${progress.ip}` : type === 'createDisk' && progress.step === 2 ? input.source.kind : undefined,
    ),
  );
  const operationId = info.workflowId;
  const host = (hostId: string, profile = diskProfile) => onHost(hostId, profile);

  const progress: ProvisionProgress = {
    vmId: input.vmId,
    name: input.name,
    state: 'running',
    step: 0,
    stepName: 'select',
    stepTimingsMs: {},
    compensations: [],
  };
  setHandler(provisionProgressQuery, () => progress);
  /** the Web UI's current details: the progress query's answer as markdown (no command) */
  const publish = () => setCurrentDetails(provisionDetails(progress));
  publish();

  let stepStarted = Date.now();
  const enterStep = async (n: number) => {
    if (progress.step > 0) progress.stepTimingsMs[PROVISION_STEPS[progress.step - 1]] = Date.now() - stepStarted;
    stepStarted = Date.now();
    progress.step = n;
    progress.stepName = PROVISION_STEPS[n - 1];
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: `${n}-${progress.stepName}` }]);
    await writeAudit({ id: operationId, stage: progress.stepName, details: { stepTimingsMs: progress.stepTimingsMs } });
  };

  // Names reach disk paths, process arguments and cloud-init: refuse a bad one before anything
  // exists (the API checks too; a workflow started directly must be just as safe).
  const bad = nameProblem('name', input.name) ?? nameProblem('vmId', input.vmId) ?? (input.hostname !== undefined ? nameProblem('hostname', input.hostname) : undefined);
  if (bad) {
    await ctlComp.markVmError({ vmId: input.vmId, error: bad });
    throw ApplicationFailure.create({ type: 'InvalidArgument', message: bad, nonRetryable: true });
  }

  upsertSearchAttributes([{ key: SA.VmId, value: input.vmId }]);
  await ctl.beginOperation({ id: operationId, workflowId: info.workflowId, runId: info.runId, kind: 'provision', subkind: input.source.kind, vmId: input.vmId, ...(input.principal ? { principal: input.principal } : {}) });

  // compensations retry 3 times on top of their activity's own retry policy, 1 s, 2 s apart
  const saga = new Saga({ maxAttempts: 3, pauseBetweenAttempts: (a) => sleep(a * 1000) });
  try {
    // ---- step 1: select a host with capacity and the template; reserve atomically
    await enterStep(1);
    saga.add('release-reservation', () => ctlComp.releaseReservation({ operationId }));
    const placed = await ctl.placeAndReserve({ operationId, input });
    progress.hostId = placed.hostId;
    progress.datastoreId = placed.datastoreId;
    progress.placement = { chosen: placed.hostId, rejected: placed.rejected };
    publish();
    upsertSearchAttributes([{ key: SA.HostId, value: placed.hostId }]);
    const agent = host(placed.hostId);
    const agentComp = host(placed.hostId, compensationProfile);

    // ---- step 2: load software (disk from template / clone / import / installer ISO)
    await enterStep(2);
    const rootName = `${input.vmId}-root`;
    saga.add('delete-disk', () => agentComp.deleteDiskByName({ datastoreId: placed.datastoreId, name: rootName }));
    const root = await agent.createDisk({ name: rootName, datastoreId: placed.datastoreId, sizeBytes: input.diskGiB * GiB, source: placed.diskSource });

    // ---- step 3: customize: address, hostname, keys, user data -> NoCloud seed; extra volumes
    await enterStep(3);
    saga.add('release-ip', () => ctlComp.releaseIp({ vmId: input.vmId, networkId: input.networkId }));
    const addr = await ctl.allocateIp({ vmId: input.vmId, networkId: input.networkId });
    progress.ip = addr.address;
    publish();
    saga.add('delete-seed', () => agentComp.deleteDiskByName({ datastoreId: placed.datastoreId, name: `${input.vmId}-seed` }));
    const seed = await agent.writeSeed({
      vmId: input.vmId,
      datastoreId: placed.datastoreId,
      seed: {
        instanceId: input.vmId,
        hostname: input.hostname ?? input.name,
        sshAuthorizedKeys: input.sshKeys ?? [],
        userData: input.userData,
        network: { address: addr.address, prefixLength: addr.prefixLength, gateway: addr.gateway, dns: addr.dns, vlan: addr.vlan ?? undefined, mac: addr.mac },
      },
    });
    const volumes: string[] = [];
    for (const [i, sizeGiB] of (input.extraVolumesGiB ?? []).entries()) {
      const name = `${input.vmId}-vol${i + 1}`;
      saga.add(`delete-volume-${i + 1}`, () => agentComp.deleteDiskByName({ datastoreId: placed.datastoreId, name }));
      const vol = await agent.createDisk({ name, datastoreId: placed.datastoreId, sizeBytes: sizeGiB * GiB, source: { kind: 'blank' } });
      volumes.push(vol.path);
    }

    // ---- step 4: define, start, wait until the hypervisor reports running, record it
    await enterStep(4);
    saga.add('stop-undefine', () => agentComp.destroyVm({ vmId: input.vmId }));
    const diskPaths = [root.path, ...volumes];
    await host(placed.hostId, bootProfile).defineAndStart({
      timeoutMs: 120_000,
      spec: {
        vmId: input.vmId,
        name: input.name,
        cpus: input.cpus,
        memoryBytes: input.memoryMiB * MiB,
        disks: diskPaths,
        seedPath: seed.path,
        isoPath: input.source.kind === 'iso' ? input.source.isoPath : undefined,
        mac: addr.mac,
        network: addr.networkName,
        cpuFeatures: placed.cpuFeatures,
        workload: input.workload,
      },
    });
    await ctl.recordVmRunning({
      operationId,
      vmId: input.vmId,
      hostId: placed.hostId,
      datastoreId: placed.datastoreId,
      ip: addr.address,
      mac: addr.mac,
      networkId: input.networkId,
      diskPaths,
      seedPath: seed.path,
      cpuFeatures: placed.cpuFeatures,
    });
    progress.stepTimingsMs.start = Date.now() - stepStarted;
    progress.state = 'completed';
    progress.stepName = 'done';
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: 'done' }]);
    await ctl.finishOperation({ id: operationId, state: 'completed', details: { hostId: placed.hostId, ip: addr.address, stepTimingsMs: progress.stepTimingsMs, placement: progress.placement } });
    return { vmId: input.vmId, hostId: placed.hostId, ip: addr.address, datastoreId: placed.datastoreId, diskPaths };
  } catch (err) {
    const cancelled = isCancellation(err);
    const reason = cancelled ? 'cancelled' : describeFailure(err);
    progress.error = reason;
    publish();
    // Compensate in reverse order, shielded from the cancellation that may have brought us here.
    progress.compensations = await saga.compensate((fn) => CancellationScope.nonCancellable(fn));
    progress.state = cancelled ? 'cancelled' : 'failed';
    publish();
    upsertSearchAttributes([{ key: SA.Stage, value: cancelled ? 'cancelled' : 'failed' }]);
    await CancellationScope.nonCancellable(async () => {
      await ctlComp.markVmError({ vmId: input.vmId, error: `provisioning failed in step ${progress.step} (${progress.stepName}): ${reason}` });
      await ctlComp.finishOperation({
        id: operationId,
        state: cancelled ? 'cancelled' : 'failed',
        error: reason,
        details: { failedStep: progress.step, compensations: progress.compensations, placement: progress.placement, stepTimingsMs: progress.stepTimingsMs },
      });
    });
    if (cancelled) throw err;
    throw ApplicationFailure.create({
      type: 'ProvisionFailed',
      message: `provisioning ${input.name} failed in step ${progress.step} (${progress.stepName}): ${reason}`,
      nonRetryable: true,
      details: [{ step: progress.step, compensations: progress.compensations }],
    });
  }
}
