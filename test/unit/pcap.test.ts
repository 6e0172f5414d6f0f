// The capture reader the namespace tests count datagrams with: a UDP GSO send seen before the
// kernel cuts it must read as the datagrams that reach the wire, and nothing else may be cut.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { udpRecords } from '../helpers/pcap.js';
import { arpRequest, datagram, ipv4Frame } from '../helpers/frames.js';

const dir = mkdtempSync(join(tmpdir(), 'uvt-pcap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An outer Ethernet/IPv4/UDP frame carrying `payload`, with IP ID `id`. */
function outer4(payload: Buffer, id = 0x1234): Buffer {
  const f = Buffer.alloc(14 + 20 + 8 + payload.length);
  f.writeUInt16BE(0x0800, 12);
  f.set([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2], 14);
  f.writeUInt16BE(20 + 8 + payload.length, 16);
  f.writeUInt16BE(id, 18);
  f.writeUInt16BE(50001, 34);
  f.writeUInt16BE(4789, 36);
  f.writeUInt16BE(8 + payload.length, 38);
  payload.copy(f, 42);
  return f;
}

/** The same over IPv6. */
function outer6(payload: Buffer): Buffer {
  const f = Buffer.alloc(14 + 40 + 8 + payload.length);
  f.writeUInt16BE(0x86dd, 12);
  f[14] = 0x60;
  f.writeUInt16BE(8 + payload.length, 18);
  f[20] = 17;
  f[21] = 64;
  f.set([0x20, 0x01, 0x0d, 0xb8], 22);
  f[37] = 1;
  f.set([0x20, 0x01, 0x0d, 0xb8], 38);
  f[53] = 2;
  f.writeUInt16BE(4789, 56);
  f.writeUInt16BE(8 + payload.length, 58);
  payload.copy(f, 62);
  return f;
}

function pcap(name: string, frames: Buffer[]): string {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(65535, 16);
  head.writeUInt32LE(1, 20);
  const recs = frames.map((f) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    return Buffer.concat([r, f]);
  });
  const file = join(dir, name);
  writeFileSync(file, Buffer.concat([head, ...recs]));
  return file;
}

const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const inner = (n: number) => {
  const f = ipv4Frame(B, A, '10.0.0.106', '10.0.0.107');
  f[14 + 19] = n; // a different destination address per segment, so the order is checked
  return f;
};

describe('udpRecords', () => {
  it('cuts a UDP GSO send of VXLAN datagrams where the kernel does: the size of the first, the last shorter', () => {
    const last = Buffer.concat([inner(3).subarray(0, 14), Buffer.from([0x45, 0, 0, 24]), inner(3).subarray(18, 14 + 24)]);
    const parts = [datagram(1, inner(1)), datagram(1, inner(2)), datagram(1, last)];
    const recs = udpRecords(pcap('gso4.pcap', [outer4(Buffer.concat(parts), 0xfffe)]));
    expect(recs.map((r) => r.payload)).toEqual(parts);
    // each with the outer headers the wire shows: its own lengths, the IP ID one more each time
    expect(recs.map((r) => r.frame.readUInt16BE(16))).toEqual(parts.map((p) => 20 + 8 + p.length));
    expect(recs.map((r) => r.frame.readUInt16BE(38))).toEqual(parts.map((p) => 8 + p.length));
    expect(recs.map((r) => r.frame.readUInt16BE(18))).toEqual([0xfffe, 0xffff, 0]);
    expect(recs.every((r) => r.src === '198.51.100.1' && r.srcPort === 50001 && r.dstPort === 4789)).toBe(true);
    // and over IPv6
    const recs6 = udpRecords(pcap('gso6.pcap', [outer6(Buffer.concat(parts.slice(0, 2)))]));
    expect(recs6.map((r) => r.payload)).toEqual(parts.slice(0, 2));
    expect(recs6.map((r) => r.frame.readUInt16BE(18))).toEqual([8 + parts[0]!.length, 8 + parts[1]!.length]);
    expect(recs6[1]!.dst).toBe('2001:db8::2');
  });

  it('leaves whole what is one datagram: a padded short frame, a frame it cannot size, a lone datagram', () => {
    const padded = datagram(1, Buffer.concat([arpRequest(A, '10.0.0.106', '10.0.0.107'), Buffer.alloc(18)]));
    const unknownType = datagram(1, Buffer.concat([Buffer.alloc(12, 2), Buffer.from([0x88, 0xb5]), datagram(1, inner(1))]));
    const lone = datagram(1, inner(1));
    const recs = udpRecords(pcap('whole.pcap', [outer4(padded), outer4(unknownType), outer4(lone)]));
    expect(recs.map((r) => r.payload)).toEqual([padded, unknownType, lone]);
    expect(recs.every((r, i) => r.frame.equals(outer4([padded, unknownType, lone][i]!)))).toBe(true);
  });
});
