// V2V on the simulator: the host agent validates an imported package from its real files (XML,
// manifest, qemu-img info, exactly as on qemu), then hands the disk's declared format and size
// here; the simulator keeps sizes, not bytes, so the disk becomes an importable image on one of
// the host's datastores that ProvisionVm's import method converts like any other. Forgotten
// again when the import ends, so nothing stays behind. (cluster, lookups, topology, validate)
import type { DiskFormat } from '../hypervisor.js';
import type { SimHost } from './host.js';
import { datastoresOf } from './lookups.js';
import { upsertImage } from './topology.js';
import { invalid, notFound, safeName } from './validate.js';

const IMPORT_PATH = /^sim:\/\/[^/]+\/imports\/[^/]+\/[^/]+$/;

export function adoptImportImage(h: SimHost, i: { stageId: string; file: string; format: DiskFormat; sizeBytes: number }): { path: string } {
  safeName('stageId', i.stageId);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(i.file)) throw invalid(`file "${i.file}" must be a plain name`);
  return h.op('createDisk', undefined, () => {
    const ds = datastoresOf(h.store, h.hostId)[0];
    if (!ds) throw notFound(`host ${h.hostId} has no datastore to stage an import on`);
    const path = `sim://${ds.id}/imports/${i.stageId}/${i.file}`;
    upsertImage(h.store, { path, datastoreId: ds.id, sizeBytes: i.sizeBytes, format: i.format });
    return { path };
  });
}

export function forgetImportImage(h: SimHost, path: string): void {
  if (!IMPORT_PATH.test(path)) throw invalid(`"${path}" is not a staged import image`);
  h.sim.tx(() => h.store.run('DELETE FROM images WHERE path = ?', path));
}
