// `npm run lab:down`: removes everything the QEMU lab of `FERRY_DRIVER=qemu npm start` made: every
// QEMU process, the network namespaces and the guard route, and <FERRY_DATA_DIR>/lab; the lab's
// VMs are recorded as deleted in ferry's database (hosts, network and templates stay).
import { join } from 'node:path';
import { loadConfig } from '../config/index.js';
import { createDb, migrateUp } from '../db/orm.js';
import { forgetLabVms, labDown, readLabRecord } from '../workers/lab/qemu-lab.js';

try {
  const config = loadConfig({ ...process.env, FERRY_DRIVER: 'qemu' });
  const root = join(config.dataDir, 'lab');
  const hosts = (await readLabRecord(root))?.hosts ?? [];
  await labDown(root);
  if (hosts.length) {
    const db = await createDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
    try {
      await migrateUp(db);
      const gone = await forgetLabVms(db, hosts);
      console.log(`ferry lab: ${gone.length} VM(s) recorded as deleted${gone.length ? ` (${gone.join(', ')})` : ''}`);
    } finally {
      await db.close();
    }
  }
} catch (e) {
  console.error(`ferry lab:down: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
