/**
 * FramePort over a Linux TAP device (the native addon): what the kernel's vxlan netdevice is
 * to `ip link`, the TAP is to uvtep. Reads arrive in batches in a preallocated slab with
 * FRAME_HEADROOM bytes before each frame; writes are one frame per write().
 */
import { ConfigError, ErrorCode } from '../errors.js';
import { checkInt, checkUnicastMac, TAP_MTU_MAX, TAP_MTU_MIN } from '../config.js';
import { Link, parseCidr, type CidrAddress } from '../link.js';
import { loadBinding, type NativeBinding, type TapReaderHandle } from '../native.js';
import { TcpCoalescer, VNET_HDR_LEN } from './gro.js';
import { FRAME_HEADROOM, newFrameBatch, type FrameBatch, type FramePort, type FramesHandler, type PortErrorHandler } from './port.js';

export interface TapOptions {
  /** Interface name; default: the kernel picks `uvtep0`, `uvtep1`... */
  name?: string;
  /** MTU of the TAP (default: underlay MTU - 50 for IPv4, - 70 for IPv6). */
  mtu?: number;
  /** MAC of the TAP (default: random, locally administered, chosen by the kernel). */
  mac?: string;
  /** Addresses to assign, CIDR (`10.0.0.106/24`, `2001:db8:1::1/64`). */
  addresses?: readonly string[];
  /** Add the TAP as a port of this existing Linux bridge (`brctl addif`). */
  bridge?: string;
  /** Keep the device after the process exits (TUNSETPERSIST). */
  persist?: boolean;
  /** Bring the link up (default true). */
  up?: boolean;
  /** Frames per read batch (default 64). */
  batchSize?: number;
  /**
   * Open the TAP with a virtio_net_hdr (IFF_VNET_HDR) and coalesce the segments of a TCP stream
   * decapsulated in one event-loop turn into one GSO write (default true).
   */
  gro?: boolean;
  /** The native binding (tests inject a scripted one). */
  native?: NativeBinding;
}

/** Largest frame a slot holds: a 64 KiB TAP frame, whatever MTU is set later. */
const SLOT_FRAME = 65536;
const BATCH_DEFAULT = 64;
/** Headroom per slot with a vnet header: the 10-byte header is read into it, then overwritten by the VXLAN header. */
const VNET_HEADROOM = 16;

export class TapPort implements FramePort {
  readonly name: string;
  readonly mac: number;
  readonly mtu: number;
  readonly link: Link;
  private readonly native: NativeBinding;
  private readonly fd: number;
  private readonly batch: FrameBatch;
  private readonly slotSize: number;
  private reader: TapReaderHandle | undefined;
  private closed: boolean;
  private running: boolean;
  private readonly headroom: number;
  private readonly gro: TcpCoalescer | undefined;

  /** Opens (creates) the TAP device and applies the link settings; throws on failure, leaving nothing behind. */
  constructor(opts: TapOptions = {}) {
    const name = opts.name ?? '';
    if (typeof name !== 'string' || name.length > 15 || /[\s/:]/.test(name)) {
      throw new ConfigError(ErrorCode.InvalidOption, 'name', `name: expected an interface name of at most 15 characters without spaces, '/' or ':', got ${JSON.stringify(name)}`);
    }
    const mtu = opts.mtu === undefined ? undefined : checkInt(opts.mtu, 'mtu', TAP_MTU_MIN, TAP_MTU_MAX);
    const mac = opts.mac === undefined ? undefined : checkUnicastMac(opts.mac, 'mac');
    const addrs: CidrAddress[] = (opts.addresses ?? []).map((a) => parseCidr(a, 'address'));
    const batchSize = opts.batchSize === undefined ? BATCH_DEFAULT : checkInt(opts.batchSize, 'batchSize', 1, 1024);

    this.native = opts.native ?? loadBinding();
    const gro = opts.gro ?? true;
    const { fd, name: actual } = this.native.openTap(name, opts.persist ?? false, gro);
    this.fd = fd;
    this.name = actual;
    this.link = new Link(actual, this.native);
    try {
      if (mtu !== undefined) this.link.mtu = mtu;
      if (mac !== undefined) this.link.mac = mac;
      for (const a of addrs) this.link.addAddress(a);
      if (opts.bridge !== undefined) this.link.attach(opts.bridge);
      if (opts.up ?? true) this.link.up = true;
      this.mac = this.link.mac;
      this.mtu = this.link.mtu;
    } catch (e) {
      this.native.close(fd); // a non-persistent device disappears with its fd
      throw e;
    }
    this.headroom = gro ? VNET_HEADROOM : FRAME_HEADROOM;
    this.slotSize = this.headroom + SLOT_FRAME;
    const native = this.native;
    this.gro = gro ? new TcpCoalescer((hdr, buf, off, len) => native.writeVnet(fd, hdr, buf, off, len) >= 0) : undefined;
    this.batch = newFrameBatch(Buffer.allocUnsafeSlow(this.slotSize * batchSize), batchSize);
    this.reader = undefined;
    this.closed = false;
    this.running = false;
  }

  start(onFrames: FramesHandler, onError: PortErrorHandler): void {
    if (this.reader !== undefined || this.closed) return;
    const b = this.batch;
    this.reader = new this.native.TapReader(
      this.fd,
      b.buf,
      this.slotSize,
      this.headroom,
      b.offs,
      b.lens,
      (count: number) => {
        b.count = count;
        onFrames(b);
      },
      (err: Error) => {
        this.running = false;
        onError(err);
      },
      this.gro ? VNET_HDR_LEN : 0,
    );
    this.running = true;
    this.reader.start();
  }

  pause(): void {
    if (this.running) this.reader?.stop();
    this.running = false;
  }

  resume(): void {
    if (this.closed || this.reader === undefined || this.running) return;
    this.running = true;
    this.reader.start();
  }

  write(buf: Buffer, off: number, len: number): boolean {
    if (this.gro !== undefined) return this.gro.push(buf, off, len);
    return this.native.write(this.fd, buf, off, len) >= 0;
  }

  counters(): { groWrites: number; groSegments: number; writeErrors: number } {
    const g = this.gro;
    return { groWrites: g?.groWrites ?? 0, groSegments: g?.groSegments ?? 0, writeErrors: g?.writeErrors ?? 0 };
  }

  /** Stops reading and closes the fd: the device is removed unless it was opened with `persist`. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.running = false;
    this.gro?.flush();
    this.reader?.close();
    this.reader = undefined;
    try {
      this.native.close(this.fd);
    } catch {
      // already gone (device removed under us): nothing left to release
    }
    return Promise.resolve();
  }
}
