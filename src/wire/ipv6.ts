/**
 * IPv6 fixed header (RFC 8200), as much as a VTEP reads of inner packets. Offsets are from the
 * start of the IP header (`l3`); the callers have checked that IPV6_HLEN bytes are there.
 *
 *   | version(4) | traffic class(8) | flow label(20) |
 *   | payload length(16, at 4) | next header(6) | hop limit(7) |
 *   | source address (16 bytes at 8) | destination address (16 bytes at 24) |
 */
import { Address6 } from 'ip-address';
import { sum16 } from './checksum.js';

export const ETH_P_IPV6 = 0x86dd;
export const IPV6_HLEN = 40;
export const IPV6_PLEN = 4;
export const IPV6_NEXT = 6;
export const IPV6_HOPS = 7;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;

/** Version 6 in the first nibble. */
export function isIpv6(b: Uint8Array, l3: number): boolean {
  return b[l3]! >> 4 === 6;
}

export function ipv6PayloadLen(b: Uint8Array, l3: number): number {
  return (b[l3 + IPV6_PLEN]! << 8) | b[l3 + IPV6_PLEN + 1]!;
}

/** The traffic class, which straddles the first two bytes. */
export function ipv6TrafficClass(b: Uint8Array, l3: number): number {
  return ((b[l3]! & 0x0f) << 4) | (b[l3 + 1]! >> 4);
}

export function setIpv6TrafficClass(b: Uint8Array, l3: number, tc: number): void {
  b[l3] = (b[l3]! & 0xf0) | (tc >> 4);
  b[l3 + 1] = (b[l3 + 1]! & 0x0f) | ((tc & 0x0f) << 4);
}

/** The pseudo-header sum (RFC 8200 8.1) for an upper-layer payload of `l4len` bytes of `proto`, unfolded. */
export function ipv6PseudoSum(b: Uint8Array, l3: number, proto: number, l4len: number): number {
  return sum16(b, l3 + IPV6_SRC, 32, proto + l4len);
}

/** Canonical text (RFC 5952) of the 16-byte address at `off`. */
export function ipv6Text(b: Uint8Array, off: number): string {
  return Address6.fromByteArray(Array.from(b.subarray(off, off + 16))).correctForm();
}
