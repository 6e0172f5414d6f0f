import { describe, expect, it } from 'vitest';
import {
  ethDst,
  ethSrc,
  ethType,
  formatMac,
  isBroadcastMac,
  isMulticastMac,
  isValidUnicastMac,
  macAt,
  MAC_BROADCAST,
  parseMac,
  randomMac,
  writeMac,
} from '../../src/wire/ethernet.js';

describe('MAC keys', () => {
  it.each([
    ['00:00:00:00:00:00', 0],
    ['02:00:00:00:00:0a', 0x02000000000a],
    ['ff:ff:ff:ff:ff:ff', MAC_BROADCAST],
    ['01:00:5e:00:00:fb', 0x01005e0000fb],
    ['33:33:ff:00:00:0a', 0x3333ff00000a],
    ['AB-CD-EF-01-23-45', 0xabcdef012345],
  ])('parse %s', (text, key) => {
    expect(parseMac(text)).toBe(key);
    expect(formatMac(key)).toBe(text.toLowerCase().replace(/-/g, ':'));
  });

  it.each(['', '02:00:00:00:00', '02:00:00:00:00:0a:0b', 'zz:00:00:00:00:00', '020000000000', '02:00:00:00:00:0g'])('rejects %j', (t) => {
    expect(parseMac(t)).toBeUndefined();
  });

  it('reads and writes keys at any offset', () => {
    const b = Buffer.alloc(10, 0xa5);
    writeMac(b, 3, 0xfedcba987654);
    expect(b.toString('hex')).toBe('a5a5a5fedcba987654a5');
    expect(macAt(b, 3)).toBe(0xfedcba987654);
  });

  it.each([
    [0x02000000000a, false, false, true],
    [0x01005e0000fb, true, false, false],
    [0x3333ff00000a, true, false, false],
    [MAC_BROADCAST, true, true, false],
    [0, false, false, false],
  ])('%s: multicast %s broadcast %s unicast-valid %s', (k, mc, bc, uc) => {
    expect(isMulticastMac(k)).toBe(mc);
    expect(isBroadcastMac(k)).toBe(bc);
    expect(isValidUnicastMac(k)).toBe(uc);
  });

  it('random MACs are unicast and locally administered', () => {
    for (let i = 0; i < 100; i++) {
      const k = randomMac();
      expect(isValidUnicastMac(k)).toBe(true);
      expect(Math.floor(k / 2 ** 40) & 0x02).toBe(0x02);
    }
  });

  it('header accessors', () => {
    const f = Buffer.from('ffffffffffff02000000000a0806', 'hex');
    expect(ethDst(f, 0)).toBe(MAC_BROADCAST);
    expect(ethSrc(f, 0)).toBe(0x02000000000a);
    expect(ethType(f, 0)).toBe(0x0806);
  });
});
