// The fast default guest of the QEMU lab and the qemu tests: a 512-byte boot sector built with the machine's `as`/`ld` (no downloads),
// padded to 1 MiB. It switches to 32-bit protected mode, prints "UP" on COM1, then either
//   - dirty: loops touching one dword in every 4 KiB page of [START, END), increments a heartbeat
//     at guest-physical 0x500 per pass and prints '.' every 256 passes (a full core under TCG), or
//   - halt:  stores MAGIC at 0x500 and halts with interrupts off (about 0 CPU), or
//   - acpi:  stores MAGIC at 0x500 and polls the ACPI power button (PIIX4 PM1a event block at
//     0x600, where SeaBIOS maps it on machine pc: `info mtree` piix4-pm): on `system_powerdown` it powers itself off
//     (PM1a_CNT SLP_EN with SLP_TYP 0 = S5), as a guest OS honouring ACPI does. It busy-polls: a
//     full core under TCG while it runs.
// Read the heartbeat over QMP with `human-monitor-command` `xp /1wx 0x500`.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export const HALT_MAGIC = 0xf3aa0b07;

const GUEST_S = String.raw`
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    in $0x92, %al          # fast A20
    or $2, %al
    and $0xfe, %al
    out %al, $0x92
    lgdtl gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $pm
    .code32
pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %esp
    mov $0x3f8, %dx
    mov $'U', %al
    out %al, %dx
    mov $'P', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
.ifdef HALT
    movl $MAGIC, 0x500
1:  hlt
    jmp 1b
.else
.ifdef ACPI
    movl $MAGIC, 0x500
    mov $0x602, %dx        # PM1a_EN: power button enable
    mov $0x0100, %ax
    outw %ax, %dx
    mov $0x600, %dx        # PM1a_STS: poll PWRBTN_STS
5:  pause
    inw %dx, %ax
    test $0x0100, %ax
    jz 5b
    mov $0x604, %dx        # PM1a_CNT: SLP_EN, SLP_TYP 0 (S5, soft off)
    mov $0x2000, %ax
    outw %ax, %dx
6:  hlt
    jmp 6b
.else
    movl $0, 0x500
pass:
    mov $START, %edi
2:  incl (%edi)
    add $4096, %edi
    cmp $END, %edi
    jb 2b
    incl 0x500
    testl $0xff, 0x500
    jnz 3f
    mov $'.', %al
    out %al, %dx
3:  mov $DELAY, %ecx
4:  loop 4b
    jmp pass
.endif
.endif
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdtr:
    .word gdtr - gdt - 1
    .long gdt
    .org 510
    .byte 0x55, 0xaa
`;

export type GuestKind = { kind: 'halt' } | { kind: 'acpi' } | { kind: 'dirty'; dirtyBytes: number; delay?: number };

export interface GuestImages {
  /** raw boot image padded to 1 MiB */
  raw: string;
  /** the same as a qcow2 template (`qemu-img convert -O qcow2`), usable as a linked-clone base */
  qcow2: string;
}

const defaultCacheRoot = path.join(os.tmpdir(), 'ferry-qemu-guest-cache');

/** Builds (or reuses from the cache folder) the guest image of the given kind. */
export async function buildGuest(g: GuestKind, cacheRoot = defaultCacheRoot): Promise<GuestImages> {
  const defs =
    g.kind === 'halt'
      ? ['--defsym', 'HALT=1', '--defsym', `MAGIC=0x${HALT_MAGIC.toString(16)}`]
      : g.kind === 'acpi'
        ? ['--defsym', 'ACPI=1', '--defsym', `MAGIC=0x${HALT_MAGIC.toString(16)}`]
        : [
          '--defsym', 'START=0x100000',
          '--defsym', `END=0x${(0x100000 + g.dirtyBytes).toString(16)}`,
          '--defsym', `DELAY=${g.delay ?? 1}`,
        ];
  const key = createHash('sha256').update(GUEST_S).update(defs.join(' ')).digest('hex').slice(0, 16);
  const dir = path.join(cacheRoot, key);
  const out: GuestImages = { raw: path.join(dir, 'guest.img'), qcow2: path.join(dir, 'guest.qcow2') };
  try {
    await fs.access(out.qcow2);
    return out;
  } catch {
    // build below
  }
  await fs.mkdir(cacheRoot, { recursive: true });
  const work = await fs.mkdtemp(path.join(cacheRoot, 'build-'));
  try {
    await fs.writeFile(path.join(work, 'guest.S'), GUEST_S);
    await execa('as', ['--32', ...defs, '-o', 'guest.o', 'guest.S'], { cwd: work });
    await execa('ld', ['-m', 'elf_i386', '-Ttext', '0x7c00', '--oformat', 'binary', '-o', 'guest.bin', 'guest.o'], { cwd: work });
    const bin = await fs.readFile(path.join(work, 'guest.bin'));
    if (bin.length !== 512 || bin[510] !== 0x55 || bin[511] !== 0xaa) {
      throw new Error(`guest boot sector is ${bin.length} bytes or lacks the 0x55aa signature`);
    }
    // a 512-byte image does not boot ("could not read the boot disk"): pad to 1 MiB
    const img = Buffer.alloc(1024 * 1024);
    bin.copy(img);
    await fs.writeFile(path.join(work, 'guest.img'), img);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'guest.img', 'guest.qcow2'], { cwd: work });
    // publish atomically: concurrent test files may build the same key
    await fs.rename(work, dir).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  return out;
}

/** Reads the guest's heartbeat word at guest-physical 0x500 through HMP `xp`. */
export async function readHeartbeat(hmp: (cmd: string) => Promise<string>): Promise<number> {
  const out = await hmp('xp /1wx 0x500');
  const m = /0x[0-9a-f]+:\s+0x([0-9a-f]+)/i.exec(out) ?? /:\s*0x([0-9a-f]+)/i.exec(out);
  if (!m) throw new Error(`unexpected xp output: ${JSON.stringify(out)}`);
  return Number.parseInt(m[1]!, 16);
}
