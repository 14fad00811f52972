// The invariant checker of ARCHITECTURE.md section 6, for every test that wants it (chaos, fuzz,
// workflows): compares the inventory database with what the hypervisors hold — the simulator's
// snapshot, or a real driver's view (test/helpers/driver-ferry.ts: `virsh list --all` and the
// pools' volumes on every libvirt host, the QEMU processes and datastore files of qemu hosts) —
// and returns every violation it finds (an empty list means consistent). Also a background sampler
// of "the guest runs on at most one host" for tests that kill things mid-migration.
import assert from 'node:assert/strict';
import type { Db } from '../../db/orm.js';
import { Allocation, IpAllocation, Operation, Template, Vm } from '../../db/entities.js';
import type { Simulator } from '../../drivers/sim/index.js';

export type ViolationKind =
  | 'not-running' // inventory says running/migrating, no host runs the guest
  | 'runs-twice' // more than one host runs the guest
  | 'wrong-host' // the guest runs somewhere else than inventory's hostId
  | 'unrecorded-guest' // a host runs a guest inventory does not have running there
  | 'paused-at-rest' // a copy paused, postmigrate, incoming or crashed while nothing is in flight
  | 'stray-copy' // a copy of a VM on a host other than its own
  | 'stuck-migrating' // inventory says migrating with no migration running
  | 'leaked-reservation' // a reservation whose operation is not running
  | 'leaked-ip' // an address held by a VM that does not exist, is deleted or in error
  | 'orphan-disk' // a disk or seed in the simulator that no VM refers to
  | 'operation-running' // (at rest) an operation that never ended
  // the campaign's checks across database, simulator and Temporal (invariants-temporal.ts)
  | 'workflow-open' // (at rest) a workflow still running in Temporal
  | 'operation-mismatch' // an Operation record's state disagrees with its workflow's result
  | 'operation-without-workflow' // an Operation record whose workflow Temporal does not know
  | 'unaudited-workflow' // a workflow that changes the fleet with no Operation record
  | 'audit-incomplete' // an Operation record without a principal, or closed without an end time
  | 'capacity-exceeded' // a host's allocations above its capacity (at a sample or at rest)
  | 'slots-exceeded' // more migrations in slot stages on a host than its limits allow
  | 'doubled-during-run' // the sampler saw a guest running on two hosts during the run
  | 'qemu-process'; // (qemu) a VM's QEMU process count or host disagrees with inventory

export interface Violation {
  kind: ViolationKind;
  /** the VM, allocation, address or disk it is about */
  subject: string;
  message: string;
}

export interface CheckOptions {
  /**
   * true (default): nothing may be in flight (after a test); every running operation is itself a
   * violation. false: VMs with a running operation are spared the at-rest checks (copies on two
   * hosts, paused source, state migrating); "runs on at most one host" is checked for all.
   */
  atRest?: boolean;
}

const LIVE_DB_STATES = new Set(['running', 'migrating']);
/** Simulator states of a copy that is neither serving nor cleanly stopped. */
const UNSETTLED_SIM_STATES = new Set(['paused', 'postmigrate', 'incoming', 'crashed']);

/**
 * What the hypervisors hold, as the checker compares it: every copy of a guest on a host with its
 * state (running, paused, postmigrate, incoming, crashed, stopped, defined) and every disk or
 * seed file on a datastore. The simulator's snapshot is one; a real driver's view is another.
 */
export interface HypervisorView {
  vms: Array<{ vmId: string; hostId: string; state: string }>;
  disks: Array<{ path: string; datastoreId: string; kind: 'disk' | 'seed' }>;
}

/** Compares inventory and the hypervisors (simulator or a real view); returns every violation (empty = consistent). */
export async function checkInvariants(x: { db: Db; sim: Simulator } | { db: Db; view: () => Promise<HypervisorView> }, opts: CheckOptions = {}): Promise<Violation[]> {
  const atRest = opts.atRest ?? true;
  const em = x.db.em();
  const [vms, allocations, ips, operations, templates] = await Promise.all([
    em.find(Vm, {}),
    em.find(Allocation, {}),
    em.find(IpAllocation, {}),
    em.find(Operation, { state: 'running' }),
    em.find(Template, {}),
  ]);
  const snap: HypervisorView = 'sim' in x ? x.sim.snapshot() : await x.view();
  const out: Violation[] = [];
  const add = (kind: ViolationKind, subject: string, message: string) => out.push({ kind, subject, message });

  const vmById = new Map(vms.map((v) => [v.id, v]));
  const runningOps = new Set(operations.map((o) => o.id));
  const inFlight = new Set(atRest ? [] : operations.map((o) => o.vmId).filter((id): id is string => !!id));
  const copies = new Map<string, typeof snap.vms>();
  for (const c of snap.vms) copies.set(c.vmId, [...(copies.get(c.vmId) ?? []), c]);

  if (atRest) for (const o of operations) add('operation-running', o.id, `operation ${o.id} (${o.kind} ${o.subkind ?? ''} of ${o.vmId ?? '-'}, workflow ${o.workflowId}) is still running at stage ${o.stage ?? '-'}`);

  // every guest in the simulator, seen from the simulator's side
  for (const [vmId, list] of copies) {
    const running = list.filter((c) => c.state === 'running').map((c) => c.hostId);
    if (running.length > 1) add('runs-twice', vmId, `${vmId} runs on ${running.length} hosts at once: ${running.join(', ')}`);
    const vm = vmById.get(vmId);
    const known = vm && vm.state !== 'deleted' && vm.state !== 'error';
    if (!known) {
      for (const c of list) add('unrecorded-guest', vmId, `${c.hostId} holds ${vmId} (${c.state}) but inventory has it ${vm ? vm.state : 'not at all'}`);
      continue;
    }
    if (inFlight.has(vmId)) continue;
    for (const c of list) {
      if (UNSETTLED_SIM_STATES.has(c.state)) add('paused-at-rest', vmId, `${vmId} is ${c.state} on ${c.hostId} with no operation in flight`);
      if (vm.hostId && c.hostId !== vm.hostId) add('stray-copy', vmId, `${c.hostId} holds a copy of ${vmId} (${c.state}); inventory has it on ${vm.hostId}`);
    }
  }

  // every VM in inventory, seen from the database's side
  for (const vm of vms) {
    if (!LIVE_DB_STATES.has(vm.state)) continue;
    const running = (copies.get(vm.id) ?? []).filter((c) => c.state === 'running').map((c) => c.hostId);
    if (running.length === 0) {
      add('not-running', vm.id, `inventory has ${vm.id} ${vm.state} on ${vm.hostId ?? '(no host)'}, but no host runs it`);
    } else if (running.length === 1 && running[0] !== vm.hostId && !inFlight.has(vm.id)) {
      add('wrong-host', vm.id, `${vm.id} runs on ${running[0]}, inventory says ${vm.hostId ?? '(no host)'}`);
    }
    if (vm.state === 'migrating' && !inFlight.has(vm.id)) add('stuck-migrating', vm.id, `inventory has ${vm.id} migrating, but no operation of it is running`);
  }

  for (const a of allocations) {
    if (a.kind !== 'reservation') continue;
    if (!a.operationId || !runningOps.has(a.operationId)) {
      add('leaked-reservation', a.id, `reservation ${a.id} for ${a.vmId} on ${a.hostId} (${a.cpus} vCPU, ${a.memoryMiB} MiB) belongs to operation ${a.operationId ?? '(none)'}, which is not running`);
    }
  }

  for (const ip of ips) {
    const vm = vmById.get(ip.vmId);
    if (!vm || vm.state === 'deleted' || vm.state === 'error') {
      add('leaked-ip', ip.address, `${ip.address} on network ${ip.networkId} is held by ${ip.vmId}, which is ${vm ? vm.state : 'not in inventory'}`);
    }
  }

  // template images may sit on a datastore (a real driver's view lists them)
  const referenced = new Set<string>(templates.map((t) => t.imagePath).filter((p): p is string => !!p));
  for (const vm of vms) {
    if (vm.state === 'deleted') continue;
    for (const p of vm.diskPaths) referenced.add(p);
    if (vm.seedPath) referenced.add(vm.seedPath);
  }
  // a provision in flight creates its disks before inventory records their paths
  const provisioning = [...inFlight].filter((id) => vmById.get(id)?.state === 'provisioning');
  for (const d of snap.disks) {
    if (referenced.has(d.path)) continue;
    if (provisioning.some((id) => d.path.includes(id))) continue;
    add('orphan-disk', d.path, `${d.kind} ${d.path} on ${d.datastoreId} belongs to no VM in inventory`);
  }
  return out;
}

export function formatViolations(vs: Violation[]): string {
  return vs.map((v) => `  [${v.kind}] ${v.message}`).join('\n');
}

/** Fails the test with every violation listed. */
export async function assertNoViolations(x: Parameters<typeof checkInvariants>[0], opts?: CheckOptions): Promise<void> {
  const vs = await checkInvariants(x, opts);
  assert.equal(vs.length, 0, `invariant violations:\n${formatViolations(vs)}`);
}

export interface RunningSample {
  atMs: number;
  vmId: string;
  hosts: string[];
}

/**
 * Samples sim.runningHostsOf(vmId) for the given VMs every `everyMs` in the background until
 * stopped: records every sample in which a guest ran on more than one host, and how many samples
 * were taken (a sampler that never ran proves nothing).
 */
export class RunningSampler {
  readonly doubles: RunningSample[] = [];
  samples = 0;
  errors: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly sim: Simulator,
    private readonly vmIds: string[],
    private readonly everyMs = 20,
  ) {}

  start(): this {
    const t0 = Date.now();
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      try {
        for (const vmId of this.vmIds) {
          const hosts = this.sim.runningHostsOf(vmId);
          if (hosts.length > 1) this.doubles.push({ atMs: Date.now() - t0, vmId, hosts });
        }
        this.samples++;
      } catch (e) {
        // a busy state file (another process holds the write lock too long) is not a verdict
        if (this.errors.length < 20) this.errors.push((e as Error).message);
      } finally {
        this.busy = false;
      }
    }, this.everyMs);
    // a test that fails before stop() must not keep its process alive
    this.timer.unref();
    return this;
  }

  stop(): this {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    return this;
  }

  /** Stops and asserts that no sample saw a guest on two hosts and that sampling happened. */
  assertNeverDoubled(minSamples = 10): void {
    this.stop();
    assert.deepEqual(this.doubles, [], `a guest ran on two hosts at once: ${JSON.stringify(this.doubles.slice(0, 5))}`);
    assert.ok(this.samples >= minSamples, `the sampler took only ${this.samples} samples (errors: ${this.errors.join('; ')})`);
  }
}
