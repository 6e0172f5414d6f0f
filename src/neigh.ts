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
import { ETH_HLEN, ethSrc, ethType, isValidUnicastMac } from './wire/ethernet.js';
import { ARP_SPA, ARP_TPA, ETH_P_ARP, isArpIpv4, isArpQuestion, isNeighborQuestion, ND_TARGET, writeArpReply, writeNeighborAdvert } from './wire/nd.js';
import { ETH_P_IP, IPV4_HLEN, IPV4_SRC, ipv4Text, isIpv4 } from './wire/ipv4.js';
import { ETH_P_IPV6, IPV6_HLEN, IPV6_SRC, ipv6Text, isIpv6 } from './wire/ipv6.js';

/** Addresses kept per station: a router's MAC forwards many sources; the most recent ones stay. */
export const STATION_IPS_MAX = 8;
/** Stations kept per VTEP. */
export const STATIONS_MAX = 4096;

/** A unicast IPv4 source worth publishing: not 0.0.0.0, not multicast/broadcast, not loopback. */
function usableV4(buf: Uint8Array, off: number): boolean {
  const a = buf[off]!;
  return a !== 0 && a !== 127 && a < 224;
}

/** A unicast IPv6 source worth publishing: not ::, not multicast (ff00::/8), not loopback. */
function usableV6(buf: Uint8Array, off: number): boolean {
  if (buf[off] === 0xff) return false;
  for (let i = 0; i < 15; i++) if (buf[off + i] !== 0) return true;
  return buf[off + 15]! > 1;
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
  private readonly table: Map<number, Station> = new Map();
  private readonly handlers: StationEvents;
  private now: number = 1;

  constructor(handlers: StationEvents, opts: { ageingS?: number } = {}) {
    this.ageingS = opts.ageingS ?? 300;
    this.handlers = handlers;
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
  const l3 = off + ETH_HLEN;
  if (type === ETH_P_ARP) {
    if (!isArpIpv4(buf, off, len)) return undefined;
    return usableV4(buf, off + ARP_SPA) ? ipv4Text(buf, off + ARP_SPA) : undefined;
  }
  if (type === ETH_P_IP) {
    if (len < ETH_HLEN + IPV4_HLEN || !isIpv4(buf, l3)) return undefined;
    return usableV4(buf, l3 + IPV4_SRC) ? ipv4Text(buf, l3 + IPV4_SRC) : undefined;
  }
  if (type === ETH_P_IPV6) {
    if (len < ETH_HLEN + IPV6_HLEN || !isIpv6(buf, l3)) return undefined;
    return usableV6(buf, l3 + IPV6_SRC) ? ipv6Text(buf, l3 + IPV6_SRC) : undefined;
  }
  return undefined;
}

/** Overlay IP (canonical text) -> MAC, as a vxlan device's neighbour table. */
export class NeighTable {
  private readonly byIp: Map<string, number> = new Map();

  constructor() {
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

/**
 * The answer to an ARP request or an IPv6 neighbour solicitation in `buf[off, off+len)` whose
 * target `neigh` knows, written to `out` (at least 86 bytes); returns its length, or 0 when the
 * frame is not such a request or the target is unknown (then it goes on as before: flooded).
 * Gratuitous ARP, ARP probes and duplicate address detection (unspecified source) are never
 * answered: they must reach the real owner.
 */
export function proxyReply(buf: Uint8Array, off: number, len: number, neigh: NeighTable, out: Uint8Array): number {
  if (isArpQuestion(buf, off, len)) {
    const mac = neigh.lookup(ipv4Text(buf, off + ARP_TPA));
    return mac === undefined ? 0 : writeArpReply(out, buf, off, mac);
  }
  if (isNeighborQuestion(buf, off, len)) {
    const mac = neigh.lookup(ipv6Text(buf, off + ND_TARGET));
    return mac === undefined ? 0 : writeNeighborAdvert(out, buf, off, mac);
  }
  return 0;
}
