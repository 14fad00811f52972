// The local QEMU lab of `FERRY_DRIVER=qemu npm start`: N qemu hosts on this machine, each with its
// own host agent process (workers/qemu-agent.ts) and state folder, one shared datastore plus a
// local one per host, an IP pool, and templates built here with no download.
//
// Network: as root with iproute2, every host's QEMU runs in its own network namespace
// (workers/lab/netns.ts: guard route first, hub bridge, veth pairs), so migration traffic crosses
// a real link between namespace addresses; the agents stay in the root namespace and reach their
// QEMUs over QMP unix sockets. Otherwise every host listens on 127.0.0.1 with its own port range.
//
// Everything lives under <FERRY_DATA_DIR>/lab (lab.json records what was made); VMs are daemons
// that outlive `npm start`, the next start re-attaches; `npm run lab:down` removes it all.
//
//   FERRY_LAB_HOSTS       number of hosts, 1..16                                   default 3
//   FERRY_LAB_PORT_RANGE  "lo-hi" migration/NBD ports split between the hosts      default 47100-47399
//   FERRY_LAB_NETWORK     auto | netns | loopback                                  default auto
//   FERRY_QEMU_BINARY     the qemu-system binary (qemu-img is looked up next to it) default qemu-system-x86_64
//   FERRY_LAB_SUBNET, FERRY_LAB_NETNS_PREFIX  the namespaces' subnet and names   default 10.251.0.0/24, ferrylab
//                         (a second lab on the same machine, e.g. a test's, needs its own)
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConfigError, type FerryConfig } from '../../config/index.js';
import type { Db } from '../../db/orm.js';
import { Template, Vm } from '../../db/entities.js';
import * as capacity from '../../db/repositories/capacity.js';
import * as ipam from '../../db/repositories/ipam.js';
import { createQemuDriver, type QemuDatastoreConfig } from '../../drivers/qemu/index.js';
import { seedCluster, type ClusterSpec } from '../cluster-spec.js';
import { buildGuest } from './guest-images.js';
import { buildLinuxGuest } from './linux-guest.js';
import { labNamespaces, namespacesAvailable, parseSubnet, setupLabNetwork, teardownLabNetwork } from './netns.js';
import { alive, pidsMentioning, runs } from './procs.js';

const MiB = 1024 ** 2;
export const LAB_PREFIX = 'ferrylab';
export const LAB_SUBNET = '10.251.0.0/24';
export const LAB_NETWORK = 'lab-net';
export const MAX_LAB_HOSTS = 16;
/**
 * The fast default: the boot-sector guest that dirties 16 MiB and prints '.'. It has the id and
 * name of the simulator demo's Debian template (workers/cluster-spec.ts demoCluster), a stand-in
 * as the simulator's is, so the README's "Try it" runs unchanged on both drivers.
 */
export const DIRTY_TEMPLATE = 'tpl-debian-12';
export const DIRTY_TEMPLATE_NAME = 'debian-12';
/** the real Linux guest (workers/lab/linux-guest.ts), when its Debian packages can be fetched */
export const LINUX_TEMPLATE = 'tpl-linux';

export interface LabConfig {
  root: string;
  /** build caches that outlive lab:down (<FERRY_DATA_DIR>/tools) */
  toolsDir: string;
  hosts: number;
  portRange: [number, number];
  network: 'auto' | 'netns' | 'loopback';
  qemuBinary: string;
  qemuImgBinary: string;
  subnet: string;
  netnsPrefix: string;
}

export interface LabHost {
  id: string;
  stateDir: string;
  local: QemuDatastoreConfig;
  portRange: [number, number];
  migrationAddress: string;
  netns?: string;
}

export interface LabPlan {
  root: string;
  toolsDir: string;
  mode: 'netns' | 'loopback';
  subnet: string;
  netnsPrefix: string;
  /** why loopback (when it is) */
  reason?: string;
  shared: QemuDatastoreConfig;
  hosts: LabHost[];
  qemuBinary: string;
  qemuImgBinary: string;
}

/** Reads the lab settings; a bad one throws a ConfigError naming it (one line). */
export function loadLabConfig(env: NodeJS.ProcessEnv, ferry: FerryConfig): LabConfig {
  const rawHosts = env.FERRY_LAB_HOSTS || '3';
  if (!/^\d+$/.test(rawHosts) || Number(rawHosts) < 1 || Number(rawHosts) > MAX_LAB_HOSTS) {
    throw new ConfigError('FERRY_LAB_HOSTS', `"${rawHosts}" must be a whole number of hosts in 1..${MAX_LAB_HOSTS}`);
  }
  const hosts = Number(rawHosts);
  const rawRange = env.FERRY_LAB_PORT_RANGE || '47100-47399';
  const m = /^(\d{4,5})-(\d{4,5})$/.exec(rawRange);
  if (!m || Number(m[1]) < 1024 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) {
    throw new ConfigError('FERRY_LAB_PORT_RANGE', `"${rawRange}" is not lo-hi within 1024-65535`);
  }
  const portRange: [number, number] = [Number(m[1]), Number(m[2])];
  if ((portRange[1] - portRange[0] + 1) / hosts < 4) throw new ConfigError('FERRY_LAB_PORT_RANGE', `${rawRange} leaves fewer than 4 ports for each of ${hosts} hosts`);
  const taken: Array<[string, number]> = [
    ['FERRY_API_PORT', ferry.apiPort],
    ['FERRY_TEMPORAL_PORT', ferry.temporalPort],
    ['FERRY_TEMPORAL_UI_PORT', ferry.temporalUiPort],
    ['FERRY_WORKER_METRICS_PORT', ferry.workerMetricsPort],
  ];
  for (const [name, p] of taken) {
    if (p >= portRange[0] && p <= portRange[1]) throw new ConfigError('FERRY_LAB_PORT_RANGE', `${rawRange} collides with ${name} ${p}`);
  }
  const network = (env.FERRY_LAB_NETWORK || 'auto') as LabConfig['network'];
  if (!['auto', 'netns', 'loopback'].includes(network)) throw new ConfigError('FERRY_LAB_NETWORK', `"${network}" must be auto, netns or loopback`);
  const qemuBinary = env.FERRY_QEMU_BINARY || 'qemu-system-x86_64';
  if (!runs(qemuBinary)) throw new ConfigError('FERRY_QEMU_BINARY', `"${qemuBinary}" does not run: QEMU is not installed (apt-get install qemu-system-x86 qemu-utils)`);
  const qemuImgBinary = qemuBinary.includes('/') ? path.join(path.dirname(qemuBinary), 'qemu-img') : 'qemu-img';
  if (!runs(qemuImgBinary)) throw new ConfigError('FERRY_QEMU_BINARY', `"${qemuImgBinary}" does not run: qemu-img is not installed (apt-get install qemu-utils)`);
  const subnet = env.FERRY_LAB_SUBNET || LAB_SUBNET;
  try {
    parseSubnet(subnet);
  } catch (e) {
    throw new ConfigError('FERRY_LAB_SUBNET', (e as Error).message);
  }
  const netnsPrefix = env.FERRY_LAB_NETNS_PREFIX || LAB_PREFIX;
  if (!/^[a-z][a-z0-9-]{0,15}$/.test(netnsPrefix)) throw new ConfigError('FERRY_LAB_NETNS_PREFIX', `"${netnsPrefix}" must be 1..16 lower-case letters, digits or '-', starting with a letter`);
  const root = path.join(ferry.dataDir, 'lab');
  // QMP sockets live at <root>/<host>/vms/<vmId>/qmp.sock: unix socket paths end at 108 bytes
  if (Buffer.byteLength(root) > 50) throw new ConfigError('FERRY_DATA_DIR', `${ferry.dataDir} is too long for the lab's QMP socket paths (keep it under 46 characters)`);
  return { root, toolsDir: path.join(ferry.dataDir, 'tools'), hosts, portRange, network, qemuBinary, qemuImgBinary, subnet, netnsPrefix };
}

/** Host ids host-a, host-b, ...; each gets an equal slice of the port range. */
export function planLab(cfg: LabConfig): LabPlan {
  let mode: LabPlan['mode'] = 'loopback';
  let reason: string | undefined;
  if (cfg.network !== 'loopback') {
    const avail = namespacesAvailable();
    if (avail.ok) mode = 'netns';
    else if (cfg.network === 'netns') throw new ConfigError('FERRY_LAB_NETWORK', `netns asked for but ${avail.reason}`);
    else reason = avail.reason;
  } else {
    reason = 'FERRY_LAB_NETWORK=loopback';
  }
  const namespaces = mode === 'netns' ? labNamespaces({ prefix: cfg.netnsPrefix, subnet: cfg.subnet, hosts: cfg.hosts }) : [];
  const slice = Math.floor((cfg.portRange[1] - cfg.portRange[0] + 1) / cfg.hosts);
  const hosts: LabHost[] = Array.from({ length: cfg.hosts }, (_, i) => {
    const id = `host-${String.fromCharCode(97 + i)}`;
    const lo = cfg.portRange[0] + i * slice;
    return {
      id,
      stateDir: path.join(cfg.root, id),
      local: { id: `local-${id}`, path: path.join(cfg.root, `${id}-local`), shared: false },
      portRange: [lo, lo + slice - 1],
      migrationAddress: namespaces[i]?.address ?? '127.0.0.1',
      ...(namespaces[i] ? { netns: namespaces[i].name } : {}),
    };
  });
  return { root: cfg.root, toolsDir: cfg.toolsDir, mode, subnet: cfg.subnet, netnsPrefix: cfg.netnsPrefix, reason, shared: { id: 'lab-shared', path: path.join(cfg.root, 'shared'), shared: true }, hosts, qemuBinary: cfg.qemuBinary, qemuImgBinary: cfg.qemuImgBinary };
}

export function describeLab(plan: LabPlan): string[] {
  const lines = [
    plan.mode === 'netns'
      ? `  lab         ${plan.hosts.length} qemu hosts, each in its own network namespace (${plan.subnet}, guard route in the root namespace)`
      : `  lab         ${plan.hosts.length} qemu hosts on loopback 127.0.0.1 (no namespaces: ${plan.reason})`,
  ];
  for (const h of plan.hosts) lines.push(`    ${h.id}  ${h.netns ? `netns ${h.netns} ${h.migrationAddress}` : h.migrationAddress}  ports ${h.portRange.join('-')}  state ${h.stateDir}`);
  lines.push(`    datastores ${plan.shared.id} (shared) + local-<host>; network ${LAB_NETWORK}; templates ${DIRTY_TEMPLATE_NAME} (boot-sector guest, the default), ${LINUX_TEMPLATE} (real Linux)`);
  return lines;
}

/** The environment of one host's agent process. */
export function agentEnv(plan: LabPlan, host: LabHost, o: { temporalAddress: string; databaseUrl: string; dataDir: string; namespace: string; prefix?: string; pollMs?: number }): Record<string, string> {
  return {
    FERRY_HOST_ID: host.id,
    FERRY_QEMU_STATE_DIR: host.stateDir,
    FERRY_QEMU_DATASTORES: JSON.stringify([plan.shared, host.local]),
    FERRY_QEMU_NETWORKS: LAB_NETWORK,
    FERRY_QEMU_PORT_RANGE: host.portRange.join('-'),
    FERRY_QEMU_MIGRATION_ADDRESS: host.migrationAddress,
    ...(host.netns ? { FERRY_QEMU_NETNS: host.netns } : {}),
    FERRY_QEMU_BINARY: plan.qemuBinary,
    FERRY_QEMU_CPUS: '4',
    FERRY_QEMU_MEMORY_MIB: '4096',
    FERRY_QEMU_POLL_MS: String(o.pollMs ?? 50),
    TEMPORAL_ADDRESS: o.temporalAddress,
    TEMPORAL_NAMESPACE: o.namespace,
    FERRY_TASK_QUEUE_PREFIX: o.prefix ?? '',
    DATABASE_URL: o.databaseUrl,
    FERRY_DATA_DIR: o.dataDir,
    // the agents share the machine with the control worker's metrics port
    FERRY_WORKER_METRICS: 'off',
    FERRY_LOG_LEVEL: 'WARN',
  };
}

interface LabRecord {
  mode: LabPlan['mode'];
  prefix: string;
  subnet: string;
  hosts: string[];
  /** the `npm start` that runs the agents now (lab:down refuses while it lives) */
  ownerPid?: number;
}

const recordPath = (root: string) => path.join(root, 'lab.json');

export async function readLabRecord(root: string): Promise<LabRecord | undefined> {
  try {
    return JSON.parse(await fs.readFile(recordPath(root), 'utf8')) as LabRecord;
  } catch {
    return undefined;
  }
}

/**
 * Makes (or re-checks, on a later start) everything the agents need: the network, the folders,
 * the templates, the inventory rows (hosts as the driver reports them, datastores, network and
 * IP pool, templates). Idempotent: rows that exist are kept.
 */
export async function prepareLab(plan: LabPlan, db: Db, log: (l: string) => void = console.log): Promise<void> {
  await fs.mkdir(plan.root, { recursive: true });
  await fs.writeFile(recordPath(plan.root), JSON.stringify({ mode: plan.mode, prefix: plan.netnsPrefix, subnet: plan.subnet, hosts: plan.hosts.map((h) => h.id), ownerPid: process.pid } satisfies LabRecord, null, 2));
  if (plan.mode === 'netns') await setupLabNetwork({ prefix: plan.netnsPrefix, subnet: plan.subnet, hosts: plan.hosts.length });
  const dirty = await buildGuest({ kind: 'dirty', dirtyBytes: 16 * MiB }, path.join(plan.root, 'tools', 'guests'));
  // the real Linux guest needs Debian's packages (apt-get download, cached in tools/): without
  // them the lab still runs, with the boot-sector template only
  const linux = await buildLinuxGuest(plan.toolsDir, log).catch((e: Error) => {
    log(`ferry: no ${LINUX_TEMPLATE} template (${e.message.split('\n')[0]})`);
    return undefined;
  });
  const infos = [];
  for (const h of plan.hosts) {
    const d = createQemuDriver({ hostId: h.id, stateDir: h.stateDir, datastores: [plan.shared, h.local], networks: [LAB_NETWORK], cpus: 4, memoryBytes: 4096 * MiB, qemuBinary: plan.qemuBinary });
    const info = await d.hostInfo();
    await d.close();
    infos.push({ id: h.id, cpuModel: info.cpuModel, cpuFeatures: info.cpuFeatures, cpus: info.cpus, memoryMiB: Math.floor(info.memoryBytes / MiB), driver: 'qemu' as const, migrationAddress: h.migrationAddress });
  }
  const ids = plan.hosts.map((h) => h.id);
  const datastores = [{ id: plan.shared.id, shared: true, hostIds: ids }, ...plan.hosts.map((h) => ({ id: h.local.id, shared: false, hostIds: [h.id] }))];
  const spec: ClusterSpec = {
    hosts: infos,
    datastores: datastores.map((d) => ({ ...d, capacityGiB: 100, throughputMiBps: 500 })),
    templates: [
      {
        id: DIRTY_TEMPLATE,
        name: DIRTY_TEMPLATE_NAME,
        os: 'stand-in for the demo\'s debian-12 (not Debian): ferry\'s boot-sector guest, dirties 16 MiB, prints "UP" then "." on the serial console',
        datastoreIds: datastores.map((d) => d.id),
        diskGiB: 1,
        minMemoryMiB: 64,
        imagePath: dirty.qcow2,
      },
      ...(linux
        ? [{
            id: LINUX_TEMPLATE,
            name: 'linux-nocloud',
            os: `Linux: Debian's ${linux.kernelVersion} kernel + busybox; ferry's own init reads the cloud-init NoCloud files (not cloud-init) and applies hostname, address, gateway, SSH keys`,
            datastoreIds: datastores.map((d) => d.id),
            diskGiB: 1,
            minMemoryMiB: 128,
            imagePath: linux.qcow2,
          }]
        : []),
    ],
    // guest addresses are only written into NoCloud seeds; no namespace of this machine has them
    networks: [{ id: 'net-lab', name: LAB_NETWORK, cidr: '10.20.0.0/24', gateway: '10.20.0.1', dns: ['10.20.0.2'], rangeStart: '10.20.0.10', rangeEnd: '10.20.0.200', hostIds: ids }],
  };
  await seedCluster(db, undefined, spec);
  // seeding keeps rows that exist: a template rebuilt since (a new kernel, a changed init) points
  // at its new image from now on (VMs already made keep their own backing file)
  const em = db.em();
  for (const t of spec.templates) {
    const row = await em.findOne(Template, { id: t.id });
    if (row && t.imagePath && (row.imagePath !== t.imagePath || row.os !== t.os)) Object.assign(row, { imagePath: t.imagePath, os: t.os });
  }
  await em.flush();
}

/** Clears the owner mark of lab.json (npm start stopped; the VMs keep running). */
export async function releaseLab(root: string): Promise<void> {
  const rec = await readLabRecord(root);
  if (rec) await fs.writeFile(recordPath(root), JSON.stringify({ ...rec, ownerPid: undefined }, null, 2));
}

/**
 * `npm run lab:down`: every QEMU process and agent of the lab (found by the lab folder in their
 * command line), the namespaces and the guard route, the lab folder. Refuses while the npm start
 * that owns the lab still runs (its agents would re-create state).
 */
export async function labDown(root: string, log: (l: string) => void = console.log): Promise<{ killed: number }> {
  const rec = await readLabRecord(root);
  if (rec?.ownerPid && rec.ownerPid !== process.pid && alive(rec.ownerPid)) throw new Error(`ferry (pid ${rec.ownerPid}) still runs the lab: stop it (Ctrl-C) first`);
  const pids = await pidsMentioning(root + path.sep);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  // a namespace lives on while a process in it does: wait for the QEMUs to be gone
  for (let i = 0; i < 100 && (await pidsMentioning(root + path.sep)).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  if (rec?.mode !== 'loopback' && namespacesAvailable().ok) await teardownLabNetwork(rec?.prefix ?? LAB_PREFIX, rec?.subnet ?? LAB_SUBNET);
  await fs.rm(root, { recursive: true, force: true });
  log(`ferry lab: ${pids.length} QEMU process(es) stopped, namespaces and guard route removed, ${root} deleted`);
  return { killed: pids.length };
}

/**
 * The inventory side of lab:down: the lab's VMs died with their QEMUs, so their rows become
 * deleted (reservations and addresses released, names freed), as a delete would leave them.
 * Hosts, datastores, network and templates stay: the next start finds them valid again.
 */
export async function forgetLabVms(db: Db, hostIds: string[]): Promise<string[]> {
  const gone: string[] = [];
  await db.em().transactional(async (tx) => {
    for (const vm of await tx.find(Vm, { hostId: { $in: hostIds } })) {
      await capacity.release(tx, { vmId: vm.id });
      if (vm.networkId) await ipam.releaseIp(tx, { vmId: vm.id, networkId: vm.networkId });
      vm.state = 'deleted';
      vm.hostId = null;
      vm.ip = null;
      vm.name = `${vm.name}.deleted.${vm.id}`.slice(0, 250);
      gone.push(vm.id);
    }
  });
  return gone;
}
