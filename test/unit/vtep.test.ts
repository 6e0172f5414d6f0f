import { beforeEach, describe, expect, it, vi } from 'vitest';
import { resolveConfig, type VtepOptions } from '../../src/config.js';
import { MemoryDevice } from '../../src/device/memory.js';
import { DropReason, Vtep } from '../../src/vtep.js';
import { MAC_ZERO } from '../../src/wire/ethernet.js';
import { datagram, expectVxlan, frame, innerFrame, innerDst, mac, vni } from '../helpers/frames.js';
import { FakeTransport } from '../helpers/fake-transport.js';
import { StateError } from '../../src/errors.js';

const ME = '02:00:00:00:00:0a';
const PEER = '02:00:00:00:00:0b';
const OTHER = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';

async function setup(opts: Partial<VtepOptions> = {}, clock?: () => number) {
  const port = new MemoryDevice({ mac: ME });
  const transport = new FakeTransport();
  const config = resolveConfig({ vni: 42, remotes: ['198.51.100.2', '198.51.100.3'], ...opts });
  const vtep = new Vtep(config, { device: port, transport, ...(clock ? { clock } : {}) });
  await vtep.start();
  const delivered: Buffer[] = [];
  port.on('frame', (f) => delivered.push(f));
  return { port, transport, vtep, delivered };
}

describe('encapsulation', () => {
  let t: Awaited<ReturnType<typeof setup>>;
  beforeEach(async () => {
    t = await setup();
  });

  it('broadcast goes to every default remote with the exact frame and a clean header', () => {
    const f = frame(BCAST, ME, { size: 100 });
    t.port.inject(f);
    expect(t.transport.sent.map((s) => s.remote.address)).toEqual(['198.51.100.2', '198.51.100.3']);
    for (const s of t.transport.sent) {
      expect(s.remote.port).toBe(4789);
      expectVxlan(s.bytes, vni(42), innerDst(BCAST), innerFrame(f));
    }
    expect(t.vtep.stats).toMatchObject({ txFrames: 1, txPackets: 2, txBytes: 2 * f.length, floodCopies: 2 });
  });

  it('unknown unicast floods; after learning, unicast goes to one remote only', () => {
    t.port.inject(frame(PEER, ME));
    expect(t.transport.sent).toHaveLength(2);
    t.transport.receive(datagram(42, frame(ME, PEER)), '198.51.100.3');
    t.transport.sent = [];
    const f = frame(PEER, ME, { size: 200, seed: 7 });
    t.port.inject(f);
    expect(t.transport.sent).toHaveLength(1);
    expect(t.transport.sent[0]!.remote.address).toBe('198.51.100.3');
    expectVxlan(t.transport.sent[0]!.bytes, vni(42), innerFrame(f));
    expect(t.vtep.stats.floodCopies).toBe(2);
  });

  it('a batch of frames crosses as one transport batch, headers written in place (zero copy)', () => {
    t.vtep.fdb.add(mac(PEER), t.vtep.fdb.remote('198.51.100.9'));
    const frames = Array.from({ length: 64 }, (_, i) => frame(PEER, ME, { size: 60 + i, seed: i }));
    t.port.inject(frames);
    expect(t.transport.batches).toBe(1);
    expect(t.transport.sent).toHaveLength(64);
    const slab = t.transport.sent[0]!.view.buffer;
    t.transport.sent.forEach((s, i) => {
      expect(s.view.buffer).toBe(slab); // a view into the port's slab, not a copy
      expectVxlan(s.bytes, vni(42), innerFrame(frames[i]!));
    });
  });

  it('multicast destinations flood', () => {
    t.port.inject(frame('33:33:00:00:00:01', ME));
    expect(t.transport.sent).toHaveLength(2);
  });

  it('TooBig: never sends a datagram larger than the underlay MTU allows', () => {
    // 1500 - 20 (IPv4) - 8 (UDP) - 8 (VXLAN) = 1464-byte frames at most
    t.port.inject([frame(BCAST, ME, { size: 1464 - 14 }), frame(BCAST, ME, { size: 1465 - 14 })]);
    expect(t.transport.sent.map((s) => s.bytes.length)).toEqual([1472, 1472]);
    expect(t.vtep.stats.drops.TooBig).toBe(1);
  });

  it('short frames and an empty flood list are counted drops', async () => {
    t.port.inject(Buffer.alloc(13));
    expect(t.vtep.stats.drops.FrameTruncated).toBe(1);
    const u = await setup({ remotes: [] });
    u.port.inject(frame(BCAST, ME));
    expect(u.transport.sent).toHaveLength(0);
    expect(u.vtep.stats.drops.NoRemote).toBe(1);
  });

  it('a multicast group is a flood destination at the destination port', async () => {
    const u = await setup({ remotes: [], group: '239.1.1.1', dstPort: 8472 });
    u.port.inject(frame(BCAST, ME));
    expect(u.transport.sent.map((s) => [s.remote.address, s.remote.port])).toEqual([['239.1.1.1', 8472]]);
  });
});

describe('decapsulation', () => {
  it('delivers the exact inner frame and learns source MAC -> outer source IP', async () => {
    const t = await setup();
    const learned = vi.fn();
    t.vtep.on('learned', learned);
    const f = frame(ME, PEER, { size: 300 });
    t.transport.receive(datagram(42, f), '198.51.100.7');
    expect(t.delivered).toHaveLength(1);
    expect(t.delivered[0]!.equals(f)).toBe(true);
    expect(t.vtep.fdb.lookup(mac(PEER))!.remotes[0]).toMatchObject({ address: '198.51.100.7', port: 4789 });
    expect(learned).toHaveBeenCalledTimes(1);
    expect(t.vtep.stats).toMatchObject({ rxDatagrams: 1, rxPackets: 1, rxBytes: f.length, dropsTotal: 0, fdbSize: 1 });
  });

  const good = frame(ME, PEER);
  const cases: Array<[string, Buffer, keyof typeof DropReason, Partial<VtepOptions>?]> = [
    ['empty datagram', Buffer.alloc(0), 'Truncated'],
    ['7 bytes', Buffer.from('08000000000000', 'hex'), 'Truncated'],
    ['I flag clear', datagram(42, good, { flags: 0 }), 'InvalidHeader'],
    ['wrong VNI', datagram(43, good), 'UnknownVni'],
    ['VNI 0', datagram(0, good), 'UnknownVni'],
    ['reserved bits, strict', datagram(42, good, { reserved2: 1 }), 'ReservedBits', { reservedBits: 'strict' }],
    ['reserved flags, strict', datagram(42, good, { flags: 0x0c }), 'ReservedBits', { reservedBits: 'strict' }],
    ['inner frame 13 bytes', datagram(42, good.subarray(0, 13)), 'InnerTruncated'],
    ['header only', datagram(42, Buffer.alloc(0)), 'InnerTruncated'],
    ['our own source MAC', datagram(42, frame(BCAST, ME)), 'LocalMac'],
    ['zero source MAC', datagram(42, frame(ME, '00:00:00:00:00:00')), 'InvalidSrcMac'],
    ['multicast source MAC', datagram(42, frame(ME, '01:00:5e:00:00:01')), 'InvalidSrcMac'],
  ];
  it.each(cases)('%s: dropped, counted, nothing learned or delivered', async (_n, d, reason, opts) => {
    const t = await setup(opts);
    t.transport.receive(d);
    expect(t.delivered).toHaveLength(0);
    expect(t.vtep.stats.drops[reason]).toBe(1);
    expect(t.vtep.stats.dropsTotal).toBe(1);
    expect(t.vtep.fdb.size).toBe(0);
  });

  it('reserved bits are ignored by default (RFC 7348)', async () => {
    const t = await setup();
    t.transport.receive(datagram(42, good, { flags: 0xff, reserved1: 0xffffff, reserved2: 0xff }));
    expect(t.delivered).toHaveLength(1);
  });

  it('a static entry is never migrated: the spoofed frame is dropped', async () => {
    const t = await setup();
    t.vtep.fdb.add(mac(PEER), t.vtep.fdb.remote('198.51.100.2'));
    t.transport.receive(datagram(42, good), '198.51.100.66');
    expect(t.delivered).toHaveLength(0);
    expect(t.vtep.stats.drops.StaticConflict).toBe(1);
    t.transport.receive(datagram(42, good), '198.51.100.2');
    expect(t.delivered).toHaveLength(1);
  });

  it('learning off: delivers without learning', async () => {
    const t = await setup({ learning: false });
    t.transport.receive(datagram(42, good));
    expect(t.delivered).toHaveLength(1);
    expect(t.vtep.fdb.size).toBe(0);
  });

  it('a full FDB refuses new MACs but still delivers', async () => {
    const t = await setup({ maxAddress: 1 });
    t.transport.receive(datagram(42, frame(ME, PEER)));
    t.transport.receive(datagram(42, frame(ME, OTHER)));
    expect(t.delivered).toHaveLength(2);
    expect(t.vtep.stats).toMatchObject({ fdbSize: 1, learnRefused: 1 });
  });

  it('a port that refuses the frame is a TapBusy drop', async () => {
    const t = await setup();
    vi.spyOn(t.port, 'writeBatch').mockImplementation(() => {
      Object.assign(t.port, { lostBytes: good.length });
      return 1;
    });
    t.transport.receive(datagram(42, good));
    expect(t.vtep.stats.drops.TapBusy).toBe(1);
    expect(t.vtep.stats.dropsTotal).toBe(1);
    expect(t.vtep.stats).toMatchObject({ rxPackets: 0, rxBytes: 0 });
  });

  it('a UDP GRO message of several datagrams: each checked on its own, delivered in one port batch', async () => {
    const t = await setup();
    const writes = vi.spyOn(t.port, 'writeBatch');
    const ok = (i: number) => datagram(42, frame(ME, PEER, { size: 100, seed: i }));
    const wrongVni = datagram(7, frame(ME, PEER, { size: 100 }));
    t.transport.receiveBatch([ok(1), ok(2), wrongVni, ok(3)], '198.51.100.3', ok(1).length);
    expect(writes).toHaveBeenCalledTimes(1);
    expect(t.delivered.map((f) => f[14])).toEqual([1, 2, 3]);
    expect(t.vtep.stats).toMatchObject({ rxDatagrams: 4, rxPackets: 3 });
    expect(t.vtep.stats.drops.UnknownVni).toBe(1);
    expect(t.vtep.fdb.lookup(mac(PEER))!.remotes[0]!.address).toBe('198.51.100.3');
  });
});

describe('many destinations', () => {
  it('a frame flooded to 300 remotes leaves 300 exact datagrams (the send batch never overruns)', async () => {
    const remotes = Array.from({ length: 300 }, (_, i) => `198.51.${100 + (i >> 7)}.${(i & 127) + 1}`);
    const t = await setup({ remotes });
    const f = frame(BCAST, ME, { size: 100 });
    t.port.inject(f);
    expect(t.transport.sent).toHaveLength(300);
    expect(new Set(t.transport.sent.map((s) => s.remote.address)).size).toBe(300);
    for (const s of t.transport.sent) expectVxlan(s.bytes, vni(42), innerFrame(f));
    expect(t.vtep.stats).toMatchObject({ txPackets: 300, floodCopies: 300 });
  });
});

describe('backpressure', () => {
  it('pauses the port while the socket holds slab memory; nothing is overwritten', async () => {
    const t = await setup();
    const first = Array.from({ length: 3 }, (_, i) => frame(BCAST, ME, { seed: i }));
    t.transport.queued = 5; // the "kernel" has not taken the datagrams yet
    t.port.inject(first);
    const views = t.transport.sent.slice();
    expect(views).toHaveLength(6);
    // more frames arrive while the socket is full: they must wait, not overwrite the slab
    t.port.inject([frame(BCAST, ME, { seed: 100 }), frame(BCAST, ME, { seed: 101 })]);
    expect(t.transport.sent).toHaveLength(6);
    for (const s of views) expect(s.view.equals(s.bytes)).toBe(true);
    t.transport.drain();
    expect(t.transport.sent).toHaveLength(10);
    expect(t.vtep.stats.dropsTotal).toBe(0);
  });
});

describe('send errors', () => {
  it('are counted drops, reported at most once a second per remote and code', async () => {
    const t = await setup();
    const reports = vi.fn();
    t.vtep.on('sendError', reports);
    const err = Object.assign(new Error('send EHOSTUNREACH'), { code: 'EHOSTUNREACH', address: '198.51.100.2', port: 4789 });
    for (let i = 0; i < 100; i++) t.transport.handlers!.onSendError(err);
    expect(t.vtep.stats.drops.TxError).toBe(100);
    expect(reports).toHaveBeenCalledTimes(1);
    expect(reports.mock.calls[0]![0]).toMatchObject({ code: 'EHOSTUNREACH', address: '198.51.100.2', count: 1, at: expect.any(Number) });
  });
});

describe('lifecycle', () => {
  it('starts once, closes idempotently, releases port and transport', async () => {
    const t = await setup();
    await expect(t.vtep.start()).rejects.toBeInstanceOf(StateError);
    await t.vtep.close();
    await t.vtep.close();
    expect(t.transport.closed).toBe(true);
    expect(t.port.inject(frame(BCAST, ME))).toBe(0);
  });

  it('a fatal port error closes the Vtep and is emitted', async () => {
    const port = new MemoryDevice({ mac: ME });
    let fail: ((e: Error) => void) | undefined;
    const orig = port.start.bind(port);
    port.start = (f, onError) => {
      fail = onError;
      orig(f, onError);
    };
    const transport = new FakeTransport();
    const vtep = new Vtep(resolveConfig({ vni: 1 }), { device: port, transport });
    await vtep.start();
    const errors: Error[] = [];
    vtep.on('error', (e) => errors.push(e));
    fail!(Object.assign(new Error('read failed: EBADFD'), { code: 'EBADFD' }));
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(vtep.running).toBe(false);
    expect(transport.closed).toBe(true);
  });

  it('default remotes are the all-zero FDB entry', async () => {
    const t = await setup();
    expect(t.vtep.fdb.lookup(MAC_ZERO)!.remotes.map((r) => r.address)).toEqual(['198.51.100.2', '198.51.100.3']);
  });
});

describe('allowFrom (underlay source filter)', () => {
  it('accepts listed sources, drops and never learns from the rest', async () => {
    const t = await setup({ allowFrom: ['198.51.100.0/24', '203.0.113.9'] });
    t.transport.receive(datagram(42, frame(ME, PEER)), '198.51.100.200');
    t.transport.receive(datagram(42, frame(ME, OTHER)), '203.0.113.10');
    t.transport.receive(datagram(42, frame(ME, OTHER)), '203.0.113.9');
    t.transport.receive(datagram(42, frame(ME, '02:00:00:00:00:0d')), '192.0.2.1');
    expect(t.delivered).toHaveLength(2);
    expect(t.vtep.stats.drops.NotAllowed).toBe(2);
    expect(t.vtep.fdb.lookup(mac(OTHER))!.remotes[0]!.address).toBe('203.0.113.9');
    expect(t.vtep.fdb.lookup(mac('02:00:00:00:00:0d'))).toBeUndefined();
  });

  it('IPv6 prefixes; an IPv4 source never matches an IPv6 prefix', async () => {
    const t = await setup({ remotes: ['2001:db8::2'], allowFrom: ['2001:db8::/32'] });
    t.transport.receive(datagram(42, frame(ME, PEER)), '2001:db8:ffff::1');
    t.transport.receive(datagram(42, frame(ME, OTHER)), '2001:db9::1');
    t.transport.receive(datagram(42, frame(ME, OTHER)), '198.51.100.1');
    expect(t.delivered).toHaveLength(1);
    expect(t.vtep.stats.drops.NotAllowed).toBe(2);
  });

  it('a spoofed-source flood is dropped before anything else and leaves a real peer admitted', async () => {
    const t = await setup({ allowFrom: ['198.51.100.0/24'] });
    for (let i = 0; i < 10_000; i++) t.transport.receive(datagram(42, frame(ME, PEER)), `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(t.vtep.stats.drops.NotAllowed).toBe(10_000);
    expect(t.vtep.fdb.size).toBe(0);
    t.transport.receive(datagram(42, frame(ME, PEER)), '198.51.100.3');
    expect(t.delivered).toHaveLength(1);
  });
});

describe('update (SIGHUP)', () => {
  it('replaces the configured remotes in the flood list, keeps run-time ones, and swaps the source filter', async () => {
    const t = await setup({ remotes: ['198.51.100.2', '198.51.100.3'] });
    t.vtep.fdb.append(MAC_ZERO, t.vtep.fdb.remote('198.51.100.9'));
    const next = resolveConfig({ vni: 42, remotes: ['198.51.100.3', '198.51.100.4'], allowFrom: ['198.51.100.4'] });
    const changes = t.vtep.update(next);
    expect(changes).toEqual(['remote 198.51.100.2:4789 removed', 'remote 198.51.100.4:4789 added', 'allow-from 198.51.100.4/32 (was anyone)']);
    expect(t.vtep.fdb.flood.map((r) => r.address).sort()).toEqual(['198.51.100.3', '198.51.100.4', '198.51.100.9']);
    t.transport.receive(datagram(42, frame(ME, PEER)), '198.51.100.5');
    expect(t.vtep.stats.drops.NotAllowed).toBe(1);
    t.transport.receive(datagram(42, frame(ME, PEER)), '198.51.100.4');
    expect(t.delivered).toHaveLength(1);
    expect(t.vtep.config.remotes.map((r) => r.address)).toEqual(['198.51.100.3', '198.51.100.4']);
    expect(t.vtep.update(next)).toEqual([]);
  });
});
