// ferry on REAL libvirt for workflow tests: the libvirt lab (workers/lab/libvirt-lab.ts, two or
// three libvirtd hosts in their own namespaces sharing one pool, a local pool each), the inventory
// seeded with driver 'libvirt' from what each driver's hostInfo reports, a template image on the
// shared pool's path (the test guest), the control worker and one host agent per host — in this
// process, or for hosts listed in `processAgents` as a child process running
// workers/libvirt-agent.ts (SIGKILL-able) — on a task-queue prefix unique to this instance, against
// the run's Temporal dev server. The wiring is driver-ferry.ts's startFerryRig (shared with
// qemu-ferry.ts); a LibvirtFerry is also a WorkflowFerry for the shared test bodies.
import type { Client, WorkflowHandle } from '@temporalio/client';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Db } from '../../db/orm.js';
import { createLibvirtDriver, createVirsh, type LibvirtDatastoreConfig, type LibvirtDriver } from '../../drivers/libvirt/index.js';
import { spawnHostAgent, type AgentProcess } from '../../workers/lab/agents.js';
import { buildGuest, readHeartbeat, type GuestImages } from '../../workers/lab/guest-images.js';
import { startLibvirtLab, type LibvirtLab, type LibvirtLabHost, type LibvirtLabOptions } from '../../workers/lab/libvirt-lab.js';
import { alive, readPid } from '../../workers/lab/procs.js';
import type { LiveMigrateInput, ProvisionInput } from '../../workflows/definitions.js';
import { driverClusterSpec, forgetVm, reportedHost, startFerryRig, type TestDatastore, type WorkflowFerry } from './driver-ferry.js';
import { waitFor } from './ferry.js';
import type { HypervisorView } from './invariants.js';

const MiB = 1024 ** 2;

export type LibvirtAgentProcess = AgentProcess;

export interface LibvirtFerryOptions {
  hosts?: number;
  /** hosts whose agent runs as a child process (workers/libvirt-agent.ts) instead of in-process */
  processAgents?: string[];
  lab?: Omit<LibvirtLabOptions, 'hosts'>;
  /**
   * shared (default): the shared pool every host reaches; local: only each host's local pool
   * (`lvlocal-<hostId>`, live migration copies the disks); shared+local: both
   */
  storage?: 'shared' | 'local' | 'shared+local';
}

export interface LibvirtFerry extends WorkflowFerry {
  readonly kind: 'libvirt';
  client: Client;
  db: Db;
  prefix: string;
  lab: LibvirtLab;
  guest: GuestImages;
  templateId: string;
  networkId: string;
  driver(hostId: string): LibvirtDriver;
  labHost(hostId: string): LibvirtLabHost;
  provision(input: Partial<ProvisionInput> & { name: string }): Promise<WorkflowHandle>;
  migrate(input: LiveMigrateInput): Promise<WorkflowHandle>;
  /** `virsh list --all --uuid` of every host: host id -> domain UUIDs */
  domains(): Promise<Record<string, string[]>>;
  heartbeat(hostId: string, vmId: string): Promise<number>;
  spawnAgent(hostId: string): Promise<LibvirtAgentProcess>;
  close(): Promise<void>;
}

/** `virsh -q list --all`: " 3    vm-a   running" / " -    vm-b   shut off" → name and state. */
export function parseVirshList(out: string): Array<{ name: string; state: string }> {
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const m = /^(\d+|-)\s+(\S+)\s+(.+)$/.exec(l);
      if (!m) throw new Error(`virsh list --all: unexpected line ${JSON.stringify(l)}`);
      return { name: m[2]!, state: m[3]!.trim() };
    });
}

export async function startLibvirtFerry(opts: LibvirtFerryOptions = {}): Promise<LibvirtFerry> {
  const processAgents = new Set(opts.processAgents ?? []);
  const lab = await startLibvirtLab({ ...opts.lab, hosts: opts.hosts ?? 2 });
  const storage = opts.storage ?? 'shared';
  const networkName = 'qnet';
  const ids = lab.hosts.map((h) => h.id);
  const labHost = (hostId: string) => {
    const h = lab.hosts.find((x) => x.id === hostId);
    if (!h) throw new Error(`no libvirt host ${hostId} (hosts: ${ids.join(', ')})`);
    return h;
  };
  const poolsOf = (h: LibvirtLabHost): LibvirtDatastoreConfig[] => [
    ...(storage === 'local' ? [] : [{ id: 'lvshared', pool: h.sharedPool, shared: true }]),
    ...(storage === 'shared' ? [] : [{ id: `lvlocal-${h.id}`, pool: h.localPool, shared: false }]),
  ];
  const datastoresOf = (hostId: string): TestDatastore[] => {
    const h = labHost(hostId);
    return poolsOf(h).map((d) => ({ id: d.id, shared: d.shared, path: d.shared ? lab.sharedPath : h.localPath }));
  };
  const stateDir = (h: LibvirtLabHost) => path.join(h.dir, 'ferry-state');
  const drivers = new Map<string, LibvirtDriver>();
  for (const h of lab.hosts) {
    drivers.set(h.id, createLibvirtDriver({ hostId: h.id, uri: h.uri, migrationUri: h.migrationUri, stateDir: stateDir(h), datastores: poolsOf(h), networks: [networkName], cpus: 4, memoryBytes: 4096 * MiB }));
  }
  // the template lives on the shared pool's folder, so every libvirtd reads the same backing file
  const built = await buildGuest({ kind: 'dirty', dirtyBytes: 16 * MiB });
  const tpl = path.join(lab.sharedPath, 'tpl-lvguest.qcow2');
  await fs.copyFile(built.qcow2, tpl);
  const guest: GuestImages = { ...built, qcow2: tpl };
  const root = path.join(lab.root, 'ferry');
  await fs.mkdir(root, { recursive: true });
  const infos = [];
  for (const h of lab.hosts) infos.push(await reportedHost(drivers.get(h.id)!));
  const templateId = 'tpl-lvguest';
  const networkId = 'net-lv';
  const datastores = [...(storage === 'local' ? [] : [{ id: 'lvshared', shared: true, hostIds: ids }]), ...(storage === 'shared' ? [] : ids.map((id) => ({ id: `lvlocal-${id}`, shared: false, hostIds: [id] })))];
  const cluster = driverClusterSpec('libvirt', infos, { templateId, imagePath: tpl, networkId, networkName, datastores });
  const databaseUrl = path.join(root, 'ferry.sqlite');
  const rig = await startFerryRig({
    prefixLetter: 'l',
    databaseUrl,
    dataDir: root,
    cluster,
    templateId,
    networkId,
    agents: lab.hosts.filter((h) => !processAgents.has(h.id)).map((h) => ({ driver: drivers.get(h.id)!, pollMs: 100 })),
  });
  const { client, db, prefix } = rig;
  const agents: AgentProcess[] = [];

  const driver = (hostId: string): LibvirtDriver => {
    const d = drivers.get(hostId);
    if (!d) throw new Error(`no libvirt host ${hostId} (hosts: ${ids.join(', ')})`);
    return d;
  };
  const virsh = (hostId: string, args: string[]) => createVirsh(labHost(hostId).uri).run(args);
  const domainNames = async (hostId: string) => parseVirshList(await virsh(hostId, ['list', '--all'])).map((d) => d.name);
  const qemuPid = async (hostId: string, vmId: string) => {
    const pid = await readPid(path.join(labHost(hostId).dir, 'run', 'qemu', `${vmId}.pid`));
    return pid !== undefined && alive(pid) ? pid : undefined;
  };

  const ferry: LibvirtFerry = {
    kind: 'libvirt',
    client,
    db,
    prefix,
    lab,
    guest,
    templateId,
    networkId,
    hostIds: ids,
    datastoresOf,
    driver,
    labHost,
    provision: (input) => rig.provision(input),
    migrate: (input) => rig.migrate(input),
    async domains() {
      const out: Record<string, string[]> = {};
      for (const h of lab.hosts) out[h.id] = (await virsh(h.id, ['list', '--all', '--uuid'])).split('\n').map((s) => s.trim()).filter(Boolean);
      return out;
    },
    async copies(vmId) {
      const out: string[] = [];
      for (const id of ids) if ((await domainNames(id)).includes(vmId)) out.push(id);
      return out;
    },
    async assertNothingOn(hostId, vmId) {
      assert.ok(!(await domainNames(hostId)).includes(vmId), `no domain ${vmId} on ${hostId}`);
      assert.equal(await qemuPid(hostId, vmId), undefined, `no QEMU of ${vmId} on ${hostId}`);
      for (const sub of ['migrations', 'incoming', 'mirrors']) {
        const left = (await fs.readdir(path.join(stateDir(labHost(hostId)), sub)).catch(() => [] as string[])).filter((x) => x.startsWith(`${vmId}.`));
        assert.deepEqual(left, [], `no ${sub} record of ${vmId} on ${hostId}`);
      }
      for (const ds of datastoresOf(hostId).filter((d) => !d.shared)) {
        const left = (await fs.readdir(ds.path).catch(() => [] as string[])).filter((x) => x.includes(vmId));
        assert.deepEqual(left, [], `no file of ${vmId} on ${hostId}'s datastore ${ds.id}`);
      }
    },
    async killQemu(hostId, vmId) {
      const pid = await qemuPid(hostId, vmId);
      assert.ok(pid, `a QEMU of ${vmId} on ${hostId} (libvirtd's pid file)`);
      process.kill(pid, 'SIGKILL');
    },
    async guestDiskIo(hostId, vmId, command) {
      // libvirt's -blockdev disks have no named backend: the device's QOM path names it
      const out = await driver(hostId).hmp(vmId, `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${command}"`);
      // HMP answers errors as text; qemu-io's own output goes to QEMU's stdout
      if (out.trim()) throw new Error(`qemu-io ${command} on ${vmId}: ${out.trim()}`);
    },
    async assertNoDiskJobs(hostId, vmId) {
      const uuid = driver(hostId).domainUuid(vmId);
      assert.equal((await virsh(hostId, ['blockjob', uuid, 'vda', '--raw'])).trim(), '', 'no block job on vda');
      assert.match(await virsh(hostId, ['domjobinfo', '--rawstats', uuid]), /^Job type: 0/, 'no domain job');
    },
    async spawnAgent(hostId) {
      const h = labHost(hostId);
      if (!processAgents.has(hostId)) throw new Error(`host ${hostId} runs its agent in-process (list it in processAgents)`);
      const proc = await spawnHostAgent('libvirt', h.id, {
        FERRY_HOST_ID: h.id,
        FERRY_LIBVIRT_URI: h.uri,
        FERRY_LIBVIRT_MIGRATION_URI: h.migrationUri,
        FERRY_LIBVIRT_STATE_DIR: stateDir(h),
        FERRY_LIBVIRT_DATASTORES: JSON.stringify(poolsOf(h)),
        FERRY_LIBVIRT_NETWORKS: networkName,
        FERRY_LIBVIRT_CPUS: '4',
        FERRY_LIBVIRT_MEMORY_MIB: '4096',
        FERRY_LIBVIRT_POLL_MS: '100',
        ...rig.agentEnv(),
      });
      agents.push(proc);
      return proc;
    },
    async convergeWithoutAgent(hostId, vmId) {
      // libvirtd drives the migration and the detached virsh outlives its agent: speed it up so it
      // completes unattended; the destination stays paused (--suspend) until an agent activates it
      await virsh(hostId, ['migrate-setspeed', driver(hostId).domainUuid(vmId), '1024']);
      await waitFor('completed with no agent', async () => (await driver(hostId).vmStatus(vmId))?.state === 'postmigrate', 60_000);
    },
    async view(): Promise<HypervisorView> {
      const vms: HypervisorView['vms'] = [];
      for (const id of ids) {
        for (const d of parseVirshList(await virsh(id, ['list', '--all']))) {
          let state = d.state === 'shut off' ? 'stopped' : d.state;
          // postmigrate: a source libvirt shut off after a completed migration
          if (d.state === 'shut off' && /\(migrated\)/.test(await virsh(id, ['domstate', '--reason', d.name]))) state = 'postmigrate';
          vms.push({ vmId: d.name, hostId: id, state });
        }
      }
      const disks = new Map<string, HypervisorView['disks'][number]>();
      for (const id of ids) {
        for (const ds of poolsOf(labHost(id))) {
          await virsh(id, ['pool-refresh', ds.pool]);
          for (const line of (await virsh(id, ['vol-list', ds.pool])).split('\n').map((l) => l.trim()).filter(Boolean)) {
            const [name, file] = line.split(/\s+/);
            if (!name || !file || name === 'Name' || /^-+$/.test(name)) continue;
            disks.set(file, { path: file, datastoreId: ds.id, kind: name.includes('-seed') ? 'seed' : 'disk' });
          }
        }
      }
      return { vms, disks: [...disks.values()] };
    },
    heartbeat(hostId, vmId) {
      const d = driver(hostId);
      return readHeartbeat((c) => d.hmp(vmId, c));
    },
    async destroyEverywhere(vmId) {
      for (const d of drivers.values()) await d.destroyVm(vmId).catch(() => undefined);
      const folders = new Set([lab.sharedPath, ...lab.hosts.map((h) => h.localPath)]);
      for (const dir of folders) {
        for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
          if (!f.startsWith(`${vmId}-`)) continue;
          const file = path.join(dir, f);
          const owner = lab.hosts.find((h) => h.localPath === dir) ?? lab.hosts[0]!;
          await driver(owner.id).deleteDisk(file).catch(() => fs.rm(file, { force: true }));
        }
      }
      await forgetVm(db, vmId);
    },
    async close() {
      for (const a of agents) await a.kill('SIGKILL').catch(() => undefined);
      await rig.close();
      await lab.stop();
    },
  };
  return ferry;
}
