// A small QMP (QEMU Machine Protocol) client over a unix socket.
//
// One QmpClient is one monitor session: greeting, `qmp_capabilities` handshake, then commands
// matched to replies by `id`, each with its own timeout, and asynchronous events delivered to
// subscribers. Anything the hypervisor says that is not QMP (not JSON, a reply to nobody, a closed
// socket) rejects every waiting command with an error that names the command.
import net from 'node:net';
import { DriverError } from '../hypervisor.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** QEMU answered `{"error": {...}}` to a command. */
export class QmpCommandError extends DriverError {
  constructor(
    readonly command: string,
    /** QMP error class, e.g. GenericError, CommandNotFound, DeviceNotActive */
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP command "${command}" failed: ${errorClass}: ${desc}`, 'HYPERVISOR');
    this.name = 'QmpCommandError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** how long to keep retrying while the socket does not exist / refuses (QEMU still starting) */
  connectTimeoutMs?: number;
  /** timeout for the greeting and the handshake */
  handshakeTimeoutMs?: number;
  /** default per-command timeout */
  commandTimeoutMs?: number;
}

type EventListener = (e: QmpEvent) => void;

export class QmpClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<EventListener>();
  private readonly closeListeners = new Set<(err?: Error) => void>();
  private closedError: Error | undefined;
  private greeting: ((line: Record<string, unknown>) => void) | undefined;
  /** QEMU version from the greeting */
  version: { major: number; minor: number; micro: number } | undefined;

  private constructor(
    private readonly socket: net.Socket,
    readonly path: string,
    private readonly defaultTimeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new DriverError(`QMP socket ${path}: ${err.message}`, 'UNREACHABLE')));
    socket.on('close', () => this.fail(new DriverError(`QMP socket ${path} closed by the hypervisor`, 'UNREACHABLE')));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
    const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 5_000;
    const deadline = Date.now() + connectTimeoutMs;
    let socket: net.Socket;
    for (;;) {
      try {
        socket = await openSocket(path);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
        if (!retryable || Date.now() >= deadline) {
          throw new DriverError(`cannot connect to QMP socket ${path}: ${(err as Error).message}`, 'UNREACHABLE');
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    const client = new QmpClient(socket, path, opts.commandTimeoutMs ?? 10_000);
    try {
      await client.readGreeting(handshakeTimeoutMs);
      await client.execute('qmp_capabilities', undefined, { timeoutMs: handshakeTimeoutMs });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  private readGreeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greeting = undefined;
        reject(new DriverError(`QMP socket ${this.path}: no greeting within ${timeoutMs} ms (is another client connected?)`, 'TIMEOUT'));
      }, timeoutMs);
      this.closeListeners.add((err) => {
        clearTimeout(timer);
        if (this.greeting) reject(err ?? new DriverError(`QMP socket ${this.path} closed before the greeting`, 'UNREACHABLE'));
      });
      this.greeting = (msg) => {
        clearTimeout(timer);
        this.greeting = undefined;
        const qmp = msg.QMP as { version?: { qemu?: QmpClient['version'] } } | undefined;
        if (!qmp) {
          const e = new DriverError(`QMP socket ${this.path}: expected a QMP greeting, got ${JSON.stringify(msg).slice(0, 200)}`, 'HYPERVISOR');
          this.fail(e);
          reject(e);
          return;
        }
        this.version = qmp.version?.qemu;
        resolve();
      };
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs one command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedError) {
      return Promise.reject(new DriverError(`QMP command "${command}" not sent: ${this.closedError.message}`, 'UNREACHABLE'));
    }
    const id = `ferry-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new DriverError(`QMP command "${command}" timed out after ${timeoutMs} ms`, 'TIMEOUT'));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.socket.write(JSON.stringify(msg) + '\n');
    });
  }

  /** HMP passthrough (e.g. `xp /1wx 0x500`). */
  hmp(commandLine: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, opts);
  }

  /** Subscribes to events (all of them, or those named); returns the unsubscribe function. */
  onEvent(listener: EventListener, names?: string[]): () => void {
    const l: EventListener = names ? (e) => names.includes(e.event) && listener(e) : listener;
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Called once when the connection ends (error = why). */
  onClose(listener: (err?: Error) => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Resolves with the first event that matches, rejects on timeout or close. */
  waitForEvent(pred: (e: QmpEvent) => boolean, timeoutMs: number, what = 'event'): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      let offClose = (): void => {};
      const timer = setTimeout(() => {
        off();
        offClose();
        reject(new DriverError(`QMP: no ${what} within ${timeoutMs} ms`, 'TIMEOUT'));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        off();
        offClose();
        resolve(e);
      });
      offClose = this.onClose((err) => {
        clearTimeout(timer);
        off();
        reject(err ?? new DriverError(`QMP connection closed while waiting for ${what}`, 'UNREACHABLE'));
      });
    });
  }

  close(): void {
    if (!this.closedError) this.fail(new DriverError(`QMP socket ${this.path} closed by the client`, 'UNREACHABLE'));
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onLine(line);
      if (this.closedError) return;
    }
    if (this.buf.length > 16 * 1024 * 1024) this.fail(this.protocolError('an unterminated line over 16 MiB'));
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.fail(this.protocolError(`a line that is not JSON: ${JSON.stringify(line.slice(0, 120))}`));
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      this.fail(this.protocolError(`a message that is not a JSON object: ${line.slice(0, 120)}`));
      return;
    }
    const m = msg as Record<string, unknown>;
    if (this.greeting) {
      this.greeting(m);
      return;
    }
    if (typeof m.event === 'string') {
      for (const l of [...this.listeners]) {
        try {
          l(m as unknown as QmpEvent);
        } catch {
          // a listener's bug must not kill the connection
        }
      }
      return;
    }
    if ('return' in m || 'error' in m) {
      const id = typeof m.id === 'string' ? m.id : undefined;
      const p = id !== undefined ? this.pending.get(id) : undefined;
      if (!p || id === undefined) {
        // a reply without our id: only a hypervisor out of step sends this
        this.fail(this.protocolError(`a reply with an unknown id ${JSON.stringify(m.id)}`));
        return;
      }
      this.pending.delete(id);
      clearTimeout(p.timer);
      if ('error' in m) {
        const e = (m.error ?? {}) as { class?: string; desc?: string };
        p.reject(new QmpCommandError(p.command, String(e.class ?? 'UnknownError'), String(e.desc ?? '')));
      } else {
        p.resolve(m.return);
      }
      return;
    }
    this.fail(this.protocolError(`a message that is neither reply nor event: ${line.slice(0, 120)}`));
  }

  private protocolError(what: string): DriverError {
    const cmds = [...this.pending.values()].map((p) => `"${p.command}"`);
    const waiting = cmds.length ? ` while waiting for ${cmds.join(', ')}` : '';
    return new DriverError(`QMP socket ${this.path}: the hypervisor sent ${what}${waiting}`, 'HYPERVISOR');
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new DriverError(`QMP command "${p.command}" failed: ${err.message}`, (err as DriverError).code ?? 'UNREACHABLE'));
    }
    for (const l of [...this.closeListeners]) {
      try {
        l(err);
      } catch {
        // ignore
      }
    }
    this.closeListeners.clear();
    this.listeners.clear();
    this.socket.destroy();
  }
}

function openSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path });
    const onErr = (err: Error): void => {
      s.destroy();
      reject(err);
    };
    s.once('error', onErr);
    s.once('connect', () => {
      s.off('error', onErr);
      resolve(s);
    });
  });
}
