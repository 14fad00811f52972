// The values of a cold migration's copy (ARCHITECTURE.md section 3 "Cold"): the files of a
// stopped VM's home as its source host lists them, the request the target host copies from, the
// checkpoint it heartbeats (so a retry after an agent crash continues where the copy stood) and
// what it reports back. Pure: workflows, activities and every driver share these.
import type { DiskFormat, VmSpec } from './hypervisor.js';

export type VmFileKind = 'config' | 'nvram' | 'log' | 'disk' | 'seed';

/** One file of a VM's home on its source host. */
export interface VmHomeFile {
  kind: VmFileKind;
  /** where it lives on the source host (a sim:// path for the simulator) */
  path: string;
  sizeBytes: number;
  /**
   * sha256 of the file's bytes (the simulator: of what it models as the file's content); '' when
   * the home was listed without checksums: the copy then hashes the source bytes as it reads them
   * (ColdCopiedFile.sourceSha256) instead of a separate read pass
   */
  sha256: string;
  /** disks */
  format?: DiskFormat;
  virtualSizeBytes?: number;
  backingPath?: string;
}

export interface VmHomeManifest {
  vmId: string;
  hostId: string;
  files: VmHomeFile[];
  totalBytes: number;
}

/** Bytes of each source file already on the target (fsynced), keyed by source path. */
export interface ColdCopyCheckpoint {
  files: Record<string, { doneBytes: number; complete: boolean }>;
}

export interface ColdCopyRequest {
  vmId: string;
  /** the VM's definition on the source (disk and seed paths are rewritten for the target) */
  spec: VmSpec;
  files: VmHomeFile[];
  targetDatastoreId: string;
  /** flatten every linked clone (else the backing chain is kept; its base must be reachable from the target) */
  flatten: boolean;
  /** copy bandwidth cap (bytes/s); 0 or absent = as fast as the datastores go */
  maxBandwidthBytesPerSec?: number;
  /** where an earlier attempt stood (the activity's last heartbeat, or the previous window) */
  resumeFrom?: ColdCopyCheckpoint;
  /** return (incomplete, with the checkpoint) at the first checkpoint after this many ms: the workflow copies in windows */
  budgetMs?: number;
}

export interface ColdCopyProgress {
  file: string;
  doneBytes: number;
  totalBytes: number;
  filesDone: number;
  filesTotal: number;
  throughputBytesPerSec: number;
  /** bytes found already copied when this attempt started (resume) */
  resumedFromBytes: number;
  perFile: Array<{ path: string; doneBytes: number; totalBytes: number }>;
  checkpoint: ColdCopyCheckpoint;
}

export interface ColdCopiedFile {
  kind: VmFileKind;
  source: string;
  target: string;
  sizeBytes: number;
  /**
   * sha256 of the target file's bytes as read back from it: computed over them, or (a copier that
   * compares every byte read back with the source's) the source's sha256 once all compared equal
   */
  sha256: string;
  /** sha256 of the source bytes the copy read (drivers that hash while copying) */
  sourceSha256?: string;
  /** the disk was flattened: its bytes differ by design, its guest-visible content was compared */
  flattened: boolean;
  contentVerified?: boolean;
}

export interface ColdCopyResult {
  /** false: the budget ran out; continue from `checkpoint` */
  complete: boolean;
  checkpoint: ColdCopyCheckpoint;
  /** the last progress report */
  progress?: ColdCopyProgress;
  /** complete only: every file, with the sha256 read back from the target */
  files: ColdCopiedFile[];
  /** the definition for the target, paths rewritten */
  spec: VmSpec;
  totalBytes: number;
  /** bytes this attempt wrote (less than total after a resume) */
  copiedBytes: number;
  resumedFromBytes: number;
  durationMs: number;
}

/**
 * The source's sha256 of a copied file: the manifest's, or the one the copy computed while
 * reading the source; both when both exist (they must agree); '' when there is none.
 */
export function sourceSha256Of(f: VmHomeFile, c: ColdCopiedFile): string {
  if (f.sha256 && c.sourceSha256 !== undefined && c.sourceSha256 !== f.sha256) return `${f.sha256} != ${c.sourceSha256}`;
  return f.sha256 || c.sourceSha256 || '';
}

/** Every file's sha256 and size equal on both sides (flattened disks: content compared by the driver). */
export function coldCopyMismatches(manifest: VmHomeFile[], copied: ColdCopiedFile[]): string[] {
  const out: string[] = [];
  for (const f of manifest) {
    if (f.kind === 'config') continue; // re-registered with rewritten paths, compared as a spec
    const c = copied.find((x) => x.source === f.path);
    if (!c) out.push(`${f.path}: not copied`);
    else if (c.flattened) {
      if (!c.contentVerified) out.push(`${f.path}: flattened copy ${c.target} differs in content`);
    } else {
      const src = sourceSha256Of(f, c);
      if (!/^[0-9a-f]{64}$/.test(src)) out.push(`${f.path}: no usable sha256 of the source (${src || 'none'})`);
      else if (c.sizeBytes !== f.sizeBytes || c.sha256 !== src) out.push(`${f.path}: ${f.sizeBytes} bytes sha256 ${src.slice(0, 12)} on the source, ${c.sizeBytes} bytes sha256 ${c.sha256.slice(0, 12)} on the target`);
    }
  }
  return out;
}

/** The basename of a file path or sim:// path. */
export function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Bytes a file's copy writes: a flattened linked clone becomes as large as its virtual size. */
export function copySizeOf(f: VmHomeFile, flatten: boolean): number {
  if (f.kind === 'config') return 0;
  return flatten && f.backingPath !== undefined ? (f.virtualSizeBytes ?? f.sizeBytes) : f.sizeBytes;
}
