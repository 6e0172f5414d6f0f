/**
 * The virtio-net header (`struct virtio_net_hdr`, virtio spec 5.1.6; include/uapi/linux/
 * virtio_net.h) that a TAP opened with IFF_VNET_HDR puts before every frame: the offload
 * metadata of a super-frame (GSO) or a frame whose checksum is left to finish (NEEDS_CSUM).
 * Little-endian on a TAP (TUNSETVNETLE is never set and the hosts here are little-endian).
 * native/offload.cc validates and acts on it (the product has no TypeScript side of it); the
 * tests write and read it to feed and check the native code.
 *
 *   | flags(1) | gso_type(1) | hdr_len(2) | gso_size(2) | csum_start(2) | csum_offset(2) |
 */

export const VIRTIO_NET_HDR_LEN = 10;
/** flags: the L4 checksum from csum_start is partial; csum_offset is where it goes. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** gso_type values. */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;

export interface VirtioNetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Writes `h` at `b[off, off + 10)`; missing fields are zero. */
export function writeVirtioNetHdr(b: Uint8Array, off: number, h: Partial<VirtioNetHdr>): void {
  const le16 = (at: number, v: number) => {
    b[off + at] = v & 0xff;
    b[off + at + 1] = (v >> 8) & 0xff;
  };
  b[off] = h.flags ?? 0;
  b[off + 1] = h.gsoType ?? 0;
  le16(2, h.hdrLen ?? 0);
  le16(4, h.gsoSize ?? 0);
  le16(6, h.csumStart ?? 0);
  le16(8, h.csumOffset ?? 0);
}

/** The header at `b[off, off + 10)`. */
export function readVirtioNetHdr(b: Uint8Array, off: number): VirtioNetHdr {
  const le16 = (at: number) => b[off + at]! | (b[off + at + 1]! << 8);
  return { flags: b[off]!, gsoType: b[off + 1]!, hdrLen: le16(2), gsoSize: le16(4), csumStart: le16(6), csumOffset: le16(8) };
}
