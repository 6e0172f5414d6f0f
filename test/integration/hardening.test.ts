// Bad input, faults and load against running uvtep processes in namespaces (issue: hardening).
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { expect, it } from 'vitest';
import { ping, tcpTransfer, toolPath, uvtepBin, UVTEP_NODE_FLAGS, type Host, type LogRecord } from '../../src/lab/testbed.js';
import { datagram, frame } from '../helpers/frames.js';
import { udpRecords } from '../helpers/pcap.js';
import { udpSnmp } from '../helpers/udp.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, kernelVtep, NsFixture, quietIpv6, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const fx = new NsFixture();
const uvtep = (h: Host, args: string[]) => fx.uvtep(h, args);
const tmpFile = (name: string) => fx.tmpFile(name);

/** Runs the blast tool in `h` with `spec`; resolves with the number sent. */
async function blast(h: Host, spec: Record<string, unknown>): Promise<number> {
  const file = tmpFile(`blast-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(spec));
  const r = await h.run([process.execPath, toolPath('udp-blast'), file], { timeoutMs: 120_000 });
  return (JSON.parse(r.trim()) as { sent: number }).sent;
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

type Stats = { rxDatagrams: number; rxPackets: number; rxBytes: number; drops: Record<string, number>; fdbSize: number; learnRefused: number; txPauses: number; dropsTotal: number; rxGroWrites: number; rxGroSegments: number };
const statsOf = (r: LogRecord | undefined) => r!.stats as Stats;
const fdbOf = (r: LogRecord | undefined) => r!.fdb as Array<{ mac: string; dst: string }>;

async function pair(bedName: string, extraA: string[] = [], extraB: string[] = [], v6 = false) {
  const hosts = await twoHosts(fx.newBed(bedName), v6);
  const a = uvtep(hosts.h1, ['--vni', '1', '--remote', hosts.u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC, ...extraA]);
  const b = uvtep(hosts.h2, ['--vni', '1', '--remote', hosts.u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC, ...extraB]);
  await a.ready();
  await b.ready();
  return { ...hosts, a, b };
}

/** uvtep on h1 accepting only `allow`, its peer on h2, and a spoofing address 198.51.100.99 on h2. */
async function filteredPair(bedName: string, allow: string) {
  const hosts = await twoHosts(fx.newBed(bedName));
  await hosts.h2.ip('addr', 'add', '198.51.100.99/24', 'dev', 'eth0');
  const a = uvtep(hosts.h1, ['--vni', '1', '--remote', hosts.u2, '--allow-from', allow, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC]);
  const b = uvtep(hosts.h2, ['--vni', '1', '--remote', hosts.u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC]);
  await a.ready();
  await b.ready();
  return { ...hosts, a, b };
}

describeNs('hostile datagrams', () => {
  it('a bounded flood of every malformed class: alive, each counted under its reason, nothing learned, ping still works', async () => {
    const { h1, h2, a } = await pair('hostile', ['--reserved-bits', 'strict']);
    expect((await ping(h2, '10.0.0.106', 2)).received).toBe(2); // h1 learns B_MAC legitimately
    const N = 100;
    const good = frame(A_MAC, '02:00:00:00:00:66');
    const classes: Record<string, Buffer[]> = {
      random: Array.from({ length: N }, () => {
        const b = randomBytes(8 + Math.floor(Math.random() * 200));
        b[0] = b[0]! & ~0x08; // I flag clear (random bytes with the I flag set are a wrong-VNI or other class)
        return b;
      }),
      short: Array.from({ length: N }, (_, i) => randomBytes(i % 8)),
      noIFlag: Array.from({ length: N }, () => datagram(1, good, { flags: 0 })),
      wrongVni: Array.from({ length: N }, (_, i) => datagram(2 + i, good)),
      reserved: Array.from({ length: N }, (_, i) => datagram(1, good, { reserved2: 1 + (i % 255) })),
      innerShort: Array.from({ length: N }, (_, i) => datagram(1, good.subarray(0, i % 14))),
      oversized: Array.from({ length: N }, () => datagram(1, frame(A_MAC, '02:00:00:00:00:67', { size: 1500 }))),
      ownMac: Array.from({ length: N }, () => datagram(1, frame(B_MAC, A_MAC))),
      multicastSrc: Array.from({ length: N }, () => datagram(1, frame(A_MAC, '01:00:5e:00:00:01'))),
      zeroSrc: Array.from({ length: N }, () => datagram(1, frame(A_MAC, '00:00:00:00:00:00'))),
    };
    const all = Object.values(classes).flat().map((b) => b.toString('hex'));
    const sent = await blast(h2, { to: '198.51.100.1', port: 4789, datagrams: all });
    expect(sent).toBe(10 * N);
    // an empty datagram alone in its receive batch (the native flow cache sees it first)
    expect(await blast(h2, { to: '198.51.100.1', port: 4789, datagrams: [''] })).toBe(1);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    expect(a.child.exitCode).toBeNull();
    const f = await a.stop();
    expect(f.code).toBe(0);
    const s = statsOf(f.final);
    // no VXLAN header, or a VNI nobody serves: the UDP endpoint's drops (no VTEP can be given them)
    const e = f.final!.endpoint as { drops: Record<string, number> };
    expect(e.drops.InvalidHeader).toBe(2 * N); // random (I clear) + noIFlag
    expect(e.drops.Truncated).toBe(N + 1);
    expect(e.drops.UnknownVni).toBe(N);
    expect(s.drops.InvalidHeader! + s.drops.Truncated! + s.drops.UnknownVni!).toBe(0);
    expect(s.drops.ReservedBits).toBe(N);
    expect(s.drops.InnerTruncated).toBe(N);
    expect(s.drops.TooBig).toBe(N);
    expect(s.drops.LocalMac).toBe(N);
    expect(s.drops.InvalidSrcMac).toBe(2 * N);
    const macs = fdbOf(f.final).map((r) => r.mac);
    expect(macs).not.toContain('02:00:00:00:00:66');
    expect(macs).not.toContain('02:00:00:00:00:67');
    expect(macs).toContain(B_MAC);
  });

  it('MAC flood: the FDB stays at maxaddress, memory stays bounded, known entries keep working', async () => {
    const { h1, h2, a } = await pair('macflood', ['--max-address', '1000']);
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);
    const rss0 = rssKb(a.child.pid!);
    const sent = await blast(h2, { to: '198.51.100.1', port: 4789, macFlood: { count: 50_000, vni: 1, dst: A_MAC } });
    expect(sent).toBe(50_000);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    const rss1 = rssKb(a.child.pid!);
    const f = await a.stop();
    const s = statsOf(f.final);
    expect(s.fdbSize).toBeLessThanOrEqual(1000);
    expect(s.learnRefused).toBeGreaterThanOrEqual(50_000 - 1000);
    expect(s.rxPackets).toBeGreaterThanOrEqual(50_000);
    // stated bound: the flood costs less than 40 MB of resident memory
    expect(rss1 - rss0).toBeLessThan(40 * 1024);
    expect(fdbOf(f.final).map((r) => r.mac)).toContain(B_MAC);
  });

  it('--allow-from: datagrams from other underlay sources are dropped, counted, and never teach the FDB', async () => {
    const { h1, h2, u1, u2, a } = await filteredPair('allow', '198.51.100.2/32');
    const spoof = datagram(1, frame(A_MAC, '02:00:00:00:00:99')).toString('hex');
    expect(await blast(h2, { to: u1, port: 4789, from: '198.51.100.99', datagrams: [spoof], repeat: 200 })).toBe(200);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    const f = await a.stop();
    expect(statsOf(f.final).drops.NotAllowed).toBe(200);
    expect(fdbOf(f.final).map((r) => r.mac)).not.toContain('02:00:00:00:00:99');
    expect(fdbOf(f.final)).toContainEqual(expect.objectContaining({ mac: B_MAC, dst: u2 }));
  });
});

describeNs('open by default, but not silently', () => {
  it('--allow-from peers accepts only the --remote addresses; without a restriction, one startup warning says so', async () => {
    const { h2, h1, u1, a, b } = await filteredPair('peers', 'peers');
    const warning = (p: typeof a) => p.records.filter((r) => r.level === 40 && /any underlay source/.test(r.msg));
    expect(warning(a)).toHaveLength(0);
    expect(warning(b)).toHaveLength(1);
    expect(warning(b)[0]!.msg).toMatch(/--allow-from/);
    const spoof = datagram(1, frame(A_MAC, '02:00:00:00:00:99')).toString('hex');
    expect(await blast(h2, { to: u1, port: 4789, from: '198.51.100.99', datagrams: [spoof], repeat: 50 })).toBe(50);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    const f = await a.stop();
    expect(statsOf(f.final).drops.NotAllowed).toBe(50);
    expect(fdbOf(f.final).map((r) => r.mac)).not.toContain('02:00:00:00:00:99');
  });
});

describeNs('faults', () => {
  it('unreachable remotes (no route, an unreachable route, a real host without the port) do not stop the others; each error counted, logs rate-limited', async () => {
    const bed = fx.newBed('unreach');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    await quietIpv6(h1);
    await quietIpv6(h2);
    // 203.0.113.50: no route (ENETUNREACH at send); 203.0.113.60: an unreachable route
    // (EHOSTUNREACH at send); u2 port 4799: a real host where nothing listens (it answers ICMP
    // port unreachable, which an unconnected socket is not told about, as the kernel VTEP is not)
    await h1.ip('route', 'add', 'unreachable', '203.0.113.60/32');
    const a = uvtep(h1, ['--vni', '1', '--remote', '203.0.113.50', '--remote', '203.0.113.60', '--remote', `${u2}:4799`, '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC]);
    const b = uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC]);
    await a.ready();
    await b.ready();
    const icmp = await fx.capture(h1, 'eth0', 'icmp[icmptype] == icmp-unreach and icmp[icmpcode] == 3', 'icmp.pcap');
    // 200 broadcast pings in 2 s: each frame is flooded to all four remotes
    const t0 = Date.now();
    await h1.exec(['ping', '-b', '-c', '200', '-i', '0.01', '-W', '1', '10.0.0.255']);
    const seconds = (Date.now() - t0) / 1000;
    expect((await ping(h1, '10.0.0.107', 5)).received).toBe(5);
    await icmp.stop();
    expect(a.child.exitCode).toBeNull();
    const { readPcapFrames } = await import('../helpers/pcap.js');
    expect(readPcapFrames(icmp.file).length, 'port unreachable from h2').toBeGreaterThan(0);
    await a.waitFor((r) => /sending to 203\.0\.113\.50 failed: ENETUNREACH/.test(r.msg), 'ENETUNREACH report');
    await a.waitFor((r) => /sending to 203\.0\.113\.60 failed: EHOSTUNREACH/.test(r.msg), 'EHOSTUNREACH report');
    const f = await a.stop();
    const s = f.final!.stats as Stats & { floodCopies: number; txPackets: number };
    // every flooded frame went to four remotes and failed at exactly two of them
    expect(s.floodCopies % 4).toBe(0);
    expect(s.floodCopies).toBeGreaterThanOrEqual(4 * 200);
    expect(s.drops.TxError).toBe(s.floodCopies / 2);
    for (const [addr, code] of [['203.0.113.50', 'ENETUNREACH'], ['203.0.113.60', 'EHOSTUNREACH']] as const) {
      const reports = a.records.filter((r) => r.address === addr);
      expect(reports.every((r) => r.code === code && r.level === 40)).toBe(true);
      // at most one report a second per remote and code, each saying how many errors it stands for
      expect(reports.length).toBeGreaterThanOrEqual(1);
      expect(reports.length).toBeLessThanOrEqual(Math.ceil(seconds) + 2);
      const counted = reports.reduce((n, r) => n + (r.count as number), 0);
      expect(counted).toBeLessThanOrEqual(s.floodCopies / 4);
      expect(counted).toBeGreaterThanOrEqual(1);
      // by the limiter's own clock (`at`): the log line's `time` is taken later, by a varying delay
      for (let i = 1; i < reports.length; i++) expect((reports[i]!.at as number) - (reports[i - 1]!.at as number)).toBeGreaterThanOrEqual(1000);
    }
    expect(a.records.some((r) => r.port === 4799)).toBe(false);
  });

  it('SIGTERM during full-speed traffic: exits promptly, TAP removed, counters printed; a restart works', async () => {
    const { h1, h2, u2, a } = await pair('sigterm');
    h2.spawn(['iperf3', '-s', '-1']);
    await waitFor(async () => (await h2.exec(['ss', '-ltn'])).stdout.includes(':5201'), 'iperf3 server');
    const load = h1.spawn(['iperf3', '-c', '10.0.0.107', '-t', '20']);
    // full speed: thousands of frames through the TAP already
    await waitFor(async () => {
      const j = JSON.parse((await h1.exec(['ip', '-s', '-j', 'link', 'show', 'vxlan1'])).stdout) as Array<{ stats64: { tx: { packets: number } } }>;
      return j[0]!.stats64.tx.packets > 20_000;
    }, 'iperf3 traffic through vxlan1', 15_000, 100);
    const t0 = Date.now();
    const f = await a.stop();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(f.code).toBe(0);
    // the final counters were printed, and they show the stream this side was encapsulating
    expect((f.final!.stats as { txPackets: number }).txPackets).toBeGreaterThan(20_000);
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan1'])).code).not.toBe(0);
    load.kill('SIGTERM');
    const again = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC]);
    await again.ready();
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
  });

  it('underlay MTU too small for a frame: counted TooBig, never an IP-fragmented datagram', async () => {
    // the TAP claims 1450 but the underlay only carries 1400-byte packets
    const { h1, a } = await pair('mtu', ['--underlay-mtu', '1400', '--mtu', '1450']);
    const cap = await fx.capture(h1, 'eth0', 'udp or (ip[6:2] & 0x3fff != 0)', 'mtu.pcap');
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);
    const big = await h1.exec(['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '-M', 'do', '-s', '1400', '10.0.0.107']);
    expect(big.stdout).toMatch(/3 packets transmitted, 0 received/);
    await cap.stop();
    const recs = udpRecords(cap.file);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.every((r) => (r.fragWord & 0x3fff) === 0 && (r.fragWord & 0x2000) === 0)).toBe(true);
    expect(Math.max(...recs.map((r) => r.frame.length - 14))).toBeLessThanOrEqual(1400);
    const f = await a.stop();
    expect(statsOf(f.final).drops.TooBig).toBeGreaterThanOrEqual(3);
  });
});

describeNs('the native TAP owns its fd', () => {
  it('no fd number in JS; after close a write loses every frame (never another fd), a reader refuses it, the device is gone', async () => {
    const bed = fx.newBed('fd');
    await bed.removeLeftovers();
    const h = await bed.host('h');
    const native = new URL('../../dist/native.js', import.meta.url).pathname;
    const js = `
      const { loadBinding } = await import(${JSON.stringify(native)});
      const b = loadBinding();
      const out = {};
      const tap = new b.Tap('uvt-fd0', false, true, 0, true);
      out.fdVisible = 'fd' in tap;
      const fs = await import('node:fs');
      out.before = fs.existsSync('/sys/class/net/uvt-fd0');
      tap.close();
      tap.close();
      out.after = fs.existsSync('/sys/class/net/uvt-fd0');
      const st = new Float64Array(8);
      const buf = Buffer.alloc(64);
      out.lost = tap.writeFrames(false, buf, Int32Array.of(0), Int32Array.of(60), 1, st, 0);
      out.lostStat = st[3];
      const args = [buf, 64, 8, new Int32Array(1), new Int32Array(1), new Int32Array(1), new Int32Array(1), new Float64Array(8), () => {}, () => {}, true];
      try { new b.TapReader(tap, ...args); } catch (e) { out.closedReader = e.code; }
      try { new b.TapReader({}, ...args); } catch (e) { out.notATap = e.constructor.name + ': ' + e.message; }
      try { new b.TapReader(3, ...args); } catch (e) { out.fdNumber = e.message; }
      console.log(JSON.stringify(out));`;
    const r = JSON.parse(await h.run([process.execPath, '--input-type=module', '-e', js])) as Record<string, unknown>;
    expect(r.fdVisible).toBe(false);
    expect(r.before).toBe(true);
    expect(r.after).toBe(false);
    expect(r.lost).toBe(1);
    expect(r.lostStat).toBe(1);
    expect(r.closedReader).toBe('EBADF');
    expect(r.notATap).toBe('TypeError: expected a Tap');
    expect(r.fdNumber).toBe('TapReader: argument 0 has the wrong type');
  });
});

describeNs('logging never stalls forwarding', () => {
  it('a log reader that stops reading loses log lines (counted and reported), never frames', async () => {
    const { h1, h2, u1, u2 } = await twoHosts(fx.newBed('logstall'));
    // a line per learned MAC: --log-level debug; stdout is a pipe this test stops reading. The
    // socket holds the whole burst (64 MB), so that a machine busy elsewhere cannot drop datagrams
    // of it: what is tested is the log stall, not the socket's size.
    const child = h1.spawn([process.execPath, ...UVTEP_NODE_FLAGS, uvtepBin(), '--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC, '--log-level', 'debug', '--rcvbuf', String(64 * MB)]);
    let out = '';
    const onData = (d: Buffer) => (out += d.toString());
    child.stdout!.on('data', onData);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor(() => / up: /.test(out), 'startup line');
      child.stdout!.off('data', onData);
      child.stdout!.pause();
      await uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC]).ready();
      // 20,000 new source MACs: 20,000 debug lines, megabytes into a pipe of 64 KiB nobody reads
      expect(await blast(h2, { to: u1, port: 4789, macFlood: { count: 20_000, vni: 1, dst: A_MAC } })).toBe(20_000);
      // forwarding went on meanwhile, and goes on
      expect((await ping(h1, '10.0.0.107', 5, 0.1)).received).toBe(5);
      expect((await tcpTransfer(h2, h1, '10.0.0.107', 5201, 8 * MB)).ok).toBe(true);
      // the reader is back: what was lost is said, and the final record arrives
      child.stdout!.on('data', onData);
      child.stdout!.resume();
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      await waitFor(() => /stopped \(SIGTERM\)/.test(out), 'the final record');
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; dropped?: number });
      const lost = lines.filter((l) => /log lines dropped/.test(l.msg));
      expect(lost.length).toBeGreaterThan(0);
      const learned = lines.filter((l) => l.msg === 'learned').length;
      expect(learned).toBeLessThan(20_000);
      const final = lines.find((l) => /^stopped \(SIGTERM\)/.test(l.msg)) as unknown as { stats: Stats };
      // every line is either written or counted as dropped
      const dropped = lost.reduce((a, l) => a + l.dropped!, 0);
      // (the message tells a lost datagram, fdb < 20,000, from a log line lost uncounted)
      expect(learned + dropped, JSON.stringify({ learned, dropped, fdb: final.stats.fdbSize, rx: final.stats.rxDatagrams })).toBeGreaterThanOrEqual(20_000);
      expect(final.stats.fdbSize).toBeGreaterThanOrEqual(20_000);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

describeNs('integrity under load', () => {
  it('256 MB over TCP uvtep <-> uvtep and uvtep <-> kernel arrive byte-identical', async () => {
    const { h1, h2, b } = await pair('bulk');
    const t = await tcpTransfer(h2, h1, '10.0.0.107', 5201, 256 * MB, 180_000);
    expect(t.ok).toBe(true);
    // the stream crossed in whole super-frames (tunnel GSO by default), each one TAP write on the
    // receiver (and the bytes are still exact)
    const rs = statsOf((await b.stop()).final) as Stats & { io: { rxSuperFrames: number } };
    expect(rs.io.rxSuperFrames, 'super-frames of up to 64 KB, at least half the bytes').toBeGreaterThan((256 * MB) / 65536 / 2);
    await fx.release();
    const k = await twoHosts(fx.newBed('bulkk'));
    await kernelVtep(k.h2, { vni: 1, remote: k.u1, port: 4789, address: '10.0.0.107/24', mac: B_MAC });
    const a = uvtep(k.h1, ['--vni', '1', '--remote', k.u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC]);
    await a.ready();
    const t2 = await tcpTransfer(k.h2, k.h1, '10.0.0.107', 5201, 256 * MB, 180_000);
    expect(t2.ok).toBe(true);
    const t3 = await tcpTransfer(k.h1, k.h2, '10.0.0.106', 5202, 128 * MB, 180_000);
    expect(t3.ok).toBe(true);
  }, 600_000);

  it('two VNIs between the same hosts, both on port 4789: traffic of one never appears on the other TAP', async () => {
    const bed = fx.newBed('twovni');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    await quietIpv6(h1);
    await quietIpv6(h2);
    // one process per host, both VNIs on the one port: only the VNI keeps them apart
    const conf = tmpFile('two.yaml');
    writeFileSync(conf, `remote: [${u2}]\nvteps:\n  - {vni: 10, name: vx10, address: [10.0.0.1/24], mac: "02:00:00:00:10:01"}\n  - {vni: 20, name: vx20, address: [172.18.0.1/16], mac: "02:00:00:00:20:01"}\n`);
    const a = uvtep(h1, ['--config', conf]);
    const b = uvtep(h2, ['--vni', '10', '--remote', u1, '--name', 'vx10', '--address', '10.0.0.2/24', '--mac', '02:00:00:00:10:02']);
    await a.waitFor((r) => r.tap === 'vx20' && / up: /.test(r.msg), 'vx20 up');
    await b.ready();
    const add = await h2.exec([process.execPath, uvtepBin(), 'vtep', 'add', '--vni', '20', '--remote', u1, '--name', 'vx20', '--address', '172.18.0.2/16', '--mac', '02:00:00:00:20:02']);
    expect(add.code, add.stderr).toBe(0);
    const cap = await fx.capture(h2, 'vx20', '', 'vx20.pcap');
    expect((await ping(h1, '10.0.0.2', 10, 0.05)).received).toBe(10);
    expect((await tcpTransfer(h2, h1, '10.0.0.2', 5201, 16 * MB)).ok).toBe(true);
    expect((await ping(h1, '172.18.0.2', 3)).received).toBe(3);
    await cap.stop();
    const { readPcapFrames } = await import('../helpers/pcap.js');
    const onVx20 = readPcapFrames(cap.file);
    // only VNI 20's own traffic (the 3 pings and their ARP): nothing from 10.0.0.0/24 or its MACs
    expect(onVx20.length).toBeGreaterThan(0);
    for (const f of onVx20) {
      const src = f.subarray(6, 12).toString('hex');
      expect(src.startsWith('020000001')).toBe(false);
    }
    await b.stop();
    const f20 = b.records.find((r) => r.tap === 'vx20' && /^stopped/.test(r.msg));
    const f10 = b.records.find((r) => r.tap === 'vx10' && /^stopped/.test(r.msg));
    expect(statsOf(f20).rxPackets).toBeLessThan(20);
    expect(statsOf(f10).rxBytes).toBeGreaterThan(16 * MB);
  });

  it('backpressure: a tiny socket send buffer pauses the TAP instead of overwriting frames; every UDP datagram delivered intact or counted lost', async () => {
    const { h1, h2, a, b } = await pair('bp', ['--sndbuf', '4608']);
    // A rate-limited queue on the underlay holds the datagrams (and their socket memory) the way a
    // busy NIC does; a bare veth frees them at once and would never push back.
    await h1.run(['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '100mbit', 'burst', '32kb', 'latency', '50ms']);
    const tapDropped = async (h: Host) => Number((await h.run(['cat', '/sys/class/net/vxlan1/statistics/tx_dropped'])).trim());
    const s1 = await udpSnmp(h1);
    const s2 = await udpSnmp(h2);
    const d1 = await tapDropped(h1);
    // 20,000 datagrams of 1,200 bytes, each with a sequence number and a SHA-256 of its bytes,
    // sent as fast as h1's stack takes them: far more than 100 Mbit/s, so uvtep's socket fills
    const recv = h2.spawn([process.execPath, toolPath('udp-seq'), 'recv', '6000', '3000']);
    let out = '';
    recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => /listening/.test(out), 'receiver');
    const N = 20_000;
    const sent = JSON.parse(await h1.run([process.execPath, toolPath('udp-seq'), 'send', '10.0.0.107', '6000', String(N), '1200'], { timeoutMs: 120_000 })) as { sent: number };
    expect(sent.sent).toBe(N);
    await new Promise<void>((r) => (recv.exitCode !== null ? r() : recv.once('exit', () => r())));
    const got = JSON.parse(out.trim().split('\n').pop()!) as { received: number; corrupt: number; duplicates: number };
    // nothing overwritten: no datagram with bytes that do not match its digest, none twice, and
    // none that reached h2's stack with a bad UDP checksum
    expect(got.corrupt).toBe(0);
    expect(got.duplicates).toBe(0);
    const e1 = await udpSnmp(h1);
    const e2 = await udpSnmp(h2);
    expect(e2.InCsumErrors! - s2.InCsumErrors!).toBe(0);
    // every datagram is delivered or counted where it was lost: h1's UDP send queue or TAP queue
    // (the TAP paused), the underlay's rate limiter, h2's socket buffer, uvtep's drops
    const tap = (await tapDropped(h1)) - d1;
    const tbf = Number(/dropped (\d+)/.exec(await h1.run(['tc', '-s', 'qdisc', 'show', 'dev', 'eth0']))![1]);
    const fa = await a.stop();
    const fb = await b.stop();
    const lostCounted = e1.SndbufErrors! - s1.SndbufErrors! + tap + tbf + (e2.RcvbufErrors! - s2.RcvbufErrors!) + statsOf(fa.final).dropsTotal + statsOf(fb.final).dropsTotal;
    expect(got.received).toBeGreaterThan(0);
    expect(got.received + lostCounted).toBeGreaterThanOrEqual(N);
    expect(statsOf(fa.final).txPauses).toBeGreaterThan(0);
  });

  it('backpressure in the middle of a super-frame the flow cache sends: the unsent segments go on from where the socket stopped, a TCP stream arrives byte-identical', async () => {
    // through the socket (tunnel GSO bypasses its send buffer: design.md)
    const { h1, h2, a } = await pair('bptcp', ['--sndbuf', '4608', '--tunnel-gso', 'off']);
    await h1.run(['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '200mbit', 'burst', '64kb', 'latency', '50ms']);
    // super-frames larger than one GSO send carries (as after raising the TAP's MTU): each leaves
    // as two messages, and the socket can fill between the two
    await h1.ip('link', 'set', 'dev', 'vxlan1', 'gso_max_segs', '64');
    // the first frames teach the VTEPs: from then on the stream's super-frames leave natively
    expect((await ping(h1, '10.0.0.107', 2, 0.1)).received).toBe(2);
    const r = await tcpTransfer(h2, h1, '10.0.0.107', 5210, 24 * MB, 120_000);
    expect(r.ok, 'bytes identical (SHA-256)').toBe(true);
    const s = statsOf((await a.stop()).final) as Stats & { txPackets: number; io: { flowCacheTx: number; superFrames: number; readFrames: number } };
    expect(s.io.superFrames).toBeGreaterThan(100);
    // the socket pushed back, and super-frames still left through the flow cache between its pauses
    expect(s.txPauses).toBeGreaterThan(0);
    expect(s.io.flowCacheTx, JSON.stringify(s.io)).toBeGreaterThan(1000);
    // every frame read from the TAP was sent exactly once: none of a super-frame's segments that the
    // flow cache sent before the socket filled was sent again by the TypeScript path
    expect(s.txPackets).toBe(s.io.readFrames);
    expect(s.dropsTotal).toBe(0);
  });

  it('backpressure on tunnel GSO: the injector has the socket\'s send buffer; a super-frame that finds it full goes on through the socket, nothing is dropped on the way out', async () => {
    const { h1, h2, a } = await pair('bptgso', ['--sndbuf', '131072']);
    // a queue of 50 ms at 200 Mbit/s (1.25 MB) holds more than both send buffers (2 x 256 KB):
    // if the tunnel's super-frames were not charged to one, the queue would overflow and drop
    await h1.run(['tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', '200mbit', 'burst', '64kb', 'latency', '50ms']);
    expect((await ping(h1, '10.0.0.107', 2, 0.1)).received).toBe(2);
    const r = await tcpTransfer(h2, h1, '10.0.0.107', 5211, 24 * MB, 120_000);
    expect(r.ok, 'bytes identical (SHA-256)').toBe(true);
    const qdisc = await h1.run(['tc', '-s', 'qdisc', 'show', 'dev', 'eth0']);
    const s = statsOf((await a.stop()).final) as Stats & { txPackets: number; io: { readFrames: number; txTunnelSuperFrames: number; txTunnelFull: number; tunnelGso: boolean } };
    expect(s.io.txTunnelSuperFrames, 'super-frames sent whole').toBeGreaterThan(100);
    expect(s.io.txTunnelFull, 'super-frames the full tunnel turned back to the socket').toBeGreaterThan(0);
    expect(s.io.tunnelGso, 'a full buffer is no failure').toBe(true);
    expect(/dropped (\d+)/.exec(qdisc)?.[1], qdisc).toBe('0');
    expect(s.txPackets).toBe(s.io.readFrames);
    expect(s.dropsTotal).toBe(0);
  });
});
