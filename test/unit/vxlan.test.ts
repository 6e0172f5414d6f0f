import { describe, expect, it } from 'vitest';
import {
  checkVxlan,
  emitVxlan,
  emitVxlanRepr,
  isValidVni,
  parseVxlan,
  VXLAN_FLAG_I,
  VXLAN_HLEN,
  VXLAN_PORT_IANA,
  VXLAN_PORT_LINUX,
  vxlanVni,
  VxlanCheck,
} from '../../src/wire/vxlan.js';
import { ethDst, ethSrc, ETH_HLEN, formatMac } from '../../src/wire/ethernet.js';
import { kernelPackets } from '../helpers/vectors.js';

describe('kernel vectors', () => {
  const packets = kernelPackets();

  it('has captures for several VNIs and both ports', () => {
    expect(new Set(packets.map((p) => p.vni))).toEqual(new Set([1, 200, 16777215]));
    expect(new Set(packets.map((p) => p.outer.dstPort))).toEqual(new Set([VXLAN_PORT_IANA, VXLAN_PORT_LINUX]));
  });

  it.each(packets.map((p, i) => [`${i} ${p.capture} ${p.summary}`, p] as const))('decodes %s', (_name, p) => {
    const header = Buffer.from(p.vxlanHeader, 'hex');
    const inner = Buffer.from(p.innerFrame, 'hex');
    const d = Buffer.concat([header, inner]);
    expect(checkVxlan(d, 0, d.length, true)).toBe(VxlanCheck.Ok);
    expect(vxlanVni(d, 0)).toBe(p.vni);
    // inner frame: exact bytes, MACs from the seed experiment (02:00:00:00:00:0a / 0b) or group
    expect(d.subarray(VXLAN_HLEN).equals(inner)).toBe(true);
    expect(inner.length).toBeGreaterThanOrEqual(ETH_HLEN);
    expect(['02:00:00:00:00:0a', '02:00:00:00:00:0b']).toContain(formatMac(ethSrc(d, VXLAN_HLEN)));
    expect(formatMac(ethDst(d, VXLAN_HLEN))).toBe(p.innerFrame.slice(0, 12).replace(/(..)(?!$)/g, '$1:'));
    // re-encode the header byte-exactly
    const out = Buffer.alloc(VXLAN_HLEN, 0xa5);
    emitVxlan(out, 0, p.vni);
    expect(out.toString('hex')).toBe(p.vxlanHeader);
  });
});

describe('checkVxlan', () => {
  const h = (hex: string) => Buffer.from(hex, 'hex');
  const cases: Array<[string, Buffer, boolean, VxlanCheck]> = [
    ['valid', h('0800000000000100'), false, VxlanCheck.Ok],
    ['valid strict', h('0800000000000100'), true, VxlanCheck.Ok],
    ['empty', h(''), false, VxlanCheck.Truncated],
    ['7 bytes', h('08000000000001'), false, VxlanCheck.Truncated],
    ['I flag clear', h('0000000000000100'), false, VxlanCheck.NoIFlag],
    ['I flag clear, others set', h('f700000000000100'), true, VxlanCheck.NoIFlag],
    ['reserved flag bit, ignore', h('0c00000000000100'), false, VxlanCheck.Ok],
    ['reserved flag bit, strict', h('0c00000000000100'), true, VxlanCheck.ReservedBits],
    ['reserved 24 bits, ignore', h('0800000100000100'), false, VxlanCheck.Ok],
    ['reserved 24 bits, strict', h('0880000000000100'), true, VxlanCheck.ReservedBits],
    ['last byte, ignore', h('08000000000001ff'), false, VxlanCheck.Ok],
    ['last byte, strict', h('0800000000000101'), true, VxlanCheck.ReservedBits],
    ['GBP-style flags (0x88), strict', h('8800000000000100'), true, VxlanCheck.ReservedBits],
  ];
  it.each(cases)('%s', (_name, buf, strict, want) => {
    expect(checkVxlan(buf, 0, buf.length, strict)).toBe(want);
  });

  it('bounds are relative to off and end, never to the buffer start', () => {
    const b = Buffer.alloc(20, 0xa5);
    emitVxlan(b, 9, 77);
    expect(checkVxlan(b, 9, 17, true)).toBe(VxlanCheck.Ok);
    expect(checkVxlan(b, 9, 16, true)).toBe(VxlanCheck.Truncated);
    expect(checkVxlan(b, 13, 21, true)).toBe(VxlanCheck.Truncated); // end past the buffer
    expect(checkVxlan(b, -1, 7, true)).toBe(VxlanCheck.Truncated);
    expect(vxlanVni(b, 9)).toBe(77);
  });
});

describe('emitVxlan', () => {
  it.each([
    [0, '0800000000000000'],
    [1, '0800000000000100'],
    [200, '080000000000c800'],
    [0x123456, '0800000012345600'],
    [0xffffff, '08000000ffffff00'],
  ])('VNI %i -> %s at a non-zero offset, touching only its 8 bytes', (v, hex) => {
    const b = Buffer.alloc(3 + VXLAN_HLEN + 3, 0xa5);
    emitVxlan(b, 3, v);
    expect(b.subarray(3, 3 + VXLAN_HLEN).toString('hex')).toBe(hex);
    expect([...b.subarray(0, 3), ...b.subarray(3 + VXLAN_HLEN)]).toEqual([0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5]);
  });

  it('clears reserved bits left in the buffer', () => {
    const b = Buffer.alloc(VXLAN_HLEN, 0xff);
    emitVxlan(b, 0, 5);
    expect(b.toString('hex')).toBe('0800000000000500');
  });
});

describe('VxlanRepr', () => {
  it('parse and emit are inverse, reserved fields included', () => {
    const repr = { flags: VXLAN_FLAG_I | 0x80, vni: 4242, reserved1: 0xabcdef, reserved2: 0x11 };
    const b = Buffer.alloc(12, 0xa5);
    emitVxlanRepr(repr, b, 2);
    expect(parseVxlan(b, 2)).toEqual(repr);
    expect(parseVxlan(Buffer.from('0000000000000100', 'hex'))).toBeUndefined();
  });
});

describe('isValidVni', () => {
  it.each([
    [0, true],
    [1, true],
    [16777215, true],
    [16777216, false],
    [-1, false],
    [1.5, false],
    [NaN, false],
    ['1', false],
  ])('%s -> %s', (v, ok) => expect(isValidVni(v)).toBe(ok));
});
