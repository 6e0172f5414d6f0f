/**
 * FrameDevice over a Linux TAP device (the native addon): what the kernel's vxlan netdevice is
 * to `ip link`, the TAP is to uvtep.
 *
 * Fast path (default): the TAP is opened with a virtio_net_hdr (IFF_VNET_HDR) and TCP/UDP
 * segmentation and checksum offloads (TUNSETOFFLOAD), so one read can return a 64 KB TCP
 * super-frame. The native reader splits it in place into MSS-sized frames with complete
 * checksums, at a fixed stride, so the whole run leaves in one UDP GSO send. Writes take a batch:
 * the native writer merges consecutive TCP segments of each flow (kernel GRO rules, checksums
 * verified first) and writes each merged packet with one gather writev.
 */
import { ConfigError, ErrorCode } from '../errors.js';
import { checkInt, checkUnicastMac } from '../check.js';
import { ETH_HLEN, VLAN_HLEN } from '../wire/ethernet.js';
import { VXLAN_HLEN, VXLAN_MTU_HEADROOM_V6 } from '../wire/vxlan.js';
import { Link, parseCidr, type CidrAddress } from './link.js';
import { loadBinding, READER_STATS, ReaderStat, TunOffload, WRITER_STATS, WriterStat, type NativeBinding, type FlowCacheHandle, type NativeTap, type TapReaderHandle, type UdpSocketHandle } from '../native.js';
import type { FlowCacheParams } from '../flowcache.js';
import type { DatapathProcess } from '../datapath.js';
import { newFrameBatch, type FrameBatch, type FrameDevice, type FramesHandler, type DeviceCounters, type DeviceErrorHandler } from './device.js';

/** TAP MTU bounds: IPv4 minimum 68 (RFC 791), and what a 64 KiB underlay datagram can carry. */
export const TAP_MTU_MIN = 68;
export const TAP_MTU_MAX = 65535 - VXLAN_MTU_HEADROOM_V6;

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
  /** Reads per batch (default 64). */
  batchSize?: number;
  /**
   * Segmentation offloads (default true): the kernel hands uvtep TCP (and, from Linux 6.2, UDP)
   * super-frames of up to 64 KB with partial checksums, which uvtep splits and checksums itself.
   * false: the kernel segments and checksums before uvtep reads.
   */
  tso?: boolean;
  /** Merge received TCP segments of a flow into one GSO write (default true). */
  gro?: boolean;
  /**
   * Read and write each batch of frames with one io_uring_enter (default true), where the kernel
   * and the process's seccomp profile allow io_uring; false, or where it is not allowed: one
   * read() or writev() each.
   */
  ioUring?: boolean;
  /** The native binding (tests inject a scripted one). */
  native?: NativeBinding;
}

/** Largest frame one read returns: a 64 KiB IP packet behind an Ethernet header and two VLAN tags. */
const READ_MAX = 65535 + 22;
const BATCH_DEFAULT = 64;
/** Headroom per slot: the 10-byte vnet header is read into it, then overwritten by the VXLAN header. */
const HEADROOM = 16;
/** Reads per batch in the datapath process (native/datapath/main.cc kMaxBatch). */
const DATAPATH_BATCH = 64;
/** Segments per super-frame at most (the TAP's gso_max_segs; native/offload.h kMaxSegs). */
export const TAP_MAX_SEGS = 64;
/** Bytes of datagrams one UDP GSO send carries (native/uvtep.h kGsoMaxBytes). */
const GSO_MAX_BYTES = 65_000;

/**
 * The TAP's gso_max_segs for a TAP of this MTU: as many segments as one UDP GSO send carries, each
 * with its Ethernet header, a VLAN tag and the VXLAN header (MTU 1450: 44), so that one
 * super-frame read leaves as one message, not a full one and a small one; at most TAP_MAX_SEGS.
 */
export function tapGsoMaxSegs(mtu: number): number {
  return Math.max(1, Math.min(TAP_MAX_SEGS, Math.floor(GSO_MAX_BYTES / (mtu + ETH_HLEN + VLAN_HLEN + VXLAN_HLEN))));
}
/** Growth of a split super-frame per segment: a VXLAN header and a header run (native kSegGrowth). */
const SEG_GROWTH = 8 + 160;

export class TapDevice implements FrameDevice {
  readonly name: string;
  readonly mac: number;
  readonly mtu: number;
  readonly link: Link;
  /** TUN_F_* offloads the kernel accepted (0 without --tso). */
  readonly offloads: number;
  /** Whether reads and writes go to the kernel in batches through io_uring. */
  readonly ioUring: boolean;
  lostBytes: number = 0;
  private readonly native: NativeBinding;
  private readonly dev: NativeTap;
  private readonly batch: FrameBatch;
  private readonly slotSize: number;
  private readonly gro: boolean;
  private readStats: Float64Array;
  private readonly writeStats: Float64Array;
  /** The datapath process's TAP writes (its flow cache's), when it reads this TAP. */
  private dpWriteStats: Float64Array | undefined;
  private datapath: DatapathProcess | undefined;
  private dpId: number = 0;
  private reader: TapReaderHandle | undefined;
  private handlers: { onFrames: FramesHandler; onError: DeviceErrorHandler } | undefined;
  private closed: boolean = false;
  private running: boolean = false;

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
    const tso = opts.tso ?? true;
    const want = tso ? TunOffload.Csum | TunOffload.Tso4 | TunOffload.Tso6 | TunOffload.TsoEcn | TunOffload.Uso4 | TunOffload.Uso6 : 0;
    const dev = new this.native.Tap(name, opts.persist ?? false, true, want, opts.ioUring ?? true);
    const actual = dev.name;
    const offloads = dev.offloads;
    this.dev = dev;
    this.name = actual;
    this.offloads = offloads;
    this.ioUring = dev.ioUring;
    this.link = new Link(actual, this.native);
    try {
      if (mtu !== undefined) this.link.mtu = mtu;
      // the stack never hands the TAP more segments than one GSO send carries
      if (offloads !== 0) this.native.setGsoMaxSegs(actual, tapGsoMaxSegs(this.link.mtu));
      if (mac !== undefined) this.link.mac = mac;
      for (const a of addrs) this.link.addAddress(a);
      if (opts.bridge !== undefined) this.link.attach(opts.bridge);
      if (opts.up ?? true) this.link.up = true;
      this.mac = this.link.mac;
      this.mtu = this.link.mtu;
    } catch (e) {
      dev.close(); // a non-persistent device disappears with its fd
      throw e;
    }
    this.gro = opts.gro ?? true;
    this.slotSize = HEADROOM + READ_MAX + (offloads !== 0 ? TAP_MAX_SEGS * SEG_GROWTH : 0);
    this.batch = newFrameBatch(Buffer.allocUnsafeSlow(this.slotSize * batchSize), batchSize);
    this.readStats = new Float64Array(READER_STATS);
    this.writeStats = new Float64Array(WRITER_STATS);
  }

  start(onFrames: FramesHandler, onError: DeviceErrorHandler): void {
    if (this.reader !== undefined || this.closed) return;
    this.handlers = { onFrames, onError };
    this.reader = this.newReader();
    this.running = true;
    this.reader.start();
  }

  /** A reader of the TAP, or of what the datapath process hands over once it reads the TAP. */
  private newReader(): TapReaderHandle {
    const b = this.batch;
    const { onFrames, onError } = this.handlers!;
    const dp = this.datapath;
    return new this.native.TapReader(
      this.dev,
      b.buf,
      this.slotSize,
      HEADROOM,
      b.offs,
      b.lens,
      b.segs,
      b.lasts,
      this.readStats,
      (count: number) => {
        b.count = count;
        onFrames(b);
      },
      (err: Error) => {
        this.running = false;
        onError(err);
      },
      true,
      dp?.handle,
      dp !== undefined ? this.dpId : undefined,
    );
  }

  useDatapath(dp: DatapathProcess): boolean {
    if (this.datapath !== undefined) return this.datapath === dp;
    if (this.reader === undefined || this.closed || this.offloads === 0 || !dp.room(READER_STATS + WRITER_STATS)) return false;
    // the process counts the reads from now on, after what this process read so far
    const stats = dp.alloc(READER_STATS);
    stats.set(this.readStats);
    this.dpId = dp.handle.addTap(this.dev, stats, this.slotSize, HEADROOM, Math.min(this.batch.offs.length, DATAPATH_BATCH));
    dp.retain();
    this.datapath = dp;
    this.readStats = stats;
    this.dpWriteStats = dp.alloc(WRITER_STATS);
    // no frame is in flight here: the old reader delivers synchronously, and stops reading now
    this.reader.close();
    this.reader = this.newReader();
    if (this.running) this.reader.start();
    return true;
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

  writeBatch(buf: Buffer, offs: Int32Array, lens: Int32Array, count: number): number {
    if (this.closed) {
      let bytes = 0;
      for (let i = 0; i < count; i++) bytes += lens[i]!;
      this.lostBytes = bytes;
      return count;
    }
    const st = this.writeStats;
    const before = st[WriterStat.LostBytes]!;
    const lost = this.dev.writeFrames(this.gro, buf, offs, lens, count, st, this.mtu);
    this.lostBytes = st[WriterStat.LostBytes]! - before;
    return lost;
  }

  flowCache(socket: UdpSocketHandle, p: FlowCacheParams, dp?: DatapathProcess): { handle: FlowCacheHandle; detach: () => void } | undefined {
    const reader = this.reader;
    if (reader === undefined || this.closed) return undefined;
    if (dp !== undefined && dp !== this.datapath) return undefined;
    const handle =
      dp !== undefined
        ? new this.native.FlowCache(this.dev, socket, p.vni, p.ownMac, p.maxFrame, p.learning, this.gro, p.gso, this.mtu, p.stats, p.seen, this.dpWriteStats!, dp.handle, p.tunnelGso)
        : new this.native.FlowCache(this.dev, socket, p.vni, p.ownMac, p.maxFrame, p.learning, this.gro, p.gso, this.mtu, p.stats, p.seen, this.writeStats);
    reader.setFlowCache(handle);
    return { handle, detach: () => reader.setFlowCache(null) };
  }

  counters(): DeviceCounters {
    const r = this.readStats;
    let w = this.writeStats;
    const dw = this.dpWriteStats;
    if (dw !== undefined) w = w.map((v, i) => v + dw[i]!);
    return {
      reads: r[ReaderStat.Reads]!,
      readFrames: r[ReaderStat.Frames]!,
      superFrames: r[ReaderStat.SuperFrames]!,
      csumCompleted: r[ReaderStat.CsumCompleted]!,
      offloadInvalid: r[ReaderStat.BadVnet]! + r[ReaderStat.BadHeaders]! + r[ReaderStat.TooManySegs]! + r[ReaderStat.NoRoom]!,
      datapathDropped: r[ReaderStat.ProxyDropped]!,
      writes: w[WriterStat.Writes]!,
      groWrites: w[WriterStat.GroWrites]!,
      groSegments: w[WriterStat.GroSegments]!,
      badCsum: w[WriterStat.BadCsum]!,
      partialCsum: w[WriterStat.PartialCsum]!,
    };
  }

  /** Stops reading and closes the fd: the device is removed unless it was opened with `persist`. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.running = false;
    this.reader?.close();
    this.reader = undefined;
    // the process lets go of its copy of the fd first (answered): the device then goes with ours
    if (this.datapath !== undefined) {
      this.datapath.handle.removeTap(this.dev);
      this.datapath.release();
    }
    try {
      this.dev.close();
    } catch {
      // already gone (device removed under us): nothing left to release
    }
    return Promise.resolve();
  }
}
