import { describe, expect, it } from 'vitest';
import { Endpoint } from '../../src/endpoint.js';
import { createVtep } from '../../src/index.js';
import { MemoryDevice } from '../../src/device/memory.js';
import { ConfigError } from '../../src/errors.js';
import type { Vtep } from '../../src/vtep.js';
import { datagram, frame, mac } from '../helpers/frames.js';
import { FakeTransport } from '../helpers/fake-transport.js';

const PEER = '02:00:00:00:00:0b';
const BCAST = 'ff:ff:ff:ff:ff:ff';

/** Three VTEPs (VNI 10, 20, 30) on one endpoint over a fake transport. */
async function three() {
  const t = new FakeTransport();
  const ep = new Endpoint(t);
  const vteps = new Map<number, { vtep: Vtep; port: MemoryDevice; got: Buffer[] }>();
  for (const vni of [10, 20, 30]) {
    const port = new MemoryDevice({ mac: `02:00:00:00:00:${vni}` });
    const vtep = createVtep({ vni, remotes: ['198.51.100.2'], frameDevice: port, endpoint: ep });
    await vtep.start();
    const got: Buffer[] = [];
    port.on('frame', (f) => got.push(f));
    vteps.set(vni, { vtep, port, got });
  }
  return { t, ep, vteps, v: (n: number) => vteps.get(n)! };
}

describe('Endpoint: many VNIs on one UDP port', () => {
  it('hands each datagram to the VTEP of its VNI, never to another', async () => {
    const { t, v, ep } = await three();
    const f10 = frame(BCAST, PEER, { size: 60, seed: 1 });
    const f20 = frame(BCAST, PEER, { size: 61, seed: 2 });
    const f30 = frame(BCAST, PEER, { size: 62, seed: 3 });
    t.receiveBatch([datagram(10, f10), datagram(20, f20), datagram(30, f30), datagram(20, f20), datagram(99, f10)]);
    expect(v(10).got).toEqual([f10]);
    expect(v(20).got).toEqual([f20, f20]);
    expect(v(30).got).toEqual([f30]);
    expect(v(10).vtep.stats.rxDatagrams).toBe(1);
    expect(v(20).vtep.stats.rxDatagrams).toBe(2);
    const s = ep.stats;
    expect(s.rxDatagrams).toBe(5);
    expect(s.drops.UnknownVni).toBe(1);
    expect(s.vnis.sort()).toEqual([10, 20, 30]);
    for (const n of [10, 20, 30]) expect(v(n).vtep.stats.dropsTotal).toBe(0);
  });

  it('a GRO message mixing VNIs is split per datagram; a one-VNI message stays whole', async () => {
    const { t, v } = await three();
    const a = frame(PEER, PEER.replace('0b', '0c'), { size: 100, seed: 4 });
    // equal-size datagrams of VNIs 10, 20, 10 in one GRO message
    t.receiveBatch([datagram(10, a), datagram(20, a), datagram(10, a)], '198.51.100.2', a.length + 8);
    expect(v(10).got).toHaveLength(2);
    expect(v(20).got).toHaveLength(1);
    expect(v(10).got[0]!.equals(a)).toBe(true);
    t.receiveBatch([datagram(30, a), datagram(30, a), datagram(30, a)], '198.51.100.2', a.length + 8);
    expect(v(30).got).toHaveLength(3);
    expect(v(30).vtep.stats.rxDatagrams).toBe(3);
  });

  it('datagrams without a VXLAN header are the endpoint\'s drops, counted by reason', async () => {
    const { t, ep, v } = await three();
    t.receiveBatch([Buffer.alloc(5), datagram(10, frame(BCAST, PEER), { flags: 0 }), datagram(12345, frame(BCAST, PEER)), datagram(10, frame(BCAST, PEER))]);
    expect(ep.stats.drops).toMatchObject({ Truncated: 1, InvalidHeader: 1, UnknownVni: 1 });
    expect(ep.stats.dropsTotal).toBe(3);
    expect(v(10).got).toHaveLength(1);
  });

  it('one VTEP and only its datagrams: the batch is handed over as it is (no split)', async () => {
    const t = new FakeTransport();
    const ep = new Endpoint(t);
    const given: unknown[] = [];
    const got: unknown[] = [];
    const lane = ep.lane(7);
    await lane.open({ onDatagrams: (b) => got.push(b), onSendError: () => undefined, onError: () => undefined });
    const inner = t.handlers!.onDatagrams;
    t.handlers!.onDatagrams = (b) => {
      given.push(b);
      inner(b);
    };
    t.receiveBatch([datagram(7, frame(BCAST, PEER)), datagram(7, frame(BCAST, PEER))]);
    expect(got).toHaveLength(1);
    expect(got[0]).toBe(given[0]);
    // with a datagram of another VNI in it, the lane gets its own batch of the two
    t.receiveBatch([datagram(7, frame(BCAST, PEER)), datagram(8, frame(BCAST, PEER)), datagram(7, frame(BCAST, PEER))]);
    expect(got).toHaveLength(2);
    expect(got[1]).not.toBe(given[1]);
    expect((got[1] as { count: number }).count).toBe(2);
    expect(ep.stats.drops.UnknownVni).toBe(1);
  });

  it('every VTEP sends through the one transport; send errors reach the VTEP that sent', async () => {
    const { t, v } = await three();
    v(10).port.inject(frame(BCAST, '02:00:00:00:00:10'));
    v(20).port.inject(frame(BCAST, '02:00:00:00:00:20'));
    expect(t.sent.map((s) => s.bytes.readUIntBE(4, 3))).toEqual([10, 20]);
    const remote = t.sent[1]!.remote;
    expect(remote.vni).toBe(20);
    t.handlers!.onSendError(Object.assign(new Error('x'), { code: 'EHOSTUNREACH', remote, datagrams: 3 }));
    expect(v(20).vtep.stats.drops.TxError).toBe(3);
    expect(v(10).vtep.stats.drops.TxError).toBe(0);
  });

  it('a second VTEP for a served VNI is refused, and the first keeps working', async () => {
    const { t, ep, v } = await three();
    const dup = createVtep({ vni: 20, remotes: ['198.51.100.3'], frameDevice: new MemoryDevice(), endpoint: ep });
    await expect(dup.start()).rejects.toThrow(ConfigError);
    await expect(createVtep({ vni: 20, frameDevice: new MemoryDevice(), endpoint: ep }).start()).rejects.toMatchObject({ code: 'UVTEP_ERR_EXISTS', option: 'vni' });
    t.receive(datagram(20, frame(BCAST, PEER)));
    expect(v(20).got).toHaveLength(1);
  });

  it('a VTEP that closes leaves: its VNI becomes unknown, the others carry on', async () => {
    const { t, ep, v } = await three();
    await v(20).vtep.close();
    t.receiveBatch([datagram(10, frame(BCAST, PEER)), datagram(20, frame(BCAST, PEER)), datagram(30, frame(BCAST, PEER))]);
    expect(v(10).got).toHaveLength(1);
    expect(v(20).got).toHaveLength(0);
    expect(v(30).got).toHaveLength(1);
    expect(ep.stats.drops.UnknownVni).toBe(1);
    expect(t.closed).toBe(false);
    // the VNI can be served again
    const again = createVtep({ vni: 20, frameDevice: new MemoryDevice(), endpoint: ep });
    await again.start();
    expect(ep.serves(20)).toBe(true);
    await ep.close();
    expect(t.closed).toBe(true);
  });

  it('multicast groups are joined per VTEP and left with the last VTEP using them', async () => {
    const t = new FakeTransport();
    const ep = new Endpoint(t);
    const a = createVtep({ vni: 1, group: '239.1.1.1', dev: 'lo', frameDevice: new MemoryDevice(), endpoint: ep });
    const b = createVtep({ vni: 2, group: '239.1.1.1', dev: 'lo', frameDevice: new MemoryDevice(), endpoint: ep });
    const c = createVtep({ vni: 3, group: '239.1.1.2', dev: 'lo', frameDevice: new MemoryDevice(), endpoint: ep });
    await Promise.all([a.start(), b.start(), c.start()]);
    expect(t.groups.sort()).toEqual(['239.1.1.1', '239.1.1.2']);
    await a.close();
    expect(t.groups.sort()).toEqual(['239.1.1.1', '239.1.1.2']);
    await b.close();
    expect(t.groups).toEqual(['239.1.1.2']);
    await c.close();
    expect(t.groups).toEqual([]);
  });

  it('a VTEP of the other family is refused', () => {
    const ep = new Endpoint(new FakeTransport(4));
    expect(() => createVtep({ vni: 1, remotes: ['2001:db8::2'], frameDevice: new MemoryDevice(), endpoint: ep })).toThrow(/IPv4/);
  });

  it('the learned remote carries the VNI of the FDB that learned it', async () => {
    const { t, v } = await three();
    t.receive(datagram(30, frame(BCAST, PEER)), '198.51.100.7');
    expect(v(30).vtep.fdb.lookup(mac(PEER))!.remotes[0]!.vni).toBe(30);
    expect(v(10).vtep.fdb.lookup(mac(PEER))).toBeUndefined();
  });
});
