import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkVxlan, emitVxlan, VXLAN_HLEN, VXLAN_VNI_MAX, vxlanVni, VxlanCheck } from '../../src/wire/vxlan.js';
import { formatMac, macAt, parseMac, writeMac } from '../../src/wire/ethernet.js';

describe('VXLAN codec properties', () => {
  it('emit -> check -> read round-trips at any offset with trailing garbage', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: VXLAN_VNI_MAX }),
        fc.uint8Array({ maxLength: 40 }),
        fc.uint8Array({ maxLength: 40 }),
        fc.boolean(),
        (vni, before, after, strict) => {
          const buf = Buffer.concat([before, Buffer.alloc(VXLAN_HLEN, 0xa5), after]);
          const off = before.length;
          emitVxlan(buf, off, vni);
          expect(checkVxlan(buf, off, buf.length, strict)).toBe(VxlanCheck.Ok);
          expect(vxlanVni(buf, off)).toBe(vni);
          expect(buf.subarray(0, off).equals(before)).toBe(true);
          expect(buf.subarray(off + VXLAN_HLEN).equals(after)).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('arbitrary bytes and bounds never throw and never read out of range', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: -8, max: 80 }), fc.integer({ min: -8, max: 80 }), fc.boolean(), (bytes, off, end, strict) => {
        const r = checkVxlan(bytes, off, end, strict);
        expect([VxlanCheck.Ok, VxlanCheck.Truncated, VxlanCheck.NoIFlag, VxlanCheck.ReservedBits]).toContain(r);
        if (r === VxlanCheck.Ok) {
          expect(off >= 0 && end <= bytes.length && end - off >= VXLAN_HLEN).toBe(true);
          const v = vxlanVni(bytes, off);
          expect(Number.isInteger(v) && v >= 0 && v <= VXLAN_VNI_MAX).toBe(true);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it('strict accepts exactly the headers ignore accepts with zero reserved bits', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), (h) => {
        const loose = checkVxlan(h, 0, 8, false);
        const strict = checkVxlan(h, 0, 8, true);
        const reservedZero = (h[0]! & ~0x08) === 0 && h[1] === 0 && h[2] === 0 && h[3] === 0 && h[7] === 0;
        expect(loose).toBe((h[0]! & 0x08) !== 0 ? VxlanCheck.Ok : VxlanCheck.NoIFlag);
        expect(strict === VxlanCheck.Ok).toBe(loose === VxlanCheck.Ok && reservedZero);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('MAC properties', () => {
  it('key <-> bytes <-> text round-trip', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (b) => {
        const k = macAt(b, 0);
        expect(Number.isSafeInteger(k)).toBe(true);
        const out = new Uint8Array(6);
        writeMac(out, 0, k);
        expect([...out]).toEqual([...b]);
        expect(parseMac(formatMac(k))).toBe(k);
      }),
    );
  });
});
