// The simulated cluster over its Store: virtual clock, one transaction per call, and the
// operator API (topology, fault injection, snapshots). Every call that reads the cluster opens one
// IMMEDIATE transaction, reads the virtual clock inside it and first settles open migrations
// (migrations.ts), so the persisted rows plus virtual now are the whole truth, whichever process
// looks. The per-host driver (driver.ts) works over this class; simulator.ts joins the two.
import { validateFaultInput, type SimFaultInput, type SimFaultKind } from '../../domain/faults.js';
import { assertTimeScale, realSleep, rebase, virtualAt, wallFor, type ClockEpoch } from './clock.js';
import * as injection from './fault-injection.js';
import { listFaults, spendStepFault, type SimFault } from './faults.js';
import { settle } from './migrations.js';
import * as inspect from './snapshot.js';
import { CommitThenThrow, Store } from './store.js';
import * as topology from './topology.js';
import { invalid, safeName } from './validate.js';

export interface SimulatorOptions {
  /** SQLite file shared by every process of the cluster, or ':memory:' */
  path: string;
  /** virtual seconds per wall second; absent = keep the persisted scale (1 for a new file) */
  timeScale?: number;
  /** wall clock (ms); inject a ManualClock's `now` in tests */
  now?: () => number;
  /** wall sleep used while waiting for disk copies; inject a ManualClock's `sleep` in tests */
  sleep?: (ms: number) => Promise<void>;
  /** longest wall wait between two looks at a running disk copy (default 25 ms) */
  pollMs?: number;
  /** how long a call waits for another process's write lock (default 10 s) */
  busyTimeoutMs?: number;
}

export class SimCluster {
  readonly store: Store;
  readonly sleep: (ms: number) => Promise<void>;
  readonly pollMs: number;
  private readonly wallNow: () => number;

  protected constructor(opts: SimulatorOptions) {
    if (!opts || typeof opts.path !== 'string' || opts.path.length === 0) throw invalid('Simulator.open: path must be a file path or ":memory:"');
    if (opts.timeScale !== undefined) assertTimeScale(opts.timeScale);
    this.wallNow = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? realSleep;
    this.pollMs = opts.pollMs ?? 25;
    this.store = new Store(opts.path, opts.busyTimeoutMs);
    this.store.tx(() => {
      const wall = this.wallNow();
      const c = this.store.readClock();
      if (!c) this.store.writeClock({ epochWallMs: wall, epochVirtualMs: 0, timeScale: opts.timeScale ?? 1 });
      else if (opts.timeScale !== undefined && opts.timeScale !== c.timeScale) this.store.writeClock(rebase(c, wall, opts.timeScale));
    });
  }

  close(): void {
    this.store.close();
  }

  get path(): string {
    return this.store.path;
  }

  private epoch(): ClockEpoch {
    const c = this.store.readClock();
    if (!c) throw new Error('simulator clock row is missing');
    return c;
  }

  /** Virtual now (ms on the cluster's shared timeline). */
  virtualNow(): number {
    return virtualAt(this.epoch(), this.wallNow());
  }

  get timeScale(): number {
    return this.epoch().timeScale;
  }

  /** Changes the time scale for every process of the cluster; virtual time stays continuous. */
  setTimeScale(timeScale: number): void {
    assertTimeScale(timeScale);
    this.store.tx(() => this.store.writeClock(rebase(this.epoch(), this.wallNow(), timeScale)));
  }

  /** Wall ms for `virtualMs` of virtual time at the current scale. */
  wallFor(virtualMs: number): number {
    return wallFor(this.epoch(), virtualMs);
  }

  /**
   * Runs fn inside one IMMEDIATE transaction with virtual now read inside it, after settling
   * every open migration up to now. Internal to drivers/sim.
   */
  tx<T>(fn: (nowV: number) => T): T {
    const out = this.store.tx((): { ok: T } | { err: Error } => {
      const nowV = this.virtualNow();
      settle(this.store, nowV);
      try {
        return { ok: fn(nowV) };
      } catch (e) {
        if (e instanceof CommitThenThrow) return { err: e.error };
        throw e;
      }
    });
    if ('err' in out) throw out.err;
    return out.ok;
  }

  // ---------------------------------------------------------------- topology (topology.ts)

  upsertHost(h: topology.SimHostInput): void {
    topology.upsertHost(this.store, h);
  }

  /** Removes a host with no VMs and no open migration (its links and datastore attachments go too). */
  removeHost(hostId: string): void {
    safeName('hostId', hostId);
    this.tx(() => topology.removeHost(this.store, hostId));
  }

  upsertDatastore(d: topology.SimDatastoreInput): void {
    topology.upsertDatastore(this.store, d);
  }

  /** Undirected migration link; hosts without a link row talk at 1 GiB/s. */
  upsertLink(l: topology.SimLinkInput): void {
    topology.upsertLink(this.store, l);
  }

  /** A template (or importable) image file on a datastore. */
  upsertImage(i: topology.SimImageInput): void {
    topology.upsertImage(this.store, i);
  }

  listHosts(): topology.SimHostInput[] {
    return topology.listHosts(this.store);
  }

  // ---------------------------------------------------------------- faults (fault-injection.ts)

  /** Persists a fault; destination-crash and link-cut hit open migrations at once. */
  injectFault(input: SimFaultInput): SimFault {
    const f = validateFaultInput(input);
    return this.tx((nowV) => injection.injectFault(this.store, f, nowV));
  }

  listFaults(): SimFault[] {
    return listFaults(this.store);
  }

  /** Removes faults (all, or by id / kind); a cleared dirty-rate restores the guest's own rate. Returns how many. */
  clearFaults(filter: { id?: string; kind?: SimFaultKind } = {}): number {
    return this.tx((nowV) => injection.clearFaults(this.store, filter, nowV));
  }

  /**
   * For callers outside the driver (e.g. a control-worker hook): spends a matching fail-step fault
   * in its own transaction and throws DriverError FAULT_INJECTED. hostId '' matches only faults
   * without a host filter. Do not call it from inside SimCluster.tx.
   */
  checkStepFault(step: string, hostId: string, vmId?: string, _nowV?: number): void {
    this.tx((nowV) => spendStepFault(this.store, step, hostId, vmId, nowV));
  }

  // ---------------------------------------------------------------- invariants and tests (snapshot.ts)

  /** Hosts on which the guest vmId is running right now (an invariant checker wants at most one). */
  runningHostsOf(vmId: string): string[] {
    return this.tx(() => inspect.runningHostsOf(this.store, vmId));
  }

  /** The guest writes to its memory: its generation counter goes up (a migrated guest keeps it). */
  bumpGeneration(hostId: string, vmId: string): number {
    return this.tx(() => inspect.bumpGeneration(this.store, hostId, vmId));
  }

  /** Everything, settled at virtual now, for invariant checkers and tests. */
  snapshot(): inspect.SimSnapshot {
    return this.tx((nowV) => inspect.snapshot(this.store, nowV));
  }

  /** Every migration (newest last) with its stats at virtual now. */
  migrations(vmId?: string): inspect.SimMigrationSnapshot[] {
    return this.tx((nowV) => inspect.migrationSnapshots(this.store, nowV).filter((m) => vmId === undefined || m.vmId === vmId));
  }
}
