/**
 * IPv4 / IPv6 / TCP facts the TypeScript side needs about inner frames (the per-byte work is
 * native/offload.cc). Every read is bounds-checked against `len`.
 *
 *   IPv4 (RFC 791): version/IHL at 0, total length at 2, flags/fragment offset at 6, protocol at
 *   9, addresses at 12..20. IPv6 (RFC 8200): payload length at 4, next header at 6, addresses at
 *   8..40. TCP (RFC 9293): data offset at 12, checksum at 16.
 */
import { ETH_HLEN } from './ethernet.js';

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO_TCP = 6;
const TCP_CSUM_OFF = 16;

function sum16(b: Uint8Array, off: number, len: number, sum: number): number {
  for (let i = 0; i + 1 < len; i += 2) sum += (b[off + i]! << 8) | b[off + i + 1]!;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Whether `b[off, off+len)` is a TCP segment that a kernel on this host handed over with
 * CHECKSUM_PARTIAL: its TCP checksum field holds exactly the pseudo-header sum. A kernel VTEP
 * over veth with tx checksum offload sends a whole TCP super-frame in one (tunnel GSO) datagram
 * like this; a datagram reassembled from IP fragments never looks like it (its checksum is
 * complete), so the two can be told apart without trusting the length alone.
 */
export function isPartialTcp(b: Uint8Array, off: number, len: number): boolean {
  if (len < ETH_HLEN + 40) return false;
  const type = (b[off + 12]! << 8) | b[off + 13]!;
  const l3 = off + ETH_HLEN;
  let l4: number;
  let l4len: number;
  let pseudo: number;
  if (type === ETH_P_IP) {
    if (b[l3]! >> 4 !== 4 || b[l3 + 9] !== IPPROTO_TCP || ((b[l3 + 6]! & 0x3f) | b[l3 + 7]!) !== 0) return false;
    const ihl = (b[l3]! & 0x0f) * 4;
    if (ihl < 20 || ((b[l3 + 2]! << 8) | b[l3 + 3]!) !== len - ETH_HLEN) return false;
    l4 = l3 + ihl;
    l4len = len - ETH_HLEN - ihl;
    pseudo = sum16(b, l3 + 12, 8, IPPROTO_TCP + l4len);
  } else if (type === ETH_P_IPV6) {
    if (b[l3]! >> 4 !== 6 || b[l3 + 6] !== IPPROTO_TCP || ((b[l3 + 4]! << 8) | b[l3 + 5]!) !== len - ETH_HLEN - 40) return false;
    l4 = l3 + 40;
    l4len = len - ETH_HLEN - 40;
    pseudo = sum16(b, l3 + 8, 32, IPPROTO_TCP + l4len);
  } else {
    return false;
  }
  if (l4len < 20 || ((b[l4 + 12]! >> 4) * 4) > l4len) return false;
  return ((b[l4 + TCP_CSUM_OFF]! << 8) | b[l4 + TCP_CSUM_OFF + 1]!) === fold(pseudo);
}
