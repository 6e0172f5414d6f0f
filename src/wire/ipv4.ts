/**
 * IPv4 header (RFC 791), as much as a VTEP reads of inner packets. Offsets are from the start
 * of the IP header (`l3`); the callers have checked that IPV4_HLEN bytes are there.
 *
 *    0       4       8              16      19              31
 *   +-------+-------+--------------+-------+----------------+
 *   |version|  IHL  |   DS (TOS)   |      total length      |
 *   |        identification        |flags| fragment offset  |
 *   |     TTL       |   protocol   |    header checksum     |
 *   |                   source address (12)                 |
 *   |                destination address (16)               |
 */
import { sum16 } from './checksum.js';

export const ETH_P_IP = 0x0800;
export const IPV4_HLEN = 20;
export const IPV4_TOS = 1;
export const IPV4_TOT_LEN = 2;
export const IPV4_ID = 4;
export const IPV4_FRAG = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTO = 9;
export const IPV4_CSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;

/** Version 4 in the first nibble. */
export function isIpv4(b: Uint8Array, l3: number): boolean {
  return b[l3]! >> 4 === 4;
}

/** Header length in bytes (IHL * 4). */
export function ipv4HeaderLen(b: Uint8Array, l3: number): number {
  return (b[l3]! & 0x0f) * 4;
}

export function ipv4TotalLen(b: Uint8Array, l3: number): number {
  return (b[l3 + IPV4_TOT_LEN]! << 8) | b[l3 + IPV4_TOT_LEN + 1]!;
}

/** A fragment: MF set or a fragment offset (DF alone is not). */
export function ipv4IsFragment(b: Uint8Array, l3: number): boolean {
  return ((b[l3 + IPV4_FRAG]! & 0x3f) | b[l3 + IPV4_FRAG + 1]!) !== 0;
}

/** The pseudo-header sum (RFC 9293 3.1) for an L4 payload of `l4len` bytes of `proto`, unfolded. */
export function ipv4PseudoSum(b: Uint8Array, l3: number, proto: number, l4len: number): number {
  return sum16(b, l3 + IPV4_SRC, 8, proto + l4len);
}

/** Dotted-quad text of the 4-byte address at `off`. */
export function ipv4Text(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}
