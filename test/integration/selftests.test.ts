// Checks ported from the kernel's own VXLAN selftest (tools/testing/selftests/net/forwarding/
// vxlan_bridge_1d.sh: envelope TTL, TOS inheritance, ECN encapsulation, the ECN decapsulation
// table and its error), with the VTEP under test on h1. Every case runs first against a kernel
// VTEP in the same place (which proves the check) and then against uvtep: both must pass.
import { writeFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import type { Host } from '../../src/testbed.js';
import { udpRecords } from '../helpers/pcap.js';
import { describeNs, NsFixture, quietIpv6, twoHosts } from './setup.js';

const fx = new NsFixture();
const VTEP_MAC = '02:00:00:00:00:01';
const PEER_MAC = '02:00:00:00:00:02';

type Kind = 'kernel' | 'uvtep';

/** The VTEP under test on h1 (VNI 1, 10.0.0.1/24, remote h2), kernel or uvtep, with `opts` (ttl/tos). */
async function vtepUnderTest(kind: Kind, h1: Host, remote: string, opts: { ttl?: string; tos?: string } = {}): Promise<{ dev: string; errors: () => Promise<number> }> {
  if (kind === 'kernel') {
    await h1.ip('link', 'add', 'vxlan1', 'type', 'vxlan', 'id', '1', 'remote', remote, 'dstport', '4789', 'dev', 'eth0', ...(opts.ttl ? ['ttl', opts.ttl] : []), ...(opts.tos ? ['tos', opts.tos] : []));
    await h1.ip('link', 'set', 'vxlan1', 'address', VTEP_MAC);
    await h1.ip('addr', 'add', '10.0.0.1/24', 'dev', 'vxlan1');
    await h1.ip('link', 'set', 'vxlan1', 'up');
    // the kernel counts a decap error as rx_frame_errors
    return { dev: 'vxlan1', errors: async () => Number((await h1.run(['cat', '/sys/class/net/vxlan1/statistics/rx_frame_errors'])).trim()) };
  }
  const p = fx.uvtep(h1, ['--vni', '1', '--remote', remote, '--name', 'vxlan1', '--address', '10.0.0.1/24', '--mac', VTEP_MAC, ...(opts.ttl ? ['--ttl', opts.ttl] : []), ...(opts.tos ? ['--tos', opts.tos] : [])]);
  await p.ready();
  return {
    dev: 'vxlan1',
    errors: async () => {
      const r = await h1.exec([process.execPath, (await import('../../src/testbed.js')).uvtepBin(), 'stats', '--json']);
      return (JSON.parse(r.stdout) as { drops: Record<string, number> }).drops.EcnError!;
    },
  };
}

async function hosts(name: string) {
  const t = await twoHosts(fx.newBed(name));
  await quietIpv6(t.h1);
  await quietIpv6(t.h2);
  return t;
}

/** IPv4 header checksum. */
function csum(h: Buffer): number {
  let s = 0;
  for (let i = 0; i < h.length; i += 2) s += h.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** A VXLAN datagram (VNI 1) carrying an IPv4/UDP packet 10.0.0.2 -> 10.0.0.1 with TOS `tos`, id `id`. */
function vxlanFrame(tos: number, id: number): string {
  const ip = Buffer.alloc(20 + 8 + 4);
  ip[0] = 0x45;
  ip[1] = tos;
  ip.writeUInt16BE(ip.length, 2);
  ip.writeUInt16BE(id, 4);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0x0a000002, 12);
  ip.writeUInt32BE(0x0a000001, 16);
  ip.writeUInt16BE(csum(ip.subarray(0, 20)), 10);
  ip.writeUInt16BE(40000, 20);
  ip.writeUInt16BE(9, 22);
  ip.writeUInt16BE(12, 24);
  const eth = Buffer.from(VTEP_MAC.replace(/:/g, '') + PEER_MAC.replace(/:/g, '') + '0800', 'hex');
  const hdr = Buffer.from('0800000000000100', 'hex');
  return Buffer.concat([hdr, eth, ip]).toString('hex');
}

/** Sends `cases` ([outer TOS, datagram hex]) from h2 to h1:4789, each with its outer TOS (python3: IP_TOS per socket). */
async function sendWithTos(h2: Host, to: string, cases: Array<[number, string]>): Promise<void> {
  const file = fx.tmpFile(`tos-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(cases));
  const py = [
    'import json, socket, sys, time',
    'cases = json.load(open(sys.argv[1]))',
    'for tos, hexd in cases:',
    '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    '    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)',
    '    s.sendto(bytes.fromhex(hexd), (sys.argv[2], 4789))',
    '    s.close()',
    '    time.sleep(0.02)',
  ].join('\n');
  await h2.run(['python3', '-c', py, file, to]);
}

const NOT = 0;
const ECT1 = 1;
const ECT0 = 2;
const CE = 3;

describeNs('kernel selftest vxlan_bridge_1d.sh, ported: the VTEP under test is the kernel, then uvtep', () => {
  // RFC 6040 section 4.2 / the kernel's __INET_ECN_decapsulate: [inner, outer] -> inner after, or drop
  const table: Array<[number, number, number | 'drop']> = [
    [NOT, NOT, NOT], [NOT, ECT0, NOT], [NOT, ECT1, NOT], [NOT, CE, 'drop'],
    [ECT0, NOT, ECT0], [ECT0, ECT0, ECT0], [ECT0, ECT1, ECT1], [ECT0, CE, CE],
    [ECT1, NOT, ECT1], [ECT1, ECT0, ECT1], [ECT1, ECT1, ECT1], [ECT1, CE, CE],
    [CE, NOT, CE], [CE, ECT0, CE], [CE, ECT1, CE], [CE, CE, CE],
  ];

  it.each(['kernel', 'uvtep'] as const)('ECN decapsulation, the whole table and the decap error: %s', async (kind) => {
    const { h1, h2, u1, u2 } = await hosts(`ecnd${kind[0]}`);
    const v = await vtepUnderTest(kind, h1, u2);
    const cap = await fx.capture(h1, v.dev, 'udp and dst port 9', `decap-${kind}.pcap`);
    const e0 = await v.errors();
    // DSCP 0x20 in both headers: the DSCP of the inner packet is never touched
    await sendWithTos(h2, u1, table.map(([inner, outer], i) => [0x20 | outer, vxlanFrame(0x20 | inner, 1000 + i)]));
    await new Promise((r) => setTimeout(r, 300));
    await cap.stop();
    const got = new Map<number, number>();
    for (const r of udpRecords(cap.file)) got.set(r.frame.readUInt16BE(18), r.frame[15]!);
    table.forEach(([inner, outer, want], i) => {
      const tos = got.get(1000 + i);
      if (want === 'drop') expect(tos, `inner ${inner} outer ${outer}: dropped`).toBeUndefined();
      else expect(tos, `inner ${inner} outer ${outer}`).toBe(0x20 | want);
    });
    expect((await v.errors()) - e0).toBe(1);
  });

  it.each(['kernel', 'uvtep'] as const)('ECN encapsulation and TOS inheritance (tos inherit), envelope TTL (ttl inherit and ttl 100): %s', async (kind) => {
    for (const opts of [{ tos: 'inherit', ttl: 'inherit' }, { ttl: '100' }]) {
      const { h1, h2, u2 } = await hosts(`ecne${kind[0]}${opts.tos ? 'i' : 'f'}`);
      const v = await vtepUnderTest(kind, h1, u2, opts);
      await h1.ip('neigh', 'replace', '10.0.0.2', 'lladdr', PEER_MAC, 'nud', 'permanent', 'dev', v.dev);
      const cap = await fx.capture(h2, 'eth0', 'udp dst port 4789', `encap-${kind}-${opts.tos ?? 'fixed'}.pcap`);
      // inner TOS: DSCP 0x20 with each ECN codepoint; inner TTL 17
      for (const ecn of [NOT, ECT1, ECT0, CE]) await h1.exec(['ping', '-c', '1', '-W', '0.2', '-Q', String(0x20 | ecn), '-t', '17', '10.0.0.2']);
      await new Promise((r) => setTimeout(r, 200));
      await cap.stop();
      const outer = udpRecords(cap.file).map((r) => ({ tos: r.frame[15]!, ttl: r.frame[22]!, innerTos: r.payload[8 + 14 + 1]! }));
      expect(outer.length, 'datagrams captured').toBeGreaterThanOrEqual(4);
      for (const o of outer) {
        const ecnOut = o.innerTos & 3 ? ((o.innerTos & 3) === CE ? ECT0 : o.innerTos & 3) : NOT;
        // RFC 6040 encapsulation: CE inside is ECT(0) outside; the DSCP with tos inherit, else 0
        expect(o.tos, `inner TOS ${o.innerTos}`).toBe((opts.tos === 'inherit' ? o.innerTos & 0xfc : 0) | ecnOut);
        expect(o.ttl).toBe(opts.ttl === 'inherit' ? 17 : 100);
      }
      await fx.stopAll();
      await fx.bed?.cleanup();
    }
  });
});
