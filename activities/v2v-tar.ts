// The tar of an OVA (POSIX ustar, as DSP0243 prescribes; GNU long names and pax path records
// understood): read entry by entry and extract only plain files into a folder, refusing links,
// devices and names that leave the folder BEFORE any byte is written; and write one (ustar) on
// export. Streams through a file handle, so a 100 GiB disk never sits in memory.
import fs from 'node:fs/promises';
import path from 'node:path';
import { packageName, packagePathProblem } from '../domain/ovf.js';

export class PackageRefused extends Error {}

const BLOCK = 512;

function field(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z < 0 ? s : s.subarray(0, z)).toString('utf8');
}

function octal(b: Buffer, off: number, len: number, what: string): number {
  const s = field(b, off, len).trim();
  if (!/^[0-7]*$/.test(s)) throw new PackageRefused(`tar header of ${what}: size field "${s}" is not octal`);
  return s === '' ? 0 : parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = parseInt(field(h, 148, 8).trim(), 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return sum === stored;
}

const TYPE_NAMES: Record<string, string> = { '1': 'a hard link', '2': 'a symbolic link', '3': 'a character device', '4': 'a block device', '6': 'a FIFO', '7': 'a contiguous file' };

/**
 * Extracts the tar at `file` into `dir` (which must exist and be empty). Returns the names in
 * archive order. Throws PackageRefused naming the entry for anything but plain files in the top
 * folder; the caller removes `dir`.
 */
export async function extractTar(file: string, dir: string, limits: { maxEntries: number } = { maxEntries: 64 }): Promise<string[]> {
  const fh = await fs.open(file, 'r');
  const names: string[] = [];
  try {
    const { size: total } = await fh.stat();
    let pos = 0;
    let longName: string | undefined;
    const header = Buffer.alloc(BLOCK);
    for (;;) {
      if (pos + BLOCK > total) throw new PackageRefused('the OVA ends in the middle of a tar header (truncated archive)');
      await fh.read(header, 0, BLOCK, pos);
      pos += BLOCK;
      if (header.every((x) => x === 0)) break; // end of archive
      const rawName = field(header, 0, 100);
      if (!checksumOk(header)) throw new PackageRefused(`tar header of "${rawName}" has a bad checksum: not a tar archive, or corrupted`);
      const prefix = field(header, 345, 155);
      const type = String.fromCharCode(header[156] || 48);
      const size = octal(header, 124, 12, rawName);
      const dataBlocks = Math.ceil(size / BLOCK) * BLOCK;
      if (pos + size > total) throw new PackageRefused(`tar entry "${rawName}" claims ${size} bytes, past the end of the archive`);
      if (type === 'L' || type === 'x') {
        const body = Buffer.alloc(size);
        await fh.read(body, 0, size, pos);
        pos += dataBlocks;
        if (type === 'L') longName = body.toString('utf8').replace(/\0+$/, '');
        else {
          const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
          if (m) longName = m[1];
          if (/(?:^|\n)\d+ linkpath=/.test(body.toString('utf8'))) throw new PackageRefused('a tar pax header sets a link path: links are refused');
        }
        continue;
      }
      if (type === 'g') {
        pos += dataBlocks;
        continue;
      }
      const name = longName ?? (prefix ? `${prefix}/${rawName}` : rawName);
      longName = undefined;
      if (type === '5') {
        throw new PackageRefused(`tar entry "${name}" is a directory; an OVA's files sit at the top of the archive`);
      }
      if (TYPE_NAMES[type]) throw new PackageRefused(`tar entry "${name}" is ${TYPE_NAMES[type]}, refused (only plain files may be in a package)`);
      if (type !== '0') throw new PackageRefused(`tar entry "${name}" has unknown type "${type}"`);
      const problem = packagePathProblem(name);
      if (problem) throw new PackageRefused(`tar entry: ${problem}`);
      const plain = packageName(name);
      if (names.includes(plain)) throw new PackageRefused(`tar entry "${plain}" appears twice`);
      if (names.length >= limits.maxEntries) throw new PackageRefused(`the OVA holds more than ${limits.maxEntries} files`);
      names.push(plain);
      // 'wx': never follow or overwrite something already there
      const out = await fs.open(path.join(dir, plain), 'wx');
      try {
        const chunk = Buffer.alloc(4 * 1024 * 1024);
        let left = size;
        let at = pos;
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          const { bytesRead } = await fh.read(chunk, 0, n, at);
          if (bytesRead !== n) throw new PackageRefused(`tar entry "${plain}" is truncated`);
          await out.write(chunk, 0, n);
          left -= n;
          at += n;
        }
      } finally {
        await out.close();
      }
      pos += dataBlocks;
    }
    return names;
  } finally {
    await fh.close();
  }
}

function ustarHeader(name: string, size: number, mtime: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name "${name}" is longer than 100 bytes`);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 8, 'ascii');
  h.write('0000000\0', 108, 8, 'ascii');
  h.write('0000000\0', 116, 8, 'ascii');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
  h.write(Math.floor(mtime).toString(8).padStart(11, '0') + '\0', 136, 12, 'ascii');
  h.fill(32, 148, 156);
  h.write('0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/** Writes a ustar archive of `files` (plain names in `dir`, in this order: the OVF first) to `out`. */
export async function writeTar(out: string, dir: string, files: string[]): Promise<void> {
  const fh = await fs.open(out, 'wx');
  try {
    for (const f of files) {
      const src = path.join(dir, f);
      const st = await fs.stat(src);
      await fh.write(ustarHeader(f, st.size, st.mtimeMs / 1000));
      const inp = await fs.open(src, 'r');
      try {
        const chunk = Buffer.alloc(4 * 1024 * 1024);
        for (let at = 0; at < st.size; ) {
          const { bytesRead } = await inp.read(chunk, 0, chunk.length, at);
          if (bytesRead === 0) break;
          await fh.write(chunk, 0, bytesRead);
          at += bytesRead;
        }
      } finally {
        await inp.close();
      }
      const pad = (BLOCK - (st.size % BLOCK)) % BLOCK;
      if (pad) await fh.write(Buffer.alloc(pad));
    }
    await fh.write(Buffer.alloc(BLOCK * 2));
  } finally {
    await fh.close();
  }
}
