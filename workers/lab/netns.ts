// One network namespace per lab host, shared by the QEMU lab and the libvirt lab.
//
// Layout: a hub namespace `<prefix>-hub` holds a bridge; every host namespace `<prefix>-<i>`
// (i = 1..hosts) gets one end of a veth pair (`eth0`, address subnet+i) and the hub gets the
// other end (`v<i>`, enslaved to the bridge), so every host reaches every other over a real
// link. No link and no address is ever made in the root namespace: the root namespace talks to
// lab processes over unix sockets (QMP, libvirt) or loopback only.
//
// Guard (../shared/notes/libvirt-facts.md section 3a): before the first namespace address
// exists, the root namespace gets `unreachable <subnet>`. Without it a lab address used from the
// root namespace by mistake (a migration URI dialled from the wrong side) would follow the
// default route and leave this machine; with it the mistake fails at once with
// "No route to host". The route is removed by teardown, after the namespaces.
import { execFile } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface LabNetOptions {
  /** Namespace name prefix, e.g. 'ferrylab'. Letters, digits and '-' only, at most 24 characters. */
  prefix: string;
  /** IPv4 network in CIDR form, e.g. '10.251.0.0/24'; host i gets network + i. */
  subnet: string;
  hosts: number;
}

export interface LabNamespace {
  name: string;
  /** IPv4 address without prefix length. */
  address: string;
  /** The interface inside the namespace that carries `address`. */
  device: string;
}

const DEVICE = 'eth0';
const BRIDGE = 'br0';

/** Namespaces need root and iproute2; otherwise the lab runs on loopback. */
export function namespacesAvailable(): { ok: true } | { ok: false; reason: string } {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { ok: false, reason: 'not running as root' };
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return { ok: false, reason: "iproute2's `ip` is not installed" };
  }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return { ok: false, reason: '`ip netns list` failed (no network namespace support)' };
  }
  return { ok: true };
}

/** ['ip', ['netns', 'exec', ns, cmd, ...args]]: run `cmd` inside namespace `ns`. */
export function inNamespace(ns: string, cmd: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

interface Subnet {
  network: number;
  length: number;
  cidr: string;
}

function ipToInt(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    n = n * 256 + Number(p);
  }
  return n;
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** Locally administered unicast MAC 02:fe:<the address's low 32 bits>. */
function macFor(address: number): string {
  return ['02', 'fe', ...[24, 16, 8, 0].map((b) => (Math.floor(address / 2 ** b) % 256).toString(16).padStart(2, '0'))].join(':');
}

/** Parses and checks an IPv4 CIDR network; throws naming the problem. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr);
  const network = m ? ipToInt(m[1]) : undefined;
  const length = m ? Number(m[2]) : NaN;
  if (network === undefined || !(length >= 8 && length <= 30)) {
    throw new Error(`lab subnet ${JSON.stringify(cidr)} is not an IPv4 network in CIDR form with a prefix length 8..30 (e.g. 10.251.0.0/24)`);
  }
  if (network % 2 ** (32 - length) !== 0) throw new Error(`lab subnet ${cidr} has host bits set (use ${intToIp(network - (network % 2 ** (32 - length)))}/${length})`);
  return { network, length, cidr };
}

function check(o: LabNetOptions): Subnet {
  if (!/^[a-z][a-z0-9-]{0,23}$/.test(o.prefix)) throw new Error(`lab namespace prefix ${JSON.stringify(o.prefix)} must be 1..24 lower-case letters, digits or '-', starting with a letter`);
  const s = parseSubnet(o.subnet);
  const usable = 2 ** (32 - s.length) - 2;
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > usable) throw new Error(`lab hosts ${o.hosts} must be an integer 1..${usable} for subnet ${o.subnet}`);
  return s;
}

export function hubName(prefix: string): string {
  return `${prefix}-hub`;
}

export function hostNamespaceName(prefix: string, index: number): string {
  return `${prefix}-${index}`;
}

/** The namespaces setupLabNetwork makes, without making them (names and addresses only). */
export function labNamespaces(o: LabNetOptions): LabNamespace[] {
  const s = check(o);
  return Array.from({ length: o.hosts }, (_, k) => ({ name: hostNamespaceName(o.prefix, k + 1), address: intToIp(s.network + k + 1), device: DEVICE }));
}

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

async function succeeds(...args: string[]): Promise<boolean> {
  try {
    await run('ip', args);
    return true;
  } catch {
    return false;
  }
}

export async function listNamespaces(): Promise<string[]> {
  const out = await ip('netns', 'list');
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
}

/** The root namespace's route for exactly `cidr`, as `ip route show` prints it ('' when none). */
async function rootRoute(cidr: string): Promise<string> {
  return (await ip('route', 'show', 'exact', cidr)).trim();
}

/** True when the root namespace has the `unreachable <subnet>` guard. */
export async function guardRouteInstalled(subnet: string): Promise<boolean> {
  return (await rootRoute(parseSubnet(subnet).cidr)).startsWith('unreachable');
}

async function installGuard(s: Subnet): Promise<void> {
  const existing = await rootRoute(s.cidr);
  if (existing.startsWith('unreachable')) return;
  // Someone else's route for this subnet: a lab here would shadow a real network. Refuse.
  if (existing) throw new Error(`lab subnet ${s.cidr} is already routed in the root namespace (${existing}); choose another subnet`);
  await ip('route', 'add', 'unreachable', s.cidr);
}

async function ensureNamespace(name: string, existing: Set<string>): Promise<void> {
  if (existing.has(name)) return;
  await ip('netns', 'add', name);
  existing.add(name);
  await ip('-n', name, 'link', 'set', 'lo', 'up');
}

/**
 * Makes (or completes) the lab network: guard route first, then the hub with its bridge, then
 * one namespace per host with its veth and address. Idempotent: a second call with the same
 * options changes nothing; a call after a partial set-up finishes it.
 */
export async function setupLabNetwork(o: LabNetOptions): Promise<LabNamespace[]> {
  const s = check(o);
  const wanted = labNamespaces(o);
  await installGuard(s);
  const existing = new Set(await listNamespaces());
  const hub = hubName(o.prefix);
  await ensureNamespace(hub, existing);
  if (!(await succeeds('-n', hub, 'link', 'show', BRIDGE))) await ip('-n', hub, 'link', 'add', BRIDGE, 'type', 'bridge');
  await ip('-n', hub, 'link', 'set', BRIDGE, 'up');
  for (const [k, ns] of wanted.entries()) {
    const port = `v${k + 1}`;
    await ensureNamespace(ns.name, existing);
    if (!(await succeeds('-n', ns.name, 'link', 'show', DEVICE))) {
      // A half-made pair (hub end without host end) is removed first so the add below succeeds.
      if (await succeeds('-n', hub, 'link', 'show', port)) await ip('-n', hub, 'link', 'del', port);
      // A fixed MAC per address: a rebuilt host keeps its MAC, so peers' ARP entries stay right.
      await ip('-n', hub, 'link', 'add', port, 'type', 'veth', 'peer', 'name', DEVICE, 'address', macFor(s.network + k + 1), 'netns', ns.name);
    }
    await ip('-n', hub, 'link', 'set', port, 'master', BRIDGE);
    await ip('-n', hub, 'link', 'set', port, 'up');
    await ip('-n', ns.name, 'addr', 'replace', `${ns.address}/${s.length}`, 'dev', DEVICE);
    await ip('-n', ns.name, 'link', 'set', DEVICE, 'up');
  }
  return wanted;
}

/** Lab namespaces present now for `prefix` (hub and hosts). */
export async function labNamespacesPresent(prefix: string): Promise<string[]> {
  const own = new RegExp(`^${prefix.replace(/[^a-z0-9-]/g, '')}-(hub|\\d+)$`);
  return (await listNamespaces()).filter((n) => own.test(n));
}

/**
 * Removes every namespace of `prefix` (their veths go with them) and then the guard route.
 * Processes still running inside a namespace keep its network alive until they exit; callers
 * stop them first. Safe to call when nothing exists.
 */
export async function teardownLabNetwork(prefix: string, subnet: string): Promise<void> {
  const s = parseSubnet(subnet);
  for (const name of await labNamespacesPresent(prefix)) await ip('netns', 'del', name);
  if ((await rootRoute(s.cidr)).startsWith('unreachable')) await ip('route', 'del', 'unreachable', s.cidr);
}
