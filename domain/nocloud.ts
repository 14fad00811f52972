// NoCloud seed content shared by every driver that writes seeds: the three cloud-init files
// (meta-data, user-data, network-config) of a CloudInitSeed, validated. Pure; how a driver puts
// them on a disk (FAT image via qemu-img vvfat, a libvirt volume upload) is the driver's business.
import { DriverError, type CloudInitSeed } from './hypervisor.js';

const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The three NoCloud files. JSON is valid YAML, so values need no YAML quoting of their own. */
export function seedFiles(seed: CloudInitSeed): Record<'meta-data' | 'user-data' | 'network-config', string> {
  if (typeof seed.instanceId !== 'string' || !seed.instanceId || seed.instanceId.length > 200) {
    throw new DriverError('seed.instanceId must be a non-empty string (at most 200 chars)', 'INVALID_ARGUMENT', true);
  }
  if (!HOSTNAME.test(seed.hostname ?? '') || seed.hostname.length > 253) {
    throw new DriverError(`seed.hostname "${seed.hostname}" is not a valid host name`, 'INVALID_ARGUMENT', true);
  }
  if (!Array.isArray(seed.sshAuthorizedKeys)) {
    throw new DriverError('seed.sshAuthorizedKeys must be an array', 'INVALID_ARGUMENT', true);
  }
  seed.sshAuthorizedKeys.forEach((k, i) => {
    if (typeof k !== 'string' || !/^[a-z0-9@.-]+ [A-Za-z0-9+/=]+( [^\r\n]*)?$/.test(k)) {
      throw new DriverError(`seed.sshAuthorizedKeys[${i}] is not a single-line OpenSSH public key`, 'INVALID_ARGUMENT', true);
    }
  });
  const meta = { 'instance-id': seed.instanceId, 'local-hostname': seed.hostname, 'public-keys': seed.sshAuthorizedKeys };
  let userData: string;
  if (seed.userData !== undefined) {
    if (typeof seed.userData !== 'string') throw new DriverError('seed.userData must be a string', 'INVALID_ARGUMENT', true);
    userData = seed.userData;
  } else {
    userData = '#cloud-config\n' + JSON.stringify({ hostname: seed.hostname, ssh_authorized_keys: seed.sshAuthorizedKeys }, null, 2) + '\n';
  }
  let network: unknown = { version: 2, ethernets: {} };
  const n = seed.network;
  if (n) {
    if (!IPV4.test(n.address)) throw new DriverError(`seed.network.address "${n.address}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    if (!Number.isInteger(n.prefixLength) || n.prefixLength < 0 || n.prefixLength > 32) {
      throw new DriverError(`seed.network.prefixLength ${n.prefixLength} must be 0..32`, 'INVALID_ARGUMENT', true);
    }
    if (!IPV4.test(n.gateway)) throw new DriverError(`seed.network.gateway "${n.gateway}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    n.dns.forEach((d, i) => {
      if (!IPV4.test(d)) throw new DriverError(`seed.network.dns[${i}] "${d}" is not an IPv4 address`, 'INVALID_ARGUMENT', true);
    });
    if (!MAC.test(n.mac)) throw new DriverError(`seed.network.mac "${n.mac}" is not a lowercase MAC address`, 'INVALID_ARGUMENT', true);
    if (n.vlan !== undefined && (!Number.isInteger(n.vlan) || n.vlan < 1 || n.vlan > 4094)) {
      throw new DriverError(`seed.network.vlan ${n.vlan} must be 1..4094`, 'INVALID_ARGUMENT', true);
    }
    const ipCfg = {
      addresses: [`${n.address}/${n.prefixLength}`],
      routes: [{ to: 'default', via: n.gateway }],
      nameservers: { addresses: n.dns },
    };
    network =
      n.vlan === undefined
        ? { version: 2, ethernets: { eth0: { match: { macaddress: n.mac }, 'set-name': 'eth0', ...ipCfg } } }
        : {
            version: 2,
            ethernets: { eth0: { match: { macaddress: n.mac }, 'set-name': 'eth0', dhcp4: false } },
            vlans: { [`eth0.${n.vlan}`]: { id: n.vlan, link: 'eth0', ...ipCfg } },
          };
  }
  return {
    'meta-data': JSON.stringify(meta, null, 2) + '\n',
    'user-data': userData,
    'network-config': JSON.stringify(network, null, 2) + '\n',
  };
}

/** Largest seed content that fits the 1.44 MB FAT12 image with room to spare. */
export const SEED_MAX_BYTES = 1024 * 1024;
