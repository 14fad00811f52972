// QmpClient against a scripted fake monitor on a unix socket (no QEMU needed): handshake,
// id-matched replies, events, timeouts, and clean errors on nonsense or a closed socket.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DriverError } from '../../domain/hypervisor.js';
import { QmpClient, QmpCommandError } from '../../drivers/qemu/index.js';

type Handler = (msg: { execute: string; id?: unknown; arguments?: unknown }, send: (o: unknown) => void, sock: net.Socket) => void;

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: ['oob'] } };

async function fakeMonitor(file: string, handler: Handler, greeting: unknown = GREETING): Promise<net.Server> {
  const srv = net.createServer((sock) => {
    const send = (o: unknown) => sock.write((typeof o === 'string' ? o : JSON.stringify(o)) + '\r\n');
    send(greeting);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line);
        if (msg.execute === 'qmp_capabilities') send({ return: {}, id: msg.id });
        else handler(msg, send, sock);
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => srv.listen(file, r));
  return srv;
}

describe('QmpClient', () => {
  let dir: string;
  const servers: net.Server[] = [];
  let n = 0;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fq-qmp-'));
  });
  after(async () => {
    for (const s of servers) s.close();
    await fs.rm(dir, { recursive: true, force: true });
  });
  async function serve(handler: Handler, greeting?: unknown): Promise<string> {
    const file = path.join(dir, `m${++n}.sock`);
    servers.push(await fakeMonitor(file, handler, greeting));
    return file;
  }

  it('handshakes, matches replies by id even out of order, and reports the version', async () => {
    const held: { id: unknown; execute: string }[] = [];
    const file = await serve((msg, send) => {
      held.push({ id: msg.id, execute: msg.execute });
      if (held.length === 2) {
        // answer the second first
        send({ return: { which: held[1]!.execute }, id: held[1]!.id });
        send({ return: { which: held[0]!.execute }, id: held[0]!.id });
      }
    });
    const c = await QmpClient.connect(file);
    assert.deepEqual(c.version, { major: 7, minor: 2, micro: 22 });
    const [a, b] = await Promise.all([c.execute('query-status'), c.execute('query-migrate')]);
    assert.deepEqual(a, { which: 'query-status' });
    assert.deepEqual(b, { which: 'query-migrate' });
    c.close();
  });

  it('delivers events to subscribers and waitForEvent', async () => {
    const file = await serve((msg, send) => {
      send({ event: 'STOP', timestamp: { seconds: 1, microseconds: 0 } });
      send({ event: 'MIGRATION', data: { status: 'pre-switchover' }, timestamp: { seconds: 1, microseconds: 1 } });
      send({ return: {}, id: msg.id });
    });
    const c = await QmpClient.connect(file);
    const seen: string[] = [];
    const off = c.onEvent((e) => seen.push(e.event), ['MIGRATION']);
    const waited = c.waitForEvent((e) => e.event === 'MIGRATION' && e.data?.status === 'pre-switchover', 2000);
    await c.execute('migrate', { uri: 'tcp:127.0.0.1:1' });
    assert.equal((await waited).event, 'MIGRATION');
    assert.deepEqual(seen, ['MIGRATION']);
    off();
    c.close();
  });

  it('an error reply rejects with QmpCommandError naming the command and class', async () => {
    const file = await serve((msg, send) => send({ error: { class: 'GenericError', desc: 'Migration not in expected state: none' }, id: msg.id }));
    const c = await QmpClient.connect(file);
    await assert.rejects(c.execute('migrate-continue', { state: 'pre-switchover' }), (e: QmpCommandError) => {
      assert.ok(e instanceof QmpCommandError && e instanceof DriverError);
      assert.equal(e.command, 'migrate-continue');
      assert.equal(e.errorClass, 'GenericError');
      assert.match(e.message, /"migrate-continue".*not in expected state/);
      return true;
    });
    assert.equal(c.closed, false, 'an error reply keeps the session');
    c.close();
  });

  it('a per-command timeout names the command', async () => {
    const file = await serve(() => undefined);
    const c = await QmpClient.connect(file);
    await assert.rejects(c.execute('query-migrate', undefined, { timeoutMs: 50 }), (e: DriverError) => e.code === 'TIMEOUT' && /"query-migrate" timed out/.test(e.message));
    c.close();
  });

  it('nonsense from the hypervisor fails the waiting command with its name and closes the session', async () => {
    const file = await serve((_m, send) => send('this is not json {'));
    const c = await QmpClient.connect(file);
    await assert.rejects(c.execute('query-status'), (e: DriverError) => e.code === 'HYPERVISOR' && /"query-status"/.test(e.message) && /not JSON/.test(e.message));
    assert.equal(c.closed, true);
    await assert.rejects(c.execute('cont'), (e: DriverError) => e.code === 'UNREACHABLE' && /"cont" not sent/.test(e.message));
  });

  it('a reply with an unknown id is a protocol error', async () => {
    const file = await serve((_m, send) => send({ return: {}, id: 'someone-else' }));
    const c = await QmpClient.connect(file);
    await assert.rejects(c.execute('stop'), (e: DriverError) => /"stop"/.test(e.message) && /unknown id/.test(e.message));
  });

  it('a socket closed mid-command rejects with the command name', async () => {
    const file = await serve((_m, _send, sock) => sock.destroy());
    const c = await QmpClient.connect(file);
    await assert.rejects(c.execute('quit'), (e: DriverError) => e.code === 'UNREACHABLE' && /"quit"/.test(e.message) && /closed/.test(e.message));
  });

  it('a server that is not QMP fails the connect', async () => {
    const file = await serve(() => undefined, { hello: 'i am not qemu' });
    await assert.rejects(QmpClient.connect(file), (e: DriverError) => /expected a QMP greeting/.test(e.message));
  });

  it('a missing socket fails after the connect timeout with the path', async () => {
    const file = path.join(dir, 'nobody-here.sock');
    await assert.rejects(QmpClient.connect(file, { connectTimeoutMs: 100 }), (e: DriverError) => e.code === 'UNREACHABLE' && e.message.includes(file));
  });
});
