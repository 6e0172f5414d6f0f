// Minimal pcap reader (libpcap format, Ethernet link type): enough to pull UDP datagrams out of
// a tcpdump capture and check them byte by byte.
import { readFileSync } from 'node:fs';

export interface UdpRecord {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  /** UDP payload. */
  payload: Buffer;
  /** IPv4 flags/fragment offset word (0 for IPv6). */
  fragWord: number;
  /** Whole Ethernet frame. */
  frame: Buffer;
}

export function readPcapFrames(file: string): Buffer[] {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && b.readUInt32BE(0) !== 0xa1b2c3d4 && b.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linkType = u32(20);
  if (linkType !== 1) throw new Error(`pcap link type ${linkType}, expected Ethernet (1)`);
  const frames: Buffer[] = [];
  let o = 24;
  while (o + 16 <= b.length) {
    const incl = u32(o + 8);
    frames.push(b.subarray(o + 16, o + 16 + incl));
    o += 16 + incl;
  }
  return frames;
}

function ip6(b: Buffer, o: number): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(o + i).toString(16));
  return parts.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

/**
 * One record per UDP datagram on the wire. A capture on the sending host sees a UDP GSO send
 * (UDP_SEGMENT) before it is cut, as one datagram holding several VXLAN datagrams back to back;
 * such a record is split where the kernel cuts it: every segment the size of the first (its VXLAN
 * header and inner frame), the last one shorter. Each part gets its own outer headers with the
 * lengths of the part (and, for IPv4, the IP ID the kernel gives it: one more per segment).
 */
export function udpRecords(file: string): UdpRecord[] {
  const out: UdpRecord[] = [];
  for (const f of readPcapFrames(file)) {
    const type = f.readUInt16BE(12);
    let u: number;
    if (type === 0x0800) {
      if (f[14 + 9] !== 17) continue;
      u = 14 + (f[14]! & 0x0f) * 4;
    } else if (type === 0x86dd) {
      if (f[14 + 6] !== 17) continue;
      u = 14 + 40;
    } else continue;
    const payload = f.subarray(u + 8, u + f.readUInt16BE(u + 4));
    const parts = vxlanGsoParts(payload);
    parts.forEach((part, i) => {
      let frame = f;
      if (parts.length > 1) {
        frame = Buffer.concat([f.subarray(0, u + 8), part]);
        frame.writeUInt16BE(8 + part.length, u + 4);
        if (type === 0x0800) {
          frame.writeUInt16BE(u - 14 + 8 + part.length, 16);
          frame.writeUInt16BE((f.readUInt16BE(18) + i) & 0xffff, 18);
        } else frame.writeUInt16BE(8 + part.length, 18);
      }
      out.push({
        src: type === 0x0800 ? [...frame.subarray(26, 30)].join('.') : ip6(frame, 22),
        dst: type === 0x0800 ? [...frame.subarray(30, 34)].join('.') : ip6(frame, 38),
        srcPort: frame.readUInt16BE(u),
        dstPort: frame.readUInt16BE(u + 2),
        payload: frame.subarray(u + 8, u + 8 + part.length),
        fragWord: type === 0x0800 ? frame.readUInt16BE(14 + 6) : 0,
        frame,
      });
    });
  }
  return out;
}

/** The length of the inner frame a VXLAN datagram at `o` carries, from its IP or ARP header. */
function innerFrameLength(p: Buffer, o: number): number | undefined {
  const e = o + 8;
  if (p.length < e + 14) return undefined;
  const type = p.readUInt16BE(e + 12);
  if (type === 0x0800 && p.length >= e + 18) return 14 + p.readUInt16BE(e + 16);
  if (type === 0x86dd && p.length >= e + 20) return 14 + 40 + p.readUInt16BE(e + 18);
  if (type === 0x0806) return 14 + 28;
  return undefined;
}

const vxlanHeaderAt = (p: Buffer, o: number) => p.length >= o + 8 + 14 && p[o] === 0x08 && p[o + 1] === 0 && p[o + 2] === 0 && p[o + 3] === 0 && p[o + 7] === 0;

/**
 * The datagrams of a UDP GSO send: the payload alone unless it holds, after its first VXLAN
 * datagram, another valid VXLAN header (Ethernet padding after a short frame is zeros, which is
 * no VXLAN header, so a padded frame stays whole).
 */
function vxlanGsoParts(p: Buffer): Buffer[] {
  if (!vxlanHeaderAt(p, 0)) return [p];
  const inner = innerFrameLength(p, 0);
  if (inner === undefined) return [p];
  const size = 8 + inner;
  if (size >= p.length || !vxlanHeaderAt(p, size)) return [p];
  const parts: Buffer[] = [];
  for (let o = 0; o < p.length; o += size) parts.push(p.subarray(o, Math.min(o + size, p.length)));
  return parts;
}
