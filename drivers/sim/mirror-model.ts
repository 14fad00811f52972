// Pure model of a storage mirror (live storage migration): the same geometric pre-copy as memory.
// Round 1 copies the disks' allocated bytes at the mirror's bandwidth while the guest writes at
// `writeRate`; each later round copies what was written during the previous one; the mirror is in
// sync ("ready", BLOCK_JOB_READY) once a round's remainder fits SYNC_WINDOW_MS of bandwidth, and
// stays in sync from then on (writes are mirrored as they happen). A write rate at or above the
// bandwidth never converges. Nothing here reads a clock or a database.

/** A remainder this many ms of bandwidth long counts as in sync. */
export const SYNC_WINDOW_MS = 50;
/** the pause of a pivot beyond flushing the last dirty bytes (ms) */
export const PIVOT_OVERHEAD_MS = 5;

export interface MirrorModelInput {
  startV: number;
  bytes: number;
  bandwidthBytesPerSec: number;
  writeRateBytesPerSec: number;
}

export interface MirrorView {
  copiedBytes: number;
  dirtyBytes: number;
  totalBytes: number;
  inSync: boolean;
  round: number;
  readyAtV?: number;
}

export function evaluateMirror(m: MirrorModelInput, atV: number): MirrorView {
  const B = m.bandwidthBytesPerSec;
  const w = m.writeRateBytesPerSec;
  const syncBytes = (B * SYNC_WINDOW_MS) / 1000;
  let t = m.startV;
  let remaining = m.bytes;
  let copied = 0;
  for (let round = 1; round <= 100_000; round++) {
    const dur = (remaining * 1000) / B;
    if (atV < t + dur) {
      const el = Math.max(0, atV - t);
      const sent = (B * el) / 1000;
      const dirty = remaining - sent + (w * el) / 1000;
      return { copiedBytes: Math.floor(copied + sent), dirtyBytes: Math.ceil(dirty), totalBytes: Math.ceil(copied + sent + dirty), inSync: false, round };
    }
    copied += remaining;
    t += dur;
    remaining = (w * dur) / 1000;
    if (remaining <= syncBytes) {
      const dirty = Math.min(remaining, (w * SYNC_WINDOW_MS) / 1000);
      return { copiedBytes: Math.floor(copied), dirtyBytes: Math.ceil(dirty), totalBytes: Math.ceil(copied + dirty), inSync: true, round, readyAtV: t };
    }
  }
  return { copiedBytes: Math.floor(copied), dirtyBytes: Math.ceil(remaining), totalBytes: Math.ceil(copied + remaining), inSync: false, round: 100_000 };
}

/** The guest's pause when the VM pivots onto the copies at `atV` (ms). */
export function pivotMs(m: MirrorModelInput, atV: number): number {
  const v = evaluateMirror(m, atV);
  return Math.ceil((v.dirtyBytes * 1000) / m.bandwidthBytesPerSec) + PIVOT_OVERHEAD_MS;
}
