/**
 * The underlay source filter (`--allow-from`): a prefix match over the source address, with no
 * cache, so a flood of spoofed sources costs each datagram one parse and a few compares and can
 * evict nothing. IPv4 literals become one 32-bit word, IPv6 four (parsed by hand into scratch
 * arrays the filter owns: no allocation per datagram);
 * IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`) match IPv4 prefixes.
 */
import { Address4, Address6 } from 'ip-address';
import { fail, show } from './check.js';
import { ErrorCode } from './errors.js';

/** An underlay source filter entry. */
export interface AllowCidr {
  family: 4 | 6;
  /** Canonical text, e.g. `198.51.100.0/24`. */
  text: string;
  /** Network bits as a bigint and the prefix length. */
  network: bigint;
  prefixLen: number;
}

/** Parses an underlay source filter: `198.51.100.0/24`, `2001:db8::/32`, or a single address. */
export function checkAllowCidr(v: unknown, option = 'allowFrom'): AllowCidr {
  if (typeof v === 'string' && !v.includes('%')) {
    const text = v.includes('/') ? v : v.includes(':') ? `${v}/128` : `${v}/32`;
    if (Address4.isValid(text)) {
      const a = new Address4(text);
      return { family: 4, text: `${a.startAddress().correctForm()}/${a.subnetMask}`, network: a.startAddress().bigInt(), prefixLen: a.subnetMask };
    }
    if (Address6.isValid(text)) {
      const a = new Address6(text);
      return { family: 6, text: `${a.startAddress().correctForm()}/${a.subnetMask}`, network: a.startAddress().bigInt(), prefixLen: a.subnetMask };
    }
  }
  fail(option, ErrorCode.InvalidAddress, `expected an address or CIDR such as 198.51.100.0/24 or 2001:db8::/32, or "peers", got ${show(v)}`);
}

interface Prefix {
  v6: boolean;
  /** Network words (1 for IPv4, 4 for IPv6) and masks, big-endian bit order. */
  net: Uint32Array;
  mask: Uint32Array;
}

function maskWords(bits: number, words: number): Uint32Array {
  const m = new Uint32Array(words);
  for (let i = 0; i < words; i++) {
    const b = Math.max(0, Math.min(32, bits - 32 * i));
    m[i] = b === 0 ? 0 : b === 32 ? 0xffffffff : (0xffffffff << (32 - b)) >>> 0;
  }
  return m;
}

/** Parses a dotted-quad IPv4 literal at s[from, to) into a 32-bit number; -1 when it is not one. */
function ipv4(s: string, from: number, to: number): number {
  let v = 0;
  let part = -1;
  let dots = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (part < 0 || dots === 3) return -1;
      v = v * 256 + part;
      part = -1;
      dots++;
    } else if (c >= 48 && c <= 57) {
      part = part < 0 ? c - 48 : part * 10 + (c - 48);
      if (part > 255) return -1;
    } else {
      return -1;
    }
  }
  if (part < 0 || dots !== 3) return -1;
  return v * 256 + part;
}

/**
 * Parses an IPv6 literal into `out` (4 words), using `g` (8 entries) for its groups; false when it
 * is not one. No allocation.
 */
function ipv6(s: string, out: Uint32Array, g: Uint32Array): boolean {
  const n = s.length;
  let count = 0; // groups parsed
  let gap = -1; // where "::" stands, in groups
  let i = 0;
  if (n < 2) return false;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    if (count === 8) return false;
    // an embedded IPv4 tail (::ffff:a.b.c.d)
    if (s.indexOf(':', i) < 0 && s.indexOf('.', i) >= 0) {
      if (count > 6) return false;
      const v4 = ipv4(s, i, n);
      if (v4 < 0) return false;
      g[count++] = Math.floor(v4 / 65536);
      g[count++] = v4 & 0xffff;
      break;
    }
    let v = 0;
    let digits = 0;
    while (i < n) {
      const c = s.charCodeAt(i);
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (d < 0) break;
      v = v * 16 + d;
      if (++digits > 4) return false;
      i++;
    }
    if (digits === 0) return false;
    g[count++] = v;
    if (i === n) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < n && s.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = count;
      i++;
    } else if (i === n) {
      return false;
    }
  }
  if (gap < 0 ? count !== 8 : count > 7) return false;
  // groups before the gap stay; those after it move to the end; zeros between
  const tail = gap < 0 ? 0 : count - gap;
  const head = gap < 0 ? 8 : gap;
  for (let w = 0; w < 4; w++) {
    const hi = group(g, 2 * w, head, tail, count);
    const lo = group(g, 2 * w + 1, head, tail, count);
    out[w] = ((hi << 16) | lo) >>> 0;
  }
  return true;
}

/** Group k (0-7) of an address whose `head` first and `tail` last groups were parsed into `g`. */
function group(g: Uint32Array, k: number, head: number, tail: number, count: number): number {
  if (k < head) return g[k]!;
  if (k >= 8 - tail) return g[count - (8 - k)]!;
  return 0;
}

export class SourceFilter {
  private readonly prefixes: Prefix[];
  private readonly hasV4: boolean;
  private readonly words: Uint32Array;
  private readonly groups: Uint32Array;

  constructor(allow: readonly AllowCidr[]) {
    this.prefixes = allow.map((c) => {
      const v6 = c.family === 6;
      const words = v6 ? 4 : 1;
      const net = new Uint32Array(words);
      for (let w = 0; w < words; w++) net[w] = Number((c.network >> BigInt(32 * (words - 1 - w))) & 0xffffffffn);
      const mask = maskWords(c.prefixLen, words);
      for (let w = 0; w < words; w++) net[w] = (net[w]! & mask[w]!) >>> 0;
      return { v6, net, mask };
    });
    this.hasV4 = this.prefixes.some((p) => !p.v6);
    this.words = new Uint32Array(4);
    this.groups = new Uint32Array(8);
  }

  /** Whether `address` (an IP literal) is inside one of the prefixes. */
  allowed(address: string): boolean {
    if (address.indexOf(':') < 0) return this.matchV4(ipv4(address, 0, address.length));
    const w = this.words;
    if (!ipv6(address, w, this.groups)) return false;
    // IPv4-mapped (::ffff:a.b.c.d): the IPv4 prefixes apply
    if (this.hasV4 && w[0] === 0 && w[1] === 0 && w[2] === 0xffff && this.matchV4(w[3]!)) return true;
    for (const p of this.prefixes) {
      if (!p.v6) continue;
      if (((w[0]! & p.mask[0]!) >>> 0) === p.net[0] && ((w[1]! & p.mask[1]!) >>> 0) === p.net[1] && ((w[2]! & p.mask[2]!) >>> 0) === p.net[2] && ((w[3]! & p.mask[3]!) >>> 0) === p.net[3]) return true;
    }
    return false;
  }

  private matchV4(v: number): boolean {
    if (v < 0) return false;
    for (const p of this.prefixes) if (!p.v6 && ((v & p.mask[0]!) >>> 0) === p.net[0]) return true;
    return false;
  }
}
