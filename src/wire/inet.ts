/**
 * The inner IP packet across the tunnel: its DS field, ECN and TTL as the outer header takes
 * them on encapsulation, and ECN decapsulation (RFC 6040 normal mode, as the kernel's
 * INET_ECN_encapsulate and INET_ECN_decapsulate). ECN is the low two bits of the IPv4 TOS / IPv6
 * traffic class: 00 not-ECT, 10 ECT(0), 01 ECT(1), 11 CE. Every read is bounds-checked against `len`.
 */
import { ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ethType, VLAN_HLEN } from './ethernet.js';
import { csumReplace16 } from './checksum.js';
import { ETH_P_IP, IPV4_CSUM, IPV4_HLEN, IPV4_TOS, IPV4_TTL, isIpv4 } from './ipv4.js';
import { ETH_P_IPV6, IPV6_HLEN, IPV6_HOPS, ipv6TrafficClass, isIpv6, setIpv6TrafficClass } from './ipv6.js';

/**
 * The offset of the inner frame's IP header, past any 802.1Q / 802.1ad tags, or -1 when the frame
 * is not IPv4/IPv6 with a whole fixed header. The version nibble at that offset says which: no
 * object per call (this runs per sent entry and per received ECN-marked datagram).
 */
function innerL3(b: Uint8Array, off: number, len: number): number {
  const end = off + len;
  if (len < ETH_HLEN) return -1;
  let type = ethType(b, off);
  let l3 = off + ETH_HLEN;
  while ((type === ETH_P_8021Q || type === ETH_P_8021AD) && l3 + VLAN_HLEN <= end) {
    type = (b[l3 + 2]! << 8) | b[l3 + 3]!;
    l3 += VLAN_HLEN;
  }
  if (type === ETH_P_IP && l3 + IPV4_HLEN <= end && isIpv4(b, l3)) return l3;
  if (type === ETH_P_IPV6 && l3 + IPV6_HLEN <= end && isIpv6(b, l3)) return l3;
  return -1;
}

/** The DS field (IPv4 TOS, IPv6 traffic class) of the IP header at `l3`. */
function dsAt(b: Uint8Array, l3: number): number {
  return isIpv4(b, l3) ? b[l3 + IPV4_TOS]! : ipv6TrafficClass(b, l3);
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
  return isIpv4(b, l3) ? b[l3 + IPV4_TTL]! : b[l3 + IPV6_HOPS]!;
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
  const v4 = isIpv4(b, l3);
  const inner = dsAt(b, l3) & 3;
  if (inner === 0) return o === 3 ? EcnDecap.Drop : EcnDecap.NotEct;
  let want = inner;
  if (o === 3) want = 3;
  else if (o === 1 && inner === 2) want = 1;
  if (want === inner) return EcnDecap.Ok;
  if (v4) {
    const oldWord = (b[l3]! << 8) | b[l3 + IPV4_TOS]!;
    b[l3 + IPV4_TOS] = (b[l3 + IPV4_TOS]! & 0xfc) | want;
    const c = csumReplace16((b[l3 + IPV4_CSUM]! << 8) | b[l3 + IPV4_CSUM + 1]!, oldWord, (b[l3]! << 8) | b[l3 + IPV4_TOS]!);
    b[l3 + IPV4_CSUM] = c >> 8;
    b[l3 + IPV4_CSUM + 1] = c & 0xff;
  } else {
    setIpv6TrafficClass(b, l3, (ipv6TrafficClass(b, l3) & 0xfc) | want);
  }
  return EcnDecap.Ok;
}
