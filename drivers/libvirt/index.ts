export { createLibvirtDriver, type LibvirtDriver } from './driver.js';
export { type LibvirtDriverOptions, type LibvirtDatastoreConfig, checkConnectUri } from './host.js';
export { buildDomainXml, rewriteDiskSources, parseDomainXml, parsePoolXml, parseVolXml, buildDirPoolXml, domainUuid, FERRY_NS } from './domain-xml.js';
export { parseDomState, mapDomState, parseJobInfo, jobToStats, parseNodeInfo, parseBlockJob, classifyVirshError, virshErrorMessage } from './parse.js';
export { migrateArgs, bandwidthMiB } from './migration.js';
export { createVirsh, type Virsh } from './virsh.js';
export { copyStorageUri, parseMigrationUri } from './copy-storage.js';
