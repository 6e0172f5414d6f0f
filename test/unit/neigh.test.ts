// The stations behind a TAP (what --etcd-macs publishes) and ARP/ND suppression (--proxy).
import { describe, expect, it } from 'vitest';
import { LocalStations, NeighTable, proxyReply, sourceIp, STATION_IPS_MAX, type Station } from '../../src/neigh.js';
import { icmpv6Checksum } from '../../src/wire/nd.js';
import { ethDst, ethSrc, formatMac } from '../../src/wire/ethernet.js';
import { arpRequest, frame, ipv4Frame, mac, neighborSolicit } from '../helpers/frames.js';

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';

function stations(ageingS = 300) {
  const changed: string[] = [];
  const expired: string[] = [];
  const t = new LocalStations({ changed: (s: Station) => changed.push(`${formatMac(s.mac)} ${[...s.ips].join(',')}`), expired: (s) => expired.push(formatMac(s.mac)) }, { ageingS });
  return { t, changed, expired };
}

describe('LocalStations', () => {
  it('records each source MAC once, with the addresses of its ARP and IP headers', () => {
    const { t, changed } = stations();
    const arp = arpRequest(A, '10.0.0.1', '10.0.0.2');
    t.see(arp, 0, arp.length);
    t.see(arp, 0, arp.length);
    expect(changed).toEqual(['02:00:00:00:00:0a 10.0.0.1']);
    // addresses are read at most once per second per MAC: the next tick reads the IP header
    const ip = ipv4Frame(B, A, '10.0.0.9', '10.0.0.2');
    t.see(ip, 0, ip.length);
    expect(changed).toHaveLength(1);
    t.tick();
    t.see(ip, 0, ip.length);
    expect(changed.at(-1)).toBe('02:00:00:00:00:0a 10.0.0.1,10.0.0.9');
    expect(t.get(mac(A))!.ips.size).toBe(2);
  });

  it('never records group or zero source MACs, nor unspecified/multicast sources', () => {
    const { t, changed } = stations();
    const g = frame(B, '03:00:00:00:00:01');
    t.see(g, 0, g.length);
    const z = frame(B, '00:00:00:00:00:00');
    t.see(z, 0, z.length);
    const probe = arpRequest(A, '0.0.0.0', '10.0.0.2');
    t.see(probe, 0, probe.length);
    expect(changed).toEqual(['02:00:00:00:00:0a ']);
    expect(sourceIp(ipv4Frame(B, A, '224.0.0.1', '10.0.0.1'), 0, 42)).toBeUndefined();
    const ns = neighborSolicit(A, '::', '2001:db8::2');
    expect(sourceIp(ns, 0, ns.length)).toBeUndefined();
    const ns2 = neighborSolicit(A, '2001:db8::1', '2001:db8::2');
    expect(sourceIp(ns2, 0, ns2.length)).toBe('2001:db8::1');
  });

  it('keeps the most recent addresses of a MAC (a router forwards many sources)', () => {
    const { t } = stations();
    for (let i = 1; i <= STATION_IPS_MAX + 3; i++) {
      const f = ipv4Frame(B, A, `10.0.1.${i}`, '10.0.0.2');
      t.see(f, 0, f.length);
      t.tick();
    }
    const ips = [...t.get(mac(A))!.ips];
    expect(ips).toHaveLength(STATION_IPS_MAX);
    expect(ips.at(-1)).toBe(`10.0.1.${STATION_IPS_MAX + 3}`);
    expect(ips).not.toContain('10.0.1.1');
  });

  it('expires a station not seen for the ageing time', () => {
    const { t, expired } = stations(3);
    const f = frame(B, A);
    t.see(f, 0, f.length);
    t.tick();
    t.tick();
    expect(expired).toEqual([]);
    t.see(f, 0, f.length); // seen again: the clock restarts
    t.tick();
    t.tick();
    expect(expired).toEqual([]);
    t.tick();
    expect(expired).toEqual([A]);
    expect(t.size).toBe(0);
  });
});

describe('proxyReply', () => {
  const neigh = new NeighTable();
  neigh.set('10.0.0.2', mac(B));
  neigh.set('2001:db8::2', mac(B));
  const out = Buffer.alloc(128);

  it('answers an ARP request for a known address as its owner would', () => {
    const req = arpRequest(A, '10.0.0.1', '10.0.0.2');
    const n = proxyReply(req, 0, req.length, neigh, out);
    expect(n).toBe(42);
    const r = out.subarray(0, n);
    expect(ethDst(r, 0)).toBe(mac(A));
    expect(ethSrc(r, 0)).toBe(mac(B));
    expect(r.readUInt16BE(12)).toBe(0x0806);
    expect(r.readUInt16BE(20)).toBe(2); // reply
    expect(formatMac(ethSrc(r, 16))).toBe(B); // sender hardware address (bytes 22..28)
    expect([...r.subarray(28, 32)]).toEqual([10, 0, 0, 2]);
    expect(formatMac(ethSrc(r, 26))).toBe(A); // target hardware address (bytes 32..38)
    expect([...r.subarray(38, 42)]).toEqual([10, 0, 0, 1]);
  });

  it('answers a neighbour solicitation with a valid advertisement (checksum, flags, option)', () => {
    const ns = neighborSolicit(A, '2001:db8::1', '2001:db8::2');
    const n = proxyReply(ns, 0, ns.length, neigh, out);
    expect(n).toBe(86);
    const r = out.subarray(0, n);
    expect(ethDst(r, 0)).toBe(mac(A));
    expect(ethSrc(r, 0)).toBe(mac(B));
    expect(r[14 + 7]).toBe(255); // hop limit
    expect(r.subarray(22, 38).equals(ns.subarray(62, 78))).toBe(true); // from the target
    expect(r.subarray(38, 54).equals(ns.subarray(22, 38))).toBe(true); // to the asker
    expect(r[54]).toBe(136);
    expect(r[58]! & 0x60).toBe(0x60);
    expect(r.subarray(62, 78).equals(ns.subarray(62, 78))).toBe(true);
    expect([r[78], r[79]]).toEqual([2, 1]);
    expect(formatMac(ethSrc(r, 74))).toBe(B);
    // the checksum over the whole message verifies (sums to zero with the field in place)
    const stored = r.readUInt16BE(56);
    r.writeUInt16BE(0, 56);
    expect(icmpv6Checksum(r, 22, 38, 54, 32)).toBe(stored);
  });

  it('does not answer unknown targets, probes, gratuitous ARP, DAD, or other frames', () => {
    const cases = [
      arpRequest(A, '10.0.0.1', '10.0.0.3'),
      arpRequest(A, '0.0.0.0', '10.0.0.2'),
      arpRequest(A, '10.0.0.2', '10.0.0.2'),
      neighborSolicit(A, '::', '2001:db8::2'),
      neighborSolicit(A, '2001:db8::1', '2001:db8::3'),
      ipv4Frame(B, A, '10.0.0.1', '10.0.0.2'),
      frame('ff:ff:ff:ff:ff:ff', A),
    ];
    for (const f of cases) expect(proxyReply(f, 0, f.length, neigh, out)).toBe(0);
    // truncated requests: never read past the frame
    const req = arpRequest(A, '10.0.0.1', '10.0.0.2');
    expect(proxyReply(req, 0, 41, neigh, out)).toBe(0);
    const ns = neighborSolicit(A, '2001:db8::1', '2001:db8::2');
    expect(proxyReply(ns, 0, 77, neigh, out)).toBe(0);
  });

  it('forgets an address only while it still maps to the MAC given', () => {
    const t = new NeighTable();
    t.set('10.0.0.5', mac(A));
    t.set('10.0.0.5', mac(B)); // moved
    t.delete('10.0.0.5', mac(A));
    expect(t.lookup('10.0.0.5')).toBe(mac(B));
    t.delete('10.0.0.5', mac(B));
    expect(t.lookup('10.0.0.5')).toBeUndefined();
  });
});
