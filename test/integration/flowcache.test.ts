// The native flow cache between two uvtep hosts: lone pings cross without JS once the VTEPs have
// forwarded the first ones themselves; the counters still count them; an FDB change is obeyed at
// once (no stale native decision); entries the cache keeps using do not age out; and
// --no-flow-cache or a source filter keeps every packet on the TypeScript path.
import { expect, it } from 'vitest';
import { ping, uvtepBin, type Host } from '../../src/lab/testbed.js';
import { describeNs, NsFixture, quietIpv6, twoHosts } from './setup.js';

const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const fx = new NsFixture();

interface Stats {
  rxDatagrams: number;
  rxPackets: number;
  txPackets: number;
  txFrames: number;
  drops: Record<string, number>;
  io: { flowCache: boolean; flowCacheTx: number; flowCacheRx: number };
}

const stats = async (h: Host): Promise<Stats> => JSON.parse((await h.exec([process.execPath, uvtepBin(), 'stats', '--json'])).stdout) as Stats;
const cli = (h: Host, ...args: string[]) => h.exec([process.execPath, uvtepBin(), ...args]);

async function pair(name: string, extraA: string[] = [], extraB: string[] = [], v6 = false) {
  const hosts = await twoHosts(fx.newBed(name), v6);
  if (!v6) {
    await quietIpv6(hosts.h1);
    await quietIpv6(hosts.h2);
  }
  const common = ['--vni', '1', '--name', 'vxlan1', '--log-level', 'debug'];
  const a = fx.uvtep(hosts.h1, [...common, '--remote', hosts.u2, '--address', '10.0.0.106/24', '--mac', A_MAC, ...extraA]);
  const b = fx.uvtep(hosts.h2, [...common, '--remote', hosts.u1, '--address', '10.0.0.107/24', '--mac', B_MAC, ...extraB]);
  await a.ready();
  await b.ready();
  // no IPv6 chatter on the overlay (an IPv6 underlay keeps IPv6 on in the namespace)
  for (const h of [hosts.h1, hosts.h2]) await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.vxlan1.disable_ipv6=1']);
  // no ARP on the overlay after the first exchange: every frame is a known unicast
  await hosts.h1.ip('neigh', 'replace', '10.0.0.107', 'lladdr', B_MAC, 'nud', 'permanent', 'dev', 'vxlan1');
  await hosts.h2.ip('neigh', 'replace', '10.0.0.106', 'lladdr', A_MAC, 'nud', 'permanent', 'dev', 'vxlan1');
  return { ...hosts, a, b };
}

describeNs('native flow cache', () => {
  it.each([
    ['IPv4', false],
    ['IPv6', true],
  ])('lone pings cross without JS over an %s underlay, and every counter still counts them', async (_f, v6) => {
    const { h1, h2 } = await pair(`fc${v6 ? '6' : '4'}`, [], [], v6);
    // the first pings teach both VTEPs (the TypeScript path installs the decisions)
    expect((await ping(h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
    const s1 = await stats(h1);
    const s2 = await stats(h2);
    expect(s1.io.flowCache).toBe(true);
    const p = await ping(h1, '10.0.0.107', 40, 0.02);
    expect(p.received).toBe(40);
    const t1 = await stats(h1);
    const t2 = await stats(h2);
    // each request and reply crossed both VTEPs natively (a few may take the slow path)
    expect(t1.io.flowCacheTx - s1.io.flowCacheTx).toBeGreaterThanOrEqual(36);
    expect(t2.io.flowCacheRx - s2.io.flowCacheRx).toBeGreaterThanOrEqual(36);
    expect(t2.io.flowCacheTx - s2.io.flowCacheTx).toBeGreaterThanOrEqual(36);
    expect(t1.io.flowCacheRx - s1.io.flowCacheRx).toBeGreaterThanOrEqual(36);
    // ... and are in the ordinary counters, exactly once
    expect(t1.txPackets - s1.txPackets).toBe(40);
    expect(t1.txFrames - s1.txFrames).toBe(40);
    expect(t2.rxPackets - s2.rxPackets).toBe(40);
    expect(t2.rxDatagrams - s2.rxDatagrams).toBe(40);
    expect(t1.rxPackets - s1.rxPackets).toBe(40);
    expect(Object.values(t1.drops).reduce((a, b) => a + b, 0)).toBe(0);
  });

  it('an FDB change is obeyed at once: no native decision outlives it', async () => {
    const { h1, h2, u2 } = await pair('fcfdb');
    await h2.ip('addr', 'add', '198.51.100.3/24', 'dev', 'eth0'); // an address of h2 with no VTEP behind it
    expect((await ping(h1, '10.0.0.107', 20, 0.02)).received).toBe(20);
    const before = await stats(h1);
    expect(before.io.flowCacheTx).toBeGreaterThan(10);
    // h2's MAC now points where nobody listens on 4789: every ping must go there and be lost
    expect((await cli(h1, 'fdb', 'replace', B_MAC, 'dst', '198.51.100.3')).code).toBe(0);
    expect((await ping(h1, '10.0.0.107', 10, 0.05, 1)).received).toBe(0);
    // and back: replies again, natively again after the first ones
    expect((await cli(h1, 'fdb', 'replace', B_MAC, 'dst', u2)).code).toBe(0);
    expect((await ping(h1, '10.0.0.107', 20, 0.02)).received).toBe(20);
    const after = await stats(h1);
    expect(after.io.flowCacheTx - before.io.flowCacheTx).toBeGreaterThan(10);
    // deleting the entry: unknown unicast, flooded to the remote (h2) again, which answers
    expect((await cli(h1, 'fdb', 'del', B_MAC)).code).toBe(0);
    const beforeFlood = await stats(h1);
    expect((await ping(h1, '10.0.0.107', 1)).received).toBe(1);
    expect((await cli(h1, 'fdb', 'show')).stdout).toContain(`${B_MAC} dev vxlan1 dst ${u2}`);
    expect((await stats(h1)).txPackets - beforeFlood.txPackets).toBeGreaterThanOrEqual(1);
  });

  it('a station the cache keeps forwarding from does not age out of the FDB', async () => {
    const { h1, a } = await pair('fcage', ['--ageing', '2']);
    expect((await ping(h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
    const s0 = await stats(h1);
    // twelve seconds of pings, nearly all of them natively: six ageing times and the FDB's
    // 10-second sweep (the kernel's interval) at least once
    expect((await ping(h1, '10.0.0.107', 120, 0.1)).received).toBe(120);
    const s1 = await stats(h1);
    expect(s1.io.flowCacheRx - s0.io.flowCacheRx).toBeGreaterThan(110);
    expect(a.records.filter((r) => r.msg === 'aged out' && r.mac === B_MAC)).toEqual([]);
    // fdb show reads the ages the cache refreshed
    const rows = JSON.parse((await cli(h1, 'fdb', 'show', '--json')).stdout) as Array<{ mac: string; ageS: number }>;
    expect(rows.find((r) => r.mac === B_MAC)!.ageS).toBeLessThanOrEqual(1);
    // once the station is silent, it ages out as before
    await a.waitFor((r) => r.msg === 'aged out' && r.mac === B_MAC, 'B aged out', 15_000);
  }, 60_000);

  it('--no-flow-cache, and a source filter, keep every packet on the TypeScript path', async () => {
    const { h1, h2 } = await pair('fcoff', ['--no-flow-cache'], ['--allow-from', '198.51.100.0/24']);
    expect((await ping(h1, '10.0.0.107', 20, 0.02)).received).toBe(20);
    const s1 = await stats(h1);
    const s2 = await stats(h2);
    expect(s1.io.flowCache).toBe(false);
    expect(s1.io.flowCacheTx + s1.io.flowCacheRx).toBe(0);
    // h2 has a cache but a filter applies: nothing natively
    expect(s2.io.flowCache).toBe(true);
    expect(s2.io.flowCacheTx + s2.io.flowCacheRx).toBe(0);
    expect(s2.rxPackets).toBeGreaterThanOrEqual(20);
  });
});
