/**
 * The stations behind a TAP and the neighbours of the overlay: what a control plane publishes
 * (MAC routes, as EVPN type-2 routes carry a MAC and its IPs) and what ARP/ND suppression answers
 * from (`--proxy`, as the kernel's `ip link ... proxy` answers from the vxlan device's neighbour
 * table).
 *
 * - `LocalStations` watches the frames a VTEP reads from its TAP: each unicast source MAC is a
 *   station, with the IPv4/IPv6 addresses seen in its ARP, neighbour discovery and IP headers.
 *   Per frame it costs one Map lookup; the addresses are read at most once per second per MAC.
 * - `NeighTable` maps overlay IPs to MACs; `proxyReply` turns an ARP request or a neighbour
 *   solicitation for a known address into the reply the owner would send.
 */
import { Address6 } from 'ip-address';
import { ethSrc, ethType, isValidUnicastMac } from './wire/ethernet.js';

const ETH_P_ARP = 0x0806;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO_ICMPV6 = 58;
const ND_NEIGHBOR_SOLICIT = 135;
const ND_NEIGHBOR_ADVERT = 136;
/** Frame length of an ARP request/reply for IPv4 over Ethernet (no padding). */
const ARP_FRAME_LEN = 42;
/** Ethernet + IPv6 + ICMPv6 NA (24) + target link-layer address option (8). */
const NA_FRAME_LEN = 14 + 40 + 32;

/** Addresses kept per station: a router's MAC forwards many sources; the most recent ones stay. */
export const STATION_IPS_MAX = 8;
/** Stations kept per VTEP. */
export const STATIONS_MAX = 4096;

export function ipv4Text(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

export function ipv6Text(buf: Uint8Array, off: number): string {
  return Address6.fromByteArray(Array.from(buf.subarray(off, off + 16))).correctForm();
}

function isZero(buf: Uint8Array, off: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (buf[off + i] !== 0) return false;
  return true;
}

/** A unicast IPv4 source worth publishing: not 0.0.0.0, not multicast/broadcast, not loopback. */
function usableV4(buf: Uint8Array, off: number): boolean {
  const a = buf[off]!;
  return a !== 0 && a !== 127 && a < 224;
}

/** A unicast IPv6 source worth publishing: not ::, not multicast (ff00::/8), not loopback. */
function usableV6(buf: Uint8Array, off: number): boolean {
  if (buf[off] === 0xff) return false;
  if (isZero(buf, off, 15)) return buf[off + 15]! > 1;
  return true;
}

export interface Station {
  readonly mac: number;
  /** Addresses, oldest first (insertion order), at most STATION_IPS_MAX. */
  readonly ips: Set<string>;
  /** The tick (seconds of the table's clock) it was last seen in. */
  seen: number;
  /** The tick its addresses were last read in. */
  ipTick: number;
}

export interface StationEvents {
  /** A station appeared, or gained an address. */
  changed: (s: Station) => void;
  /** A station was not seen for the ageing time. */
  expired: (s: Station) => void;
}

/**
 * The stations behind a VTEP's TAP. `see` runs on the encapsulation path for each frame read;
 * `tick` (once a second, from the owner's timer) ages them out.
 */
export class LocalStations {
  readonly ageingS: number;
  private readonly table: Map<number, Station>;
  private readonly handlers: StationEvents;
  private now: number;

  constructor(handlers: StationEvents, opts: { ageingS?: number } = {}) {
    this.ageingS = opts.ageingS ?? 300;
    this.table = new Map();
    this.handlers = handlers;
    this.now = 1;
  }

  get size(): number {
    return this.table.size;
  }

  list(): Station[] {
    return [...this.table.values()];
  }

  get(mac: number): Station | undefined {
    return this.table.get(mac);
  }

  /** The frame `buf[off, off+len)` left through the TAP (len >= 14, checked by the caller). */
  see(buf: Uint8Array, off: number, len: number): void {
    const mac = ethSrc(buf, off);
    let s = this.table.get(mac);
    let changed = false;
    if (s === undefined) {
      if (!isValidUnicastMac(mac) || this.table.size >= STATIONS_MAX) return;
      s = { mac, ips: new Set(), seen: this.now, ipTick: 0 };
      this.table.set(mac, s);
      changed = true;
    }
    s.seen = this.now;
    if (s.ipTick !== this.now) {
      s.ipTick = this.now;
      const ip = sourceIp(buf, off, len);
      if (ip !== undefined && !s.ips.has(ip)) {
        if (s.ips.size >= STATION_IPS_MAX) s.ips.delete(s.ips.values().next().value!);
        s.ips.add(ip);
        changed = true;
      }
    }
    if (changed) this.handlers.changed(s);
  }

  /** Advances the clock one second and expires the stations not seen for `ageingS`. */
  tick(): void {
    this.now++;
    if (this.ageingS <= 0) return;
    for (const [mac, s] of this.table) {
      if (this.now - s.seen < this.ageingS) continue;
      this.table.delete(mac);
      this.handlers.expired(s);
    }
  }
}

/**
 * The sender's protocol address of a frame, as text: the ARP sender IP, the IPv4 or IPv6 source
 * (neighbour discovery included); undefined for anything else or an address not worth publishing.
 */
export function sourceIp(buf: Uint8Array, off: number, len: number): string | undefined {
  const type = ethType(buf, off);
  const l3 = off + 14;
  if (type === ETH_P_ARP) {
    if (len < ARP_FRAME_LEN || !isArpIpv4(buf, l3)) return undefined;
    return usableV4(buf, l3 + 14) ? ipv4Text(buf, l3 + 14) : undefined;
  }
  if (type === ETH_P_IP) {
    if (len < 34 || buf[l3]! >> 4 !== 4) return undefined;
    return usableV4(buf, l3 + 12) ? ipv4Text(buf, l3 + 12) : undefined;
  }
  if (type === ETH_P_IPV6) {
    if (len < 54 || buf[l3]! >> 4 !== 6) return undefined;
    return usableV6(buf, l3 + 8) ? ipv6Text(buf, l3 + 8) : undefined;
  }
  return undefined;
}

function isArpIpv4(buf: Uint8Array, a: number): boolean {
  // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
  return buf[a] === 0 && buf[a + 1] === 1 && buf[a + 2] === 8 && buf[a + 3] === 0 && buf[a + 4] === 6 && buf[a + 5] === 4;
}

/** Overlay IP (canonical text) -> MAC, as a vxlan device's neighbour table. */
export class NeighTable {
  private readonly byIp: Map<string, number>;

  constructor() {
    this.byIp = new Map();
  }

  get size(): number {
    return this.byIp.size;
  }

  lookup(ip: string): number | undefined {
    return this.byIp.get(ip);
  }

  set(ip: string, mac: number): void {
    this.byIp.set(ip, mac);
  }

  /** Removes `ip`, only while it still maps to `mac` (another owner may have taken it since). */
  delete(ip: string, mac: number): void {
    if (this.byIp.get(ip) === mac) this.byIp.delete(ip);
  }

  entries(): Array<[string, number]> {
    return [...this.byIp];
  }
}

function putMac(out: Uint8Array, at: number, mac: number): void {
  const hi = Math.floor(mac / 0x1_0000_0000);
  const lo = mac >>> 0;
  out[at] = hi >> 8;
  out[at + 1] = hi & 0xff;
  out[at + 2] = lo >>> 24;
  out[at + 3] = (lo >>> 16) & 0xff;
  out[at + 4] = (lo >>> 8) & 0xff;
  out[at + 5] = lo & 0xff;
}

/**
 * The answer to an ARP request or an IPv6 neighbour solicitation in `buf[off, off+len)` whose
 * target `neigh` knows, written to `out` (at least 86 bytes); returns its length, or 0 when the
 * frame is not such a request or the target is unknown (then it goes on as before: flooded).
 * Gratuitous ARP, ARP probes and duplicate address detection (unspecified source) are never
 * answered: they must reach the real owner.
 */
export function proxyReply(buf: Uint8Array, off: number, len: number, neigh: NeighTable, out: Uint8Array): number {
  const type = ethType(buf, off);
  const l3 = off + 14;
  if (type === ETH_P_ARP) {
    if (len < ARP_FRAME_LEN || !isArpIpv4(buf, l3) || buf[l3 + 6] !== 0 || buf[l3 + 7] !== 1) return 0;
    const spa = l3 + 14;
    const tpa = l3 + 24;
    // probes (sender 0.0.0.0) and gratuitous requests (sender = target) are not questions
    if (isZero(buf, spa, 4) || (buf[spa] === buf[tpa] && buf[spa + 1] === buf[tpa + 1] && buf[spa + 2] === buf[tpa + 2] && buf[spa + 3] === buf[tpa + 3])) return 0;
    const mac = neigh.lookup(ipv4Text(buf, tpa));
    if (mac === undefined) return 0;
    // Ethernet: to the asker, from the owner
    out.set(buf.subarray(off + 6, off + 12), 0);
    putMac(out, 6, mac);
    out[12] = 0x08;
    out[13] = 0x06;
    out.set([0, 1, 8, 0, 6, 4, 0, 2], 14);
    putMac(out, 22, mac); // sender: the owner
    out.set(buf.subarray(tpa, tpa + 4), 28);
    out.set(buf.subarray(l3 + 8, l3 + 14), 32); // target: the asker
    out.set(buf.subarray(spa, spa + 4), 38);
    return ARP_FRAME_LEN;
  }
  if (type === ETH_P_IPV6) {
    // IPv6 + ICMPv6 NS with its 16-byte target, no extension headers (NS carries none)
    if (len < 14 + 40 + 24 || buf[l3]! >> 4 !== 6 || buf[l3 + 6] !== IPPROTO_ICMPV6 || buf[l3 + 7] !== 255) return 0;
    const icmp = l3 + 40;
    if (buf[icmp] !== ND_NEIGHBOR_SOLICIT || buf[icmp + 1] !== 0) return 0;
    const src = l3 + 8;
    if (isZero(buf, src, 16)) return 0; // duplicate address detection
    const target = icmp + 8;
    if (buf[target] === 0xff) return 0;
    const mac = neigh.lookup(ipv6Text(buf, target));
    if (mac === undefined) return 0;
    out.set(buf.subarray(off + 6, off + 12), 0);
    putMac(out, 6, mac);
    out[12] = 0x86;
    out[13] = 0xdd;
    const ip = 14;
    out.set([0x60, 0, 0, 0, 0, 32, IPPROTO_ICMPV6, 255], ip);
    out.set(buf.subarray(target, target + 16), ip + 8); // from the target
    out.set(buf.subarray(src, src + 16), ip + 24); // to the asker
    const na = ip + 40;
    out[na] = ND_NEIGHBOR_ADVERT;
    out[na + 1] = 0;
    out[na + 2] = 0;
    out[na + 3] = 0;
    out[na + 4] = 0x60; // solicited, override: the answer is the owner's own MAC
    out[na + 5] = 0;
    out[na + 6] = 0;
    out[na + 7] = 0;
    out.set(buf.subarray(target, target + 16), na + 8);
    out[na + 24] = 2; // target link-layer address option, 8 bytes
    out[na + 25] = 1;
    putMac(out, na + 26, mac);
    const sum = icmpv6Checksum(out, ip + 8, ip + 24, na, 32);
    out[na + 2] = sum >> 8;
    out[na + 3] = sum & 0xff;
    return NA_FRAME_LEN;
  }
  return 0;
}

/** The ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header and `len` bytes at `msg`. */
export function icmpv6Checksum(b: Uint8Array, src: number, dst: number, msg: number, len: number): number {
  let s = 0;
  for (let i = 0; i < 16; i += 2) s += ((b[src + i]! << 8) | b[src + i + 1]!) + ((b[dst + i]! << 8) | b[dst + i + 1]!);
  s += len + IPPROTO_ICMPV6;
  for (let i = 0; i < len; i += 2) s += (b[msg + i]! << 8) | (i + 1 < len ? b[msg + i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return ~s & 0xffff;
}
