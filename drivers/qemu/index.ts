export { createQemuDriver, type QemuDriver } from './driver.js';
export { type QemuDriverOptions, type QemuDatastoreConfig } from './host.js';
export { mapRunState } from './lifecycle.js';
export { type VmPaths } from './vm-store.js';
export { buildQemuArgs, validateVmSpec, defaultMac, qemuOptValue, type QemuArgOptions, type QemuPaths } from './args.js';
export { QmpClient, QmpCommandError, type QmpEvent, type QmpConnectOptions } from './qmp.js';
export { seedFiles, buildSeedImage, SEED_MAX_BYTES } from './seeds.js';
export { createQemuConsole, readSerialTail } from './console.js';
