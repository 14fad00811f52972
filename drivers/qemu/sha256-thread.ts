// sha256 off the event loop: the cold copy hands each chunk it copied to a worker thread that
// keeps one streaming hash per file, so hashing (~1 ms per MiB here) runs on the other core while
// the copier reads, writes and compares the next chunks, instead of between them. Chunks are
// transferred, not copied (the caller gives up the buffer); at most MAX_IN_FLIGHT wait in the
// thread's queue, so a slow hasher slows the copy instead of piling chunks up in memory. The
// thread is started on first use and shared by every copy of the driver instance; it keeps the
// process alive only while it has work (ref'd then, unref'd when idle); if it dies, pending
// digests reject and a new one starts next time.
import { Worker } from 'node:worker_threads';

const MAX_IN_FLIGHT = 8;

// plain JS, evaluated in the thread: no loader needed for it under tsx or compiled code
const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id);
    if (!h) hashes.set(m.id, (h = createHash('sha256')));
    h.update(new Uint8Array(m.buf, 0, m.n));
    parentPort.postMessage({ op: 'ack' });
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash('sha256');
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', seq: m.seq, hex: h.digest('hex') });
  } else if (m.op === 'drop') hashes.delete(m.id);
});
`;

/** One file's streaming sha256, fed in order, computed in the hashing thread. */
export interface ThreadedHash {
  /** hashes bytes [0, n) of `buf` after those fed before; `buf` must not be used afterwards */
  update(buf: Buffer, n: number): Promise<void>;
  /** the hex digest of everything fed (the hash is finished) */
  digest(): Promise<string>;
  /** forgets the hash without a digest */
  drop(): void;
}

export function createSha256Thread() {
  let worker: Worker | undefined;
  let inFlight = 0;
  let seq = 0;
  let nextId = 0;
  const room: Array<() => void> = [];
  const digests = new Map<number, { resolve: (hex: string) => void; reject: (err: Error) => void }>();
  /** ref'd while chunks or digests are outstanding, so the process waits for their answers */
  const busy = () => (inFlight > 0 || digests.size > 0 ? worker?.ref() : worker?.unref());

  function thread(): Worker {
    if (worker) return worker;
    // execArgv []: the thread runs plain JS, it needs none of the parent's loaders (tsx)
    const w = new Worker(THREAD_SOURCE, { eval: true, execArgv: [] });
    w.on('message', (m: { op: string; seq?: number; hex?: string }) => {
      if (m.op === 'ack') {
        inFlight--;
        room.shift()?.();
      } else if (m.op === 'digest') {
        digests.get(m.seq!)?.resolve(m.hex!);
        digests.delete(m.seq!);
      }
      busy();
    });
    const fail = (err: Error) => {
      if (worker === w) worker = undefined;
      inFlight = 0;
      for (const r of room.splice(0)) r();
      for (const d of digests.values()) d.reject(new Error(`sha256 thread ended: ${err.message}`));
      digests.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    worker = w;
    w.unref(); // after the listeners (attaching a 'message' listener refs it again)
    return w;
  }

  function hash(): ThreadedHash {
    const id = ++nextId;
    const w = thread();
    return {
      async update(buf, n) {
        while (inFlight >= MAX_IN_FLIGHT && worker === w) await new Promise<void>((r) => room.push(r));
        if (worker !== w) throw new Error('sha256 thread ended while hashing');
        inFlight++;
        busy();
        // a buffer that owns its whole ArrayBuffer can be transferred; a pooled slice is copied
        const own = buf.byteOffset === 0 && buf.buffer.byteLength === buf.length;
        const ab = own ? buf.buffer : buf.buffer.slice(buf.byteOffset, buf.byteOffset + n);
        w.postMessage({ op: 'update', id, buf: ab, n }, [ab as ArrayBuffer]);
      },
      digest() {
        const s = ++seq;
        if (worker !== w) return Promise.reject(new Error('sha256 thread ended while hashing'));
        return new Promise<string>((resolve, reject) => {
          digests.set(s, { resolve, reject });
          busy();
          w.postMessage({ op: 'digest', id, seq: s });
        });
      },
      drop() {
        if (worker === w) w.postMessage({ op: 'drop', id });
      },
    };
  }

  return { hash, close: async () => void (await worker?.terminate()) };
}

export type Sha256Thread = ReturnType<typeof createSha256Thread>;
