// The IP/TCP/checksum/virtio-net modules of src/wire against the independent reference builders
// of test/helpers/tcp.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { csumReplace16, fold, sum16 } from '../../src/wire/checksum.js';
import { ipv4HeaderLen, ipv4IsFragment, ipv4PseudoSum, ipv4Text, ipv4TotalLen, isIpv4, IPV4_CSUM, IPV4_TOS } from '../../src/wire/ipv4.js';
import { ipv6PayloadLen, ipv6PseudoSum, ipv6Text, ipv6TrafficClass, isIpv6 } from '../../src/wire/ipv6.js';
import { isPartialTcp, tcpHeaderLen, IPPROTO_TCP } from '../../src/wire/tcp.js';
import { readVirtioNetHdr, VIRTIO_NET_HDR_LEN, writeVirtioNetHdr } from '../helpers/virtio-net.js';
import { csum, segment, superFrame } from '../helpers/tcp.js';

const seg = fc.record({
  seq: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.uint8Array({ minLength: 0, maxLength: 600 }).map((a) => Buffer.from(a)),
  v6: fc.boolean(),
  tos: fc.integer({ min: 0, max: 255 }),
  options: fc.integer({ min: 0, max: 10 }).map((n) => Buffer.alloc(n * 4, 1)),
});

describe('wire: IP, TCP, checksums, virtio-net', () => {
  it('header fields read back what the reference wrote', () => {
    fc.assert(
      fc.property(seg, (o) => {
        const f = segment(o);
        const l3 = 14;
        if (o.v6) {
          expect(isIpv6(f, l3) && !isIpv4(f, l3)).toBe(true);
          expect(ipv6PayloadLen(f, l3)).toBe(f.length - 54);
          expect(ipv6TrafficClass(f, l3)).toBe(o.tos);
          expect(ipv6Text(f, l3 + 8)).toBe('2001:db8:1::1');
        } else {
          expect(isIpv4(f, l3)).toBe(true);
          expect(ipv4HeaderLen(f, l3)).toBe(20);
          expect(ipv4TotalLen(f, l3)).toBe(f.length - 14);
          expect(ipv4IsFragment(f, l3)).toBe(false); // DF alone is not a fragment
          expect(ipv4Text(f, l3 + 12)).toBe('10.0.0.106');
        }
        const l4 = l3 + (o.v6 ? 40 : 20);
        expect(tcpHeaderLen(f, l4)).toBe(20 + o.options.length);
        // the pseudo-header sum plus the segment's own sum verifies (complete checksum)
        const l4len = f.length - l4;
        const pseudo = o.v6 ? ipv6PseudoSum(f, l3, IPPROTO_TCP, l4len) : ipv4PseudoSum(f, l3, IPPROTO_TCP, l4len);
        expect(fold(sum16(f, l4, l4len, pseudo))).toBe(0xffff);
        // complete checksum: not partial; the kernel's CHECKSUM_PARTIAL form: partial. (One
        // complete checksum in 65,536 equals the pseudo-header sum: the two forms are then the
        // same bytes, and completing it gives the same value, see wire/tcp.ts.)
        if (f.readUInt16BE(l4 + 16) !== fold(pseudo)) expect(isPartialTcp(f, 0, f.length)).toBe(false);
        expect(isPartialTcp(superFrame({ ...o, mss: 1400 }).frame, 0, f.length)).toBe(true);
      }),
    );
  });

  it('a complete checksum equal to the pseudo-header sum reads as partial, and completing it changes nothing', () => {
    // found by the property above (fast-check seed -1895054683): one complete checksum in 65,536
    const f = segment({ seq: 478939556, payload: Buffer.from([122, 173]), v6: true, tos: 0, options: Buffer.alloc(36, 1) });
    const l4 = 14 + 40;
    const l4len = f.length - l4;
    const pseudo = fold(ipv6PseudoSum(f, 14, IPPROTO_TCP, l4len));
    expect(f.readUInt16BE(l4 + 16)).toBe(pseudo);
    expect(isPartialTcp(f, 0, f.length)).toBe(true);
    // what the kernel does with CHECKSUM_PARTIAL: sum from the TCP header on, the field included
    const completed = ~fold(sum16(f, l4, l4len, 0)) & 0xffff;
    expect(completed).toBe(pseudo);
  });

  it('an incremental checksum update (RFC 1624) equals recomputing it', () => {
    fc.assert(
      fc.property(seg, fc.integer({ min: 0, max: 255 }), (o, tos) => {
        const f = segment({ ...o, v6: false });
        const old = (f[14]! << 8) | f[14 + IPV4_TOS]!;
        f[14 + IPV4_TOS] = tos;
        const c = csumReplace16(f.readUInt16BE(14 + IPV4_CSUM), old, (f[14]! << 8) | tos);
        f.writeUInt16BE(0, 14 + IPV4_CSUM);
        expect(c).toBe(~csum(f, 14, 20) & 0xffff);
      }),
    );
  });

  it('a fragment is MF or an offset, never DF alone', () => {
    const f = segment({ seq: 1, payload: Buffer.alloc(8) });
    f.writeUInt16BE(0x2000, 20); // MF
    expect(ipv4IsFragment(f, 14)).toBe(true);
    f.writeUInt16BE(0x0001, 20); // offset 8
    expect(ipv4IsFragment(f, 14)).toBe(true);
  });

  it('virtio-net headers round-trip, little-endian', () => {
    fc.assert(
      fc.property(fc.record({ flags: fc.nat(255), gsoType: fc.nat(255), hdrLen: fc.nat(0xffff), gsoSize: fc.nat(0xffff), csumStart: fc.nat(0xffff), csumOffset: fc.nat(0xffff) }), fc.nat(8), (h, off) => {
        const b = Buffer.alloc(off + VIRTIO_NET_HDR_LEN);
        writeVirtioNetHdr(b, off, h);
        expect(readVirtioNetHdr(b, off)).toEqual(h);
        expect(b.readUInt16LE(off + 4)).toBe(h.gsoSize);
      }),
    );
  });
});
