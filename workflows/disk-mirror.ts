// Watching a disk mirror from a workflow (copyDisks live migration, storage migration): the host
// activity samples for a window and returns early once every disk is in sync; here the samples
// become progress (bytes, dirty bytes, in-sync flag, rate, ETA) and cancellation is checked
// between windows. Workflow code: Date.now() is the workflow clock (deterministic).
import type { DiskMirrorStats } from '../domain/hypervisor.js';
import type { DiskMirrorProgress } from './definitions.js';

/** How long one watchDiskMirror activity samples before the workflow looks (ms). */
export const MIRROR_WATCH_WINDOW_MS = 1000;

export interface MirrorWatch {
  watch(input: { vmId: string; windowMs: number }): Promise<DiskMirrorStats>;
  vmId: string;
  /** throws to stop (cancel requested) */
  checkCancel(): void;
  onProgress(p: DiskMirrorProgress): void;
  /** give up after this long (ms) without reaching sync */
  maxMs?: number;
  /** the first window's sample when the mirror's start watched it (used instead of a first watch) */
  first?: DiskMirrorStats;
}

/** Progress from a sample and the previous one (the transfer rate when the driver gives none). */
export function diskProgress(st: DiskMirrorStats, prev?: { copiedBytes: number; atMs: number }, nowMs = Date.now()): DiskMirrorProgress {
  const measured = prev && nowMs > prev.atMs ? Math.max(0, ((st.copiedBytes - prev.copiedBytes) * 1000) / (nowMs - prev.atMs)) : undefined;
  const rate = st.transferRateBytesPerSec ?? measured;
  const write = st.writeRateBytesPerSec ?? 0;
  const p: DiskMirrorProgress = { copiedBytes: st.copiedBytes, totalBytes: st.totalBytes, dirtyBytes: st.dirtyBytes, inSync: st.inSync };
  if (rate !== undefined) p.transferRateBytesPerSec = Math.round(rate);
  if (st.writeRateBytesPerSec !== undefined) p.writeRateBytesPerSec = st.writeRateBytesPerSec;
  if (st.inSync) p.etaSeconds = 0;
  else if (rate !== undefined && rate > write) p.etaSeconds = Math.ceil(st.dirtyBytes / (rate - write));
  if (st.pivotMs !== undefined) p.pivotMs = st.pivotMs;
  return p;
}

/** Loops watch windows until the mirror is in sync; returns the in-sync sample. */
export async function mirrorUntilInSync(w: MirrorWatch): Promise<DiskMirrorStats> {
  const started = Date.now();
  let prev: { copiedBytes: number; atMs: number } | undefined;
  let first = w.first;
  for (;;) {
    w.checkCancel();
    const st = first ?? (await w.watch({ vmId: w.vmId, windowMs: MIRROR_WATCH_WINDOW_MS }));
    first = undefined;
    const now = Date.now();
    w.onProgress(diskProgress(st, prev, now));
    prev = { copiedBytes: st.copiedBytes, atMs: now };
    if (st.inSync) return st;
    if (w.maxMs !== undefined && now - started > w.maxMs) {
      throw new Error(`disk mirror not in sync after ${Math.round((now - started) / 1000)} s (${st.dirtyBytes} bytes still dirty)`);
    }
  }
}
