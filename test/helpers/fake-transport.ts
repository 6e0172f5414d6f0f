// A Transport that records what it is asked to send, for byte-exact engine tests.
import type { Remote } from '../../src/fdb.js';
import type { Transport, TransportHandlers, TxBatch } from '../../src/transport/transport.js';

export interface Sent {
  /** Copy of the datagram at send time. */
  bytes: Buffer;
  /** The live view (to see whether the caller overwrote it later). */
  view: Buffer;
  remote: Remote;
}

export class FakeTransport implements Transport {
  readonly family: 4 | 6;
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
      const view = batch.bufs[i]!.subarray(batch.offs[i]!, batch.offs[i]! + batch.lens[i]!);
      this.sent.push({ bytes: Buffer.from(view), view, remote: batch.remotes[i]! });
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
  /** Delivers a datagram as if received from `src`. */
  receive(d: Buffer, src = '198.51.100.2'): void {
    this.handlers!.onDatagram(d, 0, d.length, src);
  }
  address() {
    return { address: '0.0.0.0', port: 4789 };
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
