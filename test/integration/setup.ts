// Shared setup of the namespace tests. They need root, /dev/net/tun and iproute2: outside CI a
// missing capability skips them with a printed reason; with CI=true it fails them.
import { describe } from 'vitest';
import { Testbed, testbedMissing, type Host } from '../../src/testbed.js';

export const missing = await testbedMissing();

/** `describe` when the machine can build test hosts; otherwise fail (CI) or skip with the reason. */
export function describeNs(name: string, fn: () => void): void {
  if (missing.length === 0) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      throw new Error(`namespace tests need ${missing.join(', ')} (CI=true: a missing capability is a failure)`);
    });
    return;
  }
  console.warn(`skipping "${name}": needs ${missing.join(', ')}`);
  describe.skip(name, fn);
}

export interface TwoHosts {
  h1: Host;
  h2: Host;
  /** Underlay addresses of h1 and h2. */
  u1: string;
  u2: string;
}

/** Two hosts on a veth underlay: 198.51.100.1/.2, or 2001:db8::1/::2 with `v6`. */
export async function twoHosts(bed: Testbed, v6 = false): Promise<TwoHosts> {
  await bed.removeLeftovers();
  const h1 = await bed.host('h1');
  const h2 = await bed.host('h2');
  const [u1, u2] = v6 ? ['2001:db8::1', '2001:db8::2'] : ['198.51.100.1', '198.51.100.2'];
  const p = v6 ? 64 : 24;
  await bed.veth(h1, 'eth0', [`${u1}/${p}`], h2, 'eth0', [`${u2}/${p}`]);
  return { h1, h2, u1, u2 };
}

/**
 * A kernel VTEP in h: `ip link add vxlan1 type vxlan id <vni> remote <remote> dstport <port> dev eth0`.
 * Turns tx checksum offload off on h's underlay veth: over veth the kernel leaves the inner
 * TCP/UDP checksums partial (a NIC would finish them), which a userspace peer then sees as bad.
 */
export async function kernelVtep(h: Host, o: { vni: number; remote: string; port: number; address: string; mac: string; name?: string }): Promise<string> {
  const name = o.name ?? 'vxlan1';
  await h.ip('link', 'add', name, 'type', 'vxlan', 'id', String(o.vni), 'remote', o.remote, 'dstport', String(o.port), 'dev', 'eth0');
  await h.ip('link', 'set', name, 'address', o.mac);
  await h.ip('addr', 'add', o.address, 'dev', name);
  await h.ip('link', 'set', name, 'up');
  await h.run(['ethtool', '-K', 'eth0', 'tx', 'off']);
  return name;
}

/** Disables IPv6 in a namespace so the overlay carries no router/MLD chatter (deterministic counts). */
export async function quietIpv6(h: Host): Promise<void> {
  await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
  await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1']);
}
