// flannel's records: the network config (what uvtep supports, what it refuses), the subnet
// leases as flanneld writes them, the subnet file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { leaseValue, parseFlannelConfig, parseLease, readSubnetFile } from '../../src/flannel.js';
import { ConfigError } from '../../src/errors.js';

const ip = (s: string) => s.split('.').reduce((a, p) => a * 256 + Number(p), 0);

describe('flannel network config', () => {
  it('flanneld defaults: SubnetLen 24, VNI 1, Port 0 = 8472, the first subnet not leased', () => {
    const n = parseFlannelConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
    expect(n).toEqual({ network: ip('10.244.0.0'), networkLen: 16, subnetLen: 24, subnetMin: ip('10.244.1.0'), subnetMax: ip('10.244.255.0'), vni: 1, port: 8472, mtu: undefined });
  });

  it('takes the config\'s VNI, Port, MTU, SubnetLen, SubnetMin/Max', () => {
    const n = parseFlannelConfig('{"Network":"172.18.0.0/16","SubnetLen":26,"SubnetMin":"172.18.4.0","SubnetMax":"172.18.8.0","Backend":{"Type":"vxlan","VNI":7,"Port":4789,"MTU":1400}}');
    expect(n).toMatchObject({ subnetLen: 26, subnetMin: ip('172.18.4.0'), subnetMax: ip('172.18.8.0'), vni: 7, port: 4789, mtu: 1400 });
  });

  it.each([
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', /backend is "host-gw"; uvtep joins vxlan networks only/],
    ['{"Network":"10.244.0.0/16"}', /backend is "udp"/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":true}}', /VXLAN GBP/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}', /DirectRouting/],
    ['{"IPv6Network":"2001:db8::/64","EnableIPv6":true,"Backend":{"Type":"vxlan"}}', /IPv6-only flannel networks are not supported yet/],
    ['{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/64","Backend":{"Type":"vxlan"}}', /dual-stack/],
    ['{"Network":"10.244.0.0/16","SubnetLen":8,"Backend":{"Type":"vxlan"}}', /"SubnetLen" 8 must be longer than the network's 16/],
    ['{"Network":"10.244.0.0/33","Backend":{"Type":"vxlan"}}', /"Network" must be an IPv4 CIDR/],
    ['not json', /not JSON/],
  ])('refuses %s with a clear message (option flannel)', (text, msg) => {
    let err: unknown;
    try {
      parseFlannelConfig(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).option).toBe('flannel');
    expect((err as Error).message).toMatch(msg);
  });
});

describe('flannel subnet leases', () => {
  it('writes the JSON flanneld writes, and reads it back', () => {
    const v = leaseValue('198.51.100.2', 1, 0x02aabbccddee);
    expect(JSON.parse(v)).toEqual({ PublicIP: '198.51.100.2', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:aa:bb:cc:dd:ee' } });
    expect(parseLease('/coreos.com/network/subnets/10.244.3.0-24', v)).toEqual({ subnet: ip('10.244.3.0'), subnetLen: 24, publicIp: '198.51.100.2', vtepMac: 0x02aabbccddee, vni: 1 });
  });

  it('ignores what is not a vxlan lease', () => {
    expect(parseLease('/coreos.com/network/subnets/10.244.3.0-24', '{"PublicIP":"198.51.100.2","BackendType":"host-gw"}')).toBeUndefined();
    expect(parseLease('/coreos.com/network/subnets/10.244.3.0-24', '{"PublicIP":"x","BackendType":"vxlan","BackendData":{"VtepMAC":"02:00:00:00:00:01"}}')).toBeUndefined();
    expect(parseLease('/coreos.com/network/subnets/10.244.3.0-24', 'garbage')).toBeUndefined();
    expect(parseLease('/coreos.com/network/config', '{}')).toBeUndefined();
  });

  it('reads FLANNEL_SUBNET from an existing subnet file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'uvt-fl-'));
    try {
      const f = path.join(dir, 'subnet.env');
      writeFileSync(f, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
      expect(readSubnetFile(f)).toEqual({ net: ip('10.244.9.0'), len: 24 });
      expect(readSubnetFile(path.join(dir, 'none'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
