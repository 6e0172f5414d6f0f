/**
 * The Internet checksum (RFC 1071): a one's-complement sum of 16-bit big-endian words, and its
 * incremental update (RFC 1624). The per-byte checksum work of the fast path is native
 * (native/offload.cc); these serve the packets TypeScript reads or writes itself.
 */

/** Adds the 16-bit big-endian words of `b[off, off+len)` to `sum` (an odd last byte is padded with zero). */
export function sum16(b: Uint8Array, off: number, len: number, sum: number): number {
  for (let i = 0; i + 1 < len; i += 2) sum += (b[off + i]! << 8) | b[off + i + 1]!;
  if ((len & 1) !== 0) sum += b[off + len - 1]! << 8;
  return sum;
}

/** Folds a one's-complement sum to 16 bits (the Internet checksum is its complement). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field's new value after one covered 16-bit word changed from `old` to `now`: HC' = ~(~HC + ~m + m'). */
export function csumReplace16(check: number, old: number, now: number): number {
  return ~fold((~check & 0xffff) + (~old & 0xffff) + now) & 0xffff;
}
