export { createQemuDriver, mapRunState, type QemuDriver, type QemuDriverOptions, type QemuDatastoreConfig, type VmPaths } from './driver.js';
export { buildQemuArgs, validateVmSpec, defaultMac, qemuOptValue, type QemuArgOptions, type QemuPaths } from './args.js';
export { QmpClient, QmpCommandError, type QmpEvent, type QmpConnectOptions } from './qmp.js';
export { seedFiles, buildSeedImage, SEED_MAX_BYTES } from './img.js';
