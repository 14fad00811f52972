// The libvirt lab: two or three libvirt "hosts" on this one machine, each a libvirtd + virtlogd in
// its own network namespace (workers/lab/netns.ts: guard route first, then a bridge hub), its own
// mount namespace (per-host folders bind-mounted over the five libvirt paths, which privileged
// libvirtd has compiled in) and UTS namespace, with a distinct host_uuid (libvirt refuses a
// migration between hosts with the same one), a shared dir pool every host sees at the same path
// and a local dir pool per host. See ../shared/notes/libvirt-facts.md sections 1 and 3a.
//
// Network rule: the root namespace talks to each libvirtd only through its unix socket
// (<root>/<host>/run/libvirt-sock); TCP (the namespace addresses) is used only as the p2p
// migration destination, dialled by the source libvirtd from inside its own namespace.
//
//   npx tsx workers/lab/libvirt-lab.ts up     starts the lab (prints the hosts as JSON)
//   npx tsx workers/lab/libvirt-lab.ts down   stops everything and removes it
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { createVirsh } from '../../drivers/libvirt/index.js';
import { killAndWait, readPid, runs } from './procs.js';
import { guardRouteInstalled, inNamespace, namespacesAvailable, setupLabNetwork, teardownLabNetwork } from './netns.js';

export const LIBVIRT_APT_PACKAGES = ['libvirt-daemon-system', 'libvirt-clients', 'libvirt-daemon-driver-qemu', 'qemu-system-x86', 'qemu-utils'];

export interface LibvirtLabOptions {
  prefix?: string;
  subnet?: string;
  hosts?: number;
  /** folder holding every host's files and the shared pool; removed by stop */
  root?: string;
}

export interface LibvirtLabHost {
  /** ferry host id: lv1, lv2, ... */
  id: string;
  namespace: string;
  address: string;
  hostUuid: string;
  /** qemu+unix:///system?socket=... (what the root namespace uses) */
  uri: string;
  /** qemu+tcp://<address>/system (p2p destination only) */
  migrationUri: string;
  dir: string;
  /** pool names: the shared one (same on every host) and this host's local one */
  sharedPool: string;
  localPool: string;
  localPath: string;
}

export interface LibvirtLab {
  prefix: string;
  subnet: string;
  root: string;
  sharedPath: string;
  hosts: LibvirtLabHost[];
  /** stops a host's libvirtd and starts it again in the same namespaces (domains keep running) */
  restartDaemon(hostId: string): Promise<void>;
  stop(): Promise<void>;
}

function installed(): boolean {
  return runs('virsh') && runs('/usr/sbin/libvirtd') && runs('/usr/sbin/virtlogd') && runs('qemu-system-x86_64') && runs('qemu-img');
}

/**
 * Installs the packages when missing (apt-get, as root). Returns false with the reason when
 * libvirt cannot be had here: the only reason a libvirt test may skip.
 */
export async function ensureLibvirt(): Promise<{ ok: true } | { ok: false; reason: string }> {
  const ns = namespacesAvailable();
  if (!ns.ok) return { ok: false, reason: `network namespaces unavailable: ${ns.reason}` };
  if (installed()) return { ok: true };
  if (!runs('apt-get', ['--version'])) return { ok: false, reason: 'libvirt is not installed and apt-get is not available' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const upd = await execa('apt-get', ['update', '-qq'], { reject: false, env });
  const r = await execa('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...LIBVIRT_APT_PACKAGES], { reject: false, env });
  if (r.exitCode !== 0 || !installed()) {
    return { ok: false, reason: `apt-get install ${LIBVIRT_APT_PACKAGES.join(' ')} failed: ${String(r.stderr || upd.stderr).trim().slice(-400)}` };
  }
  return { ok: true };
}

const DEFAULTS = { prefix: 'ferrylv', subnet: '10.252.0.0/24', hosts: 2, root: '/srv/ferrylv' };
const LIBVIRT_DIRS = { etc: '/etc/libvirt', run: '/run/libvirt', lib: '/var/lib/libvirt', cache: '/var/cache/libvirt', log: '/var/log/libvirt' } as const;

function hostUuidOf(i: number): string {
  return `f0000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
}

/** virsh on one lab daemon, through the driver's own runner (argument arrays, errors as DriverError). */
const virsh = (uri: string, args: string[]): Promise<string> => createVirsh(uri).run(args);

async function prepHost(h: LibvirtLabHost): Promise<void> {
  await fs.rm(h.dir, { recursive: true, force: true });
  for (const d of Object.keys(LIBVIRT_DIRS)) await fs.mkdir(path.join(h.dir, d), { recursive: true });
  await fs.cp('/etc/libvirt', path.join(h.dir, 'etc'), { recursive: true });
  // no domains, networks or pools of the machine's own libvirt configuration
  for (const sub of ['qemu', 'storage']) {
    await fs.rm(path.join(h.dir, 'etc', sub), { recursive: true, force: true });
    await fs.mkdir(path.join(h.dir, 'etc', sub), { recursive: true });
  }
  for (const d of ['images', 'qemu', 'dnsmasq', 'boot', 'filesystems', 'swtpm']) await fs.mkdir(path.join(h.dir, 'lib', d), { recursive: true });
  await fs.mkdir(path.join(h.dir, 'log', 'qemu'), { recursive: true });
  await fs.mkdir(h.localPath, { recursive: true });
  await fs.appendFile(
    path.join(h.dir, 'etc', 'libvirtd.conf'),
    `\n# ferry libvirt lab\nlisten_tls = 0\nlisten_tcp = 1\nlisten_addr = "${h.address}"\nauth_tcp = "none"\nhost_uuid = "${h.hostUuid}"\n`,
  );
  // user/group root: /dev/kvm and the test images need no relabelling (notes section 1: else every
  // start re-probes capabilities for 4 s); no cgroups: domain ids restart at 1 in every daemon
  await fs.appendFile(
    path.join(h.dir, 'etc', 'qemu.conf'),
    `\n# ferry libvirt lab\nmigration_address = "${h.address}"\nmigration_host = "${h.address}"\ncgroup_controllers = [ ]\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n`,
  );
}

// The daemons' start: fixed script text, every value a positional parameter (no interpolation).
const UP_SCRIPT = [
  'set -e',
  'hostname "$1"',
  'mount --bind "$2/etc" /etc/libvirt',
  'mount --bind "$2/run" /run/libvirt',
  'mount --bind "$2/lib" /var/lib/libvirt',
  'mount --bind "$2/cache" /var/cache/libvirt',
  'mount --bind "$2/log" /var/log/libvirt',
  '/usr/sbin/virtlogd -d -p /run/libvirt/virtlogd.pid',
  '/usr/sbin/libvirtd -d --listen -p /run/libvirt/libvirtd.pid',
].join('\n');

async function upHost(h: LibvirtLabHost): Promise<void> {
  // the mount points (a machine whose libvirt never ran has no /run/libvirt)
  for (const d of Object.values(LIBVIRT_DIRS)) await fs.mkdir(d, { recursive: true });
  const [cmd, args] = inNamespace(h.namespace, 'unshare', ['--mount', '--uts', '--propagation', 'private', 'bash', '-c', UP_SCRIPT, 'lab-up', h.id, h.dir]);
  const r = await execa(cmd, args, { reject: false, timeout: 60_000 });
  if (r.exitCode !== 0) throw new Error(`starting libvirtd for ${h.id}: ${String(r.stderr).trim()}`);
  await waitAnswering(h);
}

async function waitAnswering(h: LibvirtLabHost): Promise<void> {
  const deadline = Date.now() + 90_000; // the first start probes QEMU's capabilities (~10 s)
  for (;;) {
    const v = await execa('virsh', ['-c', h.uri, 'version'], { reject: false, timeout: 30_000 });
    if (v.exitCode === 0) return;
    if (Date.now() > deadline) throw new Error(`libvirtd of ${h.id} did not answer on ${h.uri}: ${String(v.stderr).trim()}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

async function ensurePool(h: LibvirtLabHost, name: string, target: string): Promise<void> {
  const have = (await virsh(h.uri, ['pool-list', '--all', '--name'])).split('\n').map((s) => s.trim());
  if (!have.includes(name)) await virsh(h.uri, ['pool-define-as', name, 'dir', '--target', target]);
  const info = await virsh(h.uri, ['pool-info', name]);
  if (!/^State:\s+running$/m.test(info)) await virsh(h.uri, ['pool-start', name]);
}

/** Every domain destroyed and undefined, then the QEMUs (pid files), libvirtd and virtlogd stopped. */
async function downHost(dir: string): Promise<void> {
  const uri = `qemu+unix:///system?socket=${dir}/run/libvirt-sock`;
  const ok = await execa('virsh', ['-c', uri, 'version'], { reject: false, timeout: 10_000 });
  if (ok.exitCode === 0) {
    const uuids = (await virsh(uri, ['list', '--all', '--uuid']).catch(() => '')).split('\n').map((s) => s.trim()).filter(Boolean);
    for (const u of uuids) {
      await execa('virsh', ['-c', uri, 'destroy', u], { reject: false, timeout: 30_000 });
      await execa('virsh', ['-c', uri, 'undefine', u], { reject: false, timeout: 30_000 });
    }
  }
  for (const f of await fs.readdir(path.join(dir, 'run', 'qemu')).catch(() => [] as string[])) {
    if (!f.endsWith('.pid')) continue;
    const pid = await readPid(path.join(dir, 'run', 'qemu', f));
    if (pid) await killAndWait(pid, `qemu ${f}`);
  }
  for (const d of ['libvirtd', 'virtlogd']) {
    const pid = await readPid(path.join(dir, 'run', `${d}.pid`));
    if (pid) await killAndWait(pid, d);
  }
}

function hostsOf(o: Required<LibvirtLabOptions>, addresses: Array<{ name: string; address: string }>): LibvirtLabHost[] {
  return addresses.map((a, k) => {
    const id = `lv${k + 1}`;
    const dir = path.join(o.root, id);
    return {
      id,
      namespace: a.name,
      address: a.address,
      hostUuid: hostUuidOf(k + 1),
      uri: `qemu+unix:///system?socket=${dir}/run/libvirt-sock`,
      migrationUri: `qemu+tcp://${a.address}/system`,
      dir,
      sharedPool: 'ferry-shared',
      localPool: `ferry-local-${id}`,
      localPath: path.join(dir, 'local'),
    };
  });
}

/** Starts the lab (idempotent only in the sense that a leftover lab of the same root is removed first). */
export async function startLibvirtLab(opts: LibvirtLabOptions = {}): Promise<LibvirtLab> {
  const o = { ...DEFAULTS, ...opts };
  await stopLab(o);
  const nets = await setupLabNetwork({ prefix: o.prefix, subnet: o.subnet, hosts: o.hosts });
  if (!(await guardRouteInstalled(o.subnet))) throw new Error(`guard route unreachable ${o.subnet} is missing after setupLabNetwork`);
  const sharedPath = path.join(o.root, 'shared');
  await fs.mkdir(sharedPath, { recursive: true });
  const hosts = hostsOf(o, nets);
  const lab: LibvirtLab = {
    prefix: o.prefix,
    subnet: o.subnet,
    root: o.root,
    sharedPath,
    hosts,
    stop: () => stopLab(o),
    async restartDaemon(hostId) {
      const h = hosts.find((x) => x.id === hostId);
      if (!h) throw new Error(`no lab host ${hostId}`);
      const pid = await readPid(path.join(h.dir, 'run', 'libvirtd.pid'));
      if (pid) await killAndWait(pid, 'libvirtd');
      // virtlogd still holds the host's namespaces: enter them and start libvirtd again
      const logd = await readPid(path.join(h.dir, 'run', 'virtlogd.pid'));
      if (!logd) throw new Error(`virtlogd of ${hostId} is not running`);
      const r = await execa('nsenter', ['-t', String(logd), '-m', '-u', '-n', '/usr/sbin/libvirtd', '-d', '--listen', '-p', '/run/libvirt/libvirtd.pid'], { reject: false, timeout: 60_000 });
      if (r.exitCode !== 0) throw new Error(`restarting libvirtd of ${hostId}: ${String(r.stderr).trim()}`);
      await waitAnswering(h);
    },
  };
  try {
    for (const h of hosts) {
      await prepHost(h);
      await upHost(h);
      await ensurePool(h, h.sharedPool, sharedPath);
      await ensurePool(h, h.localPool, h.localPath);
    }
  } catch (e) {
    await lab.stop().catch(() => undefined);
    throw e;
  }
  return lab;
}

async function stopLab(o: Required<LibvirtLabOptions>): Promise<void> {
  for (const name of await fs.readdir(o.root).catch(() => [] as string[])) {
    if (/^lv\d+$/.test(name)) await downHost(path.join(o.root, name));
  }
  await teardownLabNetwork(o.prefix, o.subnet);
  await fs.rm(o.root, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const cmd = process.argv[2];
  if (cmd === 'up') {
    const ok = await ensureLibvirt();
    if (!ok.ok) throw new Error(ok.reason);
    const lab = await startLibvirtLab();
    console.log(JSON.stringify(lab.hosts, null, 2));
  } else if (cmd === 'down') {
    await stopLab(DEFAULTS);
  } else {
    console.error('usage: libvirt-lab.ts up|down');
    process.exit(2);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`libvirt-lab: ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  });
}
