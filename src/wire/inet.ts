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

/** Adds the 16-bit big-endian words of `b[off, off+len)` to `sum` (an odd last byte is padded with zero). */
export function sum16(b: Uint8Array, off: number, len: number, sum: number): number {
  for (let i = 0; i + 1 < len; i += 2) sum += (b[off + i]! << 8) | b[off + i + 1]!;
  if ((len & 1) !== 0) sum += b[off + len - 1]! << 8;
  return sum;
}

/** Folds a one's-complement sum to 16 bits (the Internet checksum is its complement, RFC 1071). */
export function fold(sum: number): number {
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

// ---- ECN across the tunnel (RFC 6040 normal mode, as the kernel's INET_ECN_encapsulate and
// INET_ECN_decapsulate). ECN is the low two bits of the IPv4 TOS / IPv6 traffic class:
// 00 not-ECT, 10 ECT(0), 01 ECT(1), 11 CE.

/**
 * The offset of the inner frame's IP header, past any 802.1Q / 802.1ad tags, or -1 when the frame
 * is not IPv4/IPv6 with a whole fixed header. The version nibble at that offset says which: no
 * object per call (this runs per sent entry and per received ECN-marked datagram).
 */
function innerL3(b: Uint8Array, off: number, len: number): number {
  const end = off + len;
  if (len < ETH_HLEN) return -1;
  let type = (b[off + 12]! << 8) | b[off + 13]!;
  let l3 = off + ETH_HLEN;
  while ((type === 0x8100 || type === 0x88a8) && l3 + 4 <= end) {
    type = (b[l3 + 2]! << 8) | b[l3 + 3]!;
    l3 += 4;
  }
  if (type === ETH_P_IP && l3 + 20 <= end && b[l3]! >> 4 === 4) return l3;
  if (type === ETH_P_IPV6 && l3 + 40 <= end && b[l3]! >> 4 === 6) return l3;
  return -1;
}

/** The DS field (IPv4 TOS, IPv6 traffic class) of the IP header at `l3`. */
function dsAt(b: Uint8Array, l3: number): number {
  return b[l3]! >> 4 === 4 ? b[l3 + 1]! : ((b[l3]! & 0x0f) << 4) | (b[l3 + 1]! >> 4);
}

/** The inner IP packet's DS field, -1 for a frame that is not IP. */
export function innerDs(b: Uint8Array, off: number, len: number): number {
  const l3 = innerL3(b, off, len);
  return l3 < 0 ? -1 : dsAt(b, l3);
}

/** The ECN bits of the inner IP packet (0 for a frame that is not IP). */
export function innerEcn(b: Uint8Array, off: number, len: number): number {
  const ds = innerDs(b, off, len);
  return ds < 0 ? 0 : ds & 3;
}

/**
 * The inner IP packet's TTL / hop limit, for `ttl inherit` (as the kernel's ip_tunnel_get_ttl);
 * -1 for a frame that is not IP (the socket's default TTL applies, as the route's for the kernel).
 */
export function innerTtl(b: Uint8Array, off: number, len: number): number {
  const l3 = innerL3(b, off, len);
  if (l3 < 0) return -1;
  return b[l3]! >> 4 === 4 ? b[l3 + 8]! : b[l3 + 7]!;
}

/** The outer ECN for an inner packet's (RFC 6040 encapsulation: CE inside becomes ECT(0) outside). */
export function encapEcn(inner: number): number {
  return inner === 3 ? 2 : inner;
}

/** Outcome of `ecnDecapsulate`. */
export const EcnDecap = {
  /** Delivered (the inner mark updated where the outer one says so). */
  Ok: 0,
  /** Outer ECT on a not-ECT inner packet: delivered as it is (the kernel logs it). */
  NotEct: 1,
  /** Outer CE on a not-ECT inner packet: the congestion signal cannot be passed on; drop. */
  Drop: 2,
} as const;

/**
 * Applies the outer ECN mark (`outer`: the outer TOS / traffic class) to the inner IP packet in
 * place, as the kernel's INET_ECN_decapsulate: outer CE on an ECT inner packet sets CE; outer
 * ECT(1) on an ECT(0) inner packet gives ECT(1); outer CE on a not-ECT inner packet is a drop.
 * The IPv4 header checksum is updated incrementally (RFC 1624). Frames that are not IP pass.
 */
export function ecnDecapsulate(b: Uint8Array, off: number, len: number, outer: number): number {
  const o = outer & 3;
  if (o === 0) return EcnDecap.Ok;
  const l3 = innerL3(b, off, len);
  if (l3 < 0) return EcnDecap.Ok;
  const v4 = b[l3]! >> 4 === 4;
  const inner = dsAt(b, l3) & 3;
  if (inner === 0) return o === 3 ? EcnDecap.Drop : EcnDecap.NotEct;
  let want = inner;
  if (o === 3) want = 3;
  else if (o === 1 && inner === 2) want = 1;
  if (want === inner) return EcnDecap.Ok;
  if (v4) {
    const oldWord = (b[l3]! << 8) | b[l3 + 1]!;
    b[l3 + 1] = (b[l3 + 1]! & 0xfc) | want;
    const newWord = (b[l3]! << 8) | b[l3 + 1]!;
    const hc = (b[l3 + 10]! << 8) | b[l3 + 11]!;
    // HC' = ~(~HC + ~m + m')
    const s = fold((~hc & 0xffff) + (~oldWord & 0xffff) + newWord);
    const c = ~s & 0xffff;
    b[l3 + 10] = c >> 8;
    b[l3 + 11] = c & 0xff;
  } else {
    b[l3 + 1] = (b[l3 + 1]! & 0xcf) | (want << 4);
  }
  return EcnDecap.Ok;
}
