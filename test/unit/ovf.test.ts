// domain/ovf.ts directly: the descriptor read from a parsed DMTF envelope (units, formats, one
// VM), file names that climb or hide, manifests, sizes against the declaration, and ferry's own
// exported envelope read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser } from 'fast-xml-parser';
import { descriptorFromJson, descriptorFromOvf, diskSizeProblem, ovfEnvelope, packagePathProblem, parseManifest } from '../../domain/ovf.js';
import { ovfText } from '../helpers/ova.js';

const parse = (xml: string) => new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', removeNSPrefix: true, parseTagValue: false, parseAttributeValue: false }).parse(xml) as unknown;

test('a VMware-style envelope: CPUs, memory in 2^20 bytes, capacity in 2^10 bytes, the NIC network', () => {
  const d = descriptorFromOvf(parse(ovfText({ name: 'app', cpus: 4, memoryMiB: 2048, vmdk: '/x/app-disk1.vmdk', capacityBytes: 8 * 1024 ** 3, fileBytes: 12345 })));
  assert.ok(d.ok, d.ok ? '' : d.problem);
  assert.deepEqual(d.value, { name: 'app', cpus: 4, memoryMiB: 2048, nics: ['VM Network'], disks: [{ file: 'app-disk1.vmdk', format: 'vmdk', capacityBytes: 8 * 1024 ** 3, fileSizeBytes: 12345 }] });
});

test("ferry's exported envelope reads back as what was written", () => {
  const d = descriptorFromOvf(parse(ovfEnvelope({ name: 'x<y', cpus: 1, memoryMiB: 64, network: 'n&1', disk: { file: 'x-disk1.vmdk', fileBytes: 10, capacityBytes: 1048576 } })));
  assert.ok(d.ok, d.ok ? '' : d.problem);
  assert.equal(d.value.name, 'x<y');
  assert.deepEqual(d.value.nics, ['n&1']);
  assert.equal(d.value.disks[0]!.capacityBytes, 1048576);
});

test('envelopes missing what a VM needs are refused naming it', () => {
  const good = ovfText({ name: 'a', cpus: 1, memoryMiB: 64, vmdk: 'a.vmdk', capacityBytes: 1024 * 1024, fileBytes: 1 });
  const cases: Array<[string, RegExp]> = [
    ['<foo/>', /no OVF <Envelope>/],
    [good.replace(/<rasd:ResourceType>3<\/rasd:ResourceType>/, '<rasd:ResourceType>99</rasd:ResourceType>'), /no CPU item/],
    [good.replace('byte * 2^20', 'furlongs'), /AllocationUnits "furlongs"/],
    [good.replace('ovf:href="a.vmdk"', 'ovf:href="../a.vmdk"'), /climbs out/],
    [good.replace('ovf:href="a.vmdk"', 'ovf:href="/etc/shadow"'), /absolute path/],
    [good.replace('ovf:/disk/vmdisk1', 'ovf:/disk/other'), /names no DiskSection/],
    [good.replace(/ovf:capacity="\d+"/, 'ovf:capacity="-5"'), /capacity "-5"/],
    [good.replace('</VirtualSystem>', '</VirtualSystem><VirtualSystem ovf:id="b"><Info/></VirtualSystem>'), /2 VirtualSystems/],
  ];
  for (const [xml, re] of cases) {
    const d = descriptorFromOvf(parse(xml));
    assert.ok(!d.ok, `accepted: ${re}`);
    assert.match(d.problem, re);
  }
});

test('package file names: plain names only', () => {
  for (const ok of ['a.vmdk', './a.vmdk', 'disk 1.vmdk']) assert.equal(packagePathProblem(ok), undefined, ok);
  for (const [bad, re] of [['../a', /climbs/], ['a/../../b', /climbs/], ['/etc/passwd', /absolute/], ['C:x', /absolute/], ['a\\b', /backslash/], ['sub/a.vmdk', /subfolder/], ['', /empty/], ['a\0b', /NUL/]] as Array<[string, RegExp]>) {
    assert.match(packagePathProblem(bad) ?? '', re, bad);
  }
});

test('manifests: SHA1/SHA256/SHA512 lines; bad lines, lengths and names refused', () => {
  const m = parseManifest(`SHA256(a.ovf)= ${'a'.repeat(64)}\nSHA1(a.vmdk)= ${'B'.repeat(40)}\n`);
  assert.ok(m.ok);
  assert.deepEqual([...m.value], [['a.ovf', { algorithm: 'sha256', digest: 'a'.repeat(64) }], ['a.vmdk', { algorithm: 'sha1', digest: 'b'.repeat(40) }]]);
  for (const [t, re] of [['MD5(a)= 00', /line 1/], [`SHA256(a)= ${'a'.repeat(63)}`, /64 hex digits/], [`SHA256(../a)= ${'a'.repeat(64)}`, /climbs/]] as Array<[string, RegExp]>) {
    const r = parseManifest(t);
    assert.ok(!r.ok);
    assert.match(r.problem, re);
  }
});

test('a disk larger than declared, or of another format, is named', () => {
  const d = { file: 'a.vmdk', format: 'vmdk' as const, capacityBytes: 100, fileSizeBytes: 50 };
  assert.equal(diskSizeProblem(d, { virtualBytes: 100, fileBytes: 50, format: 'vmdk' }), undefined);
  assert.match(diskSizeProblem(d, { virtualBytes: 101, fileBytes: 50, format: 'vmdk' })!, /virtual size 101 bytes > capacity 100/);
  assert.match(diskSizeProblem(d, { virtualBytes: 100, fileBytes: 51, format: 'vmdk' })!, /file size 51 bytes > ovf:size 50/);
  assert.match(diskSizeProblem(d, { virtualBytes: 100, fileBytes: 50, format: 'raw' })!, /is raw, the descriptor says vmdk/);
});

test('the JSON descriptor of a bare image', () => {
  const ok = descriptorFromJson({ cpus: 2, memoryMiB: 512, disk: 'x.vhdx' });
  assert.ok(ok.ok);
  assert.equal(ok.value.disks[0]!.format, 'vhdx');
  for (const [v, re] of [[[], /not an object/], [{ cpus: 0, memoryMiB: 1, disk: 'a.raw' }, /cpus/], [{ cpus: 1, memoryMiB: 1, disk: '../a.raw' }, /climbs/], [{ cpus: 1, memoryMiB: 1, disk: 'a.bin' }, /format/], [{ cpus: 1, memoryMiB: 1, disk: 'a.raw', x: 1 }, /unknown field/]] as Array<[unknown, RegExp]>) {
    const r = descriptorFromJson(v);
    assert.ok(!r.ok);
    assert.match(r.problem, re);
  }
});
