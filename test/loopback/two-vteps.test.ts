// Two Vteps over the loopback underlay (real node:dgram sockets, different ports), memory ports
// standing in for TAP devices. Needs no privileges.
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { createVtep, MemoryDevice, type Vtep } from '../../src/index.js';
import { datagram, frame } from '../helpers/frames.js';
import { waitFor } from '../helpers/wait.js';

const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const C_MAC = '02:00:00:00:00:0c';
const BCAST = 'ff:ff:ff:ff:ff:ff';

const open: Vtep[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((v) => v.close()));
});

interface Host {
  vtep: Vtep;
  port: MemoryDevice;
  got: Buffer[];
  udp: number;
}

/** A host whose VTEP listens on an ephemeral loopback port. Remotes are set after all bind. */
async function host(macAddr: string, local: string, vniNum = 1): Promise<Host> {
  const port = new MemoryDevice({ mac: macAddr });
  const vtep = createVtep({ vni: vniNum, local, listenPort: 0, frameDevice: port });
  open.push(vtep);
  await vtep.start();
  const got: Buffer[] = [];
  port.on('frame', (f) => got.push(f));
  return { vtep, port, got, udp: vtep.address().port };
}

function peer(h: Host, ip: string, ...others: Host[]) {
  for (const o of others) h.vtep.fdb.append(0, h.vtep.fdb.remote(ip, o.udp));
}

describe.each([
  ['IPv4', '127.0.0.1'],
  ['IPv6', '::1'],
])('two Vteps over %s loopback', (_fam, ip) => {
  it('unicast after learning, exact bytes both ways', async () => {
    const a = await host(A_MAC, ip);
    const b = await host(B_MAC, ip);
    peer(a, ip, b);
    peer(b, ip, a);
    // A broadcasts (ARP-like): B receives it and learns A's MAC -> A's IP at the default dstport.
    const hello = frame(BCAST, A_MAC, { size: 28 });
    a.port.inject(hello);
    await waitFor(() => b.got.length === 1, 'broadcast at B');
    expect(b.got[0]!.equals(hello)).toBe(true);
    expect(b.vtep.fdb.lookup(0x02000000000a)!.remotes[0]!.address).toBe(ip);
    // Loopback peers listen on ephemeral ports: point the learned entry at A's real port, as an
    // operator would with `bridge fdb replace ... port`.
    b.vtep.fdb.replace(0x02000000000a, b.vtep.fdb.remote(ip, a.udp), { static: false });
    const reply = frame(A_MAC, B_MAC, { size: 1000, seed: 3 });
    b.port.inject(reply);
    await waitFor(() => a.got.length === 1, 'reply at A');
    expect(a.got[0]!.equals(reply)).toBe(true);
    expect(b.vtep.stats.floodCopies).toBe(0);
    expect(a.vtep.fdb.lookup(0x02000000000b)!.remotes[0]!.address).toBe(ip);
    // now A knows B: unicast, no flooding
    a.vtep.fdb.replace(0x02000000000b, a.vtep.fdb.remote(ip, b.udp), { static: false });
    const before = a.vtep.stats.floodCopies;
    const many = Array.from({ length: 200 }, (_, i) => frame(B_MAC, A_MAC, { size: 64 + i, seed: i }));
    a.port.inject(many);
    await waitFor(() => b.got.length === 201, '200 frames at B');
    expect(b.got.slice(1).every((f, i) => f.equals(many[i]!))).toBe(true);
    expect(a.vtep.stats.floodCopies).toBe(before);
    expect(b.vtep.stats).toMatchObject({ rxPackets: 201, dropsTotal: 0 });
  });
});

describe('head-end replication over 127.0.0.1', () => {
  it('a broadcast reaches two remotes; unicast after learning reaches one', async () => {
    const a = await host(A_MAC, '127.0.0.1');
    const b = await host(B_MAC, '127.0.0.1');
    const c = await host(C_MAC, '127.0.0.1');
    peer(a, '127.0.0.1', b, c);
    a.port.inject(frame(BCAST, A_MAC));
    await waitFor(() => b.got.length === 1 && c.got.length === 1, 'broadcast at B and C');
    expect(a.vtep.stats.floodCopies).toBe(2);
    a.vtep.fdb.add(0x02000000000c, a.vtep.fdb.remote('127.0.0.1', c.udp), { static: false });
    a.port.inject(frame(C_MAC, A_MAC, { seed: 9 }));
    await waitFor(() => c.got.length === 2, 'unicast at C');
    // B must not get it: send a marker broadcast after and check B's next frame is the marker
    a.port.inject(frame(BCAST, A_MAC, { seed: 77 }));
    await waitFor(() => b.got.length === 2, 'marker at B');
    expect(b.got[1]!.equals(frame(BCAST, A_MAC, { seed: 77 }))).toBe(true);
  });
});

describe('hostile datagrams over 127.0.0.1', () => {
  it('VNI mismatch, short, random and I-clear datagrams are counted and harmless', async () => {
    const b = await host(B_MAC, '127.0.0.1');
    const sock = dgram.createSocket('udp4');
    const send = (d: Buffer) => new Promise<void>((res, rej) => sock.send(d, b.udp, '127.0.0.1', (e) => (e ? rej(e) : res())));
    try {
      await send(datagram(2, frame(B_MAC, A_MAC)));
      await send(Buffer.alloc(0));
      await send(Buffer.from('0800000000', 'hex'));
      await send(datagram(1, frame(B_MAC, A_MAC), { flags: 0 }));
      let shortJunk = 0;
      for (let i = 0; i < 50; i++) {
        const junk = Buffer.from(Array.from({ length: 1 + ((i * 37) % 300) }, (_, j) => (i * 31 + j * 17) & 0xf7)); // bit 3 clear: I flag never set
        if (junk.length < 8) shortJunk++;
        await send(junk);
      }
      await send(datagram(1, frame(B_MAC, A_MAC, { seed: 5 })));
      await waitFor(() => b.vtep.stats.rxDatagrams === 55, 'all datagrams counted');
      const s = b.vtep.stats;
      expect(s.drops.UnknownVni).toBe(1);
      expect(s.drops.Truncated).toBe(2 + shortJunk);
      expect(s.drops.InvalidHeader).toBe(1 + 50 - shortJunk);
      expect(s.dropsTotal).toBe(54);
      expect(s.rxPackets).toBe(1);
      expect(b.got).toHaveLength(1);
      expect(b.vtep.fdb.size).toBe(1);
    } finally {
      sock.close();
    }
  });
});

describe('the names before 0.2', () => {
  it('MemoryPort, TapPort and the framePort option still work, as aliases of the device names', async () => {
    const api = await import('../../src/index.js');
    expect(api.MemoryPort).toBe(api.MemoryDevice);
    expect(api.TapPort).toBe(api.TapDevice);
    const a = await host(A_MAC, '127.0.0.1');
    const old = new api.MemoryPort({ mac: B_MAC });
    const b = createVtep({ vni: 1, local: '127.0.0.1', listenPort: 0, framePort: old });
    open.push(b);
    await b.start();
    const got: Buffer[] = [];
    old.on('frame', (f) => got.push(f));
    a.vtep.fdb.append(0, a.vtep.fdb.remote('127.0.0.1', b.address().port));
    const f = frame(BCAST, A_MAC, { seed: 5 });
    a.port.inject(f);
    await waitFor(() => got.length === 1, 'frame through the framePort option');
    expect(got[0]!.equals(f)).toBe(true);
  });
});
