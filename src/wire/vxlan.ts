/**
 * VXLAN header (RFC 7348 section 5).
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |R|R|R|R|I|R|R|R|            Reserved                           |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                VXLAN Network Identifier (VNI) |   Reserved    |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * The primitive API is plain functions over `(buf, off)`: call `checkVxlan` once on untrusted
 * bytes, then the accessors index without bounds checks. `VxlanRepr` is for tests and the
 * control plane only.
 */

/** Length of the VXLAN header. */
export const VXLAN_HLEN = 8;
/** The I flag: "MUST be set to 1 for a valid VXLAN Network ID (VNI)". */
export const VXLAN_FLAG_I = 0x08;
/** IANA-assigned destination port (RFC 7348 section 5). */
export const VXLAN_PORT_IANA = 4789;
/** The Linux kernel's historical default destination port (pre-IANA). */
export const VXLAN_PORT_LINUX = 8472;
/** Largest VNI: 24 bits. */
export const VXLAN_VNI_MAX = 0xffffff;
/** Outer overhead on top of an Ethernet frame: IPv4 header + UDP + VXLAN (20 + 8 + 8). */
export const VXLAN_OVERHEAD_V4 = 20 + 8 + VXLAN_HLEN;
/** Outer overhead on top of an Ethernet frame: IPv6 header + UDP + VXLAN (40 + 8 + 8). */
export const VXLAN_OVERHEAD_V6 = 40 + 8 + VXLAN_HLEN;
/**
 * Underlay MTU minus TAP MTU, as `ip link` computes the vxlan device's default MTU: the outer
 * headers plus the inner Ethernet header, which the TAP MTU does not count (50 / 70 bytes).
 */
export const VXLAN_MTU_HEADROOM_V4 = VXLAN_OVERHEAD_V4 + 14;
export const VXLAN_MTU_HEADROOM_V6 = VXLAN_OVERHEAD_V6 + 14;

const OFF_FLAGS = 0;
const OFF_VNI = 4;
const OFF_RESERVED2 = 7;

/** Results of `checkVxlan`; `Ok` is 0 so `if (r !== VxlanCheck.Ok)` is one compare. */
export const VxlanCheck = {
  Ok: 0,
  /** Fewer than 8 bytes between `off` and `end`. */
  Truncated: 1,
  /** The I flag is clear: not a valid VNI. */
  NoIFlag: 2,
  /** A reserved bit is set, and the policy is strict. */
  ReservedBits: 3,
} as const;
export type VxlanCheck = (typeof VxlanCheck)[keyof typeof VxlanCheck];

/**
 * Receive policy for the reserved fields.
 *
 * RFC 7348 section 5: "Reserved fields (24 bits and 8 bits): MUST be set to zero on
 * transmission and ignored on receipt." uvtep follows the RFC by default (`ignore`).
 * Linux departs from the RFC: `vxlan_rcv()` drops a datagram with any flag bit other than I, or
 * a non-zero last byte, unless an extension (GBP, GPE, RCO) claims it. `strict` does the same,
 * for operators who want uvtep to behave exactly like the kernel peer.
 */
export const ReservedBitsPolicy = { Ignore: 'ignore', Strict: 'strict' } as const;
export type ReservedBitsPolicy = (typeof ReservedBitsPolicy)[keyof typeof ReservedBitsPolicy];

/**
 * Checks the header at `buf[off..end)`. Never throws, never reads out of range.
 * `strict` drops reserved bits (the Linux behaviour); otherwise they are ignored (RFC 7348).
 */
export function checkVxlan(buf: Uint8Array, off: number, end: number, strict: boolean): VxlanCheck {
  if (!(off >= 0) || !(end <= buf.length) || end - off < VXLAN_HLEN) return VxlanCheck.Truncated;
  const flags = buf[off + OFF_FLAGS]!;
  if ((flags & VXLAN_FLAG_I) === 0) return VxlanCheck.NoIFlag;
  if (
    strict &&
    ((flags & ~VXLAN_FLAG_I) !== 0 ||
      buf[off + 1] !== 0 ||
      buf[off + 2] !== 0 ||
      buf[off + 3] !== 0 ||
      buf[off + OFF_RESERVED2] !== 0)
  ) {
    return VxlanCheck.ReservedBits;
  }
  return VxlanCheck.Ok;
}

/** VNI of a checked header. */
export function vxlanVni(buf: Uint8Array, off: number): number {
  const o = off + OFF_VNI;
  return (buf[o]! << 16) | (buf[o + 1]! << 8) | buf[o + 2]!;
}

/**
 * Writes the 8-byte header for `vni` (I flag set, every reserved bit zero) at `off`.
 * The caller guarantees 8 bytes of room and a VNI validated by `assertVni`.
 */
export function emitVxlan(buf: Uint8Array, off: number, vni: number): void {
  buf[off] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + OFF_VNI] = (vni >>> 16) & 0xff;
  buf[off + OFF_VNI + 1] = (vni >>> 8) & 0xff;
  buf[off + OFF_VNI + 2] = vni & 0xff;
  buf[off + OFF_RESERVED2] = 0;
}

export function isValidVni(vni: unknown): vni is number {
  return typeof vni === 'number' && Number.isInteger(vni) && vni >= 0 && vni <= VXLAN_VNI_MAX;
}

/** A parsed header, for tests and the control plane. The data path uses the functions above. */
export interface VxlanRepr {
  /** The whole first byte (I flag plus reserved bits). */
  flags: number;
  vni: number;
  /** The 24 reserved bits after the flags byte. */
  reserved1: number;
  /** The last byte. */
  reserved2: number;
}

export function parseVxlan(buf: Uint8Array, off = 0): VxlanRepr | undefined {
  if (checkVxlan(buf, off, buf.length, false) !== VxlanCheck.Ok) return undefined;
  return {
    flags: buf[off]!,
    vni: vxlanVni(buf, off),
    reserved1: (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!,
    reserved2: buf[off + OFF_RESERVED2]!,
  };
}

export function emitVxlanRepr(repr: VxlanRepr, buf: Uint8Array, off = 0): void {
  buf[off] = repr.flags & 0xff;
  buf[off + 1] = (repr.reserved1 >>> 16) & 0xff;
  buf[off + 2] = (repr.reserved1 >>> 8) & 0xff;
  buf[off + 3] = repr.reserved1 & 0xff;
  buf[off + OFF_VNI] = (repr.vni >>> 16) & 0xff;
  buf[off + OFF_VNI + 1] = (repr.vni >>> 8) & 0xff;
  buf[off + OFF_VNI + 2] = repr.vni & 0xff;
  buf[off + OFF_RESERVED2] = repr.reserved2 & 0xff;
}
