// The lab's real Linux guest: Debian's own cloud kernel and a busybox initramfs, on a FAT boot disk
// with syslinux, all from Debian packages fetched with `apt-get download` and unpacked with
// `dpkg-deb -x` (nothing installed on the machine; ../shared/notes/libvirt-facts.md section 2).
//
// Its /init is ferry's own init, not cloud-init: it reads the same NoCloud files cloud-init reads
// (meta-data, user-data, network-config v2, from the FAT volume labelled "cidata" that
// drivers/qemu/seeds.ts builds) and applies the hostname, the static address and default
// gateway, and the SSH authorized keys, then prints each as the kernel and the file system now
// hold it (`FERRY-NOCLOUD ...` lines on ttyS0) and a `tick N` heartbeat every second. The cloud
// kernel has vfat, virtio and virtio-net as modules: the initramfs carries them (and what they
// depend on, read from each module's `depends=`) and loads them with insmod.
//
// Built once into <tools>/linux-guest/<key>/guest.qcow2 (key: kernel version + this file's init),
// about 15 s to userspace under TCG.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

/** the modules the guest needs (vfat and its code pages, virtio disks and NIC); their depends= come along */
const MODULES = ['virtio_pci', 'virtio_blk', 'vfat', 'nls_cp437', 'nls_ascii', 'virtio_net'];

export const LINUX_INIT = String.raw`#!/bin/busybox sh
# ferry's own init (not cloud-init): applies ferry's NoCloud seed, then ticks.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null || echo "FERRY-INIT insmod $m failed"; done
echo "FERRY-INIT ferry's own init reading the cloud-init NoCloud files (not cloud-init)"
seed=
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /dev/vd? /dev/sd? /dev/sr?; do
    [ -b "$d" ] || continue
    mount -t vfat -o ro "$d" /seed 2>/dev/null || continue
    if [ -f /seed/meta-data ]; then seed=/seed; break 2; fi
    umount /seed
  done
  sleep 0.5
done
if [ -z "$seed" ]; then
  echo "FERRY-NOCLOUD no seed (no vfat volume with meta-data)"
else
  one() { tr -d '\n' < "$1"; }
  host=$(one $seed/meta-data | sed -n 's/.*"local-hostname": *"\([^"]*\)".*/\1/p')
  [ -n "$host" ] && hostname "$host" && echo "$host" > /etc/hostname
  # network-config v2 (ferry writes JSON, which is YAML): the first ethernet's address and route
  net=$(one $seed/network-config | sed 's/"nameservers": *{[^}]*}//')
  addr=$(echo "$net" | sed -n 's/.*"addresses": *\[ *"\([^"]*\)".*/\1/p')
  gw=$(echo "$net" | sed -n 's/.*"via": *"\([^"]*\)".*/\1/p')
  mac=$(echo "$net" | sed -n 's/.*"macaddress": *"\([^"]*\)".*/\1/p')
  dev=eth0
  for n in /sys/class/net/*; do [ "$(cat $n/address 2>/dev/null)" = "$mac" ] && dev=$(basename $n); done
  ip link set lo up
  if [ -n "$addr" ]; then
    ip link set "$dev" up; ip addr add "$addr" dev "$dev"
    [ -n "$gw" ] && ip route add default via "$gw" dev "$dev"
  fi
  # meta-data public-keys: one JSON string per line of the pretty-printed array
  mkdir -p /root/.ssh; : > /root/.ssh/authorized_keys
  sed -n '/"public-keys"/,/\]/p' $seed/meta-data | sed -n 's/^ *"\(.*\)",\{0,1\}$/\1/p' >> /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  umount /seed
  echo "FERRY-NOCLOUD hostname $(hostname)"
  ip -4 -o addr show dev "$dev" | while read -r _ ifc _ a _; do echo "FERRY-NOCLOUD address $a dev $ifc"; done
  # busybox's ip prints every route: the default one is "default via <gateway> dev ..."
  ip route | while read -r to via g _; do [ "$to" = default ] && [ "$via" = via ] && echo "FERRY-NOCLOUD gateway $g"; done
  while read -r k; do echo "FERRY-NOCLOUD ssh-key $k"; done < /root/.ssh/authorized_keys
fi
echo FERRY-GUEST-UP
i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done
`;

export interface LinuxGuest {
  qcow2: string;
  kernelVersion: string;
}

async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<string> {
  const r = await execa(cmd, args, { ...opts, reject: false });
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${String(r.stderr || r.stdout).trim().slice(-400) || r.shortMessage}`);
  return String(r.stdout);
}

/** The current cloud kernel package (what linux-image-cloud-amd64 depends on). */
async function kernelPackage(): Promise<string> {
  const out = await run('apt-cache', ['depends', 'linux-image-cloud-amd64']);
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(out);
  if (!m) throw new Error(`apt-cache depends linux-image-cloud-amd64 names no kernel package: ${out.trim()}`);
  return m[1]!;
}

/** `depends=` of a kernel module (its .modinfo section). */
async function moduleDepends(file: string): Promise<string[]> {
  const m = /depends=([a-z0-9_,-]*)/.exec((await fs.readFile(file)).toString('latin1'));
  return m?.[1] ? m[1].split(',').filter(Boolean).map((d) => d.replace(/-/g, '_')) : [];
}

async function findModule(dir: string, name: string): Promise<string> {
  for (const e of await fs.readdir(dir, { recursive: true })) {
    const base = path.basename(String(e));
    if (base === `${name}.ko` || base === `${name.replace(/_/g, '-')}.ko`) return path.join(dir, String(e));
  }
  throw new Error(`kernel module ${name}.ko is not in ${dir}`);
}

/** Builds (or reuses) the real Linux guest image under `toolsDir`. */
export async function buildLinuxGuest(toolsDir: string, log: (l: string) => void = () => undefined): Promise<LinuxGuest> {
  const pkg = await kernelPackage();
  const kernelVersion = pkg.replace(/^linux-image-/, '');
  const key = createHash('sha256').update(kernelVersion).update(MODULES.join(',')).update(LINUX_INIT).digest('hex').slice(0, 16);
  const dir = path.join(toolsDir, 'linux-guest', key);
  const out: LinuxGuest = { qcow2: path.join(dir, 'guest.qcow2'), kernelVersion };
  if (await fs.access(out.qcow2).then(() => true, () => false)) return out;

  const debs = path.join(toolsDir, 'debs');
  await fs.mkdir(debs, { recursive: true });
  const wanted = [pkg, 'busybox-static', 'syslinux', 'syslinux-common', 'mtools'];
  const have = await fs.readdir(debs);
  const missing = wanted.filter((p) => !have.some((f) => f.startsWith(`${p}_`)));
  if (missing.length) {
    log(`ferry: downloading ${missing.join(', ')} (apt-get download, nothing is installed)`);
    await run('apt-get', ['download', ...missing], { cwd: debs });
  }
  const work = await fs.mkdtemp(path.join(toolsDir, 'linux-build-'));
  try {
    const x = path.join(work, 'x');
    for (const f of await fs.readdir(debs)) if (wanted.some((p) => f.startsWith(`${p}_`))) await run('dpkg-deb', ['-x', path.join(debs, f), x]);
    const modDir = path.join(x, 'lib', 'modules', kernelVersion);
    // the initramfs: busybox, the modules, /init
    const root = path.join(work, 'root');
    for (const d of ['bin', 'lib/modules', 'proc', 'sys', 'dev', 'seed', 'etc', 'root', 'tmp']) await fs.mkdir(path.join(root, d), { recursive: true });
    await fs.copyFile(path.join(x, 'bin', 'busybox'), path.join(root, 'bin', 'busybox'));
    await fs.chmod(path.join(root, 'bin', 'busybox'), 0o755);
    // every module after the ones it depends on (depth first over depends=)
    const order: string[] = [];
    const visit = async (m: string, chain: string[]): Promise<void> => {
      if (order.includes(m)) return;
      if (chain.includes(m)) throw new Error(`kernel modules depend on each other in a cycle: ${[...chain, m].join(' -> ')}`);
      const file = await findModule(modDir, m);
      for (const d of await moduleDepends(file)) await visit(d, [...chain, m]);
      await fs.copyFile(file, path.join(root, 'lib', 'modules', `${m}.ko`));
      order.push(m);
    };
    for (const m of MODULES) await visit(m, []);
    await fs.writeFile(path.join(root, 'lib', 'modules', 'order'), order.join('\n') + '\n');
    await fs.writeFile(path.join(root, 'init'), LINUX_INIT, { mode: 0o755 });
    const busybox = path.join(x, 'bin', 'busybox');
    await run('sh', ['-c', `find . | "${busybox}" cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz`], { cwd: root });
    // the boot disk: FAT16, syslinux in its boot sector, kernel + initramfs + config
    const img = path.join(work, 'disk.img');
    await fs.writeFile(img, Buffer.alloc(0));
    await fs.truncate(img, 48 * 1024 * 1024);
    const env = { PATH: `${path.join(x, 'usr', 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`, MTOOLS_SKIP_CHECK: '1' };
    await run(path.join(x, 'usr', 'bin', 'mformat'), ['-i', img, '-T', '98304', '-h', '64', '-s', '32', '-v', 'FERRYBOOT', '::'], { env });
    await run(path.join(x, 'usr', 'bin', 'syslinux'), ['--install', img], { env });
    await fs.copyFile(path.join(x, 'boot', `vmlinuz-${kernelVersion}`), path.join(work, 'vmlinuz'));
    await fs.writeFile(path.join(work, 'syslinux.cfg'), 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.gz\n  APPEND console=ttyS0 quiet rdinit=/init\n');
    await run(path.join(x, 'usr', 'bin', 'mcopy'), ['-o', '-i', img, path.join(work, 'vmlinuz'), path.join(work, 'initrd.gz'), path.join(work, 'syslinux.cfg'), '::'], { env });
    await fs.mkdir(dir, { recursive: true });
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img, `${out.qcow2}.partial`]);
    await fs.rename(`${out.qcow2}.partial`, out.qcow2);
    return out;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}
