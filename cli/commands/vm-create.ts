// The POST /v1/vms body from the flags of `vms create`: sizes, exactly one source, and the
// cloud-init pieces read from files (user-data, ssh keys).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { nonEmpty, positiveInt, type Values } from '../flags.js';
import { UsageError } from '../errors.js';
import type { paths } from '../generated/api.js';

export type VmCreateBody = paths['/v1/vms']['post']['requestBody']['content']['application/json'];
type DiskFormat = NonNullable<VmCreateBody['import']>['format'];

const FORMATS: readonly DiskFormat[] = ['vmdk', 'vhdx', 'raw', 'qcow2'];
const SSH_KEY = /^(ssh|ecdsa|sk)-\S+ \S+/;

/** The POST /v1/vms body from `vms create` flags; every problem a UsageError naming its flag. */
export function vmCreateBody(name: string, o: Values, cwd: string): VmCreateBody {
  const body: VmCreateBody = {
    name,
    cpus: positiveInt('cpus', o.cpus as string | undefined),
    memoryMiB: positiveInt('memory', o.memory as string | undefined),
    diskGiB: positiveInt('disk', o.disk as string | undefined),
  };
  const sources = (['template', 'clone', 'import', 'iso'] as const).filter((s) => o[s] !== undefined);
  if (sources.length === 0) throw new UsageError('vms create needs one source: --template T, --clone VM, --import PATH --format F or --iso PATH');
  if (sources.length > 1) throw new UsageError(`vms create takes one source, got ${sources.map((s) => `--${s}`).join(' and ')}`);
  const src = sources[0]!;
  const val = nonEmpty(src, o[src] as string);
  const format = o.format as string | undefined;
  if (format !== undefined && src !== 'import') throw new UsageError('flag --format applies only with --import');
  if (src === 'template') body.template = val;
  else if (src === 'clone') body.cloneOf = val;
  else if (src === 'iso') body.iso = val;
  else {
    if (format === undefined) throw new UsageError(`flag --format is required with --import (one of ${FORMATS.join(', ')})`);
    if (!isFormat(format)) throw new UsageError(`flag --format must be one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
    body.import = { path: val, format };
  }
  if (o.network !== undefined) body.network = nonEmpty('network', o.network as string);
  if (o.host !== undefined) body.hostId = nonEmpty('host', o.host as string);
  if (o['user-data'] !== undefined) {
    const file = resolve(cwd, nonEmpty('user-data', o['user-data'] as string));
    try {
      body.userData = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`flag --user-data: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (o['ssh-key'] !== undefined) body.sshKeys = (o['ssh-key'] as string[]).flatMap((k) => sshKeys(k, cwd));
  if (o.tag !== undefined) body.tags = (o.tag as string[]).map((t) => nonEmpty('tag', t));
  return body;
}

function isFormat(f: string): f is DiskFormat {
  return (FORMATS as readonly string[]).includes(f);
}

/** An OpenSSH public key line, or a public key file (e.g. ~/.ssh/id_ed25519.pub), one key per line. */
function sshKeys(k: string, cwd: string): string[] {
  if (SSH_KEY.test(k.trim())) return [k.trim()];
  let text: string;
  try {
    text = readFileSync(resolve(cwd, k), 'utf8');
  } catch {
    throw new UsageError(`flag --ssh-key: ${JSON.stringify(k)} is neither an OpenSSH public key line nor a readable file`);
  }
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const bad = lines.find((l) => !SSH_KEY.test(l));
  if (lines.length === 0 || bad !== undefined) throw new UsageError(`flag --ssh-key: ${k} does not hold OpenSSH public key lines`);
  return lines;
}
