// Builds V2V packages for tests the way another platform would: a DMTF OVF descriptor written
// here by hand (not by ferry's exporter), a vmdk made with qemu-img, a SHA256 manifest, tarred
// with GNU tar; and hostile variants (tampered bytes, a climbing or linked tar entry, an
// understated capacity, broken XML) with Python's tarfile where GNU tar refuses to write them.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

export async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

/** sha256 of a disk image's guest-visible content (converted to raw first). */
export async function rawContentSha(image: string, scratch: string): Promise<string> {
  const out = path.join(scratch, `raw-${path.basename(image)}-${Date.now()}.img`);
  await execa('qemu-img', ['convert', '-U', '-O', 'raw', image, out]);
  try {
    return await sha256(out);
  } finally {
    await fs.rm(out, { force: true });
  }
}

export interface OvfOptions {
  name: string;
  cpus: number;
  memoryMiB: number;
  vmdk: string;
  /** ovf:capacity in bytes (default: the vmdk's virtual size) */
  capacityBytes?: number;
  fileBytes?: number;
}

export function ovfText(o: Required<OvfOptions>): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="${path.basename(o.vmdk)}" ovf:id="file1" ovf:size="${o.fileBytes}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="${o.capacityBytes / 1024}" ovf:capacityAllocationUnits="byte * 2^10" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${o.name}">
    <Info>A virtual machine</Info>
    <Name>${o.name}</Name>
    <OperatingSystemSection ovf:id="1" vmw:osType="otherGuest"><Info>The kind of installed guest operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>${o.name}</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>Number of Virtual CPUs</rasd:Description><rasd:ElementName>${o.cpus} virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>${o.cpus}</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory Size</rasd:Description><rasd:ElementName>${o.memoryMiB}MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>${o.memoryMiB}</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI Controller</rasd:Description><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

export type Tamper = 'none' | 'bytes' | 'traversal' | 'symlink' | 'oversized' | 'bad-xml';

/**
 * An OVA in `dir` named `<name>.ova` from the raw `image`: streamOptimized vmdk, OVF, manifest.
 * `tamper` makes the hostile variants. Returns the archive's path and the vmdk's virtual size.
 */
export async function buildOva(dir: string, name: string, image: string, o: { cpus: number; memoryMiB: number; tamper?: Tamper }): Promise<{ ova: string; virtualBytes: number }> {
  const work = path.join(dir, `${name}.d`);
  await fs.mkdir(work, { recursive: true });
  const vmdk = path.join(work, `${name}-disk1.vmdk`);
  await execa('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', image, vmdk]);
  const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', vmdk])).stdout) as { 'virtual-size': number };
  const virtualBytes = info['virtual-size'];
  const fileBytes = (await fs.stat(vmdk)).size;
  const tamper = o.tamper ?? 'none';
  let xml = ovfText({ name, cpus: o.cpus, memoryMiB: o.memoryMiB, vmdk, capacityBytes: tamper === 'oversized' ? virtualBytes / 2 : virtualBytes, fileBytes });
  if (tamper === 'bad-xml') xml = xml.replace('</VirtualHardwareSection>', '</VirtualHardwareSectio>');
  const ovf = path.join(work, `${name}.ovf`);
  await fs.writeFile(ovf, xml);
  const mf = path.join(work, `${name}.mf`);
  await fs.writeFile(mf, `SHA256(${name}.ovf)= ${await sha256(ovf)}\nSHA256(${path.basename(vmdk)})= ${await sha256(vmdk)}\n`);
  if (tamper === 'bytes') {
    // one byte changed after the manifest was written: what a corrupted download or an attacker leaves
    const fh = await fs.open(vmdk, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, fileBytes - 600);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, fileBytes - 600);
    await fh.close();
  }
  const ova = path.join(dir, `${name}.ova`);
  if (tamper === 'traversal' || tamper === 'symlink') {
    const py = `
import tarfile, sys
work, name, ova, mode = sys.argv[1:5]
with tarfile.open(ova, 'w', format=tarfile.USTAR_FORMAT) as t:
    t.add(f'{work}/{name}.ovf', arcname=f'{name}.ovf')
    if mode == 'traversal':
        t.add(f'{work}/{name}-disk1.vmdk', arcname=f'../{name}-disk1.vmdk')
    else:
        i = tarfile.TarInfo(f'{name}-disk1.vmdk'); i.type = tarfile.SYMTYPE; i.linkname = '/etc/passwd'
        t.addfile(i)
`;
    await execa('python3', ['-c', py, work, name, ova, tamper]);
  } else {
    await execa('tar', ['-cf', ova, '-C', work, `${name}.ovf`, path.basename(vmdk), `${name}.mf`]);
  }
  await fs.rm(work, { recursive: true, force: true });
  return { ova, virtualBytes };
}
