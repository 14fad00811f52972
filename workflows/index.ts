// Workflow functions only: this file is the entry point of the workflow bundle.
export { provisionVm } from './provision.js';
export { liveMigrate } from './live-migrate.js';
export { vmLifecycle, createTemplateFromVm } from './lifecycle.js';
export { evacuateHost } from './evacuate-host.js';
export { reconcile } from './reconcile.js';
export { rebalance } from './rebalance.js';
export { coldMigrate } from './cold-migrate.js';
export { storageMigrate } from './storage-migrate.js';
export { vmConsole } from './vm-console.js';
export { inspectVmPackage, discardVmPackage, importVm, exportVm } from './v2v.js';
