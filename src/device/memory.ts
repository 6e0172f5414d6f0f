/**
 * An in-process FrameDevice: the "host side" is JS instead of a TAP device. Tests use it to run
 * two Vteps over loopback; embedders use it to inject frames and receive decapsulated ones.
 *
 *   const dev = new MemoryDevice({ mac: '02:00:00:00:00:0a' });
 *   dev.on('frame', (frame) => ...);   // frames the Vtep decapsulated
 *   dev.inject(frame);                 // a frame "sent" by the host: the Vtep encapsulates it
 */
import { EventEmitter } from 'node:events';
import { checkUnicastMac } from '../check.js';
import { ETH_HLEN } from '../wire/ethernet.js';
import { FRAME_HEADROOM, newFrameBatch, type FrameBatch, type FrameDevice, type FramesHandler, type DeviceErrorHandler } from './device.js';

export interface MemoryDeviceOptions {
  /** The device's own MAC (frames from remotes with this source are dropped as loops). */
  mac?: string;
  name?: string;
  /** Frames per batch (default 64). */
  batchSize?: number;
  /** Largest frame (default 65535). */
  maxFrame?: number;
  /** Frames held while paused or not started before `inject` refuses more (default 4096). */
  queueLimit?: number;
}

export interface MemoryDeviceEvents {
  /** A frame the Vtep delivered (a copy the listener owns). */
  frame: [frame: Buffer];
}

export class MemoryDevice extends EventEmitter<MemoryDeviceEvents> implements FrameDevice {
  readonly name: string;
  readonly mac: number | undefined;
  /** Frames delivered to the host side, by count and bytes. */
  delivered: number = 0;
  private readonly batchSize: number;
  private readonly maxFrame: number;
  private readonly queueLimit: number;
  private readonly slotSize: number;
  private readonly batch: FrameBatch;
  private readonly queue: Buffer[] = [];
  private onFrames: FramesHandler | undefined;
  private paused: boolean = false;
  private closed: boolean = false;

  constructor(opts: MemoryDeviceOptions = {}) {
    super();
    this.name = opts.name ?? 'memory';
    this.mac = opts.mac === undefined ? undefined : checkUnicastMac(opts.mac, 'mac');
    this.batchSize = opts.batchSize ?? 64;
    this.maxFrame = opts.maxFrame ?? 65535;
    this.queueLimit = opts.queueLimit ?? 4096;
    this.slotSize = FRAME_HEADROOM + this.maxFrame;
    this.batch = newFrameBatch(Buffer.alloc(this.slotSize * this.batchSize), this.batchSize);
  }

  /** A memory device has no fatal errors: `onError` is never called. */
  start(onFrames: FramesHandler, _onError?: DeviceErrorHandler): void {
    this.onFrames = onFrames;
    this.pump();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.pump();
  }

  /**
   * Frames from the host side. Delivered to the Vtep at once when it runs and is not paused,
   * otherwise queued. Returns how many were accepted (the rest: queue full, too big, or closed).
   */
  inject(frames: Buffer | readonly Buffer[]): number {
    if (this.closed) return 0;
    const list = Buffer.isBuffer(frames) ? [frames] : frames;
    let accepted = 0;
    for (const f of list) {
      if (f.length > this.maxFrame || this.queue.length >= this.queueLimit) continue;
      this.queue.push(f);
      accepted++;
    }
    this.pump();
    return accepted;
  }

  /** Copies queued frames into the slab (with headroom) and hands them over, a batch at a time. */
  private pump(): void {
    const q = this.queue;
    while (q.length > 0 && !this.paused && !this.closed && this.onFrames !== undefined) {
      const b = this.batch;
      const n = Math.min(q.length, this.batchSize);
      for (let i = 0; i < n; i++) {
        const f = q[i]!;
        const off = i * this.slotSize + FRAME_HEADROOM;
        f.copy(b.buf, off);
        b.offs[i] = off;
        b.lens[i] = f.length;
        b.segs[i] = 1;
        b.lasts[i] = f.length;
      }
      b.count = n;
      q.splice(0, n);
      this.onFrames(b);
    }
  }

  /** Bytes of the frames the last `writeBatch` refused. */
  lostBytes = 0;

  writeBatch(buf: Buffer, offs: Int32Array, lens: Int32Array, count: number): number {
    let lost = 0;
    this.lostBytes = 0;
    const emit = this.listenerCount('frame') > 0;
    for (let i = 0; i < count; i++) {
      const off = offs[i]!;
      const len = lens[i]!;
      if (this.closed || len < ETH_HLEN) {
        lost++;
        this.lostBytes += len;
        continue;
      }
      this.delivered++;
      if (emit) this.emit('frame', Buffer.from(buf.subarray(off, off + len)));
    }
    return lost;
  }

  close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    return Promise.resolve();
  }
}
