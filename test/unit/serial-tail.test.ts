// The qemu console reader (drivers/qemu/console.ts) on a serial log as a guest's tty writes it
// ("\r\n" line ends): the lines drop the "\r" and `size` counts neither it nor the log's final
// newline, so a follower that prints the last (size growth) bytes of the joined lines prints
// exactly what the guest wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSerialTail } from '../../drivers/qemu/console.js';

test('serial log with CRLF line ends: lines without \\r, size without them, counted as the log grows and again when it is replaced', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-serial-'));
  try {
    const log = path.join(dir, 'serial.log');
    await fs.writeFile(log, 'UP\r\ntick 1\r\n');
    let t = await readSerialTail('h1', 'vm-1', log, 100);
    assert.deepEqual(t.lines, ['UP', 'tick 1']);
    assert.equal(t.size, 'UP\ntick 1'.length, 'the joined lines: no \\r, no final newline');
    const before = t;

    await fs.appendFile(log, 'tick 2\r\nhalf');
    t = await readSerialTail('h1', 'vm-1', log, 100);
    assert.deepEqual(t.lines, ['UP', 'tick 1', 'tick 2', 'half']);
    assert.equal(t.size, 'UP\ntick 1\ntick 2\nhalf'.length);
    // what a follower prints: the end of the joined lines, as many bytes as the size grew
    const joined = t.lines.join('\n');
    assert.equal(joined.slice(joined.length - (t.size - before.size)), '\ntick 2\nhalf');

    // a new log in its place (the VM came back to this host): counted from scratch
    await fs.rm(log);
    await fs.writeFile(log, 'tick 9\r\n');
    t = await readSerialTail('h1', 'vm-1', log, 100);
    assert.deepEqual(t.lines, ['tick 9']);
    assert.equal(t.size, 'tick 9'.length);

    // a bare \r (a progress line redrawn) is dropped from the lines and from the size alike
    await fs.appendFile(log, '10%\r20%\r\n');
    t = await readSerialTail('h1', 'vm-1', log, 100);
    assert.deepEqual(t.lines, ['tick 9', '10%20%']);
    assert.equal(t.size, 'tick 9\n10%20%'.length);

    // a line written in two pieces: the follower prints the rest of it, then the next line
    await fs.writeFile(log, 'UP\r\n');
    const up = await readSerialTail('h1', 'vm-1', log, 100);
    await fs.appendFile(log, '...');
    t = await readSerialTail('h1', 'vm-1', log, 100);
    assert.equal(t.lines.join('\n').slice(-(t.size - up.size)), '\n...', 'a new line starts after UP');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
