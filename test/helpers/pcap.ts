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

export function udpRecords(file: string): UdpRecord[] {
  const out: UdpRecord[] = [];
  for (const f of readPcapFrames(file)) {
    const type = f.readUInt16BE(12);
    if (type === 0x0800) {
      const ihl = (f[14]! & 0x0f) * 4;
      if (f[14 + 9] !== 17) continue;
      const u = 14 + ihl;
      const len = f.readUInt16BE(u + 4);
      out.push({
        src: [...f.subarray(26, 30)].join('.'),
        dst: [...f.subarray(30, 34)].join('.'),
        srcPort: f.readUInt16BE(u),
        dstPort: f.readUInt16BE(u + 2),
        payload: f.subarray(u + 8, u + len),
        fragWord: f.readUInt16BE(14 + 6),
        frame: f,
      });
    } else if (type === 0x86dd) {
      if (f[14 + 6] !== 17) continue;
      const u = 14 + 40;
      const len = f.readUInt16BE(u + 4);
      out.push({ src: ip6(f, 22), dst: ip6(f, 38), srcPort: f.readUInt16BE(u), dstPort: f.readUInt16BE(u + 2), payload: f.subarray(u + 8, u + len), fragWord: 0, frame: f });
    }
  }
  return out;
}
