import { describe, expect, it } from 'vitest';
import { TcpCoalescer, VNET_HDR_LEN } from '../../src/port/gro.js';

function csum(b: Buffer, off: number, len: number, sum = 0): number {
  for (let i = 0; i + 1 < len; i += 2) sum += b.readUInt16BE(off + i);
  if (len & 1) sum += b[off + len - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

interface SegOpts {
  seq: number;
  payload: Buffer;
  flags?: number;
  ack?: number;
  v6?: boolean;
  sport?: number;
  ts?: number;
}

/** A valid Ethernet/IP/TCP frame (checksums correct) with a timestamp option. */
function segment(o: SegOpts): Buffer {
  const v6 = o.v6 ?? false;
  const iphl = v6 ? 40 : 20;
  const tcphl = 32; // 20 + NOP NOP TS(10)
  const f = Buffer.alloc(14 + iphl + tcphl + o.payload.length);
  f.writeUIntBE(0x02000000000b, 0, 6);
  f.writeUIntBE(0x02000000000a, 6, 6);
  f.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  const l3 = 14;
  if (!v6) {
    f[l3] = 0x45;
    f.writeUInt16BE(20 + tcphl + o.payload.length, l3 + 2);
    f.writeUInt16BE(0x1234, l3 + 4);
    f.writeUInt16BE(0x4000, l3 + 6); // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = 6;
    Buffer.from([10, 0, 0, 106, 10, 0, 0, 107]).copy(f, l3 + 12);
    f.writeUInt16BE(~csum(f, l3, 20) & 0xffff, l3 + 10);
  } else {
    f.writeUInt32BE(0x60000000, l3);
    f.writeUInt16BE(tcphl + o.payload.length, l3 + 4);
    f[l3 + 6] = 6;
    f[l3 + 7] = 64;
    Buffer.from('20010db8000100000000000000000001', 'hex').copy(f, l3 + 8);
    Buffer.from('20010db8000100000000000000000002', 'hex').copy(f, l3 + 24);
  }
  const t = l3 + iphl;
  f.writeUInt16BE(o.sport ?? 40000, t);
  f.writeUInt16BE(5201, t + 2);
  f.writeUInt32BE(o.seq >>> 0, t + 4);
  f.writeUInt32BE(o.ack ?? 777, t + 8);
  f[t + 12] = (tcphl / 4) << 4;
  f[t + 13] = o.flags ?? 0x10;
  f.writeUInt16BE(502, t + 14);
  Buffer.from([1, 1, 8, 10]).copy(f, t + 20);
  f.writeUInt32BE(o.ts ?? 1000, t + 24);
  f.writeUInt32BE(999, t + 28);
  o.payload.copy(f, t + tcphl);
  const tcpLen = tcphl + o.payload.length;
  const pseudo = v6 ? csum(f, l3 + 8, 32, 6 + tcpLen) : csum(f, l3 + 12, 8, 6 + tcpLen);
  f.writeUInt16BE(~csum(f, t, tcpLen, pseudo) & 0xffff, t + 16);
  return f;
}

const pay = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

function collect() {
  const writes: Array<{ hdr: Buffer; frame: Buffer }> = [];
  const c = new TcpCoalescer((hdr, buf, off, len) => {
    writes.push({ hdr: Buffer.from(hdr), frame: Buffer.from(buf.subarray(off, off + len)) });
    return true;
  });
  return { c, writes };
}

describe('TcpCoalescer', () => {
  it('merges contiguous full-size segments into one GSO write with correct headers', () => {
    const { c, writes } = collect();
    const segs = [0, 1, 2, 3].map((i) => segment({ seq: 1000 + i * 1400, payload: pay(i === 3 ? 600 : 1400, i) }));
    for (const s of segs) expect(c.push(s, 0, s.length)).toBe(true);
    expect(writes).toHaveLength(0); // pending until the turn ends
    c.flush();
    expect(writes).toHaveLength(1);
    const { hdr, frame } = writes[0]!;
    expect(hdr.length).toBe(VNET_HDR_LEN);
    expect(hdr[0]).toBe(1); // NEEDS_CSUM
    expect(hdr[1]).toBe(1); // GSO_TCPV4
    expect(hdr.readUInt16LE(2)).toBe(14 + 20 + 32); // hdr_len
    expect(hdr.readUInt16LE(4)).toBe(1400); // gso_size = MSS
    expect(hdr.readUInt16LE(6)).toBe(34); // csum_start
    expect(hdr.readUInt16LE(8)).toBe(16); // csum_offset
    // payloads concatenated in order
    const payload = frame.subarray(14 + 20 + 32);
    expect(payload.equals(Buffer.concat(segs.map((s) => s.subarray(66))))).toBe(true);
    // IPv4: total length and a valid header checksum; first segment's seq
    expect(frame.readUInt16BE(16)).toBe(20 + 32 + 3 * 1400 + 600);
    expect(csum(frame, 14, 20)).toBe(0xffff);
    expect(frame.readUInt32BE(34 + 4)).toBe(1000);
    // TCP checksum field: the folded pseudo-header sum, for the kernel to complete
    const tcpLen = 32 + 3 * 1400 + 600;
    expect(frame.readUInt16BE(34 + 16)).toBe(csum(frame, 26, 8, 6 + tcpLen));
    expect(c.groWrites).toBe(1);
    expect(c.groSegments).toBe(4);
  });

  it('flushes by itself at the end of the event-loop turn', async () => {
    const { c, writes } = collect();
    c.push(segment({ seq: 1, payload: pay(100, 1) }), 0, 14 + 20 + 32 + 100);
    c.push(segment({ seq: 101, payload: pay(100, 2) }), 0, 14 + 20 + 32 + 100);
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(1);
    expect(writes[0]!.hdr[1]).toBe(1);
  });

  it('PSH on the last segment is kept and ends the run', () => {
    const { c, writes } = collect();
    const a = segment({ seq: 0, payload: pay(500, 1) });
    const b = segment({ seq: 500, payload: pay(500, 2), flags: 0x18 });
    const d = segment({ seq: 1000, payload: pay(500, 3) });
    for (const s of [a, b, d]) c.push(s, 0, s.length);
    c.flush();
    expect(writes.map((w) => w.hdr[1])).toEqual([1, 0]);
    expect(writes[0]!.frame[34 + 13]).toBe(0x18);
    expect(writes[1]!.frame.equals(d)).toBe(true);
  });

  it.each([
    ['a sequence gap', segment({ seq: 5000, payload: pay(1400, 2) })],
    ['another ACK number', segment({ seq: 1400, ack: 778, payload: pay(1400, 2) })],
    ['another flow', segment({ seq: 1400, sport: 40001, payload: pay(1400, 2) })],
    ['different TCP options (timestamp)', segment({ seq: 1400, ts: 1001, payload: pay(1400, 2) })],
    ['a larger segment', segment({ seq: 1400, payload: pay(1401, 2) })],
    ['a FIN', segment({ seq: 1400, flags: 0x11, payload: pay(1400, 2) })],
  ])('%s is not merged; order is kept', (_n, second) => {
    const { c, writes } = collect();
    const first = segment({ seq: 0, payload: pay(1400, 1) });
    c.push(first, 0, first.length);
    c.push(second, 0, second.length);
    c.flush();
    expect(writes.map((w) => w.frame)).toEqual([first, second]);
    expect(writes.every((w) => w.hdr.every((x) => x === 0))).toBe(true);
  });

  it('a segment with a bad checksum is never merged into a good one', () => {
    const { c, writes } = collect();
    const a = segment({ seq: 0, payload: pay(1000, 1) });
    const bad = segment({ seq: 1000, payload: pay(1000, 2) });
    bad[200] = bad[200]! ^ 0xff; // corrupt the payload: the TCP checksum no longer matches
    const d = segment({ seq: 2000, payload: pay(1000, 3) });
    for (const s of [a, bad, d]) c.push(s, 0, s.length);
    c.flush();
    expect(writes.map((w) => w.frame)).toEqual([a, bad, d]);
  });

  it('non-TCP frames pass through in order, flushing what is pending first', () => {
    const { c, writes } = collect();
    const a = segment({ seq: 0, payload: pay(100, 1) });
    const b = segment({ seq: 100, payload: pay(100, 2) });
    const arp = Buffer.alloc(42);
    arp.writeUInt16BE(0x0806, 12);
    c.push(a, 0, a.length);
    c.push(b, 0, b.length);
    c.push(arp, 0, arp.length);
    expect(writes).toHaveLength(2);
    expect(writes[0]!.hdr[1]).toBe(1);
    expect(writes[1]!.frame).toEqual(arp);
  });

  it('IPv6: payload length set, GSO_TCPV6', () => {
    const { c, writes } = collect();
    const segs = [0, 1, 2].map((i) => segment({ v6: true, seq: i * 1200, payload: pay(1200, i) }));
    for (const s of segs) c.push(s, 0, s.length);
    c.flush();
    expect(writes).toHaveLength(1);
    expect(writes[0]!.hdr[1]).toBe(4);
    expect(writes[0]!.hdr.readUInt16LE(6)).toBe(54);
    expect(writes[0]!.frame.readUInt16BE(18)).toBe(32 + 3600);
  });

  it('at most 64 segments and 64 KiB of IP payload per write', () => {
    const { c, writes } = collect();
    for (let i = 0; i < 100; i++) {
      const s = segment({ seq: i * 1400, payload: pay(1400, i) });
      c.push(s, 0, s.length);
    }
    c.flush();
    const counts = writes.map((w) => (w.hdr[1] ? (w.frame.length - 66) / 1400 : 1));
    expect(counts.reduce((a, b) => a + b, 0)).toBe(100);
    for (const w of writes) expect(w.frame.length - 14).toBeLessThanOrEqual(65535);
  });

  it('a failed write counts every frame it carried', () => {
    const c = new TcpCoalescer(() => false);
    const a = segment({ seq: 0, payload: pay(100, 1) });
    const b = segment({ seq: 100, payload: pay(100, 2) });
    c.push(a, 0, a.length);
    c.push(b, 0, b.length);
    c.flush();
    expect(c.writeErrors).toBe(2);
  });
});
