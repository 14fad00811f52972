// Cold and storage migration on REAL QEMU (TCG) against what the hardware allows, measured in the
// same run on the same machine (issue 11's benchmarks):
//   cold:    ColdMigrate wall time  vs  t_shutdown + home bytes / copy throughput + t_boot   goal <= 1.2
//   storage: StorageMigrate wall time  vs  allocated bytes / copy throughput        goal <= 1.3 (no writes)
//            and the same with the guest writing to its disk during the mirror (reported, no goal)
// t_shutdown and t_boot are measured on the same VM through its host's driver (stop with the same
// graceful timeout and force the migration uses; start until QEMU reports running); the copy
// throughput is a plain `dd conv=fsync` of a file of the home's size between the same two
// datastores. `npx tsx bench/cold-storage.ts` runs it alone.
import { execa } from 'execa';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Vm } from '../db/entities.js';
import { coldProgressQuery, controlQueue, workflowIds, type ColdMigrateInput, type MigrationResult, type StorageMigrateInput } from '../workflows/definitions.js';
import { outcome, stopOwnTemporal } from '../test/helpers/ferry.js';
import { startQemuFerry, type QemuFerry } from '../test/helpers/qemu-ferry.js';

const MiB = 1024 ** 2;
const DATA_MIB = Number(process.env.FERRY_BENCH_COLD_MIB ?? 256);
const SHUTDOWN_TIMEOUT_MS = 1000;
const COLD_GOAL = 1.2;
const STORAGE_GOAL = 1.3;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, performance.now() - t0];
}

/** bytes/s of a plain copy of `bytes` bytes from folder `from` to folder `to` (fsynced). */
async function copyThroughput(from: string, to: string, bytes: number): Promise<number> {
  const src = path.join(from, '.bench-copy-src');
  const dst = path.join(to, '.bench-copy-dst');
  const blocks = Math.max(1, Math.ceil(bytes / MiB));
  try {
    await execa('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', `count=${blocks}`, 'conv=fsync', 'status=none']);
    const [, ms] = await timed(() => execa('dd', [`if=${src}`, `of=${dst}`, 'bs=4M', 'conv=fsync', 'status=none']));
    return (blocks * MiB) / (ms / 1000);
  } finally {
    await fs.rm(src, { force: true });
    await fs.rm(dst, { force: true });
  }
}

async function allocatedBytes(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) n += (JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', f])).stdout) as { 'actual-size': number })['actual-size'];
  return n;
}

const fmtMs = (ms: number) => `${Math.round(ms)} ms`;
const fmtMiBps = (b: number) => `${(b / MiB).toFixed(0)} MiB/s`;
const verdict = (ratio: number, goal: number) => `${ratio.toFixed(2)} (goal <= ${goal}: ${ratio <= goal ? 'met' : 'MISSED'})`;

export async function benchColdStorage(opts: { log: (line: string) => void }): Promise<void> {
  const { log } = opts;
  const f: QemuFerry = await startQemuFerry({ hosts: ['ca', 'cb'], storage: 'shared+local', basePort: 49100, pollMs: 100 });
  const vmId = 'vm-bench-cold';
  const vmId2 = 'vm-bench-stor';
  try {
    const p = await outcome(await f.provision({ name: 'bench-cold', vmId, hostId: 'ca', memoryMiB: 64 }));
    if (!p.ok) throw new Error(`provision: ${p.message}`);
    // data in the VM's own disk layer, written through QEMU
    await f.driver('ca').hmp(vmId, `qemu-io disk0 "write -P 0x5a 0 ${DATA_MIB}M"`);
    await f.driver('ca').hmp(vmId, 'qemu-io disk0 "flush"');

    // t_shutdown and t_boot of this VM on its host (what the cold migration pays around the copy)
    const [, tShutdown] = await timed(() => f.driver('ca').stopVm(vmId, { timeoutMs: SHUTDOWN_TIMEOUT_MS, force: true }));
    const [, tBoot] = await timed(() => f.driver('ca').startVm(vmId));

    const before = await f.db.em().findOneOrFail(Vm, { id: vmId });
    const from = path.dirname(before.diskPaths[0]!);
    const input: ColdMigrateInput = { vmId, targetHostId: 'cb', targetDatastoreId: 'qlocal-cb', force: true, shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS };
    const h = await f.client.workflow.start('coldMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(vmId)}-${f.prefix}-cold`, args: [input] });
    const [cold, tCold] = await timed(() => outcome<MigrationResult>(h));
    if (!cold.ok) throw new Error(`cold migration: ${cold.message}`);
    const homeBytes = (await h.query(coldProgressQuery)).progress.totalBytes;
    const to = f.datastoresOf('cb').find((d) => d.id === 'qlocal-cb')!.path;
    const throughput = await copyThroughput(from, to, homeBytes);
    const coldModel = tShutdown + (homeBytes / throughput) * 1000 + tBoot;
    log(`cold:    ${fmtMs(tCold)} for ${(homeBytes / MiB).toFixed(0)} MiB of home; model ${fmtMs(coldModel)} = t_shutdown ${fmtMs(tShutdown)} + copy ${fmtMs((homeBytes / throughput) * 1000)} at ${fmtMiBps(throughput)} + t_boot ${fmtMs(tBoot)}; ratio ${verdict(tCold / coldModel, COLD_GOAL)}`);

    // storage migration on cb: qlocal-cb -> qshared without writes, then back while the guest writes
    const storage = async (vmId: string, target: string, n: number, writes: boolean) => {
      const vm = await f.db.em().fork().findOneOrFail(Vm, { id: vmId });
      const allocated = await allocatedBytes(vm.diskPaths);
      const srcDir = path.dirname(vm.diskPaths[0]!);
      const dstDir = f.datastoresOf('cb').find((d) => d.id === target)!.path;
      const tp = await copyThroughput(srcDir, dstDir, allocated);
      let writing = writes;
      let written = 0;
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await f.driver('cb').hmp(vmId, `qemu-io disk0 "write -P 0x${(i % 200) + 16} ${(i * 4) % DATA_MIB}M 4M"`).catch(() => undefined);
          written += 4 * MiB;
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const sin: StorageMigrateInput = { vmId, targetDatastoreId: target };
      const sh = await f.client.workflow.start('storageMigrate', { taskQueue: controlQueue(f.prefix), workflowId: `${workflowIds.migrate(vmId)}-${f.prefix}-storage-${n}`, args: [sin] });
      const [r, ms] = await timed(() => outcome<MigrationResult>(sh));
      writing = false;
      await writer;
      if (!r.ok) throw new Error(`storage migration: ${r.message}`);
      const model = (allocated / tp) * 1000;
      const label = writes ? `storage, guest writing (${(written / MiB).toFixed(0)} MiB written during the move)` : 'storage, no guest writes';
      log(`${label}: ${fmtMs(ms)} for ${(allocated / MiB).toFixed(0)} MiB allocated; model ${fmtMs(model)} at ${fmtMiBps(tp)}; ratio ${writes ? `${(ms / model).toFixed(2)} (reported, no goal)` : verdict(ms / model, STORAGE_GOAL)}; pivot ${fmtMs(r.value.downtimeMs ?? 0)}`);
    };
    await storage(vmId, 'qshared', 1, false);
    // a second VM for the run with writes: a VM's second storage migration is refused today
    // ("has a disk mirror that ended or failed; cancel it first": the qemu driver keeps the
    // finished mirror's record after the pivot)
    const p2 = await outcome(await f.provision({ name: 'bench-stor', vmId: vmId2, hostId: 'cb', memoryMiB: 64 }));
    if (!p2.ok) throw new Error(`provision: ${p2.message}`);
    await f.driver('cb').hmp(vmId2, `qemu-io disk0 "write -P 0x5a 0 ${DATA_MIB}M"`);
    await f.driver('cb').hmp(vmId2, 'qemu-io disk0 "flush"');
    const on = (await f.db.em().fork().findOneOrFail(Vm, { id: vmId2 })).datastoreId;
    await storage(vmId2, on === 'qshared' ? 'qlocal-cb' : 'qshared', 2, true);
  } finally {
    await f.destroyEverywhere(vmId).catch(() => undefined);
    await f.destroyEverywhere(vmId2).catch(() => undefined);
    await f.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchColdStorage({ log: (l) => console.log(l) });
  await stopOwnTemporal();
}
