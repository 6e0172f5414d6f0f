// The native UDP endpoint (NativeTransport over native/udp.cc): against the kernel over loopback
// (GSO sends, GRO receives, sendmmsg batching, TOS per entry, IPv6), and over a scripted socket
// for what loopback cannot provoke (a full socket, per-datagram errors).
import dgram from 'node:dgram';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Fdb } from '../../src/fdb.js';
import { loadBinding, type NativeBinding, type UdpSocketHandle } from '../../src/native.js';
import { NativeTransport } from '../../src/transport/native.js';
import { DgramTransport } from '../../src/transport/dgram.js';
import { TxBatch, type RxBatch, type SendError } from '../../src/transport/transport.js';
import { waitFor } from '../helpers/wait.js';

const fdb = new Fdb({ dstPort: 4789 });
let open: Array<{ close: () => unknown }> = [];
afterEach(async () => {
  for (const o of open) await o.close();
  open = [];
  vi.restoreAllMocks();
});

interface Msg {
  bytes: Buffer;
  seg: number;
  src: string;
  tos: number;
}

async function endpoint(opts: Partial<ConstructorParameters<typeof NativeTransport>[0]> = {}) {
  const family = opts.family ?? 4;
  const t = new NativeTransport({ family, local: family === 4 ? '127.0.0.1' : '::1', port: 0, ...opts });
  const msgs: Msg[] = [];
  const batches: number[] = [];
  const errors: SendError[] = [];
  await t.open({
    onDatagrams: (b: RxBatch) => {
      batches.push(b.count);
      for (let i = 0; i < b.count; i++) msgs.push({ bytes: Buffer.from(b.buf.subarray(b.offs[i]!, b.offs[i]! + b.lens[i]!)), seg: b.segs[i]!, src: b.srcs[i]!, tos: b.tos[i]! });
    },
    onSendError: (e) => errors.push(e),
    onError: (e) => {
      throw e;
    },
  });
  open.push(t);
  return { t, msgs, batches, errors, port: t.address().port };
}

async function sink(type: 'udp4' | 'udp6' = 'udp4') {
  const s = dgram.createSocket(type);
  const got: Buffer[] = [];
  s.on('message', (m) => got.push(m));
  await new Promise<void>((r) => s.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', () => r()));
  open.push({ close: () => new Promise<void>((r) => s.close(() => r())) });
  return { got, port: s.address().port };
}

/** An entry of `segs` datagrams of `len` bytes (the last `last`), datagram k filled with k + seed. */
function run(b: TxBatch, slab: Buffer, at: number, len: number, segs: number, last: number, remote: ReturnType<typeof fdb.remote>, seed = 1, ds = -1) {
  for (let k = 0; k < segs; k++) slab.fill(k + seed, at + k * len, at + k * len + (k === segs - 1 ? last : len));
  b.push(slab, at, len, remote, 0, ds, segs, last);
}

describe('native UDP endpoint against the kernel (loopback)', () => {
  it('an entry of 10 datagrams leaves as one UDP_SEGMENT message and arrives as 10 exact datagrams', async () => {
    const tx = await endpoint();
    const s = await sink();
    const b = new TxBatch(8);
    const slab = Buffer.alloc(20000);
    run(b, slab, 0, 1000, 10, 333, fdb.remote('127.0.0.1', s.port));
    tx.t.send(b);
    await waitFor(() => s.got.length === 10, '10 datagrams');
    s.got.forEach((d, k) => {
      expect(d.length).toBe(k === 9 ? 333 : 1000);
      expect(d.every((x) => x === k + 1)).toBe(true);
    });
    expect(tx.t.counters()).toMatchObject({ sendCalls: 1, sentMsgs: 1, sentDatagrams: 10, gsoSends: 1, gsoDatagrams: 10 });
  });

  it('UDP GRO: a GSO run reaches a native receiver as one message of equal-stride datagrams, with source and TOS', async () => {
    const rx = await endpoint();
    const tx = await endpoint({ tos: 'inherit' });
    expect(rx.t.groActive).toBe(true);
    const b = new TxBatch(8);
    const slab = Buffer.alloc(20000);
    run(b, slab, 0, 1000, 10, 333, fdb.remote('127.0.0.1', rx.port), 1, 0xb8);
    tx.t.send(b);
    await waitFor(() => rx.msgs.length === 1, 'one message');
    const m = rx.msgs[0]!;
    expect(m).toMatchObject({ seg: 1000, src: '127.0.0.1', tos: 0xb8 });
    expect(m.bytes.length).toBe(9333);
    for (let k = 0; k < 10; k++) expect(m.bytes[k * 1000]).toBe(k + 1);
    expect(rx.t.counters()).toMatchObject({ recvMsgs: 1, groMsgs: 1 });
  });

  it('receive rounds have a budget of about 128 datagrams: GRO messages of 64 come two per round, lone datagrams up to 64', async () => {
    const rx = await endpoint();
    const tx = await endpoint();
    const slab = Buffer.alloc(64 * 100 * 10);
    const to = fdb.remote('127.0.0.1', rx.port);
    // one GRO message first: the next rounds are sized by it
    let b = new TxBatch(16);
    run(b, slab, 0, 100, 64, 100, to);
    tx.t.send(b);
    await waitFor(() => rx.msgs.length === 1, 'the first message');
    // ten GSO messages of 64 datagrams, queued at the receiver before it reads (one JS turn)
    b = new TxBatch(16);
    for (let i = 0; i < 10; i++) run(b, slab, i * 6400, 100, 64, 100, to, i);
    rx.batches.length = 0;
    tx.t.send(b);
    await waitFor(() => rx.msgs.length === 11, 'ten more messages');
    expect(rx.msgs.slice(1).every((m) => m.seg === 100 && m.bytes.length === 6400)).toBe(true);
    expect(Math.max(...rx.batches)).toBeLessThanOrEqual(2);
    expect(rx.batches.reduce((a, c) => a + c, 0)).toBe(10);
    // 200 lone datagrams (no GSO trains): a full round of two raises the budget to 64 messages
    const plain = await endpoint({ gso: false });
    b = new TxBatch(256);
    for (let i = 0; i < 200; i++) run(b, slab, i * 100, 100, 1, 100, to, i);
    rx.batches.length = 0;
    plain.t.send(b);
    await waitFor(() => rx.msgs.length === 211, '200 datagrams');
    expect(Math.max(...rx.batches)).toBe(64);
    expect(rx.batches.length).toBeLessThanOrEqual(6);
  });

  it('a batch of many entries to several remotes goes in one sendmmsg; receive is one JS call per batch', async () => {
    const rx = await endpoint({ gro: false });
    const s = await sink();
    const tx = await endpoint();
    const b = new TxBatch(256);
    const slab = Buffer.alloc(200 * 128);
    for (let i = 0; i < 100; i++) run(b, slab, i * 128, 100, 1, 100, fdb.remote('127.0.0.1', i % 2 === 0 ? rx.port : s.port), i);
    tx.t.send(b);
    await waitFor(() => rx.msgs.length === 50 && s.got.length === 50, 'all datagrams');
    expect(tx.t.counters()).toMatchObject({ sendCalls: 1, sentMsgs: 100 });
    expect(rx.batches.length).toBeLessThan(50);
    expect(rx.msgs.map((m) => m.bytes[0])).toEqual(Array.from({ length: 50 }, (_, i) => (2 * i) & 0xff));
  });

  it('never more than 64 datagrams or 65000 bytes per message; --no-gso sends one datagram per message', async () => {
    const s = await sink();
    const tx = await endpoint();
    const b = new TxBatch(8);
    const slab = Buffer.alloc(64 * 1472);
    run(b, slab, 0, 1472, 64, 1472, fdb.remote('127.0.0.1', s.port));
    tx.t.send(b);
    await waitFor(() => s.got.length === 64, '64 datagrams');
    expect(tx.t.counters()).toMatchObject({ sendCalls: 1, sentMsgs: 2, gsoSends: 2, gsoDatagrams: 64 }); // 44 + 20
    const plain = await endpoint({ gso: false });
    const s2 = await sink();
    const c = new TxBatch(8);
    run(c, slab, 0, 1000, 10, 1000, fdb.remote('127.0.0.1', s2.port));
    plain.t.send(c);
    await waitFor(() => s2.got.length === 10, '10 datagrams');
    expect(plain.t.counters()).toMatchObject({ sendCalls: 1, sentMsgs: 10, gsoSends: 0 });
  });

  it('IPv6: GSO out, GRO in, the source as a canonical literal', async () => {
    const rx = await endpoint({ family: 6 });
    const tx = await endpoint({ family: 6 });
    const b = new TxBatch(8);
    const slab = Buffer.alloc(20000);
    run(b, slab, 0, 1200, 5, 700, fdb.remote('::1', rx.port));
    tx.t.send(b);
    await waitFor(() => rx.msgs.length === 1, 'one message');
    expect(rx.msgs[0]).toMatchObject({ seg: 1200, src: '::1' });
    expect(rx.msgs[0]!.bytes.length).toBe(4 * 1200 + 700);
  });

  it('a port in use is a bind error with syscall and code; nothing is left open', async () => {
    const a = await endpoint();
    const t = new NativeTransport({ family: 4, local: '127.0.0.1', port: a.port });
    await expect(t.open({ onDatagrams: () => undefined, onSendError: () => undefined, onError: () => undefined })).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
  });

  it('a source-port pool sends each flow from one port of the range', async () => {
    const s = dgram.createSocket('udp4');
    const ports = new Set<number>();
    s.on('message', (_m, r) => ports.add(r.port));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    open.push({ close: () => new Promise<void>((r) => s.close(() => r())) });
    const tx = await endpoint({ srcport: { min: 45000, max: 45999, sockets: 4 } });
    const b = new TxBatch(64);
    const slab = Buffer.alloc(64 * 100);
    const remote = fdb.remote('127.0.0.1', s.address().port);
    for (let i = 0; i < 40; i++) b.push(slab, i * 100, 60, remote, i * 2654435761 >>> 0);
    tx.t.send(b);
    await waitFor(() => ports.size >= 2, 'several source ports');
    for (const p of ports) expect(p >= 45000 && p <= 45999).toBe(true);
  });
});

/** A UdpSocket whose send answers from a script; records the calls. */
function scripted(answer: (call: number, start: number, count: number, res: Int32Array) => number) {
  const calls: Array<{ start: number; count: number; gso: boolean; off: number; segs: number }> = [];
  let writable: (() => void) | undefined;
  let waits = 0;
  const real = loadBinding();
  const native = {
    ...real,
    UdpSocket: class implements UdpSocketHandle {
      bind() {}
      setOpt() {
        return 0;
      }
      setOptBytes() {
        return 0;
      }
      localPort() {
        return 4789;
      }
      recvStart() {}
      recvStop() {}
      send(_b: Uint8Array, offs: Int32Array, _l: Int32Array, segs: Int32Array, _la: Int32Array, _a: Uint8Array, _s: number, _d: Int16Array, _t: Int16Array, start: number, count: number, gso: boolean, res: Int32Array) {
        calls.push({ start, count, gso, off: offs[start]!, segs: segs[start]! });
        res[2] = 0;
        return answer(calls.length, start, count, res);
      }
      waitWritable(cb: () => void) {
        waits++;
        writable = cb;
      }
      setFlowCache() {}
      close() {}
    },
  } as unknown as NativeBinding;
  return { native, calls, writable: () => writable!(), waits: () => waits };
}

describe('native endpoint: backpressure and errors (scripted socket)', () => {
  it('EAGAIN mid-entry: the rest waits (datagrams already sent are not resent), woken by writability, never by polling', async () => {
    const s = scripted((n, start, count, res) => {
      if (n === 1) {
        res[0] = start + 1; // entry 0 went, entry 1 had 3 of its 10 datagrams sent
        res[1] = 3;
        return -11;
      }
      res[0] = start + count;
      return 0;
    });
    const t = new NativeTransport({ family: 4, local: '127.0.0.1', port: 0, native: s.native });
    await t.open({ onDatagrams: () => undefined, onSendError: () => undefined, onError: () => undefined });
    const b = new TxBatch(8);
    const slab = Buffer.alloc(40000);
    const r = fdb.remote('127.0.0.1', 4789);
    b.push(slab, 0, 1000, r, 0, -1, 5, 1000);
    b.push(slab, 8000, 1000, r, 0, -1, 10, 500);
    b.push(slab, 20000, 100, r, 0, -1, 1, 100);
    const immediate = vi.spyOn(global, 'setImmediate');
    t.send(b);
    expect(t.pending()).toBe(7 + 1);
    const drained = vi.fn();
    t.whenDrained(drained);
    t.send(b); // more while full: queued behind, in order, no send attempted
    expect(s.calls).toHaveLength(1);
    expect(s.waits()).toBe(1);
    await new Promise((res) => setTimeout(res, 20));
    expect(immediate).not.toHaveBeenCalled();
    expect(drained).not.toHaveBeenCalled();
    s.writable();
    expect(s.calls[1]).toMatchObject({ start: 0, off: 8000 + 3 * 1000, segs: 7 });
    expect(t.pending()).toBe(0);
    expect(drained).toHaveBeenCalledOnce();
    await t.close();
  });

  it('a per-datagram error (EMSGSIZE after an MTU change) is reported with its destination and count, and GSO stays on', async () => {
    const s = scripted((n, start, count, res) => {
      if (n === 1) {
        res[2] = 1;
        res[3] = start;
        res[4] = 90; // EMSGSIZE
        res[5] = 10;
      }
      res[0] = start + count;
      return 0;
    });
    const t = new NativeTransport({ family: 4, local: '127.0.0.1', port: 0, native: s.native });
    const errors: SendError[] = [];
    await t.open({ onDatagrams: () => undefined, onSendError: (e) => errors.push(e), onError: () => undefined });
    const b = new TxBatch(8);
    const slab = Buffer.alloc(20000);
    b.push(slab, 0, 1000, fdb.remote('198.51.100.9', 4789), 0, -1, 10, 1000);
    t.send(b);
    t.send(b);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'EMSGSIZE', address: '198.51.100.9', port: 4789, datagrams: 10, syscall: 'sendmmsg' });
    expect(s.calls.map((c) => c.gso)).toEqual([true, true]);
    await t.close();
  });
});

describe('node:dgram fallback', () => {
  it('waiting for a full socket is woken by the send callbacks, not re-checked every loop turn', async () => {
    const t = new DgramTransport({ family: 4, local: '127.0.0.1', port: 0 });
    await t.open({ onDatagrams: () => undefined, onSendError: () => undefined, onError: () => undefined });
    open.push(t);
    const s = await sink();
    let queued = 1;
    const sock = (t as unknown as { senders: dgram.Socket[] }).senders[0]!;
    vi.spyOn(sock, 'getSendQueueCount').mockImplementation(() => queued);
    const immediate = vi.spyOn(global, 'setImmediate');
    const drained = vi.fn();
    t.whenDrained(drained);
    await new Promise((res) => setTimeout(res, 20));
    expect(immediate).not.toHaveBeenCalled();
    expect(drained).not.toHaveBeenCalled();
    queued = 0; // the kernel took it: the next send completion wakes the waiter
    const b = new TxBatch(1);
    b.push(Buffer.alloc(10), 0, 10, fdb.remote('127.0.0.1', s.port));
    t.send(b);
    await waitFor(() => drained.mock.calls.length === 1, 'drained');
  });

  it('refuses what node:dgram cannot do, naming the option', () => {
    expect(() => new DgramTransport({ family: 4, local: '127.0.0.1', port: 0, tos: 0x10 })).toThrow(expect.objectContaining({ option: 'tos' }));
    expect(() => new DgramTransport({ family: 4, local: '127.0.0.1', port: 0, df: 'set' })).toThrow(expect.objectContaining({ option: 'df' }));
  });
});
