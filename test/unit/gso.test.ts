// DgramTransport's GSO path over loopback, with the native sendGso scripted: how batches are cut
// into runs, and every fallback.
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { Fdb } from '../../src/fdb.js';
import type { NativeBinding } from '../../src/native.js';
import { loadBinding } from '../../src/native.js';
import { DgramTransport } from '../../src/transport/dgram.js';
import { TxBatch, type SendError } from '../../src/transport/transport.js';
import { waitFor } from '../helpers/wait.js';

const fdb = new Fdb({ dstPort: 4789 });
let open: Array<{ close: () => unknown }> = [];
afterEach(async () => {
  for (const o of open) await o.close();
  open = [];
});

interface Call {
  start: number;
  count: number;
  seg: number;
  addr: string;
}

async function setup(rc: (c: Call) => number) {
  const sink = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  sink.on('message', (m) => got.push(m));
  await new Promise<void>((r) => sink.bind(0, '127.0.0.1', () => r()));
  open.push({ close: () => new Promise<void>((r) => sink.close(() => r())) });
  const calls: Call[] = [];
  const real = loadBinding();
  const native = {
    ...real,
    sendGso: (_fd: number, addr: Uint8Array, _b: Uint8Array, _o: Int32Array, _l: Int32Array, start: number, count: number, seg: number) => {
      const c = { start, count, seg, addr: Buffer.from(addr).toString('hex') };
      calls.push(c);
      return rc(c);
    },
  } as NativeBinding;
  const t = new DgramTransport({ family: 4, local: '127.0.0.1', port: 0, gso: true, native });
  const errors: SendError[] = [];
  await t.open({ onDatagram: () => undefined, onSendError: (e) => errors.push(e), onError: () => undefined });
  open.push(t);
  const port = sink.address().port;
  return { t, calls, got, errors, port, r1: fdb.remote('127.0.0.1', port), r2: fdb.remote('127.0.0.2', port) };
}

function batch(items: Array<[len: number, remote: ReturnType<typeof fdb.remote>]>): TxBatch {
  const b = new TxBatch(64);
  const slab = Buffer.alloc(2048 * items.length);
  items.forEach(([len, r], i) => b.push(slab, i * 2048, len, r));
  return b;
}

describe('UDP GSO send path', () => {
  it('cuts a batch into runs: same remote, same size, the last of a run may be shorter', async () => {
    const s = await setup((c) => c.count * c.seg);
    const { t, r1, r2 } = s;
    expect(t.gsoActive).toBe(true);
    t.send(batch([[1472, r1], [1472, r1], [1472, r1], [1472, r1], [1472, r1], [800, r1], [1472, r2], [1472, r2], [1472, r1]]));
    expect(s.calls.map(({ start, count, seg }) => [start, count, seg])).toEqual([
      [0, 6, 1472],
      [6, 2, 1472],
    ]);
    // the lone datagram went through dgram
    await waitFor(() => s.got.length === 1, 'single datagram');
    // sockaddr_in: family 2 (host order), port big-endian, 127.0.0.1
    expect(s.calls[0]!.addr.slice(0, 16)).toBe(`0200${s.port.toString(16).padStart(4, '0')}7f000001`);
    expect(t.counters()).toEqual({ gsoSends: 2, gsoDatagrams: 8 });
  });

  it('never puts more than 64 datagrams or 65000 bytes in one send', async () => {
    const s = await setup((c) => c.count * c.seg);
    s.t.send(batch(Array.from({ length: 64 }, () => [1472, s.r1] as [number, typeof s.r1])));
    expect(s.calls.map((c) => c.count)).toEqual([44, 20]); // 44 * 1472 <= 65000 < 45 * 1472
    const small = await setup((c) => c.count * c.seg);
    small.t.send(batch(Array.from({ length: 64 }, () => [100, small.r1] as [number, typeof small.r1])));
    expect(small.calls.map((c) => c.count)).toEqual([64]);
  });

  it('EAGAIN: the run is queued through dgram (nothing lost), GSO stays on', async () => {
    const s = await setup(() => -11);
    s.t.send(batch([[100, s.r1], [100, s.r1], [100, s.r1]]));
    await waitFor(() => s.got.length === 3, 'queued datagrams');
    expect(s.t.gsoActive).toBe(true);
  });

  it('EIO (no checksum offload on the route): falls back for good, nothing lost', async () => {
    const s = await setup(() => -5);
    s.t.send(batch([[100, s.r1], [100, s.r1]]));
    s.t.send(batch([[100, s.r1], [100, s.r1]]));
    await waitFor(() => s.got.length === 4, 'fallback datagrams');
    expect(s.calls).toHaveLength(1);
    expect(s.t.gsoActive).toBe(false);
  });

  it('other errors are reported per datagram with the destination', async () => {
    const s = await setup(() => -101); // ENETUNREACH
    s.t.send(batch([[100, s.r2], [100, s.r2], [100, s.r2]]));
    expect(s.errors).toHaveLength(3);
    expect(s.errors[0]).toMatchObject({ code: 'ENETUNREACH', address: '127.0.0.2', syscall: 'sendmsg' });
  });
});

describe('UDP GSO against the kernel', () => {
  it('a real sendGso over loopback arrives as separate datagrams with the exact bytes', async () => {
    const sink = dgram.createSocket('udp4');
    const got: Buffer[] = [];
    sink.on('message', (m) => got.push(m));
    await new Promise<void>((r) => sink.bind(0, '127.0.0.1', () => r()));
    open.push({ close: () => new Promise<void>((r) => sink.close(() => r())) });
    const t = new DgramTransport({ family: 4, local: '127.0.0.1', port: 0, gso: true });
    await t.open({ onDatagram: () => undefined, onSendError: () => undefined, onError: () => undefined });
    open.push(t);
    const r = fdb.remote('127.0.0.1', sink.address().port);
    const b = new TxBatch(64);
    const slab = Buffer.alloc(2048 * 10);
    for (let i = 0; i < 10; i++) {
      const len = i === 9 ? 333 : 1000;
      slab.fill(i + 1, i * 2048, i * 2048 + len);
      b.push(slab, i * 2048, len, r);
    }
    t.send(b);
    await waitFor(() => got.length === 10, '10 datagrams');
    expect(t.counters()).toEqual({ gsoSends: 1, gsoDatagrams: 10 });
    got.forEach((d, i) => {
      expect(d.length).toBe(i === 9 ? 333 : 1000);
      expect(d.every((x) => x === i + 1)).toBe(true);
    });
  });
});
