// Experiment 2 (containers across hosts), three hosts flooding and learning, VNI isolation,
// and the bytes on the wire.
import { expect, it } from 'vitest';
import { ping, sh, tcpTransfer, uvtepBin, type Host } from '../../src/lab/testbed.js';
import { expectVxlan, innerFrame, vni } from '../helpers/frames.js';
import { udpRecords } from '../helpers/pcap.js';
import { describeNs, kernelVtep, NsFixture, quietIpv6, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const fx = new NsFixture();
const uvtep = (h: Host, args: string[]) => fx.uvtep(h, args);
const capture = (h: Host, iface: string, filter: string) => fx.capture(h, iface, filter);

describeNs('experiment 2: containers across hosts', () => {
  it('VNI 200: 172.18.0.2 reaches 172.18.0.3 and back through bridges with uvtep TAPs as ports', async () => {
    const bed = fx.newBed('ctr');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    await bed.bridge(h1, 'br0');
    await bed.bridge(h2, 'br0');
    const c1 = await bed.container(h1, 'br0', 'c1', '172.18.0.2/16', { mac: '02:42:ac:12:00:02', mtu: 1450 });
    const c2 = await bed.container(h2, 'br0', 'c2', '172.18.0.3/16', { mac: '02:42:ac:12:00:03', mtu: 1450 });
    const a = uvtep(h1, ['--vni', '200', '--remote', u2, '--name', 'vxlan200', '--bridge', 'br0']);
    const b = uvtep(h2, ['--vni', '200', '--remote', u1, '--name', 'vxlan200', '--bridge', 'br0']);
    expect((await a.ready()).bridge).toBe('br0');
    await b.ready();
    expect(await h1.ip('-o', 'link', 'show', 'vxlan200')).toMatch(/master br0/);
    expect((await ping(c1, '172.18.0.3', 5)).received).toBe(5);
    expect((await ping(c2, '172.18.0.2', 5)).received).toBe(5);
    expect((await tcpTransfer(c2, c1, '172.18.0.3', 5201, 8 * MB)).ok).toBe(true);
    expect((await tcpTransfer(c1, c2, '172.18.0.2', 5202, 8 * MB)).ok).toBe(true);
    const fa = await a.stop();
    expect(fa.final!.fdb).toContainEqual(expect.objectContaining({ mac: '02:42:ac:12:00:03', dst: u2, static: false }));
  });
});

describeNs('three hosts: flood and learn', () => {
  it('a broadcast reaches the kernel VTEP and the uvtep; learned unicast goes to one host only', async () => {
    const bed = fx.newBed('tri');
    await bed.removeLeftovers();
    const sw = await bed.host('sw');
    await bed.bridge(sw, 'br0');
    const hosts: Host[] = [];
    for (const i of [1, 2, 3]) {
      const h = await bed.host(`h${i}`);
      await quietIpv6(h);
      await bed.veth(h, 'eth0', [`198.51.100.${i}/24`], sw, `p${i}`, []);
      await sw.ip('link', 'set', `p${i}`, 'master', 'br0');
      hosts.push(h);
    }
    const [h1, h2, h3] = hosts as [Host, Host, Host];
    // h1: uvtep flooding to h2 (kernel) and h3 (uvtep)
    const a = uvtep(h1, ['--vni', '1', '--remote', '198.51.100.2', '--remote', '198.51.100.3', '--name', 'vxlan1', '--address', '10.0.0.1/24', '--mac', '02:00:00:00:00:01']);
    await kernelVtep(h2, { vni: 1, remote: '198.51.100.1', port: 4789, address: '10.0.0.2/24', mac: '02:00:00:00:00:02' });
    const c = uvtep(h3, ['--vni', '1', '--remote', '198.51.100.1', '--name', 'vxlan1', '--address', '10.0.0.3/24', '--mac', '02:00:00:00:00:03']);
    await a.ready();
    await c.ready();
    const cap3 = await capture(h3, 'eth0', 'udp port 4789');
    const cap2 = await capture(h2, 'eth0', 'udp port 4789');
    // broadcast: the ARP request for 10.0.0.2 goes to both remotes
    expect((await ping(h1, '10.0.0.2', 1)).received).toBe(1);
    // learned: 20 echo requests to h2 only
    expect((await ping(h1, '10.0.0.2', 20, 0.05)).received).toBe(20);
    await cap3.stop();
    await cap2.stop();
    const isArpRequest = (p: Buffer) => p.readUInt16BE(8 + 12) === 0x0806 && p.readUInt16BE(8 + 20) === 1;
    const isEcho = (p: Buffer) => p.readUInt16BE(8 + 12) === 0x0800 && p[8 + 14 + 9] === 1 && p[8 + 14 + 20] === 8;
    const at3 = udpRecords(cap3.file).filter((r) => r.src === '198.51.100.1');
    const at2 = udpRecords(cap2.file).filter((r) => r.src === '198.51.100.1');
    expect(at3.filter((r) => isArpRequest(r.payload)).length).toBeGreaterThanOrEqual(1);
    expect(at2.filter((r) => isArpRequest(r.payload)).length).toBeGreaterThanOrEqual(1);
    expect(at2.filter((r) => isEcho(r.payload)).length).toBe(21);
    expect(at3.filter((r) => isEcho(r.payload)).length).toBe(0);
    const fc = await c.stop();
    expect((fc.final!.stats as { rxPackets: number }).rxPackets).toBeGreaterThanOrEqual(1); // the broadcast
  });
});

describeNs('VNI isolation', () => {
  it('a kernel VTEP with another VNI on the same port gets nothing usable; uvtep counts the drops', async () => {
    const bed = fx.newBed('vni');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    await quietIpv6(h1);
    await quietIpv6(h2);
    await kernelVtep(h2, { vni: 2, remote: u1, port: 4789, address: '10.0.0.107/24', mac: '02:00:00:00:00:0b' });
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a']);
    await a.ready();
    expect((await ping(h2, '10.0.0.106', 3, 0.2, 1)).received).toBe(0);
    expect((await ping(h1, '10.0.0.107', 3, 0.2, 1)).received).toBe(0);
    const f = await a.stop();
    const s = f.final!.stats as { rxPackets: number; drops: Record<string, number> };
    const e = f.final!.endpoint as { drops: Record<string, number> };
    expect(e.drops.UnknownVni).toBeGreaterThanOrEqual(3); // the kernel's ARP requests, VNI 2
    expect(s.rxPackets).toBe(0);
    expect(f.final!.fdb).not.toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:0b' }));
    // the kernel learned nothing from uvtep's VNI 1 datagrams
    expect(await h2.run(['bridge', 'fdb', 'show', 'dev', 'vxlan1'])).not.toContain('02:00:00:00:00:0a');
  });
});

describeNs('the wire', () => {
  it.each([
    ['IPv4', false, 4789],
    ['IPv6', true, 8472],
  ])('%s: UDP to the configured port, I flag, VNI, zero reserved bits, the exact inner frame, never fragmented', async (_n, v6, port) => {
    const bed = fx.newBed('wire');
    const { h1, h2, u1, u2 } = await twoHosts(bed, v6);
    const a = uvtep(h1, ['--vni', '4242', '--dstport', String(port), '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a']);
    const b = uvtep(h2, ['--vni', '4242', '--dstport', String(port), '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', '02:00:00:00:00:0b']);
    await a.ready();
    await b.ready();
    const onTap = await capture(h1, 'vxlan1', 'icmp');
    const onWire = await capture(h1, 'eth0', `udp port ${port}`);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    // a full-size frame: 1450-byte IP packet inside a 1500-byte underlay packet
    const mtu = v6 ? 1430 : 1450;
    expect((await h1.exec(['ping', '-n', '-c', '2', '-i', '0.2', '-M', 'do', '-s', String(mtu - 28), '10.0.0.107'])).code).toBe(0);
    await onTap.stop();
    await onWire.stop();
    const tapFrames = (await import('../helpers/pcap.js')).readPcapFrames(onTap.file);
    const sent = udpRecords(onWire.file).filter((r) => r.src === u1);
    expect(tapFrames.length).toBeGreaterThanOrEqual(10); // 5 requests + 5 replies
    const requests = tapFrames.filter((f) => f.readUInt16BE(6) === 0x0200 && f[14 + 20] === 8);
    expect(requests).toHaveLength(5);
    for (const f of requests) {
      const d = sent.find((r) => r.payload.subarray(8).equals(f));
      expect(d, 'datagram carrying the TAP frame').toBeDefined();
      expect(d!.dstPort).toBe(port);
      expect(d!.dst).toBe(u2);
      expect(d!.srcPort).toBeGreaterThan(0);
      expectVxlan(d!.payload, vni(4242), innerFrame(f));
      expect(d!.fragWord & 0x3fff, 'not a fragment').toBe(0);
    }
    expect(Math.max(...sent.map((r) => r.frame.length - 14))).toBe(1500);
    expect(sent.every((r) => r.fragWord === 0 || (r.fragWord & 0x3fff) === 0)).toBe(true);
  });
});

describeNs('CLI against the system', () => {
  it('TAP removed under a running uvtep: exits 1 with a clear message (the CPU of a VTEP failing while others run: many-vnis.test.ts)', async () => {
    const bed = fx.newBed('rm');
    const { h1, u2 } = await twoHosts(bed);
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1']);
    await a.ready();
    await h1.ip('link', 'del', 'vxlan1');
    const { code } = await Promise.race([a.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('uvtep did not exit')), 5000))]);
    expect(code).toBe(1);
    expect(a.records.map((r) => r.msg).join('\n')).toMatch(/vxlan1 failed: .*TAP device was removed/);
  });

  it('TAP removed at any moment of startup (deleted as soon as it exists): never exit 0, never a process left running', async () => {
    const bed = fx.newBed('rmst');
    const { h1, u2 } = await twoHosts(bed);
    for (let round = 0; round < 5; round++) {
      // a shell in the namespace deletes the TAP the moment it appears: during its setup, while the
      // socket binds, or after the startup line, depending on the round's timing
      const killer = h1.spawn(['sh', '-c', 'for i in $(seq 1 20000); do ip link del vxlan1 2>/dev/null && exit 0; done; exit 1']);
      const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', ...(round % 2 ? ['--srcport', '50000-50015'] : [])]);
      const { code } = await Promise.race([a.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`round ${round}: uvtep did not exit`)), 10_000))]);
      await new Promise<void>((r) => (killer.exitCode !== null ? r() : killer.once('exit', () => r())));
      expect(killer.exitCode, `round ${round}: the TAP was deleted`).toBe(0);
      expect(code, `round ${round}: ${a.records.map((r) => r.msg).join(' | ')} ${a.stderr}`).toBe(1);
    }
  }, 120_000);

  it('the VXLAN port already taken: exits 1 and says why', async () => {
    const bed = fx.newBed('busy');
    const { h1, u2 } = await twoHosts(bed);
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1']);
    await a.ready();
    const b = uvtep(h1, ['--vni', '2', '--remote', u2, '--name', 'vxlan2']);
    const { code } = await b.exited;
    expect(code).toBe(1);
    expect(b.records.map((r) => r.msg).join('\n')).toMatch(/cannot bind the VXLAN port.*EADDRINUSE/);
    // and it left no TAP behind
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan2'])).code).not.toBe(0);
  });

  it('TAP name in use by another uvtep: exits 1 and says so, the first keeps running', async () => {
    const bed = fx.newBed('name');
    const { h1, u2 } = await twoHosts(bed);
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1']);
    await a.ready();
    const b = uvtep(h1, ['--vni', '2', '--remote', u2, '--name', 'vxlan1', '--dstport', '4790']);
    const { code } = await b.exited;
    expect(code).toBe(1);
    expect(b.records.map((r) => r.msg).join('\n')).toMatch(/ioctl\(TUNSETIFF\) failed: EBUSY.*name is in use/);
    expect(a.child.exitCode).toBeNull();
  });

  it('no /dev/net/tun: exits 1 and says what is missing', async () => {
    // a private mount namespace where /dev/net is an empty tmpfs
    const r = await sh('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev/net && exec ${process.execPath} ${uvtepBin()} --vni 1 --remote 198.51.100.2`]);
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/open\(\/dev\/net\/tun\) failed: ENOENT.*does not exist/);
  });

  it('not root: exits 1 with a message about permissions', async () => {
    const r = await sh('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, uvtepBin(), '--vni', '1', '--remote', '198.51.100.2']);
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/permission to open \/dev\/net\/tun|needs root or CAP_NET_ADMIN/);
  });
});


describeNs('multicast group for BUM traffic', () => {
  it.each([
    ['uvtep <-> uvtep', false, false, []],
    ['uvtep <-> kernel VTEP', true, false, []],
    ['uvtep <-> kernel VTEP, IPv6 underlay', true, true, []],
    // the pool sockets send with the group's interface, TTL and no loopback (no default route here)
    ['uvtep <-> uvtep, source-port pool', false, false, ['--srcport', '49152-49199']],
    ['uvtep <-> uvtep, source-port pool, dgram fallback', false, false, ['--srcport', '49152-49199', '--transport', 'dgram']],
  ])('%s: --group --dev eth0, no remotes: ARP via the group, then unicast', async (_n, kernel, v6, extra) => {
    const bed = fx.newBed(kernel ? (v6 ? 'mc6' : 'mck') : (extra as string[]).length ? ((extra as string[]).includes('dgram') ? 'mcpd' : 'mcp') : 'mcu');
    const { h1, h2, u1, u2 } = await twoHosts(bed, v6);
    const group = v6 ? 'ff05::1:4789' : '239.1.1.1';
    if (!v6) {
      await quietIpv6(h1);
      await quietIpv6(h2);
    }
    const a = uvtep(h1, ['--vni', '1', '--group', group, '--dev', 'eth0', '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a', ...(extra as string[])]);
    await a.ready();
    if (kernel) {
      await h2.ip('link', 'add', 'vxlan1', 'type', 'vxlan', 'id', '1', 'group', group, 'dev', 'eth0', 'dstport', '4789');
      await h2.ip('link', 'set', 'vxlan1', 'address', '02:00:00:00:00:0b');
      await h2.ip('addr', 'add', '10.0.0.107/24', 'dev', 'vxlan1');
      await h2.ip('link', 'set', 'vxlan1', 'up');
    } else {
      await uvtep(h2, ['--vni', '1', '--group', '239.1.1.1', '--dev', 'eth0', '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', '02:00:00:00:00:0b', ...(extra as string[])]).ready();
    }
    const cap = await capture(h1, 'eth0', 'udp port 4789');
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    expect((await ping(h2, '10.0.0.106', 3)).received).toBe(3);
    await cap.stop();
    const out = udpRecords(cap.file).filter((r) => r.src === u1);
    // the ARP request went to the group (TTL 1, as the kernel), the echo requests to h2 directly
    const arp = out.filter((r) => r.payload.readUInt16BE(8 + 12) === 0x0806 && r.payload.readUInt16BE(8 + 20) === 1);
    expect(arp.length).toBeGreaterThanOrEqual(1);
    // IPv4 TTL at byte 8 of the IP header, IPv6 hop limit at byte 7
    expect(arp.every((r) => r.dst === group && r.frame[14 + (v6 ? 7 : 8)] === 1)).toBe(true);
    const echo = out.filter((r) => r.payload.readUInt16BE(8 + 12) === 0x0800 && r.payload[8 + 14 + 20] === 8);
    expect(echo.length).toBe(3);
    expect(echo.every((r) => r.dst === u2)).toBe(true);
    const f = await a.stop();
    // it never heard its own multicast
    expect((f.final!.stats as { drops: Record<string, number> }).drops.LocalMac).toBe(0);
    expect(f.final!.fdb).toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:0b', dst: u2, static: false }));
    expect(f.final!.fdb).toContainEqual(expect.objectContaining({ mac: '00:00:00:00:00:00', dst: group, static: true }));
  });
});

describeNs('TAP lifetime and outer TTL', () => {
  it('--persist keeps the TAP after exit, and a second run reuses it; --ttl sets the outer TTL', async () => {
    const bed = fx.newBed('persist');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--persist', '--ttl', '7']);
    await a.ready();
    const f = await a.stop();
    expect(f.code).toBe(0);
    expect(await h1.ip('-d', 'link', 'show', 'vxlan1')).toMatch(/tun type tap .*persist on/s);
    const again = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--ttl', '7']);
    await again.ready();
    await uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24']).ready();
    const cap = await capture(h1, 'eth0', `udp port 4789 and src host ${u1}`);
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);
    await cap.stop();
    const recs = udpRecords(cap.file);
    expect(recs.length).toBeGreaterThan(0);
    expect(recs.every((r) => r.frame[14 + 8] === 7)).toBe(true);
    await fx.stopAll();
    // the device was persistent before this run: it stays; remove it as an operator would
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan1'])).code).toBe(0);
    await h1.ip('link', 'del', 'vxlan1');
  });
});

describeNs('UDP GSO on the wire', () => {
  it('a TCP stream leaves in GSO batches, cut into datagrams within the MTU, never IP fragments, bytes verified', async () => {
    const bed = fx.newBed('gso');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    // without the device's UDP segmentation, the kernel cuts GSO sends before the capture point
    await h1.run(['ethtool', '-K', 'eth0', 'tx-udp-segmentation', 'off']);
    // UDP GSO messages, not whole super-frames (tunnel GSO, which leaves them whole on the veth)
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--tunnel-gso', 'off']);
    const b = uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24']);
    await a.ready();
    await b.ready();
    expect((await ping(h1, '10.0.0.107', 1)).received).toBe(1);
    const cap = await fx.capture(h1, 'eth0', `udp and src host ${u1}`, 'gso.pcap');
    const t = await tcpTransfer(h2, h1, '10.0.0.107', 5201, 4 * 1024 * 1024);
    expect(t.ok).toBe(true);
    await cap.stop();
    const recs = udpRecords(cap.file);
    expect(recs.length).toBeGreaterThan(1000); // ~3000 for 4 MiB; tcpdump may miss some under load
    for (const r of recs) {
      expect(r.frame.readUInt16BE(14 + 2), 'IPv4 total length').toBeLessThanOrEqual(1500);
      expect(r.fragWord & 0x3fff, 'not a fragment').toBe(0);
      expect(r.payload.readUInt32BE(0)).toBe(0x08000000); // every segment starts with its own VXLAN header
    }
    const f = await a.stop();
    const s = f.final!.stats as { txGsoSends: number; txGsoDatagrams: number; txPackets: number };
    expect(s.txGsoSends).toBeGreaterThan(0);
    expect(s.txGsoDatagrams / s.txGsoSends).toBeGreaterThan(2); // several datagrams per sendmsg
  });
});
