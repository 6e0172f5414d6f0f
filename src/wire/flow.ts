/**
 * Per-flow hash of an inner Ethernet frame, for the outer UDP source port (RFC 7348 section 5:
 * "it is recommended that the UDP source port number be calculated using a hash of fields from
 * the inner packet"), and the inner DS field for `tos inherit`.
 *
 * Hashed fields, as the kernel's flow dissector would take them: IPv4/IPv6 source and
 * destination, protocol, and TCP/UDP ports (unfragmented IPv4 only); any other frame hashes its
 * MACs and ethertype. Every read is bounds-checked against `len`.
 */
import { ETH_HLEN, ethType } from './ethernet.js';
import { encapEcn, innerDs } from './inet.js';
import { ETH_P_IP, IPV4_HLEN, IPV4_PROTO, IPV4_SRC, ipv4HeaderLen, ipv4IsFragment } from './ipv4.js';
import { ETH_P_IPV6, IPV6_HLEN, IPV6_NEXT, IPV6_SRC } from './ipv6.js';
import { IPPROTO_TCP, IPPROTO_UDP } from './tcp.js';
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnv(h: number, b: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ b[i]!, FNV_PRIME);
  return h;
}

/** A 32-bit unsigned hash of the frame's flow; equal for every frame of one flow. */
export function flowHash(b: Uint8Array, off: number, len: number): number {
  if (len < ETH_HLEN) return 0;
  const type = ethType(b, off);
  const l3 = off + ETH_HLEN;
  const end = off + len;
  let h = FNV_OFFSET;
  if (type === ETH_P_IP && end >= l3 + IPV4_HLEN) {
    const ihl = ipv4HeaderLen(b, l3);
    const proto = b[l3 + IPV4_PROTO]!;
    h = fnv(h, b, l3 + IPV4_SRC, l3 + IPV4_SRC + 8); // saddr, daddr
    h = Math.imul(h ^ proto, FNV_PRIME);
    if ((proto === IPPROTO_TCP || proto === IPPROTO_UDP) && !ipv4IsFragment(b, l3) && ihl >= IPV4_HLEN && end >= l3 + ihl + 4) h = fnv(h, b, l3 + ihl, l3 + ihl + 4);
  } else if (type === ETH_P_IPV6 && end >= l3 + IPV6_HLEN) {
    const next = b[l3 + IPV6_NEXT]!;
    h = fnv(h, b, l3 + IPV6_SRC, l3 + IPV6_SRC + 32);
    h = Math.imul(h ^ next, FNV_PRIME);
    if ((next === IPPROTO_TCP || next === IPPROTO_UDP) && end >= l3 + IPV6_HLEN + 4) h = fnv(h, b, l3 + IPV6_HLEN, l3 + IPV6_HLEN + 4);
  } else {
    h = fnv(h, b, off, off + ETH_HLEN);
  }
  // final avalanche (murmur3 fmix32) so nearby flows spread across a small pool
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The outer DS field for `tos inherit`: the inner one (IPv4 TOS, IPv6 traffic class, past VLAN
 * tags), with ECN encapsulated as RFC 6040 normal mode: CE inside becomes ECT(0) outside. -1 when
 * the frame is not IP.
 */
export function innerDsfield(b: Uint8Array, off: number, len: number): number {
  const ds = innerDs(b, off, len);
  return ds < 0 ? -1 : (ds & 0xfc) | encapEcn(ds & 3);
}
