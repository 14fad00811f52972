// workers/lab/netns.ts on the real kernel (root only): the guard route comes before any namespace
// address (a set-up that cannot install it makes nothing), every host reaches every other over
// TCP through the hub bridge, the root namespace cannot reach a lab address (the guard answers
// "no route to host" instead of the default route), set-up is idempotent and completes a partial
// lab, and teardown leaves no namespace and no route.
import { execFile, spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import {
  guardRouteInstalled,
  inNamespace,
  labNamespacesPresent,
  namespacesAvailable,
  setupLabNetwork,
  teardownLabNetwork,
} from '../../workers/lab/netns.js';

const run = promisify(execFile);
const avail = namespacesAvailable();
const skip = avail.ok ? false : `network namespaces unavailable: ${avail.reason}`;
const prefix = 'ferrynt';
const subnet = '10.253.0.0/24';
const opts = { prefix, subnet, hosts: 3 };

/** Listens on addr:port inside `ns`, answers "hello from <ns>" to one connection. */
function listenIn(ns: string, addr: string, port: number): Promise<() => void> {
  const script = `const s=require('net').createServer(c=>{c.end('hello from ${ns}');s.close()});s.listen(${port},'${addr}',()=>console.log('ready'))`;
  const [cmd, args] = inNamespace(ns, process.execPath, ['-e', script]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', () => resolve(() => child.kill('SIGKILL')));
    child.once('exit', (code) => reject(new Error(`listener in ${ns} exited ${code}`)));
  });
}

/** Connects from inside `ns` to addr:port and returns what the peer said. */
async function dialFrom(ns: string, addr: string, port: number): Promise<string> {
  const script = `const c=require('net').connect(${port},'${addr}');let b='';c.on('data',d=>b+=d);c.on('end',()=>console.log(b));c.on('error',e=>{console.error(e.code);process.exit(1)})`;
  const [cmd, args] = inNamespace(ns, process.execPath, ['-e', script]);
  return (await run(cmd, args, { timeout: 10_000 })).stdout.trim();
}

before(async () => {
  if (!skip) await teardownLabNetwork(prefix, subnet);
});
after(async () => {
  if (!skip) await teardownLabNetwork(prefix, subnet);
});

test('a set-up that cannot install the guard route makes no namespace', { skip }, async () => {
  // A foreign route for the subnet (blackhole: nothing leaves the machine) stands in for a real network.
  await run('ip', ['route', 'add', 'blackhole', subnet]);
  try {
    await assert.rejects(setupLabNetwork(opts), /already routed in the root namespace/);
    assert.deepEqual(await labNamespacesPresent(prefix), []);
  } finally {
    await run('ip', ['route', 'del', 'blackhole', subnet]);
  }
});

test('bad options are refused before anything is made', { skip }, async () => {
  await assert.rejects(setupLabNetwork({ ...opts, hosts: 0 }), /lab hosts 0/);
  await assert.rejects(setupLabNetwork({ ...opts, subnet: '10.253.0.1/24' }), /host bits set/);
  await assert.rejects(setupLabNetwork({ ...opts, subnet: 'nonsense' }), /not an IPv4 network/);
  await assert.rejects(setupLabNetwork({ ...opts, subnet: '10.253.0.0/30', hosts: 3 }), /1\.\.2/);
  assert.equal(await guardRouteInstalled(subnet), false);
  assert.deepEqual(await labNamespacesPresent(prefix), []);
});

test('hosts reach each other through the hub, the root namespace cannot reach them, teardown removes all', { skip }, async () => {
  const hosts = await setupLabNetwork(opts);
  assert.deepEqual(hosts.map((h) => [h.name, h.address]), [['ferrynt-1', '10.253.0.1'], ['ferrynt-2', '10.253.0.2'], ['ferrynt-3', '10.253.0.3']]);
  assert.equal(await guardRouteInstalled(subnet), true);
  assert.deepEqual((await labNamespacesPresent(prefix)).sort(), ['ferrynt-1', 'ferrynt-2', 'ferrynt-3', 'ferrynt-hub']);
  // No lab address exists in the root namespace.
  assert.doesNotMatch((await run('ip', ['-o', 'addr'])).stdout, /10\.253\./);

  for (const [from, to] of [[0, 1], [1, 2], [2, 0]] as const) {
    const stop = await listenIn(hosts[to].name, hosts[to].address, 47_001);
    try {
      assert.equal(await dialFrom(hosts[from].name, hosts[to].address, 47_001), `hello from ${hosts[to].name}`);
    } finally {
      stop();
    }
  }

  // From the root namespace the guard answers at once; nothing goes out of the default route.
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
    const c = net.connect(47_001, hosts[0].address);
    c.on('error', resolve);
    c.on('connect', () => resolve(Object.assign(new Error('connected'), { code: 'CONNECTED' })));
  });
  assert.equal(err.code, 'EHOSTUNREACH');

  // Idempotent: same answer, nothing duplicated. Partial: a lost host namespace is rebuilt.
  assert.deepEqual(await setupLabNetwork(opts), hosts);
  await run('ip', ['netns', 'del', 'ferrynt-2']);
  await setupLabNetwork(opts);
  const stop = await listenIn('ferrynt-2', '10.253.0.2', 47_002);
  try {
    assert.equal(await dialFrom('ferrynt-1', '10.253.0.2', 47_002), 'hello from ferrynt-2');
  } finally {
    stop();
  }

  await teardownLabNetwork(prefix, subnet);
  assert.deepEqual(await labNamespacesPresent(prefix), []);
  assert.equal(await guardRouteInstalled(subnet), false);
  await teardownLabNetwork(prefix, subnet); // a second teardown is a no-op
});
