/**
 * Neighbour discovery on the wire: ARP for IPv4 over Ethernet (RFC 826) and IPv6 neighbour
 * solicitation/advertisement (RFC 4861), as much as ARP/ND suppression needs: recognise a
 * request, find its addresses, and write the owner's answer. Offsets are from the start of the
 * Ethernet frame; every read is checked against the frame's length.
 *
 *   ARP:  htype 1, ptype 0x0800, hlen 6, plen 4 at 14..20, op at 20, sender MAC/IP at 22/28,
 *         target MAC/IP at 32/38: 42 bytes.
 *   NS/NA: IPv6 header at 14 (source at 22, destination at 38, next header 58, hop limit 255),
 *         ICMPv6 at 54 (type, code, checksum, flags), target address at 62, options from 78.
 */
import { ETH_HLEN, ethType, writeMac } from './ethernet.js';
import { fold, sum16 } from './checksum.js';
import { ETH_P_IP } from './ipv4.js';
import { ETH_P_IPV6, IPV6_HLEN, IPV6_HOPS, IPV6_NEXT, isIpv6 } from './ipv6.js';

export const ETH_P_ARP = 0x0806;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;
/** An ARP packet for IPv4 over Ethernet in its frame, without padding. */
export const ARP_FRAME_LEN = 42;
export const IPPROTO_ICMPV6 = 58;
export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
/** Ethernet + IPv6 + NA (24) + target link-layer address option (8). */
export const NA_FRAME_LEN = ETH_HLEN + IPV6_HLEN + 32;

/** Offsets in the frame. */
export const ARP_OP = 20;
export const ARP_SHA = 22;
export const ARP_SPA = 28;
export const ARP_THA = 32;
export const ARP_TPA = 38;
export const IP6_SRC = 22;
export const IP6_DST = 38;
export const ICMP6 = 54;
export const ND_TARGET = 62;

/** An ARP packet for IPv4 over Ethernet, whole. */
export function isArpIpv4(b: Uint8Array, off: number, len: number): boolean {
  const a = off + ETH_HLEN;
  // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4
  return len >= ARP_FRAME_LEN && ethType(b, off) === ETH_P_ARP && b[a] === 0 && b[a + 1] === 1 && ((b[a + 2]! << 8) | b[a + 3]!) === ETH_P_IP && b[a + 4] === 6 && b[a + 5] === 4;
}

export function arpOp(b: Uint8Array, off: number): number {
  return (b[off + ARP_OP]! << 8) | b[off + ARP_OP + 1]!;
}

function zero(b: Uint8Array, at: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (b[at + i] !== 0) return false;
  return true;
}

function same(b: Uint8Array, x: number, y: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (b[x + i] !== b[y + i]) return false;
  return true;
}

/**
 * An ARP request that asks a question another station may answer: not a probe (sender 0.0.0.0,
 * RFC 5227) and not a gratuitous announcement (sender = target).
 */
export function isArpQuestion(b: Uint8Array, off: number, len: number): boolean {
  return isArpIpv4(b, off, len) && arpOp(b, off) === ARP_REQUEST && !zero(b, off + ARP_SPA, 4) && !same(b, off + ARP_SPA, off + ARP_TPA, 4);
}

/** Writes to `out` the reply `owner` (a MAC key) would give to the ARP request at `b[off..]`; returns its length. */
export function writeArpReply(out: Uint8Array, b: Uint8Array, off: number, owner: number): number {
  out.set(b.subarray(off + 6, off + 12), 0); // to the asker
  writeMac(out, 6, owner);
  out.set([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, ARP_REPLY], 12);
  writeMac(out, ARP_SHA, owner);
  out.set(b.subarray(off + ARP_TPA, off + ARP_TPA + 4), ARP_SPA);
  out.set(b.subarray(off + ARP_SHA, off + ARP_SHA + 6), ARP_THA);
  out.set(b.subarray(off + ARP_SPA, off + ARP_SPA + 4), ARP_TPA);
  return ARP_FRAME_LEN;
}

/**
 * An IPv6 neighbour solicitation (no extension headers: NS carries none) from a station with an
 * address (not duplicate address detection, whose source is ::) for a unicast target.
 */
export function isNeighborQuestion(b: Uint8Array, off: number, len: number): boolean {
  const ip = off + ETH_HLEN;
  return (
    len >= ETH_HLEN + IPV6_HLEN + 24 &&
    ethType(b, off) === ETH_P_IPV6 &&
    isIpv6(b, ip) &&
    b[ip + IPV6_NEXT] === IPPROTO_ICMPV6 &&
    b[ip + IPV6_HOPS] === 255 &&
    b[off + ICMP6] === ND_NEIGHBOR_SOLICIT &&
    b[off + ICMP6 + 1] === 0 &&
    !zero(b, off + IP6_SRC, 16) &&
    b[off + ND_TARGET] !== 0xff
  );
}

/**
 * Writes to `out` the advertisement `owner` would send for the solicitation at `b[off..]`:
 * solicited and override set, hop limit 255, the target link-layer address option, a complete
 * checksum. Returns its length.
 */
export function writeNeighborAdvert(out: Uint8Array, b: Uint8Array, off: number, owner: number): number {
  out.set(b.subarray(off + 6, off + 12), 0);
  writeMac(out, 6, owner);
  out.set([0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, IPPROTO_ICMPV6, 255], 12);
  out.set(b.subarray(off + ND_TARGET, off + ND_TARGET + 16), IP6_SRC); // from the target
  out.set(b.subarray(off + IP6_SRC, off + IP6_SRC + 16), IP6_DST); // to the asker
  out.set([ND_NEIGHBOR_ADVERT, 0, 0, 0, 0x60, 0, 0, 0], ICMP6);
  out.set(b.subarray(off + ND_TARGET, off + ND_TARGET + 16), ND_TARGET);
  out[ND_TARGET + 16] = 2; // target link-layer address, 8 bytes
  out[ND_TARGET + 17] = 1;
  writeMac(out, ND_TARGET + 18, owner);
  const sum = icmpv6Checksum(out, IP6_SRC, IP6_DST, ICMP6, 32);
  out[ICMP6 + 2] = sum >> 8;
  out[ICMP6 + 3] = sum & 0xff;
  return NA_FRAME_LEN;
}

/** The ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header and `len` bytes at `msg` (its field zero). */
export function icmpv6Checksum(b: Uint8Array, src: number, dst: number, msg: number, len: number): number {
  const pseudo = sum16(b, dst, 16, sum16(b, src, 16, len + IPPROTO_ICMPV6));
  return ~fold(sum16(b, msg, len, pseudo)) & 0xffff;
}
