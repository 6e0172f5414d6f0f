/**
 * Receive-side coalescing for a TAP with a virtio_net_hdr (IFF_VNET_HDR): consecutive segments
 * of one TCP stream, decapsulated in the same event-loop turn, become one large segment written
 * once with GSO metadata, which the kernel's stack takes as the kernel's own GRO would hand it
 * over. One write() and one pass through IP and TCP instead of one per 1,464-byte frame.
 *
 * The rules are GRO's (tcp_gro_receive): same addresses, ports and ACK number, identical TCP
 * options, contiguous sequence numbers, only ACK (and PSH on the last) set, every segment but the
 * last exactly the first one's size, IPv4 without options or fragments, IPv6 without extension
 * headers. Every segment's checksums are verified before it is merged, so a corrupted segment is
 * never hidden inside a good one; anything else is written as it came, in order.
 */

export const VNET_HDR_LEN = 10;
const NEEDS_CSUM = 1;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const MAX_SEGMENTS = 64;
const MAX_IP_PAYLOAD = 65535;
const ETH = 14;
const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

/** Where the coalescer writes: a frame behind a virtio_net_hdr. Returns false on failure. */
export type VnetWriter = (hdr: Uint8Array, buf: Uint8Array, off: number, len: number) => boolean;

/** Ones'-complement sum of buf[off, off+len) added to `sum` (not folded). */
function sum16(b: Uint8Array, off: number, len: number, sum: number): number {
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
  if (len & 1) sum += b[off + len - 1]! << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** Parsed facts about a frame that may be coalesced; `ok` false otherwise. */
interface Seg {
  ok: boolean;
  v6: boolean;
  iphl: number;
  tcp: number;
  tcphl: number;
  payload: number;
  seq: number;
  flags: number;
}

export class TcpCoalescer {
  /** Large writes made, and the segments they carried. */
  groWrites = 0;
  groSegments = 0;
  /** Writes that failed (the frames are lost: counted as TapBusy by the Vtep). */
  writeErrors = 0;

  private readonly write: VnetWriter;
  private readonly zeroHdr = new Uint8Array(VNET_HDR_LEN);
  private readonly gsoHdr = new Uint8Array(VNET_HDR_LEN);
  private readonly hdrView = new DataView(this.gsoHdr.buffer);
  private readonly out = Buffer.allocUnsafeSlow(ETH + 60 + 60 + MAX_IP_PAYLOAD);
  private readonly bufs: Uint8Array[] = new Array<Uint8Array>(MAX_SEGMENTS);
  private readonly offs = new Int32Array(MAX_SEGMENTS);
  private readonly lens = new Int32Array(MAX_SEGMENTS);
  private count = 0;
  /** The first pending segment: its headers are the merged segment's. */
  private first: Seg = { ok: false, v6: false, iphl: 0, tcp: 0, tcphl: 0, payload: 0, seq: 0, flags: 0 };
  private nextSeq = 0;
  private totalPayload = 0;
  private ended = false;
  /** The last pending segment had PSH: the merged segment carries it. */
  private lastPsh = false;
  private scheduled = false;
  private readonly seg: Seg = { ok: false, v6: false, iphl: 0, tcp: 0, tcphl: 0, payload: 0, seq: 0, flags: 0 };
  private readonly flushSoon = (): void => {
    this.scheduled = false;
    this.flush();
  };

  constructor(write: VnetWriter) {
    this.write = write;
  }

  /** Takes one frame; it is written now, or merged and written by `flush()` later this turn. */
  push(buf: Uint8Array, off: number, len: number): boolean {
    const s = this.parse(buf, off, len);
    if (!s.ok) {
      this.flush();
      return this.writePlain(buf, off, len);
    }
    if (this.count > 0 && !this.fits(buf, off, s)) this.flush();
    if (this.count === 0) {
      const f = this.first;
      f.v6 = s.v6;
      f.iphl = s.iphl;
      f.tcp = s.tcp;
      f.tcphl = s.tcphl;
      f.payload = s.payload;
      this.totalPayload = 0;
    }
    const i = this.count++;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.totalPayload += s.payload;
    this.nextSeq = (s.seq + s.payload) >>> 0;
    this.lastPsh = (s.flags & TCP_PSH) !== 0;
    this.ended = this.lastPsh || s.payload < this.first.payload;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushSoon);
    }
    return true;
  }

  /** Writes what is pending: as it came when alone, merged otherwise. */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    this.count = 0;
    if (n === 1) {
      this.writePlain(this.bufs[0]!, this.offs[0]!, this.lens[0]!);
      this.bufs[0] = undefined as unknown as Uint8Array;
      return;
    }
    const f = this.first;
    const b0 = this.bufs[0]!;
    const o0 = this.offs[0]!;
    const hlen = f.tcp - o0 + f.tcphl; // Ethernet + IP + TCP headers
    const out = this.out;
    out.set(b0.subarray(o0, o0 + hlen), 0);
    let w = hlen;
    for (let i = 0; i < n; i++) {
      const b = this.bufs[i]!;
      const o = this.offs[i]!;
      const start = o + hlen;
      out.set(b.subarray(start, o + this.lens[i]!), w);
      w += this.lens[i]! - hlen;
      this.bufs[i] = undefined as unknown as Uint8Array;
    }
    const l3 = ETH;
    const tcp = ETH + f.iphl;
    const tcpLen = f.tcphl + this.totalPayload;
    if (this.lastPsh) out[tcp + 13] = out[tcp + 13]! | TCP_PSH;
    let pseudo: number;
    if (!f.v6) {
      out.writeUInt16BE(f.iphl + tcpLen, l3 + 2);
      out.writeUInt16BE(0, l3 + 10);
      out.writeUInt16BE(~fold(sum16(out, l3, f.iphl, 0)) & 0xffff, l3 + 10);
      pseudo = sum16(out, l3 + 12, 8, 6 + tcpLen);
    } else {
      out.writeUInt16BE(tcpLen, l3 + 4);
      pseudo = sum16(out, l3 + 8, 32, 6 + tcpLen);
    }
    // NEEDS_CSUM: the checksum field holds the pseudo-header sum; the kernel adds the rest
    out.writeUInt16BE(fold(pseudo), tcp + 16);
    const h = this.hdrView;
    this.gsoHdr[0] = NEEDS_CSUM;
    this.gsoHdr[1] = f.v6 ? GSO_TCPV6 : GSO_TCPV4;
    h.setUint16(2, hlen, true);
    h.setUint16(4, f.payload, true);
    h.setUint16(6, tcp, true);
    h.setUint16(8, 16, true);
    if (this.write(this.gsoHdr, out, 0, w)) {
      this.groWrites++;
      this.groSegments += n;
    } else {
      this.writeErrors += n;
    }
  }

  private writePlain(buf: Uint8Array, off: number, len: number): boolean {
    if (this.write(this.zeroHdr, buf, off, len)) return true;
    this.writeErrors++;
    return false;
  }

  /** Whether segment `s` continues the pending run. */
  private fits(buf: Uint8Array, off: number, s: Seg): boolean {
    const f = this.first;
    if (this.ended || s.v6 !== f.v6 || s.seq !== this.nextSeq || s.payload > f.payload || s.tcphl !== f.tcphl) return false;
    if (this.count >= MAX_SEGMENTS || f.iphl + f.tcphl + this.totalPayload + s.payload > MAX_IP_PAYLOAD) return false;
    const b0 = this.bufs[0]!;
    const o0 = this.offs[0]!;
    // Ethernet header, then the IP fields that must match
    for (let i = 0; i < ETH; i++) if (buf[off + i] !== b0[o0 + i]) return false;
    const l3 = off + ETH;
    const p3 = o0 + ETH;
    if (!s.v6) {
      if (buf[l3 + 1] !== b0[p3 + 1] || buf[l3 + 8] !== b0[p3 + 8] || (buf[l3 + 6]! & 0x40) !== (b0[p3 + 6]! & 0x40)) return false;
      for (let i = 12; i < 20; i++) if (buf[l3 + i] !== b0[p3 + i]) return false;
    } else {
      for (let i = 0; i < 4; i++) if (buf[l3 + i] !== b0[p3 + i]) return false; // version, class, flow label
      if (buf[l3 + 7] !== b0[p3 + 7]) return false;
      for (let i = 8; i < 40; i++) if (buf[l3 + i] !== b0[p3 + i]) return false;
    }
    // ports, ACK number, and the options
    const t = s.tcp;
    const pt = f.tcp; // offsets are absolute in their buffers
    for (let i = 0; i < 4; i++) if (buf[t + i] !== b0[pt + i]) return false;
    for (let i = 8; i < 12; i++) if (buf[t + i] !== b0[pt + i]) return false;
    for (let i = 20; i < s.tcphl; i++) if (buf[t + i] !== b0[pt + i]) return false;
    return true;
  }

  /** Parses and checks a frame; `seg.ok` says whether it may be merged. Never reads past len. */
  private parse(b: Uint8Array, off: number, len: number): Seg {
    const s = this.seg;
    s.ok = false;
    if (len < ETH + 40) return s;
    const type = (b[off + 12]! << 8) | b[off + 13]!;
    const l3 = off + ETH;
    let iphl: number;
    let ipLen: number;
    if (type === 0x0800) {
      if (b[l3] !== 0x45 || b[l3 + 9] !== 6) return s;
      if ((((b[l3 + 6]! << 8) | b[l3 + 7]!) & 0x3fff) !== 0) return s; // MF or an offset: a fragment
      iphl = 20;
      ipLen = (b[l3 + 2]! << 8) | b[l3 + 3]!;
      if (ETH + ipLen !== len) return s;
      if (fold(sum16(b, l3, 20, 0)) !== 0xffff) return s;
      s.v6 = false;
    } else if (type === 0x86dd) {
      if (b[l3]! >> 4 !== 6 || b[l3 + 6] !== 6 || len < ETH + 60) return s;
      iphl = 40;
      ipLen = 40 + ((b[l3 + 4]! << 8) | b[l3 + 5]!);
      if (ETH + ipLen !== len) return s;
      s.v6 = true;
    } else {
      return s;
    }
    const tcp = l3 + iphl;
    const tcphl = (b[tcp + 12]! >> 4) * 4;
    const flags = b[tcp + 13]!;
    if (tcphl < 20 || tcp + tcphl > off + len) return s;
    if ((flags & TCP_ACK) === 0 || (flags & ~(TCP_ACK | TCP_PSH)) !== 0) return s;
    const payload = len - ETH - iphl - tcphl;
    if (payload <= 0) return s;
    // the segment's own checksum: pseudo-header plus the whole segment must sum to 0xffff
    const tcpLen = tcphl + payload;
    const pseudo = s.v6 ? sum16(b, l3 + 8, 32, 6 + tcpLen) : sum16(b, l3 + 12, 8, 6 + tcpLen);
    if (fold(sum16(b, tcp, tcpLen, pseudo)) !== 0xffff) return s;
    s.ok = true;
    s.iphl = iphl;
    s.tcp = tcp;
    s.tcphl = tcphl;
    s.payload = payload;
    s.seq = ((b[tcp + 4]! << 24) | (b[tcp + 5]! << 16) | (b[tcp + 6]! << 8) | b[tcp + 7]!) >>> 0;
    s.flags = flags;
    return s;
  }
}
