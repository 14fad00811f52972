// The libvirt driver's pure parts: virsh output readers (real libvirt 9.0 output, and nonsense
// that must become a clear DriverError), the domain XML round trip, the migrate argv.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DriverError, type VmSpec } from '../../domain/hypervisor.js';
import {
  bandwidthMiB,
  buildDomainXml,
  classifyVirshError,
  domainUuid,
  jobToStats,
  mapDomState,
  migrateArgs,
  copyStorageUri,
  parseMigrationUri,
  rewriteDiskSources,
  parseBlockJob,
  parseDomainXml,
  parseDomState,
  parseJobInfo,
  parseNodeInfo,
  parsePoolXml,
  parseVolXml,
  virshErrorMessage,
} from '../../drivers/libvirt/index.js';

const MiB = 1024 ** 2;
const isDriverError = (code: string, re: RegExp) => (e: unknown) => e instanceof DriverError && e.code === code && re.test(e.message);

test('domstate --reason: states and reasons, postmigrate, defined vs stopped', () => {
  assert.deepEqual(parseDomState('running (booted)\n'), { state: 'running', reason: 'booted' });
  assert.equal(mapDomState(parseDomState('shut off (migrated)')), 'postmigrate');
  assert.equal(mapDomState(parseDomState('shut off (unknown)'), { started: false }), 'defined');
  assert.equal(mapDomState(parseDomState('shut off (destroyed)'), { started: true }), 'stopped');
  assert.equal(mapDomState(parseDomState('paused (user)')), 'paused');
  assert.equal(mapDomState(parseDomState('crashed (panicked)')), 'crashed');
  assert.throws(() => parseDomState('error: no such thing'), isDriverError('HYPERVISOR', /domstate --reason: unexpected output/));
  assert.throws(() => parseDomState('flying (high)'), isDriverError('HYPERVISOR', /flying/));
});

const ACTIVE = `Job type: 2

operation: 5
time_elapsed: 5779
downtime: 300
data_total: 134610944
data_processed: 44584883
data_remaining: 75841536
memory_remaining: 75841536
memory_bps: 8413380
memory_dirty_rate: 1429
memory_iteration: 2
memory_page_size: 4096
disk_total: 0
`;

test('domjobinfo --rawstats: an active outgoing job in ferry\'s MigrationStats shape', () => {
  const j = parseJobInfo(ACTIVE);
  assert.equal(j.type, 2);
  assert.equal(j.operation, 5);
  const s = jobToStats(j, 'active');
  assert.equal(s.round, 2);
  assert.equal(s.remainingBytes, 75841536);
  assert.equal(s.transferredBytes, 44584883);
  assert.equal(s.dirtyRateBytesPerSec, 1429 * 4096, 'pages/s times the page size');
  assert.equal(s.transferRateBytesPerSec, 8413380);
  assert.equal(s.expectedDowntimeMs, 300);
  assert.equal(s.downtimeMs, undefined);
  const done = jobToStats(parseJobInfo(ACTIVE.replace('Job type: 2', 'Job type: 3').replace('downtime: 300', 'downtime: 54')), 'completed');
  assert.equal(done.downtimeMs, 54);
  assert.equal(done.totalTimeMs, 5779);
  assert.equal(done.remainingBytes, 0);
  assert.equal(parseJobInfo('Job type: 0\n').type, 0);
});

test('domjobinfo nonsense is a DriverError naming the field', () => {
  assert.throws(() => parseJobInfo('hello world'), isDriverError('HYPERVISOR', /domjobinfo --rawstats: unexpected output \(line without "key: value"/));
  assert.throws(() => parseJobInfo('operation: 5'), isDriverError('HYPERVISOR', /no "Job type"/));
  assert.throws(() => parseJobInfo('Job type: 9'), isDriverError('HYPERVISOR', /not a virDomainJobType/));
  assert.throws(() => parseJobInfo('Job type: 2\nmemory_iteration: two'), isDriverError('HYPERVISOR', /"memory_iteration" is "two"/));
});

test('nodeinfo, blockjob --raw, and their nonsense', () => {
  const n = parseNodeInfo('CPU model:           x86_64\nCPU(s):              2\nCPU frequency:       2100 MHz\nMemory size:         24641236 KiB\n');
  assert.deepEqual(n, { cpuModel: 'x86_64', cpus: 2, memoryBytes: 24641236 * 1024 });
  assert.throws(() => parseNodeInfo('CPU(s): 2\nMemory size: lots'), isDriverError('HYPERVISOR', /Memory size/));
  assert.deepEqual(parseBlockJob(' type=Block Copy\n bandwidth=4\n cur=16777216\n end=67108864\n'), { type: 'Block Copy', bandwidth: 4, cur: 16777216, end: 67108864 });
  assert.equal(parseBlockJob(''), null);
  assert.throws(() => parseBlockJob('type=Block Copy\ncur=x\nend=1'), isDriverError('HYPERVISOR', /"cur"/));
});

test('virsh errors: message extracted and classified', () => {
  assert.equal(virshErrorMessage("error: failed to get domain 'x'\nerror: Domain not found: no domain with matching name 'x'\n"), "failed to get domain 'x': Domain not found: no domain with matching name 'x'");
  assert.equal(classifyVirshError('Domain not found: no domain with matching uuid').code, 'NOT_FOUND');
  assert.equal(classifyVirshError('Failed to connect socket to \'/srv/x/libvirt-sock\': No such file or directory').code, 'UNREACHABLE');
  assert.equal(classifyVirshError('Requested operation is not valid: domain is not running').code, 'INVALID_STATE');
  assert.equal(classifyVirshError('Unsafe migration: Migration without shared storage is unsafe').code, 'INVALID_ARGUMENT');
  assert.equal(classifyVirshError('internal error: Attempt to migrate guest to the same host').code, 'HYPERVISOR');
});

const SPEC: VmSpec = { vmId: 'vm-a1', name: 'web <1> & "x"', cpus: 2, memoryBytes: 128 * MiB, disks: ['/srv/p/vm-a1-root.qcow2'], seedPath: '/srv/p/vm-a1-seed.img', network: 'qnet', mac: '52:54:00:00:00:01', cpuFeatures: ['sse2'] };

test('domain XML: generated from a VmSpec, parsed back to the same spec; UUID stable per vmId', () => {
  const xml = buildDomainXml(SPEC, { domainType: 'qemu', machine: 'pc', cpuModel: 'qemu64' });
  assert.match(xml, /<domain type="qemu">/);
  assert.match(xml, /<title>web &lt;1&gt; &amp; "x"<\/title>|<title>web &lt;1&gt; &amp; &quot;x&quot;<\/title>/);
  assert.match(xml, /<memory unit="KiB">131072<\/memory>/);
  assert.match(xml, /<disk type="file" device="cdrom">/);
  const p = parseDomainXml(xml);
  assert.equal(p.name, 'vm-a1');
  assert.equal(p.uuid, domainUuid('vm-a1'));
  assert.deepEqual(p.spec, SPEC);
  assert.deepEqual(p.disks.map((d) => [d.device, d.target, d.file]), [['disk', 'vda', SPEC.disks[0]], ['cdrom', 'hdc', SPEC.seedPath]]);
  assert.equal(domainUuid('vm-a1'), domainUuid('vm-a1'));
  assert.notEqual(domainUuid('vm-a1'), domainUuid('vm-a2'));
  assert.match(domainUuid('vm-a1'), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.throws(() => parseDomainXml('not xml'), isDriverError('HYPERVISOR', /domain XML: not XML/));
  assert.throws(() => parseDomainXml('<domain><name>x</name></domain>'), isDriverError('HYPERVISOR', /<uuid> missing/));
  assert.throws(() => parseDomainXml(`<domain><name>x</name><uuid>${domainUuid('x')}</uuid><metadata><ferry:vm xmlns:ferry="urn:ferry:vm:1">{oops</ferry:vm></metadata></domain>`), isDriverError('HYPERVISOR', /not JSON/));
});

test('pool and volume XML as libvirt prints them', () => {
  const pool = parsePoolXml(`<pool type='dir'><name>ferry-shared</name><uuid>u</uuid><capacity unit='bytes'>270553174016</capacity><allocation unit='bytes'>1</allocation><available unit='bytes'>249235632128</available><source></source><target><path>/srv/ferrylv/shared</path></target></pool>`);
  assert.deepEqual(pool, { name: 'ferry-shared', type: 'dir', targetPath: '/srv/ferrylv/shared', capacityBytes: 270553174016, availableBytes: 249235632128 });
  const vol = parseVolXml(`<volume type='file'><name>a.qcow2</name><key>/p/a.qcow2</key><capacity unit='bytes'>67108864</capacity><allocation unit='bytes'>200704</allocation><target><path>/p/a.qcow2</path><format type='qcow2'/></target><backingStore><path>/t/guest.qcow2</path><format type='qcow2'/></backingStore></volume>`);
  assert.deepEqual(vol, { name: 'a.qcow2', path: '/p/a.qcow2', format: 'qcow2', capacityBytes: 67108864, allocationBytes: 200704, backingPath: '/t/guest.qcow2' });
  assert.throws(() => parseVolXml('<volume><name>a</name></volume>'), isDriverError('HYPERVISOR', /<target><path> missing/));
});

test('migrate argv: p2p, persistent, paused destination, --unsafe for shared storage, bandwidth in MiB/s', () => {
  const argv = migrateArgs('qemu+unix:///system?socket=/s', 'uuid-1', 'qemu+tcp://10.252.0.2/system', { maxBandwidthBytesPerSec: 8 * MiB });
  assert.deepEqual(argv, ['-c', 'qemu+unix:///system?socket=/s', 'migrate', '--live', '--p2p', '--persistent', '--suspend', '--auto-converge', '--unsafe', '--bandwidth', '8', 'uuid-1', 'qemu+tcp://10.252.0.2/system']);
  assert.ok(migrateArgs('c', 'u', 'd', { copyStorage: true }).includes('--copy-storage-all'));
  assert.equal(bandwidthMiB(100), 1, 'at least 1 MiB/s');
  assert.equal(bandwidthMiB(1024 * MiB), 1024);
});

test('copyDisks: the destination\'s uri carries the moves, --copy-storage-all with a destination XML, memory and disk numbers apart', () => {
  const moves = { '/a/vm-1-root.qcow2': '/b/vm-1-root.qcow2', '/a/vm-1-seed.img': '/b/vm-1-seed.img' };
  const uri = copyStorageUri('qemu+tcp://10.252.0.2/system', moves);
  assert.deepEqual(parseMigrationUri(uri), { destUri: 'qemu+tcp://10.252.0.2/system', moves });
  assert.deepEqual(parseMigrationUri('qemu+tcp://10.252.0.2/system'), { destUri: 'qemu+tcp://10.252.0.2/system' });
  assert.throws(() => parseMigrationUri('qemu+tcp://h/system#ferry-copy=!!!'), isDriverError('INVALID_ARGUMENT', /not what a libvirt destination hands out/));
  assert.throws(() => parseMigrationUri(copyStorageUri('qemu+tcp://h/system', { 'relative.qcow2': '/b/x' })), isDriverError('INVALID_ARGUMENT', /must be an absolute path/));
  const argv = migrateArgs('c', 'u', 'qemu+tcp://h/system', { copyStorage: true, destXmlFile: '/s/vm-1.xml' });
  assert.ok(argv.includes('--copy-storage-all') && !argv.includes('--unsafe'));
  assert.deepEqual(argv.slice(argv.indexOf('--xml'), argv.indexOf('--xml') + 4), ['--xml', '/s/vm-1.xml', '--persistent-xml', '/s/vm-1.xml']);

  const xml = `<domain type='qemu'><name>vm-1</name><uuid>u</uuid><metadata><ferry:vm xmlns:ferry="urn:ferry:vm:1">{"vmId":"vm-1","disks":["/a/vm-1-root.qcow2"],"seedPath":"/a/vm-1-seed.img"}</ferry:vm></metadata><devices><disk type='file' device='disk'><source file='/a/vm-1-root.qcow2'/><target dev='vda' bus='virtio'/><address type='pci' slot='0x04'/></disk><disk type='file' device='cdrom'><source file='/a/vm-1-seed.img'/><target dev='hdc' bus='ide'/><readonly/></disk><controller type='usb' index='0'/></devices></domain>`;
  const moved = parseDomainXml(rewriteDiskSources(xml, moves));
  assert.deepEqual(moved.disks.map((d) => d.file), ['/b/vm-1-root.qcow2', '/b/vm-1-seed.img']);
  assert.deepEqual([moved.spec?.disks, moved.spec?.seedPath], [['/b/vm-1-root.qcow2'], '/b/vm-1-seed.img'], 'ferry\'s spec follows');
  assert.match(rewriteDiskSources(xml, moves), /<address type="pci" slot="0x04"\/>[\s\S]*<controller type="usb" index="0"\/>/, 'everything else stays, in order');
  assert.throws(() => rewriteDiskSources(xml, { '/nope': '/b/x' }), isDriverError('INVALID_ARGUMENT', /no disk has \/nope/));

  const job = parseJobInfo('Job type: 2\noperation: 5\ndata_total: 300\ndata_processed: 120\ndata_remaining: 180\ndisk_total: 200\ndisk_processed: 100\ndisk_remaining: 100\ndisk_bps: 7\nmemory_iteration: 0');
  const st = jobToStats(job, 'active', undefined, { copyStorage: true });
  assert.deepEqual([st.transferredBytes, st.remainingBytes, st.totalBytes], [20, 80, 100], 'memory only');
  assert.deepEqual(st.disk, { status: 'running', copiedBytes: 100, totalBytes: 200, dirtyBytes: 100, inSync: false, transferRateBytesPerSec: 7 });
  assert.equal(jobToStats(job, 'active').disk, undefined, 'shared storage: no disk part');
});
