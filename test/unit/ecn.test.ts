// ECN across the tunnel, RFC 6040 normal mode as the kernel's INET_ECN_encapsulate/decapsulate.
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { MemoryDevice } from '../../src/device/memory.js';
import { Vtep } from '../../src/vtep.js';
import { EcnDecap, ecnDecapsulate, encapEcn, innerEcn } from '../../src/wire/inet.js';
import { newRxBatch } from '../../src/transport/transport.js';
import { datagram } from '../helpers/frames.js';
import { FakeTransport } from '../helpers/fake-transport.js';

const NOT = 0;
const ECT1 = 1;
const ECT0 = 2;
const CE = 3;

/** An Ethernet frame with an IPv4 header (TOS `tos`, a valid checksum) and 8 bytes of payload. */
function v4(tos: number, vlan = false): Buffer {
  const eth = Buffer.from(vlan ? '02000000000a02000000000b8100000a0800' : '02000000000a02000000000b0800', 'hex');
  const ip = Buffer.alloc(28);
  ip[0] = 0x45;
  ip[1] = tos;
  ip.writeUInt16BE(28, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0x0a000001, 12);
  ip.writeUInt32BE(0x0a000002, 16);
  ip.writeUInt16BE(ipCsum(ip), 10);
  return Buffer.concat([eth, ip]);
}
function ipCsum(h: Buffer): number {
  let s = 0;
  for (let i = 0; i < 20; i += 2) if (i !== 10) s += h.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
function v6(tclass: number): Buffer {
  const eth = Buffer.from('02000000000a02000000000b86dd', 'hex');
  const ip = Buffer.alloc(48);
  ip.writeUInt32BE((6 << 28) | (tclass << 20) | 0x12345, 0);
  ip.writeUInt16BE(8, 4);
  ip[6] = 17;
  ip[7] = 64;
  return Buffer.concat([eth, ip]);
}
const tos4 = (f: Buffer, l3 = 14) => f[l3 + 1]!;
const tclass6 = (f: Buffer) => (f.readUInt32BE(14) >>> 20) & 0xff;

describe('ECN decapsulation table (RFC 6040 section 4.2, the kernel INET_ECN_decapsulate)', () => {
  // [inner, outer] -> inner after, or 'drop'
  const table: Array<[number, number, number | 'drop' | 'as is']> = [
    [NOT, NOT, NOT], [NOT, ECT0, 'as is'], [NOT, ECT1, 'as is'], [NOT, CE, 'drop'],
    [ECT0, NOT, ECT0], [ECT0, ECT0, ECT0], [ECT0, ECT1, ECT1], [ECT0, CE, CE],
    [ECT1, NOT, ECT1], [ECT1, ECT0, ECT1], [ECT1, ECT1, ECT1], [ECT1, CE, CE],
    [CE, NOT, CE], [CE, ECT0, CE], [CE, ECT1, CE], [CE, CE, CE],
  ];
  it.each(table)('IPv4 inner %i, outer %i -> %s; the header checksum stays valid', (inner, outer, want) => {
    const f = v4(0xb8 | inner); // DSCP EF kept
    const r = ecnDecapsulate(f, 0, f.length, 0x20 | outer);
    if (want === 'drop') return expect(r).toBe(EcnDecap.Drop);
    expect(r).toBe(want === 'as is' ? EcnDecap.NotEct : EcnDecap.Ok);
    expect(tos4(f)).toBe(0xb8 | (want === 'as is' ? inner : want));
    expect(f.readUInt16BE(24)).toBe(ipCsum(f.subarray(14)));
  });
  it.each(table)('IPv6 inner %i, outer %i -> %s; flow label untouched', (inner, outer, want) => {
    const f = v6(0xb8 | inner);
    const r = ecnDecapsulate(f, 0, f.length, outer);
    if (want === 'drop') return expect(r).toBe(EcnDecap.Drop);
    expect(tclass6(f)).toBe(0xb8 | (want === 'as is' ? inner : want));
    expect(f.readUInt32BE(14) & 0xfffff).toBe(0x12345);
  });
  it('behind an 802.1Q tag too; frames that are not IP pass untouched', () => {
    const f = v4(ECT0, true);
    expect(ecnDecapsulate(f, 0, f.length, CE)).toBe(EcnDecap.Ok);
    expect(tos4(f, 18)).toBe(CE);
    const arp = Buffer.from('ffffffffffff02000000000b0806' + '00'.repeat(28), 'hex');
    const copy = Buffer.from(arp);
    expect(ecnDecapsulate(arp, 0, arp.length, CE)).toBe(EcnDecap.Ok);
    expect(arp.equals(copy)).toBe(true);
  });
  it('encapsulation: CE inside is ECT(0) outside, the rest as it is', () => {
    expect([NOT, ECT1, ECT0, CE].map(encapEcn)).toEqual([NOT, ECT1, ECT0, ECT0]);
    expect(innerEcn(v4(CE), 0, 34)).toBe(CE);
    expect(innerEcn(v6(ECT1), 0, 62)).toBe(ECT1);
  });
});

describe('the Vtep applies it', () => {
  async function setup(tos?: number | 'inherit') {
    const port = new MemoryDevice({ mac: '02:00:00:00:00:0a' });
    const t = new FakeTransport();
    Object.assign(t, { needsDsfield: true });
    const vtep = new Vtep(resolveConfig({ vni: 5, remotes: ['198.51.100.2'], ...(tos !== undefined ? { tos } : {}) }), { device: port, transport: t });
    await vtep.start();
    const got: Buffer[] = [];
    port.on('frame', (f) => got.push(f));
    return { port, t, vtep, got };
  }
  it('decap: outer CE marks an ECT inner packet CE; on a not-ECT one it is a counted drop', async () => {
    const { t, vtep, got } = await setup();
    const deliver = (f: Buffer, tos: number) => {
      const d = datagram(5, f);
      const rx = newRxBatch(d, 1);
      rx.lens[0] = d.length;
      rx.srcs[0] = '198.51.100.2';
      rx.tos[0] = tos;
      rx.count = 1;
      t.handlers!.onDatagrams(rx);
    };
    deliver(v4(ECT0), CE);
    deliver(v4(NOT), CE);
    deliver(v4(NOT), ECT0);
    expect(got.map((f) => tos4(f))).toEqual([CE, NOT]);
    expect(vtep.stats.drops.EcnError).toBe(1);
  });
  it('encap: the outer DS field carries the inner ECN with a fixed --tos and with inherit', async () => {
    const dsOf = async (tos: number | 'inherit', inner: number) => {
      const { port, t } = await setup(tos);
      const seen: number[] = [];
      t.send = (b) => {
        for (let i = 0; i < b.count; i++) seen.push(b.dsfield[i]!);
      };
      port.inject(v4(0xb8 | inner));
      return seen[0];
    };
    expect(await dsOf(0, CE)).toBe(ECT0);
    expect(await dsOf(0, ECT1)).toBe(ECT1);
    expect(await dsOf(0, NOT)).toBe(-1); // the socket's default: nothing to carry
    expect(await dsOf(0x20, ECT0)).toBe(0x20 | ECT0);
    expect(await dsOf('inherit', CE)).toBe(0xb8 | ECT0);
  });
});
