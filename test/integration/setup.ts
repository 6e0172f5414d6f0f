// Shared setup of the namespace tests. They need root, /dev/net/tun and iproute2 (describeNs:
// see test/helpers/capability.ts for what happens without them).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { describeWhen } from '../helpers/capability.js';
import { EtcdServer, etcdMissing } from '../../src/lab/etcd.js';
import { Testbed, testbedMissing, UvtepProcess, type Host } from '../../src/lab/testbed.js';

export const missing = await testbedMissing();

/** `describe` when the machine can build test hosts; otherwise fail (CI) or skip with the reason. */
export const describeNs = describeWhen(missing, 'namespace tests');

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
 * With `tx: 'off'`, tx checksum offload is turned off on h's underlay veth (the kernel then
 * finishes inner checksums and segments in software); by default it stays on, as the kernel
 * leaves it, and the kernel hands uvtep partial inner checksums and whole TCP super-frames.
 */
export async function kernelVtep(h: Host, o: { vni: number; remote: string; port: number; address: string; mac: string; name?: string; tx?: 'on' | 'off' }): Promise<string> {
  const name = o.name ?? 'vxlan1';
  await h.ip('link', 'add', name, 'type', 'vxlan', 'id', String(o.vni), 'remote', o.remote, 'dstport', String(o.port), 'dev', 'eth0');
  await h.ip('link', 'set', name, 'address', o.mac);
  await h.ip('addr', 'add', o.address, 'dev', name);
  await h.ip('link', 'set', name, 'up');
  if (o.tx === 'off') await h.run(['ethtool', '-K', 'eth0', 'tx', 'off']);
  return name;
}

/** Disables IPv6 in a namespace so the overlay carries no router/MLD chatter (deterministic counts). */
export async function quietIpv6(h: Host): Promise<void> {
  await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
  await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1']);
}

/**
 * Per-test resources of a namespace test file: the testbed, uvtep processes and temp files, all
 * released after each test (processes stopped, namespaces deleted, files removed).
 */
export class NsFixture {
  bed: Testbed | undefined;
  procs: UvtepProcess[] = [];
  /** An etcd of this test (`etcdLab`), stopped and its data removed with the rest. */
  etcd: EtcdServer | undefined;
  private tmp: string | undefined;

  constructor() {
    afterEach(() => this.release());
  }

  /** A fresh testbed named `uvt-<scope>-*`. */
  newBed(scope: string): Testbed {
    this.bed = new Testbed(scope);
    return this.bed;
  }

  uvtep(h: Host, args: string[]): UvtepProcess {
    const p = new UvtepProcess(h, args);
    this.procs.push(p);
    return p;
  }

  tmpFile(name: string): string {
    this.tmp ??= mkdtempSync(path.join(tmpdir(), 'uvt-test-'));
    return path.join(this.tmp, name);
  }

  /**
   * tcpdump in `h` on `iface` into a file (immediate mode, a large buffer: a loaded 2-core machine
   * otherwise drops captured packets). `stop()` waits for the file to be complete.
   */
  async capture(h: Host, iface: string, filter: string, name = `${h.name}-${iface}.pcap`): Promise<{ file: string; stop: () => Promise<void> }> {
    const file = this.tmpFile(name);
    const args = ['tcpdump', '-n', '-U', '--immediate-mode', '-B', '8192', '-s', '0', '-i', iface, '-w', file];
    const child = h.spawn(filter ? [...args, filter] : args);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const deadline = Date.now() + 5000;
    while (!/listening on/.test(err)) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`tcpdump on ${iface} did not start: ${err}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return {
      file,
      stop: () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGINT');
        }),
    };
  }

  async stopAll(): Promise<void> {
    for (const p of this.procs.splice(0)) await p.stop();
  }

  async release(): Promise<void> {
    await this.stopAll();
    await this.etcd?.stop();
    this.etcd = undefined;
    await this.bed?.cleanup();
    this.bed = undefined;
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
    this.tmp = undefined;
  }
}

/** Where `etcdLab` puts etcd. */
export const ETCD_AT = '198.51.100.10';

/**
 * A switch (host `sw`, bridge br0) with an etcd host at 198.51.100.10 (the fixture's etcd) and
 * the hosts `shorts[i]` at 198.51.100.(i+1), IPv6 quiet.
 */
export async function etcdLab(fx: NsFixture, bed: Testbed, shorts: readonly string[]): Promise<{ sw: Host; hosts: Host[]; etcd: EtcdServer }> {
  await bed.removeLeftovers();
  const missing = await etcdMissing();
  if (missing.length > 0) throw new Error(`needs ${missing.join(', ')}`);
  const sw = await bed.host('sw');
  await bed.bridge(sw, 'br0');
  const attach = async (short: string, addr: string, port: string): Promise<Host> => {
    const h = await bed.host(short);
    await bed.veth(h, 'eth0', [`${addr}/24`], sw, port, []);
    await sw.ip('link', 'set', port, 'master', 'br0');
    await quietIpv6(h);
    return h;
  };
  const e = await attach('etcd', ETCD_AT, 'pe');
  const hosts: Host[] = [];
  for (const [i, short] of shorts.entries()) hosts.push(await attach(short, `198.51.100.${i + 1}`, `p${short}`));
  fx.etcd = await EtcdServer.start({ host: e, address: ETCD_AT });
  return { sw, hosts, etcd: fx.etcd };
}
