/**
 * TCP header (RFC 9293) and the transport protocol numbers, as much as TypeScript reads; the
 * per-byte TCP work (segmentation, coalescing, checksums) is native/offload.cc. Offsets are from
 * the start of the TCP header (`l4`).
 *
 *   | source port | destination port | sequence (4) | acknowledgment (8) |
 *   | data offset (12, high nibble) | flags (13) | window (14) | checksum (16) | urgent (18) |
 */
import { ETH_HLEN, ethType } from './ethernet.js';
import { fold } from './checksum.js';
import { ETH_P_IP, IPV4_PROTO, ipv4HeaderLen, ipv4IsFragment, ipv4PseudoSum, ipv4TotalLen, isIpv4 } from './ipv4.js';
import { ETH_P_IPV6, IPV6_HLEN, IPV6_NEXT, ipv6PayloadLen, ipv6PseudoSum, isIpv6 } from './ipv6.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const TCP_HLEN_MIN = 20;
export const TCP_DOFF = 12;
export const TCP_CSUM = 16;

/** Header length in bytes (data offset * 4). */
export function tcpHeaderLen(b: Uint8Array, l4: number): number {
  return (b[l4 + TCP_DOFF]! >> 4) * 4;
}

/**
 * Whether `b[off, off+len)` is a TCP segment that a kernel on this host handed over with
 * CHECKSUM_PARTIAL: its TCP checksum field holds exactly the pseudo-header sum. A kernel VTEP
 * over veth with tx checksum offload sends a whole TCP super-frame in one (tunnel GSO) datagram
 * like this; a datagram reassembled from IP fragments has a complete checksum, so the two can be
 * told apart without trusting the length alone. The one complete checksum in 65,536 that equals
 * the pseudo-header sum reads as partial: the bytes are the same either way, and completing the
 * checksum gives back the same value.
 */
export function isPartialTcp(b: Uint8Array, off: number, len: number): boolean {
  if (len < ETH_HLEN + IPV6_HLEN) return false;
  const type = ethType(b, off);
  const l3 = off + ETH_HLEN;
  let l4: number;
  let pseudo: number;
  if (type === ETH_P_IP) {
    if (!isIpv4(b, l3) || b[l3 + IPV4_PROTO] !== IPPROTO_TCP || ipv4IsFragment(b, l3)) return false;
    const ihl = ipv4HeaderLen(b, l3);
    if (ihl < 20 || ipv4TotalLen(b, l3) !== len - ETH_HLEN) return false;
    l4 = l3 + ihl;
    pseudo = ipv4PseudoSum(b, l3, IPPROTO_TCP, len - ETH_HLEN - ihl);
  } else if (type === ETH_P_IPV6) {
    if (!isIpv6(b, l3) || b[l3 + IPV6_NEXT] !== IPPROTO_TCP || ipv6PayloadLen(b, l3) !== len - ETH_HLEN - IPV6_HLEN) return false;
    l4 = l3 + IPV6_HLEN;
    pseudo = ipv6PseudoSum(b, l3, IPPROTO_TCP, len - ETH_HLEN - IPV6_HLEN);
  } else {
    return false;
  }
  const l4len = off + len - l4;
  if (l4len < TCP_HLEN_MIN || tcpHeaderLen(b, l4) > l4len) return false;
  return ((b[l4 + TCP_CSUM]! << 8) | b[l4 + TCP_CSUM + 1]!) === fold(pseudo);
}
