// Domain, pool and volume XML: generated from a VmSpec with fast-xml-parser's builder (escaping is
// the library's, never string concatenation) and read back with its parser. The VmSpec itself rides
// in the domain's <metadata> (namespace urn:ferry:vm:1), so `virsh dumpxml` on any host — the
// source, or the destination after a migration carried the definition over — gives the spec back
// exactly, and the UUID derived from the vmId lets a retried define find its own domain.
import { createHash } from 'node:crypto';
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { DriverError, type VmSpec } from '../hypervisor.js';

export const FERRY_NS = 'urn:ferry:vm:1';
const KiB = 1024;

export interface DomainXmlOptions {
  /** libvirt domain type: qemu (TCG) or kvm */
  domainType: 'qemu' | 'kvm';
  machine: string;
  cpuModel: string;
  emulator?: string;
  /** disk path → image format (qcow2 unless told otherwise) */
  formatOf?: (path: string) => 'qcow2' | 'raw';
}

/** A stable RFC 4122 (version 5 style) UUID for a vmId: the same on every host and every retry. */
export function domainUuid(vmId: string): string {
  const h = createHash('sha1').update(`${FERRY_NS}:${vmId}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });
const ARRAYS = new Set(['disk', 'interface']);
const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (name) => ARRAYS.has(name),
});

const DISK_TARGETS = ['vda', 'vdb', 'vdc', 'vdd', 'vde', 'vdf', 'vdg', 'vdh'];

/** The domain XML of a VmSpec. The libvirt name is the vmId (unique per host); spec.name is the title. */
export function buildDomainXml(spec: VmSpec, o: DomainXmlOptions): string {
  if (spec.disks.length > DISK_TARGETS.length) {
    throw new DriverError(`spec.disks: at most ${DISK_TARGETS.length} disks, got ${spec.disks.length}`, 'INVALID_ARGUMENT', true);
  }
  const formatOf = o.formatOf ?? ((p: string) => (p.endsWith('.qcow2') ? 'qcow2' : 'raw'));
  const disks: unknown[] = spec.disks.map((p, i) => ({
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': formatOf(p), '@_cache': 'none' },
    source: { '@_file': p },
    target: { '@_dev': DISK_TARGETS[i], '@_bus': 'virtio' },
  }));
  // the NoCloud seed and an installer ISO as read-only IDE cdroms (machine `pc` has IDE, not SATA)
  const cdrom = (file: string, dev: string) => ({
    '@_type': 'file',
    '@_device': 'cdrom',
    driver: { '@_name': 'qemu', '@_type': 'raw' },
    source: { '@_file': file },
    target: { '@_dev': dev, '@_bus': 'ide' },
    readonly: '',
  });
  if (spec.seedPath) disks.push(cdrom(spec.seedPath, 'hdc'));
  if (spec.isoPath) disks.push(cdrom(spec.isoPath, 'hdd'));
  const memKiB = Math.ceil(spec.memoryBytes / KiB);
  const devices: Record<string, unknown> = {
    ...(o.emulator ? { emulator: o.emulator } : {}),
    disk: disks,
    // user-mode networking: no host bridge is needed (the lab and CI have none)
    ...(spec.network !== undefined ? { interface: [{ '@_type': 'user', ...(spec.mac ? { mac: { '@_address': spec.mac } } : {}), model: { '@_type': 'virtio' } }] } : {}),
    serial: { '@_type': 'pty', target: { '@_port': '0' } },
    console: { '@_type': 'pty', target: { '@_type': 'serial', '@_port': '0' } },
    memballoon: { '@_model': 'none' },
  };
  const doc = {
    domain: {
      '@_type': o.domainType,
      name: spec.vmId,
      uuid: domainUuid(spec.vmId),
      title: spec.name,
      metadata: { 'ferry:vm': { '@_xmlns:ferry': FERRY_NS, '#text': JSON.stringify(spec) } },
      memory: { '@_unit': 'KiB', '#text': String(memKiB) },
      currentMemory: { '@_unit': 'KiB', '#text': String(memKiB) },
      vcpu: String(spec.cpus),
      os: { type: { '@_arch': 'x86_64', '@_machine': o.machine, '#text': 'hvm' }, boot: { '@_dev': 'hd' } },
      features: { acpi: '' },
      cpu: { '@_mode': 'custom', '@_match': 'exact', model: { '@_fallback': 'allow', '#text': o.cpuModel } },
      clock: { '@_offset': 'utc' },
      on_poweroff: 'destroy',
      on_reboot: 'restart',
      on_crash: 'destroy',
      devices,
    },
  };
  // suppressEmptyNode writes <acpi/> and <readonly/>
  return builder.build(doc) as string;
}

export interface ParsedDomain {
  name: string;
  uuid: string;
  /** the spec ferry defined the domain with; undefined for a domain ferry did not define */
  spec?: VmSpec;
  /** the file-backed disks as libvirt has them now (after a blockcopy pivot they differ) */
  disks: Array<{ device: 'disk' | 'cdrom'; target: string; file?: string; format?: string }>;
}

function parseXml(what: string, xml: string): Record<string, unknown> {
  if (typeof xml !== 'string' || !xml.trim().startsWith('<')) throw new DriverError(`${what}: not XML (${JSON.stringify(String(xml).slice(0, 80))})`, 'HYPERVISOR');
  try {
    return parser.parse(xml) as Record<string, unknown>;
  } catch (e) {
    throw new DriverError(`${what}: malformed XML: ${(e as Error).message}`, 'HYPERVISOR');
  }
}

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Record<string, unknown>)['#text'] === 'string') return (v as Record<string, string>)['#text'];
  return undefined;
}

/** `virsh dumpxml` → name, uuid, ferry's spec, disks. */
export function parseDomainXml(xml: string): ParsedDomain {
  const doc = parseXml('domain XML', xml);
  const d = doc.domain as Record<string, unknown> | undefined;
  if (!d || typeof d !== 'object') throw new DriverError('domain XML: no <domain> element', 'HYPERVISOR');
  const name = text(d.name);
  const uuid = text(d.uuid);
  if (!name || !uuid) throw new DriverError('domain XML: <name> or <uuid> missing', 'HYPERVISOR');
  let spec: VmSpec | undefined;
  const meta = d.metadata as Record<string, unknown> | undefined;
  const raw = meta ? text(meta['ferry:vm']) : undefined;
  if (raw !== undefined) {
    try {
      spec = JSON.parse(raw) as VmSpec;
    } catch {
      throw new DriverError(`domain XML of "${name}": ferry metadata is not JSON`, 'HYPERVISOR');
    }
    if (!spec || typeof spec.vmId !== 'string' || !Array.isArray(spec.disks)) throw new DriverError(`domain XML of "${name}": ferry metadata is not a VmSpec`, 'HYPERVISOR');
  }
  const devices = (d.devices ?? {}) as Record<string, unknown>;
  const disks = ((devices.disk ?? []) as Array<Record<string, unknown>>).map((x) => {
    const src = x.source as Record<string, string> | undefined;
    const drv = x.driver as Record<string, string> | undefined;
    const tgt = x.target as Record<string, string> | undefined;
    return {
      device: (x['@_device'] === 'cdrom' ? 'cdrom' : 'disk') as 'disk' | 'cdrom',
      target: tgt?.['@_dev'] ?? '',
      ...(src?.['@_file'] ? { file: src['@_file'] } : {}),
      ...(drv?.['@_type'] ? { format: drv['@_type'] } : {}),
    };
  });
  return { name, uuid, ...(spec ? { spec } : {}), disks };
}

/** The spec as the domain runs it now: disks and seed from the live XML (a pivot changes them). */
export function currentSpec(p: ParsedDomain): VmSpec | undefined {
  if (!p.spec) return undefined;
  const disks = p.disks.filter((d) => d.device === 'disk' && d.file).map((d) => d.file!);
  const seed = p.disks.find((d) => d.device === 'cdrom' && d.target === 'hdc')?.file;
  return { ...p.spec, disks: disks.length === p.spec.disks.length ? disks : p.spec.disks, ...(seed ? { seedPath: seed } : {}) };
}

export interface PoolXml {
  name: string;
  type: string;
  targetPath: string;
  capacityBytes: number;
  availableBytes: number;
}

function bytes(v: unknown): number {
  const t = text(v);
  return t !== undefined && /^\d+$/.test(t) ? Number(t) : 0;
}

/** `virsh pool-dumpxml`. */
export function parsePoolXml(xml: string): PoolXml {
  const one = parseXml('pool XML', xml).pool as Record<string, unknown> | undefined;
  if (!one) throw new DriverError('pool XML: no <pool> element', 'HYPERVISOR');
  const target = one.target as Record<string, unknown> | undefined;
  const targetPath = text(target?.path);
  const name = text(one.name);
  if (!name || !targetPath) throw new DriverError('pool XML: <name> or <target><path> missing', 'HYPERVISOR');
  return { name, type: String(one['@_type'] ?? ''), targetPath, capacityBytes: bytes(one.capacity), availableBytes: bytes(one.available) };
}

/** `virsh pool-define` XML of a dir pool. */
export function buildDirPoolXml(name: string, targetPath: string): string {
  return builder.build({ pool: { '@_type': 'dir', name, target: { path: targetPath } } }) as string;
}

export interface VolXml {
  name: string;
  path: string;
  format: string;
  capacityBytes: number;
  allocationBytes: number;
  backingPath?: string;
}

/** `virsh vol-dumpxml`. */
export function parseVolXml(xml: string): VolXml {
  const v = parseXml('volume XML', xml).volume as Record<string, unknown> | undefined;
  if (!v) throw new DriverError('volume XML: no <volume> element', 'HYPERVISOR');
  const target = (v.target ?? {}) as Record<string, unknown>;
  const name = text(v.name);
  const path = text(target.path);
  if (!name || !path) throw new DriverError('volume XML: <name> or <target><path> missing', 'HYPERVISOR');
  const fmt = target.format as Record<string, string> | undefined;
  const backing = v.backingStore as Record<string, unknown> | undefined;
  const backingPath = backing ? text(backing.path) : undefined;
  return { name, path, format: fmt?.['@_type'] ?? 'raw', capacityBytes: bytes(v.capacity), allocationBytes: bytes(v.allocation), ...(backingPath ? { backingPath } : {}) };
}

/** `virsh vol-create` XML of a qcow2 volume, optionally a linked clone of `backing` (any file libvirtd can read). */
export function buildVolXml(name: string, capacityBytes: number, backing?: { path: string; format: string }): string {
  return builder.build({
    volume: {
      name,
      capacity: { '@_unit': 'bytes', '#text': String(capacityBytes) },
      target: { format: { '@_type': 'qcow2' } },
      ...(backing ? { backingStore: { path: backing.path, format: { '@_type': backing.format } } } : {}),
    },
  }) as string;
}

// Order-preserving parse and build, for editing libvirt's own XML (a migration's destination XML):
// every element, attribute, comment and piece of white space stays where libvirt put it.
const orderedOptions = { preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '@_', commentPropName: '#comment' } as const;
const orderedParser = new XMLParser({ ...orderedOptions, parseTagValue: false, parseAttributeValue: false, trimValues: false });
const orderedBuilder = new XMLBuilder({ ...orderedOptions, suppressEmptyNode: true });

type OrderedNode = Record<string, unknown> & { ':@'?: Record<string, string> };

function childrenOf(node: OrderedNode, tag: string): OrderedNode[] {
  return (node[tag] as OrderedNode[] | undefined) ?? [];
}

function elements(nodes: OrderedNode[], tag: string): OrderedNode[] {
  return nodes.filter((n) => tag in n);
}

/**
 * A domain XML (`dumpxml --migratable`) with the files of its disks and cdroms moved: `moves` maps
 * a source path to the path it has on the destination (live migration with `--copy-storage-all`
 * onto another host's pool). ferry's spec in the metadata follows. Paths not in `moves` stay; a
 * path of `moves` that no disk has is an error (the caller's map and the domain disagree).
 */
export function rewriteDiskSources(xml: string, moves: Record<string, string>): string {
  let doc: OrderedNode[];
  try {
    doc = orderedParser.parse(xml) as OrderedNode[];
  } catch (e) {
    throw new DriverError(`domain XML: malformed XML: ${(e as Error).message}`, 'HYPERVISOR');
  }
  const domain = elements(doc, 'domain')[0];
  if (!domain) throw new DriverError('domain XML: no <domain> element', 'HYPERVISOR');
  const top = childrenOf(domain, 'domain');
  const seen = new Set<string>();
  for (const devices of elements(top, 'devices')) {
    for (const disk of elements(childrenOf(devices, 'devices'), 'disk')) {
      for (const source of elements(childrenOf(disk, 'disk'), 'source')) {
        const file = source[':@']?.['@_file'];
        if (file !== undefined && moves[file] !== undefined) {
          source[':@']!['@_file'] = moves[file];
          seen.add(file);
        }
      }
    }
  }
  const missing = Object.keys(moves).filter((p) => !seen.has(p));
  if (missing.length) throw new DriverError(`domain XML: no disk has ${missing.join(', ')}`, 'INVALID_ARGUMENT', true);
  for (const metadata of elements(top, 'metadata')) {
    for (const vm of elements(childrenOf(metadata, 'metadata'), 'ferry:vm')) {
      const textNode = childrenOf(vm, 'ferry:vm').find((n) => '#text' in n);
      if (!textNode) continue;
      let spec: VmSpec;
      try {
        spec = JSON.parse(String(textNode['#text'])) as VmSpec;
      } catch {
        throw new DriverError('domain XML: ferry metadata is not JSON', 'HYPERVISOR');
      }
      const move = (p: string) => moves[p] ?? p;
      const moved: VmSpec = { ...spec, disks: spec.disks.map(move), ...(spec.seedPath ? { seedPath: move(spec.seedPath) } : {}), ...(spec.isoPath ? { isoPath: move(spec.isoPath) } : {}) };
      textNode['#text'] = JSON.stringify(moved);
    }
  }
  return orderedBuilder.build(doc) as string;
}
