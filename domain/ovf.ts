// V2V packages (issue 11, "other platforms"): what an OVF descriptor, an OVA's file names, an OVF
// manifest and ferry's small JSON descriptor for a bare image must say, and the OVF ferry writes
// on export. Pure: the XML text is parsed by the caller (fast-xml-parser, namespace prefixes
// removed, attributes prefixed "@_"); every problem is a sentence naming the field, never a throw
// from deep inside.
import type { DiskFormat } from './hypervisor.js';

/** What ferry takes from a package: one VM, its disks and NICs. */
export interface VmPackageDescriptor {
  name: string;
  cpus: number;
  memoryMiB: number;
  disks: PackageDisk[];
  /** network names the source platform connected the NICs to (ferry attaches its own network) */
  nics: string[];
}

export interface PackageDisk {
  /** file name inside the package folder (validated with packagePathProblem) */
  file: string;
  format: DiskFormat;
  /** the guest-visible size the descriptor declares */
  capacityBytes: number;
  /** the file's size the descriptor declares (OVF References/File ovf:size), when it does */
  fileSizeBytes?: number;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

/**
 * Why a file name from a package may not be used, or undefined. Only plain names in the package
 * folder itself: no directories, no `..`, nothing absolute, no backslashes or NULs (a Windows
 * path is a climb too).
 */
export function packagePathProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'a file name is empty';
  if (name.length > 255) return `file name "${name.slice(0, 40)}…" is longer than 255 characters`;
  if (name.includes('\0')) return `file name "${name.replace(/\0/g, '\\0')}" contains a NUL byte`;
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) return `file "${name}" is an absolute path outside the package`;
  if (name.includes('\\')) return `file "${name}" contains a backslash`;
  const parts = name.replace(/^\.\//, '').split('/');
  if (parts.some((p) => p === '..')) return `file "${name}" climbs out of the package folder (..)`;
  if (parts.length > 1) return `file "${name}" is in a subfolder; a package's files sit in its top folder`;
  if (parts[0] === '.' || parts[0] === '') return `file name "${name}" names the folder itself`;
  return undefined;
}

/** The name a package entry is known by ("./a.vmdk" and "a.vmdk" are the same file). */
export function packageName(name: string): string {
  return name.replace(/^\.\//, '');
}

const arr = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);
const obj = (v: unknown): Record<string, unknown> => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
/** Element text whether the parser gave a string, a number or { '#text': ... } */
function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v.trim();
  if (typeof v === 'number') return String(v);
  const t = obj(v)['#text'];
  return t === undefined ? undefined : String(t).trim();
}

/** OVF allocation units: "byte", "byte * 2^20", "MegaBytes", "GigaBytes" ... as a multiplier. */
export function allocationUnits(u: string | undefined, fallback: number): number | undefined {
  if (u === undefined || u === '') return fallback;
  const s = u.replace(/\s+/g, '').toLowerCase();
  if (s === 'byte' || s === 'bytes') return 1;
  const pow = /^byte\*2\^(\d{1,2})$/.exec(s);
  if (pow) return 2 ** Number(pow[1]);
  const named: Record<string, number> = { kilobytes: 1024, kb: 1024, megabytes: 1024 ** 2, mb: 1024 ** 2, gigabytes: 1024 ** 3, gb: 1024 ** 3 };
  return named[s];
}

const FORMAT_URIS: Array<[RegExp, DiskFormat]> = [
  [/vmdk/i, 'vmdk'],
  [/qcow2?/i, 'qcow2'],
  [/vhdx/i, 'vhdx'],
  [/raw|\.img\b/i, 'raw'],
];

function diskFormatOf(uri: string | undefined, file: string): DiskFormat | undefined {
  for (const [re, f] of FORMAT_URIS) if (uri && re.test(uri)) return f;
  for (const [re, f] of FORMAT_URIS) if (re.test(file)) return f;
  return undefined;
}

const MiB = 1024 ** 2;
const posInt = (s: string | undefined): number | undefined => (s !== undefined && /^\d{1,18}$/.test(s) && Number(s) > 0 && Number.isSafeInteger(Number(s)) ? Number(s) : undefined);

/**
 * The VM an OVF envelope describes (DMTF DSP0243: References/File, DiskSection/Disk,
 * NetworkSection, VirtualSystem/VirtualHardwareSection Items with rasd:ResourceType 3 CPU,
 * 4 memory, 17 disk, 10 NIC). `doc` is fast-xml-parser's output with prefixes removed.
 */
export function descriptorFromOvf(doc: unknown): Parsed<VmPackageDescriptor> {
  const env = obj(obj(doc).Envelope);
  if (Object.keys(env).length === 0) return bad('the descriptor has no OVF <Envelope> element');
  const files = new Map<string, { href: string; size?: number }>();
  for (const f of arr(obj(env.References).File)) {
    const a = obj(f);
    const id = text(a['@_id']);
    const href = text(a['@_href']);
    if (!id || href === undefined) return bad('a References/File lacks ovf:id or ovf:href');
    const p = packagePathProblem(href);
    if (p) return bad(`References/File ${id}: ${p}`);
    const size = a['@_size'] !== undefined ? posInt(text(a['@_size'])) : undefined;
    if (a['@_size'] !== undefined && size === undefined) return bad(`References/File ${id}: ovf:size "${text(a['@_size'])}" is not a positive integer`);
    files.set(id, { href: packageName(href), ...(size !== undefined ? { size } : {}) });
  }
  const disksById = new Map<string, PackageDisk>();
  for (const d of arr(obj(env.DiskSection).Disk)) {
    const a = obj(d);
    const id = text(a['@_diskId']);
    if (!id) return bad('a DiskSection/Disk lacks ovf:diskId');
    const ref = text(a['@_fileRef']);
    const file = ref ? files.get(ref) : undefined;
    if (!file) return bad(`disk ${id}: ovf:fileRef "${ref ?? ''}" names no References/File`);
    const unit = allocationUnits(text(a['@_capacityAllocationUnits']), 1);
    if (unit === undefined) return bad(`disk ${id}: ovf:capacityAllocationUnits "${text(a['@_capacityAllocationUnits'])}" is not understood`);
    const cap = posInt(text(a['@_capacity']));
    if (cap === undefined) return bad(`disk ${id}: ovf:capacity "${text(a['@_capacity']) ?? ''}" is not a positive integer`);
    const format = diskFormatOf(text(a['@_format']), file.href);
    if (!format) return bad(`disk ${id}: format "${text(a['@_format']) ?? ''}" of ${file.href} is none of vmdk, vhdx, qcow2, raw`);
    disksById.set(id, { file: file.href, format, capacityBytes: cap * unit, ...(file.size !== undefined ? { fileSizeBytes: file.size } : {}) });
  }
  const systems = arr(env.VirtualSystem);
  if (systems.length !== 1) return bad(`the envelope holds ${systems.length} VirtualSystems; ferry imports exactly one VM per package`);
  const vs = obj(systems[0]);
  const name = text(vs.Name) ?? text(vs['@_id']) ?? '';
  const hw = arr(vs.VirtualHardwareSection);
  if (hw.length === 0) return bad('the VirtualSystem has no VirtualHardwareSection');
  let cpus: number | undefined;
  let memoryMiB: number | undefined;
  const disks: PackageDisk[] = [];
  const nics: string[] = [];
  for (const it of arr(obj(hw[0]).Item)) {
    const item = obj(it);
    const type = text(item.ResourceType);
    const qty = text(item.VirtualQuantity);
    if (type === '3') {
      cpus = posInt(qty);
      if (cpus === undefined) return bad(`the CPU item's VirtualQuantity "${qty ?? ''}" is not a positive integer`);
    } else if (type === '4') {
      const unit = allocationUnits(text(item.AllocationUnits), MiB);
      const n = posInt(qty);
      if (unit === undefined) return bad(`the memory item's AllocationUnits "${text(item.AllocationUnits)}" is not understood`);
      if (n === undefined) return bad(`the memory item's VirtualQuantity "${qty ?? ''}" is not a positive integer`);
      memoryMiB = Math.ceil((n * unit) / MiB);
    } else if (type === '17') {
      const res = text(item.HostResource) ?? '';
      const m = /^ovf:\/disk\/(.+)$/.exec(res);
      const disk = m ? disksById.get(m[1]) : undefined;
      if (!disk) return bad(`a disk item's HostResource "${res}" names no DiskSection/Disk`);
      disks.push(disk);
    } else if (type === '10') {
      nics.push(text(item.Connection) ?? '');
    }
  }
  if (cpus === undefined) return bad('the VirtualHardwareSection has no CPU item (rasd:ResourceType 3)');
  if (memoryMiB === undefined) return bad('the VirtualHardwareSection has no memory item (rasd:ResourceType 4)');
  if (disks.length === 0) return bad('the VM has no disk (no rasd:ResourceType 17 item)');
  return ok({ name, cpus, memoryMiB, disks, nics });
}

/**
 * ferry's descriptor for a bare image: `{ "name"?, "cpus", "memoryMiB", "disk": "<file>",
 * "format"?, "capacityBytes"? }` next to the image.
 */
export function descriptorFromJson(v: unknown): Parsed<VmPackageDescriptor> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad('the JSON descriptor is not an object');
  const o = v as Record<string, unknown>;
  const known = new Set(['name', 'cpus', 'memoryMiB', 'disk', 'format', 'capacityBytes']);
  const extra = Object.keys(o).filter((k) => !known.has(k));
  if (extra.length) return bad(`the JSON descriptor has unknown field(s) ${extra.join(', ')}`);
  const int = (k: string) => (Number.isSafeInteger(o[k]) && (o[k] as number) > 0 ? (o[k] as number) : undefined);
  const cpus = int('cpus');
  if (cpus === undefined) return bad('descriptor.cpus must be a positive integer');
  const memoryMiB = int('memoryMiB');
  if (memoryMiB === undefined) return bad('descriptor.memoryMiB must be a positive integer');
  if (o.name !== undefined && typeof o.name !== 'string') return bad('descriptor.name must be a string');
  const p = packagePathProblem(o.disk);
  if (p) return bad(`descriptor.disk: ${p}`);
  const file = packageName(o.disk as string);
  const format = o.format === undefined ? diskFormatOf(undefined, file) : (['vmdk', 'vhdx', 'raw', 'qcow2'] as const).find((f) => f === o.format);
  if (!format) return bad(`descriptor.format "${String(o.format ?? '')}" must be one of vmdk, vhdx, raw, qcow2 (or the file end in one)`);
  if (o.capacityBytes !== undefined && int('capacityBytes') === undefined) return bad('descriptor.capacityBytes must be a positive integer');
  return ok({ name: (o.name as string | undefined) ?? '', cpus, memoryMiB, disks: [{ file, format, capacityBytes: int('capacityBytes') ?? 0 }], nics: [] });
}

/** OVF manifest lines `SHA256(file)= hex` (also SHA1/SHA512): file -> { algorithm, digest }. */
export function parseManifest(textIn: string): Parsed<Map<string, { algorithm: 'sha1' | 'sha256' | 'sha512'; digest: string }>> {
  const out = new Map<string, { algorithm: 'sha1' | 'sha256' | 'sha512'; digest: string }>();
  for (const [i, raw] of textIn.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line) continue;
    const m = /^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)$/.exec(line);
    if (!m) return bad(`manifest line ${i + 1} is not "SHA256(file)= digest"`);
    const p = packagePathProblem(m[2]);
    if (p) return bad(`manifest line ${i + 1}: ${p}`);
    const algorithm = m[1].toLowerCase() as 'sha1' | 'sha256' | 'sha512';
    const len = { sha1: 40, sha256: 64, sha512: 128 }[algorithm];
    if (m[3].length !== len) return bad(`manifest line ${i + 1}: a ${m[1]} digest has ${len} hex digits, not ${m[3].length}`);
    out.set(packageName(m[2]), { algorithm, digest: m[3].toLowerCase() });
  }
  return ok(out);
}

/** Why a disk file may not be imported as the descriptor declares it, or undefined. */
export function diskSizeProblem(d: PackageDisk, actual: { virtualBytes: number; fileBytes: number; format: string }): string | undefined {
  if (actual.format !== d.format) return `disk ${d.file} is ${actual.format}, the descriptor says ${d.format}`;
  if (d.capacityBytes > 0 && actual.virtualBytes > d.capacityBytes) {
    return `disk ${d.file} is larger than declared: virtual size ${actual.virtualBytes} bytes > capacity ${d.capacityBytes}`;
  }
  if (d.fileSizeBytes !== undefined && actual.fileBytes > d.fileSizeBytes) {
    return `disk ${d.file} is larger than declared: file size ${actual.fileBytes} bytes > ovf:size ${d.fileSizeBytes}`;
  }
  return undefined;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The OVF 1.x envelope ferry exports: one VM, one streamOptimized vmdk, one NIC. */
export function ovfEnvelope(vm: { name: string; cpus: number; memoryMiB: number; disk: { file: string; fileBytes: number; capacityBytes: number }; network: string }): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:id="file1" ovf:href="${esc(vm.disk.file)}" ovf:size="${vm.disk.fileBytes}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="${vm.disk.capacityBytes}" ovf:capacityAllocationUnits="byte" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="${esc(vm.network)}"><Description>${esc(vm.network)}</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${esc(vm.name)}">
    <Info>A virtual machine exported by ferry</Info>
    <Name>${esc(vm.name)}</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>ferry-qemu</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>${vm.cpus} virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>${vm.cpus}</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>${vm.memoryMiB} MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>${vm.memoryMiB}</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>disk0</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>${esc(vm.network)}</rasd:Connection><rasd:ElementName>ethernet0</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}
