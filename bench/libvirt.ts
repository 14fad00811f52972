// ferry on libvirt vs a bare `virsh migrate` of the same kind of domain, in the same run, on the
// libvirt lab (two libvirtd hosts in namespaces, shared pool, the 64 MiB test guest dirtying 16 MiB
// under TCG). Bare: `virsh migrate --live --p2p --persistent --undefinesource --unsafe` driven by
// hand, wall time of the command. ferry: the LiveMigrate workflow (reservation, destination
// readiness, the same p2p migration held paused on the destination, commit, activation, source
// clean-up), wall time to the workflow's result. Both with the bandwidth at 1024 MiB/s.
import { execa } from 'execa';
import { performance } from 'node:perf_hooks';
import type { MigrationResult, ProvisionResult } from '../workflows/definitions.js';
import { ensureLibvirt } from '../workers/lab/libvirt-lab.js';
import { outcome, stopOwnTemporal } from '../test/helpers/ferry.js';
import { startLibvirtFerry } from '../test/helpers/libvirt-ferry.js';

const MiB = 1024 ** 2;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchLibvirt(opts: { runs?: number; log: (line: string) => void }): Promise<void> {
  const { log } = opts;
  const runs = opts.runs ?? 3;
  const ok = await ensureLibvirt();
  if (!ok.ok) return log(`skipped: ${ok.reason}`);
  const f = await startLibvirtFerry({ hosts: 2, lab: { prefix: 'ferrylvb', subnet: '10.252.0.192/26', root: '/srv/ferrylvb' } });
  try {
    // bare: a domain ferry defines on lv1 but does not manage, moved back and forth by hand
    const a = f.driver('lv1');
    const disk = await a.createDisk({ name: 'vm-bare-root', datastoreId: 'lvshared', sizeBytes: 64 * MiB, source: { kind: 'template', imagePath: f.guest.qcow2, linked: true } });
    await a.defineVm({ vmId: 'vm-bare', name: 'bare', cpus: 1, memoryBytes: 64 * MiB, disks: [disk.path], cpuFeatures: [] });
    await a.startVm('vm-bare');
    const uuid = a.domainUuid('vm-bare');
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) {
      const [from, to] = i % 2 === 0 ? [f.labHost('lv1'), f.labHost('lv2')] : [f.labHost('lv2'), f.labHost('lv1')];
      const t0 = performance.now();
      const r = await execa('virsh', ['-c', from.uri, 'migrate', '--live', '--p2p', '--persistent', '--undefinesource', '--unsafe', '--bandwidth', '1024', uuid, to.migrationUri], { reject: false });
      if (r.exitCode !== 0) throw new Error(`bare virsh migrate: ${r.stderr}`);
      bare.push(performance.now() - t0);
    }
    for (const h of ['lv1', 'lv2']) await f.driver(h).destroyVm('vm-bare');
    await a.deleteDisk(disk.path);

    const p = await outcome<ProvisionResult>(await f.provision({ name: 'bench-lv', vmId: 'vm-bench-lv', hostId: 'lv1', memoryMiB: 64 }));
    if (!p.ok) throw new Error(`provision: ${p.message}`);
    const ferry: number[] = [];
    const downtimes: number[] = [];
    for (let i = 0; i < runs; i++) {
      const target = i % 2 === 0 ? 'lv2' : 'lv1';
      const t0 = performance.now();
      const r = await outcome<MigrationResult>(await f.migrate({ vmId: 'vm-bench-lv', targetHostId: target, overrides: { maxBandwidthBytesPerSec: 1024 * MiB } }));
      if (!r.ok) throw new Error(`ferry migration: ${r.message}`);
      ferry.push(performance.now() - t0);
      downtimes.push(r.value.downtimeMs ?? 0);
    }
    await f.destroyEverywhere('vm-bench-lv');
    const b = median(bare);
    const m = median(ferry);
    log(`bare virsh migrate (p2p, shared pool): median ${(b / 1000).toFixed(2)} s over ${runs} runs [${bare.map((x) => (x / 1000).toFixed(2)).join(', ')}]`);
    log(`ferry LiveMigrate on libvirt:          median ${(m / 1000).toFixed(2)} s over ${runs} runs [${ferry.map((x) => (x / 1000).toFixed(2)).join(', ')}], downtime median ${median(downtimes)} ms`);
    log(`ratio ferry / bare: ${(m / b).toFixed(2)}x (ferry adds reservation, readiness checks, the controller's sampling, commit, activation and clean-up)`);
  } finally {
    await f.close();
    await stopOwnTemporal();
  }
}
