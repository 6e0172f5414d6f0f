// Minimal pcap reader (libpcap format, Ethernet link type): enough to pull UDP datagrams out of
// a tcpdump capture and check them byte by byte.
import { readFileSync } from 'node:fs';
import { ETH_HLEN, ethType } from '../../src/wire/ethernet.js';
import { ETH_P_IP, IPV4_DST, IPV4_FRAG, IPV4_ID, IPV4_PROTO, IPV4_SRC, IPV4_TOT_LEN, ipv4HeaderLen, ipv4Text, ipv4TotalLen } from '../../src/wire/ipv4.js';
import { ETH_P_IPV6, IPV6_DST, IPV6_HLEN, IPV6_NEXT, IPV6_PLEN, IPV6_SRC, ipv6PayloadLen, ipv6Text } from '../../src/wire/ipv6.js';
import { ARP_FRAME_LEN, ETH_P_ARP } from '../../src/wire/nd.js';
import { checkVxlan, VXLAN_HLEN, VxlanCheck } from '../../src/wire/vxlan.js';

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
    const v4 = ethType(f, 0) === ETH_P_IP;
    if (v4 ? f[ETH_HLEN + IPV4_PROTO] !== 17 : ethType(f, 0) !== ETH_P_IPV6 || f[ETH_HLEN + IPV6_NEXT] !== 17) continue;
    const u = ETH_HLEN + (v4 ? ipv4HeaderLen(f, ETH_HLEN) : IPV6_HLEN);
    const head = {
      src: v4 ? ipv4Text(f, ETH_HLEN + IPV4_SRC) : ipv6Text(f, ETH_HLEN + IPV6_SRC),
      dst: v4 ? ipv4Text(f, ETH_HLEN + IPV4_DST) : ipv6Text(f, ETH_HLEN + IPV6_DST),
      srcPort: f.readUInt16BE(u),
      dstPort: f.readUInt16BE(u + 2),
      fragWord: v4 ? f.readUInt16BE(ETH_HLEN + IPV4_FRAG) : 0,
    };
    const parts = vxlanGsoParts(f.subarray(u + 8, u + f.readUInt16BE(u + 4)));
    if (parts.length === 1) {
      out.push({ ...head, payload: parts[0]!, frame: f });
      continue;
    }
    parts.forEach((part, i) => {
      const frame = Buffer.concat([f.subarray(0, u + 8), part]);
      frame.writeUInt16BE(8 + part.length, u + 4);
      if (v4) {
        frame.writeUInt16BE(u - ETH_HLEN + 8 + part.length, ETH_HLEN + IPV4_TOT_LEN);
        frame.writeUInt16BE((f.readUInt16BE(ETH_HLEN + IPV4_ID) + i) & 0xffff, ETH_HLEN + IPV4_ID);
      } else frame.writeUInt16BE(8 + part.length, ETH_HLEN + IPV6_PLEN);
      out.push({ ...head, payload: frame.subarray(u + 8), frame });
    });
  }
  return out;
}

/** A VXLAN header the kernel sends (I flag alone, reserved bits clear) at `o`, with an inner Ethernet header after it. */
const vxlanAt = (p: Buffer, o: number) => p.length >= o + VXLAN_HLEN + ETH_HLEN && checkVxlan(p, o, p.length, true) === VxlanCheck.Ok;

/** The length of the inner frame of the VXLAN datagram at the start of `p`, from its IP or ARP header. */
function innerFrameLength(p: Buffer): number | undefined {
  const type = ethType(p, VXLAN_HLEN);
  const l3 = VXLAN_HLEN + ETH_HLEN;
  if (type === ETH_P_IP && p.length >= l3 + 4) return ETH_HLEN + ipv4TotalLen(p, l3);
  if (type === ETH_P_IPV6 && p.length >= l3 + 6) return ETH_HLEN + IPV6_HLEN + ipv6PayloadLen(p, l3);
  if (type === ETH_P_ARP) return ARP_FRAME_LEN;
  return undefined;
}

/**
 * The datagrams of a UDP GSO send: the payload alone unless it holds, after its first VXLAN
 * datagram, another valid VXLAN header (Ethernet padding after a short frame is zeros, which is
 * no VXLAN header, so a padded frame stays whole).
 */
function vxlanGsoParts(p: Buffer): Buffer[] {
  const inner = vxlanAt(p, 0) ? innerFrameLength(p) : undefined;
  const size = inner === undefined ? p.length : VXLAN_HLEN + inner;
  if (size >= p.length || !vxlanAt(p, size)) return [p];
  const parts: Buffer[] = [];
  for (let o = 0; o < p.length; o += size) parts.push(p.subarray(o, o + size));
  return parts;
}
