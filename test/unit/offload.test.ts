// native/offload.cc through the addon's test entry points: the TAP reader's split of super-frames
// (segment) and the TAP writer's coalescing (coalesce), byte for byte against test/helpers/tcp.ts.
import { describe, expect, it } from 'vitest';
import { WriterStat } from '../../src/native.js';
import { coalesce, split } from '../helpers/offload.js';
import { csum, GSO_TCPV4, GSO_TCPV6, pay, parse, segment, superFrame, vnet, VNET_NEEDS_CSUM } from '../helpers/tcp.js';

describe('segment: TAP super-frames into MSS-sized frames', () => {
  it.each([
    ['TSO4', { v6: false }],
    ['TSO6', { v6: true }],
  ])('%s: headers per segment, complete checksums, payload in order', (_n, o) => {
    const payload = pay(5000, 3);
    const { frame, hdr } = superFrame({ ...o, seq: 0xfffff000, payload, mss: 1400, flags: 0x80 | 0x10 | 0x08 | 0x01, ipId: 0xfffe });
    const { rc, frames } = split(frame, hdr);
    expect(rc).toBe(4);
    const p = frames.map(parse);
    p.forEach((s, k) => {
      expect(s.ipOk && s.l4Ok, `checksums of segment ${k}`).toBe(true);
      expect(s.seq).toBe((0xfffff000 + k * 1400) >>> 0); // wraps past 2^32
      expect(s.payload.length).toBe(k === 3 ? 800 : 1400);
      expect(s.ipLen).toBe(frames[k]!.length - 14);
      if (!o.v6) expect(s.ipId).toBe((0xfffe + k) & 0xffff);
      expect(s.flags & 0x80, 'CWR on the first only').toBe(k === 0 ? 0x80 : 0);
      expect(s.flags & 0x09, 'PSH and FIN on the last only').toBe(k === 3 ? 0x09 : 0);
    });
    expect(Buffer.concat(p.map((s) => s.payload)).equals(payload)).toBe(true);
  });

  it('USO: UDP datagrams with their own length and checksum', () => {
    const payload = pay(3000, 9);
    const { frame, hdr } = superFrame({ udp: true, seq: 0, payload, mss: 1200 });
    const { rc, frames } = split(frame, hdr);
    expect(rc).toBe(3);
    const p = frames.map(parse);
    for (const s of p) expect(s.ipOk && s.l4Ok).toBe(true);
    expect(frames.map((f) => f.readUInt16BE(14 + 20 + 4))).toEqual([1208, 1208, 608]);
    expect(Buffer.concat(p.map((s) => s.payload)).equals(payload)).toBe(true);
  });

  it('a frame with a partial checksum and no GSO leaves with the checksum complete', () => {
    const { frame } = superFrame({ seq: 5, payload: pay(300, 1), mss: 1400 });
    const { rc, frames } = split(frame, vnet({ flags: VNET_NEEDS_CSUM, csumStart: 34, csumOffset: 16 }));
    expect(rc).toBe(1);
    expect(parse(frames[0]!).l4Ok).toBe(true);
    const udp = superFrame({ udp: true, seq: 0, payload: pay(100, 2), mss: 1400 }).frame;
    expect(parse(split(udp, vnet({ flags: VNET_NEEDS_CSUM, csumStart: 34, csumOffset: 6 })).frames[0]!).l4Ok).toBe(true);
  });

  it('the kernel hdr_len is not trusted: a wrong one changes nothing', () => {
    const { frame, hdr } = superFrame({ seq: 1, payload: pay(4000, 4), mss: 1000 });
    hdr.writeUInt16LE(7, 2);
    const { rc, frames } = split(frame, hdr);
    expect(rc).toBe(4);
    for (const f of frames) expect(parse(f).l4Ok).toBe(true);
  });

  const good = () => superFrame({ seq: 1, payload: pay(4000, 4), mss: 1000 });
  it.each([
    ['unknown flag bits', (h: Buffer) => (h[0] = 0x04), -1],
    ['UFO (GSO type 3)', (h: Buffer) => (h[1] = 3), -1],
    ['an unknown GSO type', (h: Buffer) => (h[1] = 0x21), -1],
    ['gso_size 0', (h: Buffer) => h.writeUInt16LE(0, 4), -1],
    ['csum_start elsewhere', (h: Buffer) => h.writeUInt16LE(30, 6), -1],
    ['csum_offset elsewhere', (h: Buffer) => h.writeUInt16LE(6, 8), -1],
    ['TCPV6 on an IPv4 frame', (h: Buffer) => (h[1] = GSO_TCPV6), -2],
    ['more than 64 segments', (h: Buffer) => h.writeUInt16LE(60, 4), -3],
  ])('refuses %s', (_n, mutate, want) => {
    const { frame, hdr } = good();
    mutate(hdr);
    expect(split(frame, hdr).rc).toBe(want);
  });

  it.each([
    ['a truncated frame', (f: Buffer) => f.subarray(0, 40)],
    ['an IP length that disagrees', (f: Buffer) => (f.writeUInt16BE(100, 16), f)],
    ['a fragment', (f: Buffer) => (f.writeUInt16BE(0x2000, 20), f)],
    ['a UDP frame under TCPV4', (f: Buffer) => ((f[23] = 17), f)],
    ['a TCP data offset below 5', (f: Buffer) => ((f[46] = 0x40), f)],
  ])('refuses %s as bad headers', (_n, mutate) => {
    const { frame, hdr } = good();
    expect(split(mutate(frame), hdr).rc).toBe(-2);
  });

  it('refuses what would not fit its slot', () => {
    const { frame, hdr } = good();
    expect(split(frame, hdr, frame.length + 10).rc).toBe(-4);
  });

  it('a super-frame header with GSO_TCPV4 but no payload is one frame', () => {
    const { frame, hdr } = superFrame({ seq: 1, payload: Buffer.alloc(0), mss: 1000, flags: 0x11 });
    const { rc, frames } = split(frame, hdr);
    expect(rc).toBe(1);
    expect(parse(frames[0]!).l4Ok).toBe(true);
    expect(hdr[1]).toBe(GSO_TCPV4);
  });
});

describe('coalesce: received TCP segments into GSO writes', () => {
  const seg = (i: number, o: Partial<Parameters<typeof segment>[0]> = {}) => segment({ seq: 1000 + i * 1400, payload: pay(1400, i), ...o });

  it('merges contiguous segments of one flow into one write: GSO header, pseudo-header sum, gather of payloads', () => {
    const frames = [0, 1, 2].map((i) => seg(i)).concat(segment({ seq: 1000 + 3 * 1400, payload: pay(600, 3), flags: 0x18 }));
    const { writes, stats } = coalesce(frames);
    expect(writes).toHaveLength(1);
    const w = writes[0]!;
    expect(w.hdr).toMatchObject({ flags: VNET_NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1400, hdrLen: 14 + 20 + 32, csumStart: 34, csumOffset: 16 });
    const p = parse(w.frame);
    expect(p.ipOk).toBe(true);
    expect(p.ipLen).toBe(20 + 32 + 3 * 1400 + 600);
    expect(p.flags).toBe(0x18); // PSH of the last segment carried
    expect(p.payload.equals(Buffer.concat(frames.map((f) => parse(f).payload)))).toBe(true);
    expect(stats[WriterStat.GroWrites]).toBe(1);
    expect(stats[WriterStat.GroSegments]).toBe(4);
  });

  it('keeps interleaved flows apart and merges each', () => {
    const a = [0, 1, 2].map((i) => seg(i, { sport: 1 }));
    const b = [0, 1, 2].map((i) => seg(i, { sport: 2, v6: true }));
    const { writes } = coalesce([a[0]!, b[0]!, a[1]!, b[1]!, a[2]!, b[2]!]);
    expect(writes).toHaveLength(2);
    expect(writes.map((w) => w.hdr.gsoType).sort()).toEqual([GSO_TCPV4, GSO_TCPV6]);
  });

  it('a segment that does not continue its flow flushes that flow first: order within a flow is kept', () => {
    const { writes } = coalesce([seg(0), seg(1), seg(5), seg(6)]);
    expect(writes.map((w) => parse(w.frame).seq)).toEqual([1000, 1000 + 5 * 1400]);
    expect(writes.map((w) => w.hdr.gsoType)).toEqual([GSO_TCPV4, GSO_TCPV4]);
  });

  it.each([
    ['SYN', { flags: 0x12 }],
    ['FIN', { flags: 0x11 }],
    ['another ACK number', { ack: 1 }],
    ['other TCP options', { options: Buffer.from([1, 1, 8, 10, 0, 0, 3, 233, 0, 0, 3, 231]) }],
    ['another TOS', { tos: 4 }],
    // ECN decapsulation marks segments one by one: a CE segment never joins unmarked ones
    ['another ECN mark (CE)', { tos: 3 }],
    ['another ECN mark (ECT(1))', { tos: 1 }],
  ])('%s does not merge', (_n, o) => {
    const { writes } = coalesce([seg(0), seg(1, o)]);
    expect(writes).toHaveLength(2);
  });

  it('a corrupted segment is never merged: written as it came, for the kernel to drop; counted', () => {
    const bad = seg(1);
    bad[100]! ^= 0xff;
    const { writes, stats } = coalesce([seg(0), bad, seg(2)]);
    expect(writes).toHaveLength(3);
    expect(writes[1]!.frame.equals(bad)).toBe(true);
    expect(writes[1]!.hdr.flags).toBe(0); // not marked valid
    expect(stats[WriterStat.BadCsum]).toBe(1);
  });

  it('CHECKSUM_PARTIAL from a local kernel peer (field = pseudo-header sum): passed on as NEEDS_CSUM, merged like a verified one', () => {
    const partial = (f: Buffer, at: number) => {
      const p = Buffer.from(f);
      const v6 = p.readUInt16BE(12) === 0x86dd;
      const l4 = 14 + (v6 ? 40 : 20);
      const l4len = p.length - l4;
      const proto = p[v6 ? 20 : 23]!;
      p.writeUInt16BE(v6 ? csum(p, 22, 32, proto + l4len) : csum(p, 26, 8, proto + l4len), l4 + at);
      return p;
    };
    const one = coalesce([partial(seg(0, { flags: 0x11 }), 16)]);
    expect(one.writes[0]!.hdr).toMatchObject({ flags: VNET_NEEDS_CSUM, gsoType: 0, csumStart: 34, csumOffset: 16 });
    expect(one.stats[WriterStat.PartialCsum]).toBe(1);
    expect(one.stats[WriterStat.BadCsum]).toBe(0);
    const run = coalesce([partial(seg(0), 16), partial(seg(1), 16), seg(2)]);
    expect(run.writes).toHaveLength(1);
    expect(run.writes[0]!.hdr.gsoType).toBe(GSO_TCPV4);
    const udp = partial(segment({ udp: true, seq: 0, payload: pay(100, 1) }), 6);
    const u = coalesce([udp]);
    expect(u.writes[0]!.hdr).toMatchObject({ flags: VNET_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
    // anything else that fails its checksum is not mistaken for a partial one
    const bad = partial(seg(0), 16);
    bad.writeUInt16BE(bad.readUInt16BE(50) ^ 1, 50);
    const b = coalesce([bad]);
    expect(b.writes[0]!.hdr.flags).toBe(0);
    expect(b.stats[WriterStat.BadCsum]).toBe(1);
  });

  it('UDP is written datagram by datagram, in order, each marked verified', () => {
    const d = (i: number, n = 64) => segment({ udp: true, seq: 0, payload: pay(n, i) });
    const frames = [0, 1, 2, 3].map((i) => d(i));
    const { writes } = coalesce(frames);
    expect(writes.map((w) => w.frame)).toEqual(frames);
    expect(writes.map((w) => [w.hdr.gsoType, w.hdr.flags])).toEqual(frames.map(() => [0, 2]));
  });

  it('frames that are neither TCP nor UDP are written as they are, unmarked, in order', () => {
    const udp = segment({ udp: true, seq: 0, payload: pay(100, 1) });
    const arp = Buffer.alloc(60, 1);
    const { writes } = coalesce([udp, arp]);
    expect(writes.map((w) => w.frame)).toEqual([udp, arp]);
    expect(writes.map((w) => [w.hdr.gsoType, w.hdr.flags])).toEqual([
      [0, 2], // DATA_VALID: the UDP checksum was verified
      [0, 0],
    ]);
  });

  it('gro off: every frame is its own write', () => {
    const { writes } = coalesce([seg(0), seg(1), seg(2)], false);
    expect(writes).toHaveLength(3);
  });
});
