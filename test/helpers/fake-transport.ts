// A Transport that records what it is asked to send, for byte-exact engine tests.
import type { Remote } from '../../src/fdb.js';
import { newRxBatch, type Transport, type TransportHandlers, type TxBatch } from '../../src/transport/transport.js';

export interface Sent {
  /** Copy of the datagram at send time. */
  bytes: Buffer;
  /** The live view (to see whether the caller overwrote it later). */
  view: Buffer;
  remote: Remote;
}

export class FakeTransport implements Transport {
  readonly family: 4 | 6;
  readonly kind = 'fake';
  sent: Sent[] = [];
  batches = 0;
  handlers: TransportHandlers | undefined;
  /** Datagrams the "kernel" has not taken yet; tests set it to simulate a full socket buffer. */
  queued = 0;
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(family: 4 | 6 = 4) {
    this.family = family;
  }
  open(h: TransportHandlers): Promise<void> {
    this.handlers = h;
    return Promise.resolve();
  }
  send(batch: TxBatch): void {
    this.batches++;
    for (let i = 0; i < batch.count; i++) {
      // an entry is a run of datagrams back to back: record each
      let off = batch.offs[i]!;
      for (let k = 0; k < batch.segs[i]!; k++) {
        const len = k === batch.segs[i]! - 1 ? batch.lasts[i]! : batch.lens[i]!;
        const view = batch.bufs[i]!.subarray(off, off + len);
        this.sent.push({ bytes: Buffer.from(view), view, remote: batch.remotes[i]! });
        off += batch.lens[i]!;
      }
    }
  }
  pending(): number {
    return this.queued;
  }
  whenDrained(cb: () => void): void {
    if (this.queued === 0) cb();
    else this.waiters.push(cb);
  }
  /** The "kernel" took everything. */
  drain(): void {
    this.queued = 0;
    const w = this.waiters;
    this.waiters = [];
    for (const cb of w) cb();
  }
  /** Delivers a datagram as if received from `src` (a batch of one). */
  receive(d: Buffer, src = '198.51.100.2'): void {
    this.receiveBatch([d], src);
  }
  /**
   * Delivers datagrams in one batch. With `gro`, they travel as one message of equal-stride
   * datagrams (all but the last `gro` bytes long), as a UDP GRO receive hands them over.
   */
  receiveBatch(ds: Buffer[], src = '198.51.100.2', gro = 0): void {
    const buf = Buffer.concat(ds);
    const rx = newRxBatch(buf, ds.length);
    if (gro > 0) {
      rx.offs[0] = 0;
      rx.lens[0] = buf.length;
      rx.segs[0] = gro;
      rx.srcs[0] = src;
      rx.count = 1;
    } else {
      let off = 0;
      ds.forEach((d, i) => {
        rx.offs[i] = off;
        rx.lens[i] = d.length;
        rx.srcs[i] = src;
        off += d.length;
      });
      rx.count = ds.length;
    }
    this.handlers!.onDatagrams(rx);
  }
  address() {
    return { address: '0.0.0.0', port: 4789 };
  }
  /** Multicast groups joined after open (a shared endpoint's VTEPs). */
  groups: string[] = [];
  joinGroup(g: string): void {
    this.groups.push(g);
  }
  leaveGroup(g: string): void {
    this.groups = this.groups.filter((x) => x !== g);
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
