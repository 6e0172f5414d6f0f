// Builders and checkers for Ethernet/IP/TCP/UDP frames: the reference (written independently of
// native/offload.cc) that the native segmentation and coalescing are checked against.

import { readVirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN, writeVirtioNetHdr, type VirtioNetHdr } from './virtio-net.js';

/** Ones'-complement sum of b[off, off+len) as big-endian words, folded. */
export function csum(b: Uint8Array, off: number, len: number, sum = 0): number {
  for (let i = 0; i + 1 < len; i += 2) sum += (b[off + i]! << 8) | b[off + i + 1]!;
  if (len & 1) sum += b[off + len - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

export interface SegOpts {
  seq: number;
  payload: Buffer;
  flags?: number;
  ack?: number;
  v6?: boolean;
  udp?: boolean;
  sport?: number;
  /** TCP option bytes (a multiple of 4; default: NOP NOP timestamp). */
  options?: Buffer;
  ipId?: number;
  tos?: number;
}

const TS_OPTION = Buffer.from([1, 1, 8, 10, 0, 0, 3, 232, 0, 0, 3, 231]);

/** A valid Ethernet/IPv4|IPv6/TCP|UDP frame, checksums complete. */
export function segment(o: SegOpts): Buffer {
  const v6 = o.v6 ?? false;
  const iphl = v6 ? 40 : 20;
  const opt = o.udp ? Buffer.alloc(0) : (o.options ?? TS_OPTION);
  const l4hl = o.udp ? 8 : 20 + opt.length;
  const f = Buffer.alloc(14 + iphl + l4hl + o.payload.length);
  f.writeUIntBE(0x02000000000b, 0, 6);
  f.writeUIntBE(0x02000000000a, 6, 6);
  f.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  const l3 = 14;
  const proto = o.udp ? 17 : 6;
  if (!v6) {
    f[l3] = 0x45;
    f[l3 + 1] = o.tos ?? 0;
    f.writeUInt16BE(20 + l4hl + o.payload.length, l3 + 2);
    f.writeUInt16BE(o.ipId ?? 0x1234, l3 + 4);
    f.writeUInt16BE(0x4000, l3 + 6); // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = proto;
    Buffer.from([10, 0, 0, 106, 10, 0, 0, 107]).copy(f, l3 + 12);
    f.writeUInt16BE(~csum(f, l3, 20) & 0xffff, l3 + 10);
  } else {
    f.writeUInt32BE(0x60000000 | ((o.tos ?? 0) << 20), l3);
    f.writeUInt16BE(l4hl + o.payload.length, l3 + 4);
    f[l3 + 6] = proto;
    f[l3 + 7] = 64;
    Buffer.from('20010db8000100000000000000000001', 'hex').copy(f, l3 + 8);
    Buffer.from('20010db8000100000000000000000002', 'hex').copy(f, l3 + 24);
  }
  const t = l3 + iphl;
  f.writeUInt16BE(o.sport ?? 40000, t);
  f.writeUInt16BE(5201, t + 2);
  if (o.udp) {
    f.writeUInt16BE(8 + o.payload.length, t + 4);
  } else {
    f.writeUInt32BE(o.seq >>> 0, t + 4);
    f.writeUInt32BE(o.ack ?? 777, t + 8);
    f[t + 12] = (l4hl / 4) << 4;
    f[t + 13] = o.flags ?? 0x10;
    f.writeUInt16BE(502, t + 14);
    opt.copy(f, t + 20);
  }
  o.payload.copy(f, t + l4hl);
  const l4len = l4hl + o.payload.length;
  const pseudo = v6 ? csum(f, l3 + 8, 32, proto + l4len) : csum(f, l3 + 12, 8, proto + l4len);
  const c = ~csum(f, t, l4len, pseudo) & 0xffff;
  f.writeUInt16BE(o.udp && c === 0 ? 0xffff : c, t + (o.udp ? 6 : 16));
  return f;
}

export { VIRTIO_NET_HDR_F_NEEDS_CSUM as VNET_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 as GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 as GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4 as GSO_UDP_L4 } from './virtio-net.js';
export type { VirtioNetHdr as VnetHdr } from './virtio-net.js';

/** A virtio-net header (the layout is ./virtio-net.ts's). */
export function vnet(h: Partial<VirtioNetHdr>): Buffer {
  const b = Buffer.alloc(VIRTIO_NET_HDR_LEN);
  writeVirtioNetHdr(b, 0, h);
  return b;
}

export const readVnet = (b: Buffer, off = 0): VirtioNetHdr => readVirtioNetHdr(b, off);

/**
 * A super-frame as the kernel hands it to a TAP with TSO/USO: one frame with the whole payload,
 * the L4 checksum field holding only the pseudo-header sum (CHECKSUM_PARTIAL), and its vnet header.
 */
export function superFrame(o: SegOpts & { mss: number }): { frame: Buffer; hdr: Buffer } {
  const f = segment(o);
  const v6 = o.v6 ?? false;
  const l4 = 14 + (v6 ? 40 : 20);
  const l4len = f.length - l4;
  const proto = o.udp ? 17 : 6;
  const pseudo = v6 ? csum(f, 14 + 8, 32, proto + l4len) : csum(f, 14 + 12, 8, proto + l4len);
  const at = l4 + (o.udp ? 6 : 16);
  f.writeUInt16BE(pseudo, at);
  const gsoType = o.udp ? VIRTIO_NET_HDR_GSO_UDP_L4 : v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
  const hdrLen = l4 + (o.udp ? 8 : (f[l4 + 12]! >> 4) * 4);
  return { frame: f, hdr: vnet({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType, hdrLen, gsoSize: o.mss, csumStart: l4, csumOffset: o.udp ? 6 : 16 }) };
}

export interface Parsed {
  v6: boolean;
  udp: boolean;
  ipOk: boolean;
  l4Ok: boolean;
  ipLen: number;
  ipId: number;
  seq: number;
  flags: number;
  payload: Buffer;
}

/** Parses an Ethernet/IP/TCP|UDP frame and verifies its checksums. */
export function parse(f: Buffer): Parsed {
  const v6 = f.readUInt16BE(12) === 0x86dd;
  const l3 = 14;
  const iphl = v6 ? 40 : (f[l3]! & 15) * 4;
  const proto = v6 ? f[l3 + 6]! : f[l3 + 9]!;
  const ipLen = v6 ? 40 + f.readUInt16BE(l3 + 4) : f.readUInt16BE(l3 + 2);
  const t = l3 + iphl;
  const udp = proto === 17;
  const l4hl = udp ? 8 : (f[t + 12]! >> 4) * 4;
  const l4len = f.length - t;
  const pseudo = v6 ? csum(f, l3 + 8, 32, proto + l4len) : csum(f, l3 + 12, 8, proto + l4len);
  return {
    v6,
    udp,
    ipOk: v6 || csum(f, l3, iphl) === 0xffff,
    l4Ok: csum(f, t, l4len, pseudo) === 0xffff && (!udp || f.readUInt16BE(t + 6) !== 0),
    ipLen,
    ipId: v6 ? 0 : f.readUInt16BE(l3 + 4),
    seq: udp ? 0 : f.readUInt32BE(t + 4),
    flags: udp ? 0 : f[t + 13]!,
    payload: f.subarray(t + l4hl),
  };
}

/** The records native `coalesce` writes: [u32 LE length][vnet header + packet]. */
export function records(out: Buffer, used: number): Array<{ hdr: VirtioNetHdr; frame: Buffer }> {
  const r: Array<{ hdr: VirtioNetHdr; frame: Buffer }> = [];
  let at = 0;
  while (at < used) {
    const len = out.readUInt32LE(at);
    r.push({ hdr: readVnet(out, at + 4), frame: Buffer.from(out.subarray(at + 14, at + 4 + len)) });
    at += 4 + len;
  }
  return r;
}

export const pay = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));
