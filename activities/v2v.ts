// V2V on a host agent (issue 11, "other platforms"): open a package another platform exported
// (OVA archive, OVF folder, or a bare vmdk/vhdx/raw/qcow2 image with ferry's JSON descriptor),
// check it is what it says and nothing more, and stage its disk for ProvisionVm's import method;
// and export a stopped VM's disk to OVA (OVF + streamOptimized vmdk + SHA256 manifest) or to a
// raw/qcow2/vhdx image. Runs on the agent of the host that will run (or runs) the VM: the files
// are that host's. Every refusal is a Refused failure naming the problem, after the staging
// folder and any partial output are gone.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import { execa } from 'execa';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { DiskFormat } from '../domain/hypervisor.js';
import { descriptorFromJson, descriptorFromOvf, diskSizeProblem, ovfEnvelope, parseManifest, type VmPackageDescriptor } from '../domain/ovf.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';
import { extractTar, PackageRefused, writeTar } from './v2v-tar.js';

export interface OpenPackageInput {
  /** names this import's staging folder; the workflow discards it when the import ends */
  stageId: string;
  /** absolute path on this host: an .ova, an .ovf (its folder), a folder with one .ovf, or a .json descriptor */
  path: string;
}

export interface OpenedPackage {
  descriptor: VmPackageDescriptor;
  /** the disk ProvisionVm imports: a path this host's driver reads */
  disk: { path: string; format: DiskFormat; virtualBytes: number; fileBytes: number };
  packageKind: 'ova' | 'ovf' | 'image';
  /** manifest entries checked (0 when the package has none) */
  verifiedFiles: number;
}

export type ExportFormat = 'ova' | 'raw' | 'qcow2' | 'vhdx';
export interface ExportInput {
  vmId: string;
  name: string;
  cpus: number;
  memoryMiB: number;
  network: string;
  diskPath: string;
  format: ExportFormat;
  /** absolute path of the file to write; must not exist */
  to: string;
}
export interface ExportResult {
  path: string;
  format: ExportFormat;
  bytes: number;
  sha256: string;
  /** the disk's guest-visible size */
  virtualBytes: number;
}

/** What the simulator's driver offers for V2V (duck-typed: real drivers read the files themselves). */
interface SimImageStaging {
  adoptImportImage(i: { stageId: string; file: string; format: DiskFormat; sizeBytes: number }): Promise<{ path: string }>;
  forgetImportImage(path: string): Promise<void>;
}

export interface V2vDeps {
  hostId: string;
  driver: { kind: string } & Partial<SimImageStaging>;
  /** where OVAs are unpacked (default <tmp>/ferry-v2v/<hostId>) */
  stagingDir?: string;
  qemuImg?: string;
}

const refused = (msg: string) => failure(ErrorType.Refused, msg);
const STAGE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

interface ImgInfo {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'format-specific'?: { type?: string; data?: { 'create-type'?: string; extents?: Array<{ filename?: string }> } };
}

async function digestFile(file: string, algorithm: 'sha1' | 'sha256' | 'sha512'): Promise<string> {
  const h = createHash(algorithm);
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const sha256File = (file: string): Promise<string> => digestFile(file, 'sha256');

/** Heartbeats every 2 s while `work` runs (long converts and hashes), so cancellation reaches it. */
async function beating<T>(what: string, work: () => Promise<T>): Promise<T> {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined; // called outside an activity (unit tests)
  }
  const t = ctx ? setInterval(() => ctx!.heartbeat({ step: what }), 2000) : undefined;
  try {
    return await work();
  } finally {
    if (t) clearInterval(t);
  }
}

export function createV2vActivities(deps: V2vDeps) {
  const qemuImg = deps.qemuImg ?? 'qemu-img';
  const stagingRoot = deps.stagingDir ?? path.join(os.tmpdir(), 'ferry-v2v', deps.hostId);
  const stageDir = (id: string) => {
    if (!STAGE_ID.test(id)) throw failure(ErrorType.InvalidArgument, `stageId "${id}" must be 1-128 letters, digits, . _ -`);
    return path.join(stagingRoot, id);
  };
  const sim = typeof deps.driver.adoptImportImage === 'function' ? (deps.driver as SimImageStaging) : undefined;

  async function img(args: string[], what: string): Promise<string> {
    const r = await execa(qemuImg, args, { reject: false, stdin: 'ignore', timeout: 60 * 60_000, cancelSignal: cancelSignal() });
    if (r.exitCode !== 0) throw new PackageRefused(`${what}: ${String(r.stderr || r.shortMessage).trim().slice(-400)}`);
    return String(r.stdout);
  }

  /** A plain file inside `dir`, never a link and never a path resolving elsewhere. */
  async function plainFileIn(dir: string, name: string): Promise<string> {
    const p = path.join(dir, name);
    const st = await fs.lstat(p).catch(() => undefined);
    if (!st) throw new PackageRefused(`file ${name} named by the descriptor is not in the package`);
    if (st.isSymbolicLink()) throw new PackageRefused(`file ${name} is a symbolic link: refused (it could point anywhere)`);
    if (!st.isFile()) throw new PackageRefused(`file ${name} is not a plain file`);
    const real = await fs.realpath(p);
    if (path.dirname(real) !== (await fs.realpath(dir))) throw new PackageRefused(`file ${name} resolves outside the package folder`);
    return p;
  }

  function parseOvfText(xml: string): VmPackageDescriptor {
    if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new PackageRefused('the OVF descriptor declares a DOCTYPE or entities: refused (an OVF has none)');
    const valid = XMLValidator.validate(xml);
    if (valid !== true) throw new PackageRefused(`the OVF descriptor is not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', removeNSPrefix: true, parseTagValue: false, parseAttributeValue: false }).parse(xml) as unknown;
    const d = descriptorFromOvf(doc);
    if (!d.ok) throw new PackageRefused(`the OVF descriptor: ${d.problem}`);
    return d.value;
  }

  /** Manifest (.mf) digests against the files: a mismatch is tampering. */
  async function verifyManifest(dir: string, files: string[], mustCover: string[]): Promise<number> {
    const mfs = files.filter((f) => f.endsWith('.mf'));
    if (mfs.length === 0) return 0;
    if (mfs.length > 1) throw new PackageRefused(`the package holds ${mfs.length} manifests (${mfs.join(', ')}); one is allowed`);
    const m = parseManifest(await fs.readFile(await plainFileIn(dir, mfs[0]), 'utf8'));
    if (!m.ok) throw new PackageRefused(`manifest ${mfs[0]}: ${m.problem}`);
    for (const f of mustCover) if (!m.value.has(f)) throw new PackageRefused(`manifest ${mfs[0]} does not cover ${f}`);
    for (const [f, { algorithm, digest }] of m.value) {
      const got = await beating(`hash ${f}`, async () => digestFile(await plainFileIn(dir, f), algorithm));
      if (got !== digest) throw new PackageRefused(`${f} does not match the manifest (${algorithm.toUpperCase()} ${got} != ${digest}): the package was tampered with or corrupted`);
    }
    return m.value.size;
  }

  /** qemu-img's view of a disk against the descriptor: format, sizes, nothing referenced outside. */
  async function checkDisk(file: string, d: VmPackageDescriptor['disks'][number]) {
    const info = JSON.parse(await img(['info', '--output=json', file], `disk ${d.file} is not a readable disk image`)) as ImgInfo;
    const fileBytes = (await fs.stat(file)).size;
    if (info['backing-filename']) throw new PackageRefused(`disk ${d.file} has a backing file "${info['backing-filename']}": refused (it would read outside the package)`);
    for (const e of info['format-specific']?.data?.extents ?? []) {
      if (e.filename && path.resolve(e.filename) !== path.resolve(file)) throw new PackageRefused(`disk ${d.file} has an extent in "${e.filename}": refused (only monolithic vmdk files)`);
    }
    const problem = diskSizeProblem(d, { virtualBytes: info['virtual-size'], fileBytes, format: info.format });
    if (problem) throw new PackageRefused(problem);
    return { virtualBytes: info['virtual-size'], fileBytes };
  }

  async function open(input: OpenPackageInput, dir: string): Promise<OpenedPackage> {
    if (typeof input.path !== 'string' || !path.isAbsolute(input.path)) throw failure(ErrorType.InvalidArgument, `path "${String(input.path)}" must be an absolute path on host ${deps.hostId}`);
    const st = await fs.stat(input.path).catch(() => undefined);
    if (!st) throw failure(ErrorType.NotFound, `package ${input.path} does not exist on host ${deps.hostId}`);
    let folder: string;
    let files: string[];
    let kind: OpenedPackage['packageKind'];
    let descriptor: VmPackageDescriptor;
    let ovfName: string | undefined;
    if (st.isFile() && (input.path.endsWith('.ova') || input.path.endsWith('.tar'))) {
      await fs.mkdir(dir, { recursive: true });
      files = await beating('unpack', () => extractTar(input.path, dir));
      folder = dir;
      kind = 'ova';
      const ovfs = files.filter((f) => f.endsWith('.ovf'));
      if (ovfs.length !== 1 || files[0] !== ovfs[0]) throw new PackageRefused(`an OVA holds exactly one .ovf descriptor, first in the archive (found ${ovfs.length ? ovfs.join(', ') : 'none'}; first entry ${files[0] ?? 'none'})`);
      ovfName = ovfs[0];
    } else if (st.isDirectory() || input.path.endsWith('.ovf')) {
      folder = st.isDirectory() ? input.path : path.dirname(input.path);
      files = (await fs.readdir(folder)).sort();
      kind = 'ovf';
      const ovfs = st.isDirectory() ? files.filter((f) => f.endsWith('.ovf')) : [path.basename(input.path)];
      if (ovfs.length !== 1) throw new PackageRefused(`folder ${folder} holds ${ovfs.length} .ovf descriptors; one is expected`);
      ovfName = ovfs[0];
    } else if (st.isFile() && input.path.endsWith('.json')) {
      folder = path.dirname(input.path);
      files = [path.basename(input.path)];
      kind = 'image';
    } else {
      throw failure(ErrorType.InvalidArgument, `path ${input.path} is none of: an .ova archive, an .ovf file, a folder with one .ovf, a .json image descriptor`);
    }
    if (ovfName !== undefined) {
      descriptor = parseOvfText(await fs.readFile(await plainFileIn(folder, ovfName), 'utf8'));
    } else {
      let json: unknown;
      try {
        json = JSON.parse(await fs.readFile(input.path, 'utf8'));
      } catch (e) {
        throw new PackageRefused(`descriptor ${input.path} is not JSON: ${(e as Error).message}`);
      }
      const d = descriptorFromJson(json);
      if (!d.ok) throw new PackageRefused(`descriptor ${input.path}: ${d.problem}`);
      descriptor = d.value;
    }
    if (descriptor.disks.length !== 1) {
      throw new PackageRefused(`the VM has ${descriptor.disks.length} disks; ferry's import method provisions one root disk (merge or drop the others first)`);
    }
    const disk = descriptor.disks[0];
    const verifiedFiles = ovfName !== undefined ? await verifyManifest(folder, files, [ovfName, disk.file]) : 0;
    const diskPath = await plainFileIn(folder, disk.file);
    const sizes = await checkDisk(diskPath, disk);
    let importPath = diskPath;
    if (sim) importPath = (await sim.adoptImportImage({ stageId: input.stageId, file: disk.file, format: disk.format, sizeBytes: sizes.virtualBytes })).path;
    return { descriptor, disk: { path: importPath, format: disk.format, ...sizes }, packageKind: kind, verifiedFiles };
  }

  return withFailureMapping({
    async openVmPackage(input: OpenPackageInput): Promise<OpenedPackage> {
      const dir = stageDir(input.stageId);
      // a retry starts from nothing: the staging folder of an attempt that died is removed first
      await fs.rm(dir, { recursive: true, force: true });
      try {
        return await open(input, dir);
      } catch (e) {
        await fs.rm(dir, { recursive: true, force: true });
        if (e instanceof PackageRefused) throw refused(`package ${input.path} refused: ${e.message}`);
        if ((e as NodeJS.ErrnoException).code === 'EACCES') throw refused(`package ${input.path} refused: ${(e as Error).message}`);
        throw e;
      }
    },

    /** Removes what openVmPackage staged (idempotent). */
    async discardVmPackage(input: { stageId: string; importPath?: string }): Promise<void> {
      await fs.rm(stageDir(input.stageId), { recursive: true, force: true });
      if (sim && input.importPath?.startsWith('sim://')) await sim.forgetImportImage(input.importPath);
    },

    async exportVmImage(input: ExportInput): Promise<ExportResult> {
      if (sim || deps.driver.kind === 'sim') throw failure(ErrorType.InvalidState, `host ${deps.hostId} is simulated: its disks hold no bytes to export (export needs a qemu host)`);
      if (!['ova', 'raw', 'qcow2', 'vhdx'].includes(input.format)) throw failure(ErrorType.InvalidArgument, `format "${input.format}" must be ova, raw, qcow2 or vhdx`);
      if (typeof input.to !== 'string' || !path.isAbsolute(input.to)) throw failure(ErrorType.InvalidArgument, `to "${String(input.to)}" must be an absolute path on host ${deps.hostId}`);
      const parent = await fs.stat(path.dirname(input.to)).catch(() => undefined);
      if (!parent?.isDirectory()) throw failure(ErrorType.InvalidArgument, `folder ${path.dirname(input.to)} of "to" does not exist on host ${deps.hostId}`);
      if (await fs.lstat(input.to).catch(() => undefined)) throw failure(ErrorType.Conflict, `${input.to} already exists on host ${deps.hostId}; ferry does not overwrite`);
      if (!(await fs.stat(input.diskPath).catch(() => undefined))) throw failure(ErrorType.NotFound, `disk ${input.diskPath} of ${input.vmId} is not on host ${deps.hostId}`);
      const tag = randomBytes(4).toString('hex');
      const partial = path.join(path.dirname(input.to), `.${path.basename(input.to)}.${tag}.partial`);
      const work = path.join(path.dirname(input.to), `.${path.basename(input.to)}.${tag}.d`);
      try {
        const info = JSON.parse(await img(['info', '--output=json', '-U', input.diskPath], `disk ${input.diskPath}`)) as ImgInfo;
        if (input.format === 'ova') {
          await fs.mkdir(work);
          const vmdk = `${input.name}-disk1.vmdk`;
          const ovf = `${input.name}.ovf`;
          // streamOptimized: the compressed, sequential vmdk an OVA carries (VMware's importers want it)
          await beating('convert', () => img(['convert', '-U', '-O', 'vmdk', '-o', 'subformat=streamOptimized', input.diskPath, path.join(work, vmdk)], 'qemu-img convert'));
          const fileBytes = (await fs.stat(path.join(work, vmdk))).size;
          await fs.writeFile(path.join(work, ovf), ovfEnvelope({ name: input.name, cpus: input.cpus, memoryMiB: input.memoryMiB, network: input.network, disk: { file: vmdk, fileBytes, capacityBytes: info['virtual-size'] } }));
          const mf = `${input.name}.mf`;
          const lines = [];
          for (const f of [ovf, vmdk]) lines.push(`SHA256(${f})= ${await beating('hash', () => sha256File(path.join(work, f)))}\n`);
          await fs.writeFile(path.join(work, mf), lines.join(''));
          await writeTar(partial, work, [ovf, vmdk, mf]);
        } else {
          await beating('convert', () => img(['convert', '-U', '-O', input.format, input.diskPath, partial], 'qemu-img convert'));
        }
        await fs.rename(partial, input.to);
        return { path: input.to, format: input.format, bytes: (await fs.stat(input.to)).size, sha256: await sha256File(input.to), virtualBytes: info['virtual-size'] };
      } catch (e) {
        if (e instanceof PackageRefused) throw failure(ErrorType.Hypervisor, `export of ${input.vmId} failed: ${e.message}`);
        throw e;
      } finally {
        await fs.rm(partial, { force: true });
        await fs.rm(work, { recursive: true, force: true });
      }
    },
  });
}

function cancelSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

export type V2vActivities = ReturnType<typeof createV2vActivities>;
