/**
 * Ethernet II header (IEEE 802.3), as much of it as a VTEP needs.
 *
 *    +----------------+----------------+-----------+----------------
 *    | destination(6) |   source(6)    | ethertype | payload ...
 *    +----------------+----------------+-----------+----------------
 *
 * MAC addresses are keys of 48 bits held in a JS number (exact up to 2^53), so the FDB is a
 * `Map<number, Entry>` with no string or object per lookup.
 */

export const ETH_ALEN = 6;
export const ETH_HLEN = 14;
/** 802.1Q VLAN and 802.1ad service tags (4 bytes before the inner ethertype). */
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
/** The length of one such tag. */
export const VLAN_HLEN = 4;
const OFF_DST = 0;
const OFF_SRC = 6;
const TWO_32 = 0x1_0000_0000;
const TWO_40 = 0x100_0000_0000;

export const MAC_BROADCAST = 0xffff_ffff_ffff;
export const MAC_ZERO = 0;

/** 48-bit key of the MAC at `buf[off..off+6)`. The caller has checked the bounds. */
export function macAt(buf: Uint8Array, off: number): number {
  const hi = (buf[off]! << 8) | buf[off + 1]!;
  const lo = ((buf[off + 2]! << 24) | (buf[off + 3]! << 16) | (buf[off + 4]! << 8) | buf[off + 5]!) >>> 0;
  return hi * TWO_32 + lo;
}

/** Destination MAC key of the frame starting at `off`. */
export function ethDst(buf: Uint8Array, off: number): number {
  return macAt(buf, off + OFF_DST);
}

/** Source MAC key of the frame starting at `off`. */
export function ethSrc(buf: Uint8Array, off: number): number {
  return macAt(buf, off + OFF_SRC);
}

/** Ethertype of the frame starting at `off`. */
export function ethType(buf: Uint8Array, off: number): number {
  return (buf[off + 12]! << 8) | buf[off + 13]!;
}

/** The group bit (I/G, least significant bit of the first octet): multicast or broadcast. */
export function isMulticastMac(key: number): boolean {
  return (Math.floor(key / TWO_40) & 1) === 1;
}

export function isBroadcastMac(key: number): boolean {
  return key === MAC_BROADCAST;
}

/** A MAC that may be learned or used as a unicast source: not zero, not group. */
export function isValidUnicastMac(key: number): boolean {
  return key !== MAC_ZERO && !isMulticastMac(key);
}

export function writeMac(buf: Uint8Array, off: number, key: number): void {
  const hi = Math.floor(key / TWO_32);
  const lo = key % TWO_32;
  buf[off] = (hi >>> 8) & 0xff;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = (lo >>> 24) & 0xff;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

const MAC_RE = /^([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})[:-]([0-9a-f]{1,2})$/i;

/** Parses `aa:bb:cc:dd:ee:ff` (or with `-`); returns undefined when malformed. */
export function parseMac(text: string): number | undefined {
  const m = MAC_RE.exec(text.trim());
  if (m === null) return undefined;
  let key = 0;
  for (let i = 1; i <= 6; i++) key = key * 256 + parseInt(m[i]!, 16);
  return key;
}

/** Formats a key as lower-case `aa:bb:cc:dd:ee:ff`, as iproute2 prints it. */
export function formatMac(key: number): string {
  const b = new Uint8Array(ETH_ALEN);
  writeMac(b, 0, key);
  let s = '';
  for (let i = 0; i < ETH_ALEN; i++) s += (i ? ':' : '') + b[i]!.toString(16).padStart(2, '0');
  return s;
}

/** A random locally administered unicast MAC (like the kernel's eth_random_addr). */
export function randomMac(): number {
  const b = new Uint8Array(ETH_ALEN);
  globalThis.crypto.getRandomValues(b);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return macAt(b, 0);
}
