// `npm run lab:down`: removes everything the QEMU lab of `FERRY_DRIVER=qemu npm start` made: every
// QEMU process, the network namespaces and the guard route, and <FERRY_DATA_DIR>/lab.
import { loadConfig } from '../config/index.js';
import { join } from 'node:path';
import { labDown } from '../workers/lab/qemu-lab.js';

try {
  await labDown(join(loadConfig({ ...process.env, FERRY_DRIVER: 'qemu' }).dataDir, 'lab'));
} catch (e) {
  console.error(`ferry lab:down: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
