// The fast path end to end (issue: fast path): TAP offloads, the native UDP endpoint and the
// dgram fallback carry hundreds of MB byte-identical (SHA-256), against uvtep and against the
// kernel VTEP, IPv4 and IPv6 underlay, with the kernel peer's offloads on (its defaults: partial
// inner checksums and tunnel-GSO super-frames over veth) and off; partial checksums from the TAP
// never reach the wire; counters show the batching happened.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { ping, tcpTransfer, uvtepBin, type Host, type LogRecord } from '../../src/lab/testbed.js';
import { udpExchange, udpSnmp } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, kernelVtep, NsFixture, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const fx = new NsFixture();

interface Io {
  transport: string;
  ioUring: boolean;
  superFrames: number;
  flowCacheTx: number;
  csumCompleted: number;
  groMsgs: number;
  sendCalls: number;
  sentDatagrams: number;
  recvCalls: number;
  recvMsgs: number;
}
type Stats = { rxPackets: number; rxDatagrams: number; txPackets: number; rxGroWrites: number; rxGroSegments: number; txGsoSends: number; dropsTotal: number; drops: Record<string, number>; io: Io };
const statsOf = (r: LogRecord | undefined) => r!.stats as Stats;

const A = (u: string, extra: string[] = []) => ['--vni', '1', '--remote', u, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC, ...extra];
const B = (u: string, extra: string[] = []) => ['--vni', '1', '--remote', u, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC, ...extra];

async function uvtepPair(bed: string, v6: boolean, extraA: string[] = [], extraB: string[] = []) {
  const hosts = await twoHosts(fx.newBed(bed), v6);
  const a = fx.uvtep(hosts.h1, A(hosts.u2, extraA));
  const b = fx.uvtep(hosts.h2, B(hosts.u1, extraB));
  await a.ready();
  await b.ready();
  return { ...hosts, a, b };
}

/**
 * uvtep (h1) and a kernel VTEP (h2). Kernel offloads 'on' are its defaults: tx checksum offload
 * on its veth, so it hands uvtep partial inner checksums and whole TCP super-frames (tunnel GSO);
 * 'off': tx checksum, TSO, GSO and GRO off on its VXLAN device and veth (everything in software).
 */
async function kernelPair(bed: string, v6: boolean, kernelOffloads: 'on' | 'off', extraA: string[] = []) {
  const hosts = await twoHosts(fx.newBed(bed), v6);
  await kernelVtep(hosts.h2, { vni: 1, remote: hosts.u1, port: 4789, address: '10.0.0.107/24', mac: B_MAC, tx: kernelOffloads });
  for (const dev of ['vxlan1', 'eth0']) await hosts.h2.run(['ethtool', '-K', dev, 'tso', kernelOffloads, 'gso', kernelOffloads, 'gro', kernelOffloads]);
  const a = fx.uvtep(hosts.h1, A(hosts.u2, extraA));
  await a.ready();
  return { ...hosts, a };
}

/** `bytes` each way over the overlay, verified by SHA-256. */
async function bothWays(h1: Host, h2: Host, bytes: number) {
  const there = await tcpTransfer(h2, h1, '10.0.0.107', 5201, bytes, 180_000);
  expect(there.ok, 'h1 -> h2 bytes identical').toBe(true);
  const back = await tcpTransfer(h1, h2, '10.0.0.106', 5202, bytes, 180_000);
  expect(back.ok, 'h2 -> h1 bytes identical').toBe(true);
}

describeNs('fast path: integrity (SHA-256) with the native endpoint and TAP offloads', () => {
  it.each([
    ['IPv4', false],
    ['IPv6', true],
  ])('uvtep <-> uvtep, %s underlay, --tunnel-gso off: 128 MB each way; super-frames split, GSO out, GRO in, coalesced writes', async (_n, v6) => {
    const off = ['--tunnel-gso', 'off'];
    const { h1, h2, a, b } = await uvtepPair(v6 ? 'fp6' : 'fp4', v6 as boolean, off, off);
    await bothWays(h1, h2, 128 * MB);
    const sa = statsOf((await a.stop()).final);
    const sb = statsOf((await b.stop()).final);
    for (const s of [sa, sb]) {
      expect(s.io.transport).toBe('native');
      expect(s.io.superFrames, 'TAP super-frames split').toBeGreaterThan(100);
      expect(s.txGsoSends, 'GSO messages').toBeGreaterThan(100);
      expect(s.io.groMsgs, 'UDP GRO messages').toBeGreaterThan(100);
      expect(s.rxGroSegments / s.rxGroWrites, 'segments per coalesced TAP write').toBeGreaterThan(4);
      expect(s.io.sentDatagrams / s.io.sendCalls, 'datagrams per send syscall').toBeGreaterThan(4);
      // the stream's super-frames (and its ACKs) left through the flow cache, without JS
      expect(s.io.flowCacheTx / s.txPackets, 'frames sent natively').toBeGreaterThan(0.8);
      expect(s.dropsTotal).toBe(0);
    }
  }, 400_000);

  it('uvtep <-> uvtep, --no-flow-cache: 64 MB each way with every super-frame through TypeScript', async () => {
    const { h1, h2, a, b } = await uvtepPair('fpnofc', false, ['--no-flow-cache'], ['--no-flow-cache']);
    await bothWays(h1, h2, 64 * MB);
    for (const s of [statsOf((await a.stop()).final), statsOf((await b.stop()).final)]) {
      expect(s.io.superFrames, 'TAP super-frames split').toBeGreaterThan(100);
      expect(s.io.flowCacheTx).toBe(0);
      expect(s.txGsoSends, 'GSO messages').toBeGreaterThan(100);
      expect(s.dropsTotal).toBe(0);
    }
  }, 400_000);

  it.each([
    ['IPv4, kernel offloads on', false, 'on'],
    ['IPv4, kernel offloads off', false, 'off'],
    ['IPv6, kernel offloads on', true, 'on'],
  ])('uvtep <-> kernel VTEP, %s: 128 MB each way', async (_n, v6, offl) => {
    const { h1, h2, a } = await kernelPair(`fpk${v6 ? 6 : 4}${offl}`, v6 as boolean, offl as 'on' | 'off');
    await bothWays(h1, h2, 128 * MB);
    const s = statsOf((await a.stop()).final) as Stats & { io: Io & { partialCsum: number; rxSuperFrames: number; badCsum: number } };
    expect(s.io.superFrames).toBeGreaterThan(100);
    expect(s.io.flowCacheTx / s.txPackets, 'frames sent natively').toBeGreaterThan(0.8);
    expect(s.dropsTotal).toBe(0);
    expect(s.io.badCsum).toBe(0);
    if (offl === 'on') {
      // the kernel's partial checksums and tunnel-GSO super-frames were taken, not dropped
      expect(s.io.partialCsum).toBeGreaterThan(100);
      expect(s.io.rxSuperFrames).toBeGreaterThan(100);
    } else {
      expect(s.io.partialCsum).toBe(0);
    }
  }, 400_000);
});

type TunnelStats = Stats & { io: Io & { tunnelGso: boolean; txTunnelSuperFrames: number; tunnelGsoHeld: string[]; rxSuperFrames: number; partialCsum: number; badCsum: number; datapath: string } };
/** An nftables chain on h's OUTPUT hook that counts the datagrams to port 4789 (`nft list chain inet uvt_t out`). */
async function countOnOutput(h: Host): Promise<void> {
  await h.run(['nft', 'add', 'table', 'inet', 'uvt_t']);
  await h.run(['nft', 'add', 'chain', 'inet', 'uvt_t', 'out', '{ type filter hook output priority 0; }']);
  await h.run(['nft', 'add', 'rule', 'inet', 'uvt_t', 'out', 'udp', 'dport', '4789', 'counter']);
}
const nftBytes = async (h: Host) => Number(/bytes (\d+)/.exec(await h.run(['nft', 'list', 'chain', 'inet', 'uvt_t', 'out']))?.[1]);
const liveStats = async (h: Host): Promise<TunnelStats> => JSON.parse((await h.exec([process.execPath, uvtepBin(), 'stats', '--json'])).stdout) as TunnelStats;

describeNs('fast path: tunnel GSO by default (--tunnel-gso auto)', () => {
  it('sent only while nothing on the way out would be skipped: an nftables or iptables rule on OUTPUT, an IPsec policy; the rules see every packet meanwhile, 16 MB per step byte-identical', async () => {
    const { h1, h2, a } = await kernelPair('tgauto', false, 'on');
    const up = (await a.ready()) as LogRecord & { datapathPid: number };
    const step = async (port: number, label: string) => {
      const before = await liveStats(h1);
      const r = await tcpTransfer(h2, h1, '10.0.0.107', port, 16 * MB, 120_000); // h1 -> h2
      expect(r.ok, `${label}: bytes identical`).toBe(true);
      const after = await liveStats(h1);
      return { whole: after.io.txTunnelSuperFrames - before.io.txTunnelSuperFrames, gso: after.txGsoSends - before.txGsoSends, after };
    };
    // the rules change under the VTEP: it looks at them every second, its entries every second
    const settle = () => new Promise((r) => setTimeout(r, 2500));

    // nothing on the way out in a new namespace: super-frames leave whole, with no option given
    const clean = await step(5221, 'clean');
    expect(clean.whole, 'whole super-frames, by default').toBeGreaterThan(100);
    expect(clean.after.io.tunnelGso).toBe(true);
    expect(clean.after.io.tunnelGsoHeld).toEqual([]);
    expect((await h1.exec(['ip', 'link', 'show', `uvt-gso${up.datapathPid}`])).code).toBe(0);

    // an nftables chain on OUTPUT that counts the VTEP's datagrams: held back, and the rule sees them
    await countOnOutput(h1);
    await settle();
    const nft = await step(5222, 'nftables');
    expect(nft.whole, 'no whole super-frames under an OUTPUT hook').toBe(0);
    expect(nft.gso, 'UDP GSO messages through the socket').toBeGreaterThan(100);
    expect(nft.after.io.tunnelGso).toBe(false);
    expect(nft.after.io.tunnelGsoHeld).toEqual(['netfilter']);
    // (a UDP GSO message is one packet there: its bytes are what adds up)
    expect(await nftBytes(h1), 'bytes the OUTPUT rule counted').toBeGreaterThan(16 * MB);
    await h1.run(['nft', 'delete', 'table', 'inet', 'uvt_t']);
    await settle();
    expect((await step(5223, 'nftables gone')).whole, 'whole again once the chain is gone').toBeGreaterThan(100);

    // an iptables-legacy table (its filter table hooks OUTPUT)
    await h1.run(['iptables-legacy', '-A', 'OUTPUT', '-p', 'udp', '--dport', '4789', '-j', 'ACCEPT']);
    await settle();
    const legacy = await step(5224, 'iptables-legacy');
    expect(legacy.whole).toBe(0);
    expect(legacy.after.io.tunnelGsoHeld).toEqual(['netfilter']);
    const row = (await h1.run(['iptables-legacy', '-v', '-x', '-n', '-L', 'OUTPUT'])).split('\n')[2]!.trim().split(/\s+/);
    expect(Number(row[1]), 'bytes the iptables rule counted').toBeGreaterThan(16 * MB);

    // an outbound IPsec policy (for ICMP only: it changes nothing for the datagrams, and still holds back)
    await h1.run(['iptables-legacy', '-F', 'OUTPUT']);
    const xfrm = ['ip', 'xfrm', 'policy', 'add', 'dir', 'out', 'src', '0.0.0.0/0', 'dst', '0.0.0.0/0', 'proto', 'icmp', 'action', 'allow'];
    await h1.run(xfrm);
    await settle();
    const ipsec = await step(5225, 'xfrm');
    expect(ipsec.whole).toBe(0);
    // the legacy filter table stays registered (empty) once made: both hold back
    expect(ipsec.after.io.tunnelGsoHeld).toEqual(['netfilter', 'xfrm']);
    const s = statsOf((await a.stop()).final) as TunnelStats;
    expect(s.dropsTotal).toBe(0);
    expect(s.io.badCsum).toBe(0);
  }, 400_000);

  it('a cgroup BPF program on egress for the process (as systemd\'s IPAddressDeny= makes) holds it back while it is there', async () => {
    // the hierarchy as this process sees it (ip netns exec shows none inside: uvtep mounts its own)
    const mount = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[4] !== undefined && f[3] === '/' && f.includes('cgroup2'))?.[4];
    expect(mount, 'a cgroup v2 mount').toBeDefined();
    const dir = path.join(mount!, `uvt-tgcg-${process.pid}`);
    const helper = path.join(import.meta.dirname, '../helpers/cgroup-bpf.py');
    const { h1, h2, a } = await kernelPair('tgcg', false, 'on');
    const up = (await a.ready()) as LogRecord & { datapathPid: number };
    try {
      expect((await tcpTransfer(h2, h1, '10.0.0.107', 5227, 8 * MB, 120_000)).ok).toBe(true);
      const before = await liveStats(h1);
      expect(before.io.txTunnelSuperFrames).toBeGreaterThan(50);
      execFileSync('python3', [helper, 'add', dir, String(a.child.pid), String(up.datapathPid)]);
      await new Promise((r) => setTimeout(r, 2500));
      expect((await tcpTransfer(h2, h1, '10.0.0.107', 5228, 16 * MB, 120_000)).ok).toBe(true);
      const held = await liveStats(h1);
      expect(held.io.txTunnelSuperFrames - before.io.txTunnelSuperFrames).toBe(0);
      expect(held.io.tunnelGsoHeld).toEqual(['cgroup-bpf']);
    } finally {
      await a.stop();
      execFileSync('python3', [helper, 'del', dir]);
    }
  }, 400_000);

  it('--tunnel-gso on sends past an OUTPUT hook (the rule sees none of the super-frames); --tunnel-gso off never sends whole', async () => {
    const on = await kernelPair('tgon', false, 'on', ['--tunnel-gso', 'on']);
    await countOnOutput(on.h1);
    expect((await tcpTransfer(on.h2, on.h1, '10.0.0.107', 5226, 16 * MB, 120_000)).ok).toBe(true);
    const counted = await nftBytes(on.h1);
    const son = statsOf((await on.a.stop()).final) as TunnelStats;
    expect(son.io.txTunnelSuperFrames).toBeGreaterThan(100);
    expect(son.io.tunnelGsoHeld).toEqual([]);
    // only what left through the socket (ARP, the handshake, a few first frames): a small part of the 16 MB
    expect(counted).toBeLessThan((16 * MB) / 8);
    await fx.release(); // the first pair's hosts go before the second's

    const off = await kernelPair('tgoff', false, 'on', ['--tunnel-gso', 'off']);
    await bothWays(off.h1, off.h2, 16 * MB);
    const soff = statsOf((await off.a.stop()).final) as TunnelStats;
    expect(soff.io.txTunnelSuperFrames).toBe(0);
    expect(soff.io.tunnelGso).toBe(false);
    expect(soff.txGsoSends).toBeGreaterThan(100);
  }, 400_000);
});

describeNs('fast path: tunnel GSO (--tunnel-gso on)', () => {
  it.each([
    ['IPv4, kernel offloads on', false, 'on', false],
    ['IPv4, kernel offloads off', false, 'off', false],
    ["IPv4, h1's underlay without tunnel segmentation or checksum offload (the kernel segments and checksums in software, as for a NIC without them)", false, 'on', true],
    ['IPv6, kernel offloads on', true, 'on', false],
    ["IPv6, h1's underlay without tunnel segmentation or checksum offload (every segment's outer UDP checksum computed from uvtep's seed)", true, 'on', true],
  ])('uvtep --tunnel-gso -> kernel VTEP, %s: super-frames leave whole through the injector, 128 MB each way byte-identical', async (_n, v6, offl, softGso) => {
    const { h1, h2, a } = await kernelPair(`tgk${v6 ? 6 : 4}${offl}${softGso ? 's' : ''}`, v6 as boolean, offl as 'on' | 'off', ['--tunnel-gso', 'on']);
    // no tunnel segmentation and no checksum offload on h1's veth: the kernel cuts the super-frames
    // and computes every checksum in software, from the pseudo-header sums uvtep left, and h2 verifies them
    if (softGso) await h1.run(['ethtool', '-K', 'eth0', 'tx', 'off', 'tx-udp_tnl-segmentation', 'off', 'tx-udp_tnl-csum-segmentation', 'off']);
    const up = (await a.ready()) as LogRecord & { datapathPid: number };
    const injector = `uvt-gso${up.datapathPid}`;
    // the datapath process's TAP of its own, up, in uvtep's namespace
    expect((await h1.exec(['ip', 'link', 'show', injector])).stdout).toMatch(/state (UNKNOWN|UP)/);
    const count = async (h: Host, stat: string) => Number((await h.exec(['cat', `/sys/class/net/${stat}`])).stdout);
    const before = [await count(h2, 'vxlan1/statistics/rx_packets'), await count(h1, 'eth0/statistics/tx_packets')];
    await bothWays(h1, h2, 128 * MB);
    const rxPackets = (await count(h2, 'vxlan1/statistics/rx_packets')) - before[0]!;
    const txPackets = (await count(h1, 'eth0/statistics/tx_packets')) - before[1]!;
    const s = statsOf((await a.stop()).final) as TunnelStats;
    expect(s.io.tunnelGso).toBe(true);
    expect(s.io.datapath).toBe('process');
    // 128 MB went out as whole super-frames of several segments each...
    expect(s.io.txTunnelSuperFrames, 'super-frames sent as tunnel GSO').toBeGreaterThan(500);
    expect(s.io.flowCacheTx / s.txPackets, 'frames sent natively').toBeGreaterThan(0.8);
    // ...and the kernel VTEP took most of them whole: far fewer packets than 1398-byte segments
    if (offl === 'on' && !softGso) expect(rxPackets, "h2's VXLAN device packets for 2 x 128 MB").toBeLessThan((128 * MB) / 1398 / 2);
    // segmented on h1 before its veth: at least one packet per MSS of the 128 MB h1 sent (h2's GRO
    // may merge them again), and h2 took them: the transfer is byte-identical
    if (softGso) expect(txPackets, "h1's veth packets").toBeGreaterThan((128 * MB) / 1448);
    else expect(txPackets, "h1's veth packets").toBeLessThan((128 * MB) / 1398 / 2);
    expect(s.dropsTotal).toBe(0);
    expect(s.io.badCsum).toBe(0);
    // the injector goes with the process (which exits once uvtep closed its control socket)
    await waitFor(async () => (await h1.exec(['ip', 'link', 'show', injector])).code !== 0, `${injector} to go with the datapath process`);
  }, 400_000);

  it('uvtep <-> uvtep, both --tunnel-gso: each takes the other\'s whole super-frames natively, 64 MB each way byte-identical', async () => {
    const { h1, h2, a, b } = await uvtepPair('tguu', false, ['--tunnel-gso', 'on'], ['--tunnel-gso', 'on']);
    await bothWays(h1, h2, 64 * MB);
    for (const s of [statsOf((await a.stop()).final), statsOf((await b.stop()).final)] as TunnelStats[]) {
      expect(s.io.tunnelGso).toBe(true);
      expect(s.io.txTunnelSuperFrames).toBeGreaterThan(200);
      expect(s.io.rxSuperFrames, 'super-frames received whole').toBeGreaterThan(200);
      expect(s.rxPackets).toBe(s.rxDatagrams);
      expect(s.dropsTotal).toBe(0);
    }
  }, 400_000);

  it('the injector removed under a stream: super-frames leave through the socket again, nothing lost', async () => {
    const { h1, h2, a } = await kernelPair('tgdel', false, 'on', ['--tunnel-gso', 'on']);
    const up = (await a.ready()) as LogRecord & { datapathPid: number };
    const first = await tcpTransfer(h2, h1, '10.0.0.107', 5203, 32 * MB, 180_000); // h1 -> h2: through the injector
    expect(first.ok).toBe(true);
    await h1.run(['ip', 'link', 'del', `uvt-gso${up.datapathPid}`]);
    await bothWays(h1, h2, 64 * MB);
    const s = statsOf((await a.stop()).final) as TunnelStats;
    // it sent whole before; the failed write turned the entries back to the socket
    expect(s.io.txTunnelSuperFrames).toBeGreaterThan(100);
    expect(s.io.tunnelGso).toBe(false);
    expect(s.txGsoSends, 'UDP GSO messages after the injector went').toBeGreaterThan(100);
    expect(s.dropsTotal).toBe(0);
  }, 400_000);
});

describeNs('fast path: UDP datagrams through the batched receive path', () => {
  it.each([
    ['through the native flow cache', []],
    ['through TypeScript (--no-flow-cache)', ['--no-flow-cache']],
  ])('UDP GSO sends of an application (USO super-frames on the TAP) are split into their datagrams, each complete and in order, %s', async (_n, extra) => {
    const { h1, h2, a, b } = await uvtepPair('fpuso', false, extra as string[], extra as string[]);
    expect((await ping(h1, '10.0.0.107', 2, 0.1)).received).toBe(2); // ARP resolved and MACs learned first
    // 100 sends of 10 datagrams each with UDP_SEGMENT (1200 bytes, the last 700): datagram i is a
    // 4-byte index, then bytes (i + j) & 255
    const sender = [
      'import socket, struct, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      's.setsockopt(socket.SOL_UDP, 103, 1200)  # UDP_SEGMENT',
      'i = 0',
      'for burst in range(100):',
      '    buf = bytearray()',
      '    for k in range(10):',
      '        d = bytearray((i + j) & 255 for j in range(1200 if k < 9 else 700))',
      "        struct.pack_into('>I', d, 0, i)",
      '        buf += d',
      '        i += 1',
      "    s.sendto(buf, ('10.0.0.107', 6002))",
      '    time.sleep(0.005)',
    ].join('\n');
    const recv = h2.spawn([
      process.execPath,
      '-e',
      `const s=require('dgram').createSocket({type:'udp4',recvBufferSize:8<<20});const got=[];let bad=0;s.on('message',(m)=>{const i=m.readUInt32BE(0);got.push(i);for(let j=4;j<m.length;j++)if(m[j]!==((i+j)&255)){bad++;break}if(m.length!==(i%10===9?700:1200))bad++;if(got.length===1000)done()});const done=()=>{let order=0;for(let k=0;k<got.length;k++)if(got[k]!==k)order++;console.log(JSON.stringify({n:got.length,bad,order}));process.exit(0)};s.bind(6002,'10.0.0.107');setTimeout(done,20000);`,
    ]);
    let out = '';
    recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => setTimeout(r, 300));
    await h1.run(['python3', '-c', sender]);
    await new Promise<void>((r) => (recv.exitCode !== null ? r() : recv.once('exit', () => r())));
    expect(JSON.parse(out.trim())).toEqual({ n: 1000, bad: 0, order: 0 });
    const sa = statsOf((await a.stop()).final);
    await b.stop();
    // the sends reached uvtep whole (USO) and were split there, not by h1's stack
    expect(sa.io.superFrames, 'USO super-frames split').toBeGreaterThanOrEqual(90);
    if ((extra as string[]).length === 0) expect(sa.io.flowCacheTx, 'sent natively').toBeGreaterThanOrEqual(900);
    else expect(sa.io.flowCacheTx).toBe(0);
    expect(sa.dropsTotal).toBe(0);
  });

  it.each([
    ['through the native flow cache', []],
    ['through TypeScript (--no-flow-cache)', ['--no-flow-cache']],
  ])('bursts of datagrams of several sizes arrive complete, in order, each with its own size and bytes; runs of one size leave as GSO trains, %s', async (_n, extra) => {
    const { h1, h2, a, b } = await uvtepPair('fpudp', false, extra as string[], extra as string[]);
    expect((await ping(h1, '10.0.0.107', 2, 0.1)).received).toBe(2); // ARP resolved and MACs learned first
    // datagram i: 4-byte index, then bytes (i + j) & 255; sizes vary per burst
    const got = await udpExchange(
      h2,
      `const s=require('dgram').createSocket({type:'udp4',recvBufferSize:8<<20});const got=[];let bad=0;s.on('message',(m)=>{const i=m.readUInt32BE(0);got.push(i);for(let j=4;j<m.length;j++)if(m[j]!==((i+j)&255)){bad++;break}if(m.length!==[1200,64,800,4][Math.floor(i/100)%4])bad++;if(got.length===2000)done()});const done=()=>{let order=0;for(let k=0;k<got.length;k++)if(got[k]!==k)order++;console.log(JSON.stringify({n:got.length,bad,order}));process.exit(0)};s.bind(6001,'10.0.0.107');setTimeout(done,20000);`,
      h1,
      `const s=require('dgram').createSocket('udp4');let i=0;const burst=()=>{if(i===2000){s.close();return}for(let k=0;k<100;k++,i++){const len=[1200,64,800,4][Math.floor(i/100)%4];const b=Buffer.alloc(len);b.writeUInt32BE(i,0);for(let j=4;j<b.length;j++)b[j]=(i+j)&255;s.send(b,6001,'10.0.0.107')}setTimeout(burst,20)};burst();`,
    );
    expect(got).toEqual({ n: 2000, bad: 0, order: 0 });
    const sa = statsOf((await a.stop()).final);
    expect(sa.txGsoSends, 'runs of equal datagrams left as GSO trains').toBeGreaterThan(0);
    const sb = statsOf((await b.stop()).final);
    expect(sb.io.groMsgs, 'and arrived as GRO messages').toBeGreaterThan(0);
    expect(sb.io.recvMsgs / sb.io.recvCalls, 'several datagrams per receive syscall').toBeGreaterThan(1);
    expect(sb.io.ioUring, 'the frames reached the TAP through io_uring').toBe(true);
  }, 120_000);
});

describeNs('fast path: the fallbacks stay correct', () => {
  it('--transport dgram (node:dgram) against a native uvtep and against the kernel: 64 MB each way', async () => {
    const { h1, h2, a, b } = await uvtepPair('fpdg', false, ['--transport', 'dgram']);
    await bothWays(h1, h2, 64 * MB);
    const sa = statsOf((await a.stop()).final);
    expect(sa.io.transport).toBe('dgram');
    expect(sa.io.groMsgs).toBe(0);
    expect(statsOf((await b.stop()).final).io.transport).toBe('native');
    await fx.release();
    const k = await kernelPair('fpdgk', false, 'on', ['--transport', 'dgram']);
    await bothWays(k.h1, k.h2, 64 * MB);
  }, 400_000);

  it('--no-tso --no-gso --no-gro --no-io-uring: one frame per read and per write, still exact', async () => {
    const off = ['--no-tso', '--no-gso', '--no-gro', '--no-io-uring'];
    const { h1, h2, a } = await uvtepPair('fpoff', false, off, off);
    await bothWays(h1, h2, 32 * MB);
    const s = statsOf((await a.stop()).final);
    expect(s.io.superFrames).toBe(0);
    expect(s.txGsoSends).toBe(0);
    expect(s.rxGroWrites).toBe(0);
    expect(s.io.groMsgs).toBe(0);
    expect(s.io.ioUring).toBe(false);
  }, 400_000);

  it('--busy-poll 50: traffic and bytes as without it', async () => {
    const { h1, h2 } = await uvtepPair('fpbp', false, ['--busy-poll', '50'], ['--busy-poll', '50']);
    await bothWays(h1, h2, 32 * MB);
  }, 400_000);
});

describeNs('fast path: no partial checksum reaches the wire', () => {
  // UDP from the uvtep host leaves its stack with CHECKSUM_PARTIAL (the TAP offers TUN_F_CSUM):
  // uvtep must finish the checksum, or the kernel peer counts InCsumErrors and drops them.
  it.each([
    ['kernel tx checksum offload off', 'off'],
    ['kernel tx checksum offload on', 'on'],
  ])('small UDP datagrams and a TCP stream uvtep -> kernel arrive intact (%s)', async (_n, tx) => {
    const { h1, h2 } = await kernelPair(`fpcs${tx}`, false, tx as 'on' | 'off');
    const got = await udpExchange(
      h2,
      `const s=require('dgram').createSocket('udp4');let n=0,bad=0;s.on('message',(m)=>{n++;for(let i=0;i<m.length;i++)if(m[i]!==((i+m.length)&255))bad++;if(n===200){console.log(JSON.stringify({n,bad}));process.exit(0)}});s.bind(6000,'10.0.0.107');setTimeout(()=>{console.log(JSON.stringify({n,bad}));process.exit(0)},15000);`,
      h1,
      `const s=require('dgram').createSocket('udp4');let i=0;const next=()=>{if(i===200){s.close();return}const len=1+((i*37)%1400);const b=Buffer.alloc(len);for(let j=0;j<len;j++)b[j]=(j+len)&255;i++;s.send(b,6000,'10.0.0.107',()=>setTimeout(next,1))};next();`,
    );
    expect(got).toEqual({ n: 200, bad: 0 });
    expect((await udpSnmp(h2)).InCsumErrors).toBe(0);
    // TCP uvtep -> kernel: TSO super-frames split with complete checksums (and, with tx on, the
    // kernel's ACKs arrive with partial checksums and are taken)
    expect((await tcpTransfer(h2, h1, '10.0.0.107', 5203, 32 * MB, 120_000)).ok).toBe(true);
  }, 120_000);
});

describeNs('fast path: TAP writes in batches through io_uring', () => {
  // 300 UDP frames to the TAP's own address in one writeFrames (more than the ring's 128 entries,
  // so it submits mid-batch), frame 150 cut to 5 bytes (the kernel refuses it: EINVAL); a socket
  // on the host side reads what arrived
  const js = (ioUring: boolean, native: string) => `
    const { loadBinding } = await import(${JSON.stringify(native)});
    const { execFileSync } = await import('node:child_process');
    const dgram = await import('node:dgram');
    const b = loadBinding();
    const tap = new b.Tap('uvt-ring0', false, true, 0, ${ioUring});
    for (const a of [['addr', 'add', '10.0.0.1/24', 'dev', 'uvt-ring0'], ['link', 'set', 'uvt-ring0', 'up'], ['neigh', 'replace', '10.0.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'uvt-ring0']]) execFileSync('ip', a);
    const mac = execFileSync('cat', ['/sys/class/net/uvt-ring0/address']).toString().trim().split(':').map((x) => parseInt(x, 16));
    const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
    const got = [];
    sock.on('message', (m) => got.push(m.readUInt32BE(0)));
    await new Promise((r) => sock.bind(6000, '10.0.0.1', r));
    const N = 300, SIZE = 100, buf = Buffer.alloc(N * SIZE), offs = new Int32Array(N), lens = new Int32Array(N);
    for (let i = 0; i < N; i++) {
      const f = buf.subarray(i * SIZE, (i + 1) * SIZE);
      Buffer.from(mac).copy(f, 0); Buffer.from([2, 0, 0, 0, 0, 2, 8, 0]).copy(f, 6);
      const ip = f.subarray(14);
      ip[0] = 0x45; ip.writeUInt16BE(SIZE - 14, 2); ip[8] = 64; ip[9] = 17;
      Buffer.from([10, 0, 0, 2, 10, 0, 0, 1]).copy(ip, 12);
      let s = 0; for (let k = 0; k < 20; k += 2) s += ip.readUInt16BE(k);
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      ip.writeUInt16BE(~s & 0xffff, 10);
      ip.writeUInt16BE(5000, 20); ip.writeUInt16BE(6000, 22); ip.writeUInt16BE(SIZE - 34, 24);
      ip.writeUInt32BE(i, 28);
      offs[i] = i * SIZE; lens[i] = i === 150 ? 5 : SIZE;
    }
    const st = new Float64Array(8);
    const lost = tap.writeFrames(false, buf, offs, lens, N, st, 0);
    await new Promise((r) => setTimeout(r, 500));
    console.log(JSON.stringify({ ioUring: tap.ioUring, lost, writes: st[0], lostStat: st[3], got }));
    sock.close();
    tap.close();`;

  it('a batch larger than the ring arrives whole and in order; a frame the kernel refuses is counted lost; the writev fallback does the same', async () => {
    const bed = fx.newBed('ring');
    await bed.removeLeftovers();
    const h = await bed.host('h');
    const native = new URL('../../dist/native.js', import.meta.url).pathname;
    const want = [...Array(300).keys()].filter((i) => i !== 150);
    for (const ioUring of [true, false]) {
      const r = JSON.parse(await h.run([process.execPath, '--input-type=module', '-e', js(ioUring, native)])) as Record<string, unknown>;
      expect(r.ioUring, 'the ring is in use only when asked for').toBe(ioUring);
      expect(r.got, 'every frame the kernel took, in order').toEqual(want);
      expect(r.lost).toBe(1);
      expect(r.lostStat).toBe(1);
      expect(r.writes).toBe(300);
    }
  }, 60_000);
});
