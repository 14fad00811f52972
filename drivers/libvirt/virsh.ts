// virsh through execa, bound to one libvirtd by its connection URI: argument arrays only (never a
// shell), a timeout on every call, and libvirt's one-line "error: ..." turned into a DriverError
// whose code says what kind of failure it is (parse.ts classifyVirshError).
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { DriverError } from '../hypervisor.js';
import { classifyVirshError, virshErrorMessage } from './parse.js';

export interface Virsh {
  readonly uri: string;
  /** runs `virsh -c <uri> ...args`; stdout on success, DriverError otherwise */
  run(args: string[], opts?: { timeoutMs?: number; signal?: AbortSignal }): Promise<string>;
  /** like run, but a NOT_FOUND failure is `null` */
  maybe(args: string[], opts?: { timeoutMs?: number }): Promise<string | null>;
  /** runs a virsh command that takes an XML file (define, pool-define, vol-create): the file is temporary */
  withXmlFile<T>(xml: string, use: (file: string) => Promise<T>): Promise<T>;
}

export function createVirsh(uri: string, opts: { binary?: string; defaultTimeoutMs?: number } = {}): Virsh {
  const bin = opts.binary ?? 'virsh';
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? 60_000;

  async function run(args: string[], o: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<string> {
    const r = await execa(bin, ['-q', '-c', uri, ...args], {
      reject: false,
      stdin: 'ignore',
      timeout: o.timeoutMs ?? defaultTimeoutMs,
      cancelSignal: o.signal,
      // libvirt's messages are what we classify: keep them in English
      env: { LC_ALL: 'C' },
    });
    if (r.exitCode === 0 && !r.failed) return String(r.stdout);
    if ((r as { code?: string }).code === 'ENOENT') {
      throw new DriverError(`virsh binary "${bin}" not found (apt-get install libvirt-clients)`, 'HYPERVISOR', true);
    }
    if (r.timedOut) throw new DriverError(`virsh ${args[0]} on ${uri} timed out after ${o.timeoutMs ?? defaultTimeoutMs} ms`, 'TIMEOUT');
    if (o.signal?.aborted) throw new DriverError(`virsh ${args[0]} aborted`, 'INVALID_STATE');
    const message = virshErrorMessage(String(r.stderr ?? '')) || r.shortMessage || `exit ${r.exitCode}`;
    const { code, permanent } = classifyVirshError(message);
    throw new DriverError(`virsh ${args[0]} ${args.slice(1, 3).join(' ')}: ${message}`.replace(/ +:/, ':'), code, permanent);
  }

  async function maybe(args: string[], o: { timeoutMs?: number } = {}): Promise<string | null> {
    try {
      return await run(args, o);
    } catch (err) {
      if (err instanceof DriverError && err.code === 'NOT_FOUND') return null;
      throw err;
    }
  }

  async function withXmlFile<T>(xml: string, use: (file: string) => Promise<T>): Promise<T> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-lv-xml-'));
    const file = path.join(dir, 'def.xml');
    try {
      await fs.writeFile(file, xml);
      return await use(file);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  return { uri, run, maybe, withXmlFile };
}
