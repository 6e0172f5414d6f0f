import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { flowHash, innerDsfield } from '../../src/wire/flow.js';

function ipv4Udp(src: string, dst: string, sport: number, dport: number, tos = 0, payload = 8): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + payload, 0xa5);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f[15] = tos;
  f.writeUInt16BE(0, 14 + 6);
  f[14 + 9] = 17;
  Buffer.from(src.split('.').map(Number)).copy(f, 14 + 12);
  Buffer.from(dst.split('.').map(Number)).copy(f, 14 + 16);
  f.writeUInt16BE(sport, 34);
  f.writeUInt16BE(dport, 36);
  return f;
}

describe('flowHash', () => {
  it('is the same for every frame of a flow, whatever the payload and MACs', () => {
    const a = ipv4Udp('10.0.0.1', '10.0.0.2', 1000, 53, 0, 8);
    const b = ipv4Udp('10.0.0.1', '10.0.0.2', 1000, 53, 0, 400);
    b.fill(0x11, 0, 12); // other MACs
    b.fill(0x22, 42); // other payload
    expect(flowHash(a, 0, a.length)).toBe(flowHash(b, 0, b.length));
  });

  it('differs between flows (ports, addresses)', () => {
    const base = flowHash(ipv4Udp('10.0.0.1', '10.0.0.2', 1000, 53), 0, 50);
    expect(flowHash(ipv4Udp('10.0.0.1', '10.0.0.2', 1001, 53), 0, 50)).not.toBe(base);
    expect(flowHash(ipv4Udp('10.0.0.3', '10.0.0.2', 1000, 53), 0, 50)).not.toBe(base);
  });

  it('spreads 1000 flows over a 16-socket pool', () => {
    const buckets = new Array<number>(16).fill(0);
    for (let p = 0; p < 1000; p++) {
      const f = ipv4Udp('10.0.0.1', '10.0.0.2', 20000 + p, 80);
      buckets[flowHash(f, 0, f.length) % 16]!++;
    }
    expect(Math.min(...buckets)).toBeGreaterThan(30);
    expect(Math.max(...buckets)).toBeLessThan(110);
  });

  it('never reads past len and never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.integer({ min: 0, max: 80 }), (bytes, len) => {
        const n = Math.min(len, bytes.length);
        // a copy whose bytes past n differ must hash the same: nothing beyond len is read
        const other = Uint8Array.from(bytes);
        for (let i = n; i < other.length; i++) other[i] = other[i]! ^ 0xff;
        expect(flowHash(bytes, 0, n)).toBe(flowHash(other, 0, n));
        innerDsfield(bytes, 0, n);
      }),
    );
  });
});

describe('innerDsfield', () => {
  it.each([
    ['IPv4 DSCP EF', ipv4Udp('10.0.0.1', '10.0.0.2', 1, 2, 0xb8), 0xb8],
    ['IPv4 ECT(0) kept', ipv4Udp('10.0.0.1', '10.0.0.2', 1, 2, 0x02), 0x02],
    ['IPv4 CE becomes ECT(0) (RFC 6040)', ipv4Udp('10.0.0.1', '10.0.0.2', 1, 2, 0xbb), 0xba],
  ])('%s', (_n, f, want) => expect(innerDsfield(f, 0, f.length)).toBe(want));

  it('IPv6 traffic class; -1 for ARP', () => {
    const v6 = Buffer.alloc(14 + 40);
    v6.writeUInt16BE(0x86dd, 12);
    v6[14] = 0x6b; // version 6, TC high nibble 0xb
    v6[15] = 0x80; // TC low nibble 0x8
    expect(innerDsfield(v6, 0, v6.length)).toBe(0xb8);
    const arp = Buffer.alloc(42);
    arp.writeUInt16BE(0x0806, 12);
    expect(innerDsfield(arp, 0, arp.length)).toBe(-1);
  });
});
