// ferry vms import <path> [--name N] [--network NET] [--host H] [--no-start] and
// ferry vms export <vm> --format ova|raw|qcow2|vhdx --to <path>: V2V (POST /v1/vms/import,
// POST /v1/vms/{id}/export). Paths are on the host that reads or writes them (the import's
// host, the VM's host); a relative path is taken from the current folder, which is right when
// the CLI runs on that host (the lab: one machine).
import { resolve } from 'node:path';
import { answer } from '../client.js';
import { flag, type Command } from '../command.js';
import { nonEmpty, oneOf } from '../flags.js';
import { UsageError } from '../errors.js';
import { keyValues, print } from '../output.js';

const FORMATS = ['ova', 'raw', 'qcow2', 'vhdx'] as const;

export const vmV2vCommands: Command[] = [
  {
    words: ['vms', 'import'],
    args: ['path'],
    usage: 'vms import <path> [--name N] [--network NET] [--host H] [--start|--no-start]',
    summary: 'import a VM from an OVA, an OVF folder, or a vmdk/vhdx/raw image with a JSON descriptor (checked first; refused packages leave nothing)',
    options: { name: { type: 'string' }, network: { type: 'string' }, host: { type: 'string' }, start: { type: 'boolean' }, 'no-start': { type: 'boolean' } },
    run: async (c) => {
      if (c.opts.start && c.opts['no-start']) throw new UsageError('give --start or --no-start, not both');
      const body = {
        path: resolve(c.cwd, nonEmpty('path', c.args[0]!)),
        ...(flag(c, 'name') !== undefined ? { name: nonEmpty('name', flag(c, 'name')!) } : {}),
        ...(flag(c, 'network') !== undefined ? { network: nonEmpty('network', flag(c, 'network')!) } : {}),
        ...(flag(c, 'host') !== undefined ? { hostId: nonEmpty('host', flag(c, 'host')!) } : {}),
        start: !c.opts['no-start'],
      };
      const r = await answer(c.api.client.POST('/v1/vms/import', { body }));
      return print(c, r, (v) =>
        keyValues({ vm: `${v.name} (${v.vmId})`, host: v.hostId, package: v.descriptor.packageKind, cpus: v.descriptor.cpus, memoryMiB: v.descriptor.memoryMiB, diskGiB: v.descriptor.diskGiB, disk: v.descriptor.format, 'manifest files verified': v.descriptor.verifiedFiles, workflow: v.workflowId, 'web ui': v.webUiUrl }),
      );
    },
  },
  {
    words: ['vms', 'export'],
    args: ['id'],
    usage: 'vms export <id> --format ova|raw|qcow2|vhdx --to <path>',
    summary: "export a stopped VM's disk (ova: OVF + streamOptimized vmdk + SHA256 manifest) to a file on its host",
    options: { format: { type: 'string' }, to: { type: 'string' } },
    run: async (c) => {
      const format = oneOf('format', flag(c, 'format'), FORMATS);
      if (!format) throw new UsageError(`flag --format is required (one of ${FORMATS.join(', ')})`);
      const to = flag(c, 'to');
      if (to === undefined) throw new UsageError('flag --to <path> is required');
      const r = await answer(c.api.client.POST('/v1/vms/{id}/export', { params: { path: { id: c.args[0]! } }, body: { format, to: resolve(c.cwd, nonEmpty('to', to)) } }));
      return print(c, r, (v) => keyValues({ vm: v.vmId, host: v.hostId, file: v.path, format: v.format, bytes: v.bytes, sha256: v.sha256 }));
    },
  },
];
