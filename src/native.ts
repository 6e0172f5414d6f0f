/**
 * The native addon's surface (native/*.cc), and its loader. The TAP port and link helpers take
 * a `NativeBinding` as a parameter, so tests can script the device (EAGAIN, EBADF...) without
 * one.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ErrorCode, UvtepError } from './errors.js';

export interface TapReaderHandle {
  start(): void;
  stop(): void;
  /** Batches that qualify are sent by the flow cache without calling JS (null: none). */
  setFlowCache(fc: FlowCacheHandle | null): void;
  close(): void;
}

/**
 * The flow cache (native/flowcache.h): decisions the Vtep made, applied natively to the packets
 * that repeat them. The Vtep installs entries after forwarding a packet that way itself and
 * clears the cache whenever the FDB or its policy changes.
 */
export interface FlowCacheHandle {
  /** Unicast `mac` (a 48-bit key) goes to addr:port (the socket's family); false when the table is full. */
  setTx(mac: number, addr: Uint8Array, port: number): boolean;
  /** Datagrams with inner source `mac` from `addr` need no learning: the slot (its `seen` index), or -1. */
  setRx(mac: number, addr: Uint8Array): number;
  clear(): void;
  enable(on: boolean): void;
  /** Off for good; the TAP and the socket are no longer held. */
  close(): void;
}

/**
 * Indices of a flow cache's stats array (native/flowtable.h). TxTunnel: super-frames sent whole
 * as tunnel GSO; RxSuper: TCP super-frames received whole and written as GSO frames;
 * TunnelState: 1 tunnel GSO may be sent, -errno could not, 0 not asked; TunnelHeld: the
 * TunnelHold bits that keep the auto mode from sending it now; TunnelFull: super-frames the
 * injector's full send buffer turned back to the socket.
 */
export const FlowCacheStat = { TxFrames: 0, TxBytes: 1, RxDatagrams: 2, RxBytes: 3, RxLost: 4, RxLostBytes: 5, TxTunnel: 6, RxSuper: 7, TunnelState: 8, TunnelHeld: 9, TunnelFull: 10 } as const;
export const FLOW_CACHE_STATS = 11;
/** native/tunnel.h's TunnelHold bits, by the name `io.tunnelGsoHeld` gives them. */
export const TUNNEL_HOLDS = { netfilter: 1, xfrm: 2, 'cgroup-bpf': 4, unknown: 16 } as const;
/** Entries per table (tx, rx); `seen` has one element per slot. */
export const FLOW_CACHE_SLOTS = 256;

/** Indices of the TAP reader's stats array (native/reader.cc). */
export const ReaderStat = { Reads: 0, Frames: 1, SuperFrames: 2, CsumCompleted: 3, BadVnet: 4, BadHeaders: 5, TooManySegs: 6, NoRoom: 7, ProxyDropped: 8 } as const;
/** (ProxyDropped: frames the datapath process could not hand over, its proxy full; src/datapath.ts.) */
export const READER_STATS = 9;
/** Indices of the TAP writer's stats array (native/tap.cc writeFrames). */
export const WriterStat = { Writes: 0, GroWrites: 1, GroSegments: 2, LostFrames: 3, LostBytes: 4, BadCsum: 5, PartialCsum: 6, BigWrites: 7 } as const;
export const WRITER_STATS = 8;
/** Indices of a UDP socket's stats array (native/udp.cc). */
export const SockStat = { SendCalls: 0, MsgsSent: 1, DgramsSent: 2, GsoMsgs: 3, GsoDgrams: 4, GsoFallbacks: 5, RecvCalls: 6, MsgsRecv: 7, GroMsgs: 8, Truncated: 9, ProxyDropped: 10 } as const;
export const SOCK_STATS = 11;
/** Bytes per received message in `recvStart`'s `srcs`: family (4|6), 0, port (big-endian), address (16). */
export const SRC_STRIDE = 20;

/** TUN_F_* offload bits (include/uapi/linux/if_tun.h). */
export const TunOffload = { Csum: 0x01, Tso4: 0x02, Tso6: 0x04, TsoEcn: 0x08, Uso4: 0x20, Uso6: 0x40 } as const;

/** The native UDP endpoint: owns its fd; data-path calls return -errno instead of throwing. */
export interface UdpSocketHandle {
  /** Throws a system error with syscall 'bind' (EADDRINUSE, EADDRNOTAVAIL...). */
  bind(address: Uint8Array, port: number, scopeId: number): void;
  /** setsockopt with an int value: 0 or -errno. */
  setOpt(level: number, name: number, value: number): number;
  /** setsockopt with a struct (ip_mreqn, ipv6_mreq): 0 or -errno. */
  setOptBytes(level: number, name: number, value: Uint8Array): number;
  localPort(): number;
  /**
   * Starts receiving: each readiness event drains the socket with recvmmsg into `slab` (message i
   * at i * msgSize) and calls `onBatch(count)` once per recvmmsg. For message i: offs/lens (len -1:
   * truncated), segs (UDP GRO stride, 0 = one datagram), srcs (SRC_STRIDE bytes), tos (-1 unknown).
   */
  recvStart(
    slab: Uint8Array,
    msgSize: number,
    offs: Int32Array,
    lens: Int32Array,
    segs: Int32Array,
    srcs: Uint8Array,
    tos: Int16Array,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
    /** Receive what the datapath process hands over for registered socket `id` instead. */
    datapath?: NativeDatapath,
    id?: number,
  ): void;
  recvStop(): void;
  /**
   * Sends entries start..start+count-1 with sendmmsg (see native/udp.cc): 0 when all went (or
   * failed with a per-datagram error, reported in `res`), -EAGAIN when the socket is full, with
   * res[0] the first entry not done and res[1] its datagrams already sent.
   */
  send(buf: Uint8Array, offs: Int32Array, lens: Int32Array, segs: Int32Array, lasts: Int32Array, addrs: Uint8Array, addrStride: number, ds: Int16Array, ttl: Int16Array, start: number, count: number, gso: boolean, res: Int32Array): number;
  /** Calls `cb` once when the socket is writable again. */
  waitWritable(cb: () => void): void;
  /** The VTEP of `vni` takes its datagrams through `fc` when a whole batch qualifies (null: removed). */
  setFlowCache(vni: number, fc: FlowCacheHandle | null): void;
  close(): void;
}

/** A TAP device the addon holds open (its fd never reaches JS). */
export interface NativeTap {
  readonly name: string;
  readonly offloads: number;
  /** Whether reads and writes go through io_uring in batches (else one read() or writev() each). */
  readonly ioUring: boolean;
  /**
   * Writes frames i < count (buf[offs[i], +lens[i])) to the TAP, each behind a virtio_net_hdr:
   * TCP segments of one flow merge into one GSO write when `gro`; a TCP frame larger than `mtu`
   * (0: none) is written as a GSO frame. Returns the frames lost to write errors (all of them
   * after `close`).
   */
  writeFrames(gro: boolean, buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number, stats: Float64Array, mtu: number): number;
  /** Closes the fd once: the device is removed unless it was opened persistent. */
  close(): void;
}

/**
 * The datapath process, seen from the addon (native/datapath.cc, dpproto.h): src/datapath.ts
 * spawns it with `childFd()` as its fd 3, then registers TAPs and sockets with it.
 */
export interface NativeDatapath {
  childFd(): number;
  releaseChild(): void;
  /** The memory shared with the process: counters it writes. */
  memory(): ArrayBuffer;
  /** Hands over the memory; throws when the process does not answer within 5 s. */
  hello(): void;
  /** The process reads the TAP from now on; `readerStats` (READER_STATS, in memory()) is its. Returns the id. */
  addTap(tap: NativeTap, readerStats: Float64Array, slotSize: number, headroom: number, batch: number): number;
  /** The process receives on the socket from now on; `stats` (SOCK_STATS, in memory()) counts its receives and sends. */
  addUdp(socket: UdpSocketHandle, stats: Float64Array, msgSize: number): number;
  /** Answered: the process has closed its copy of the fd. */
  removeTap(tap: NativeTap): void;
  removeUdp(socket: UdpSocketHandle): void;
  setBusyPoll(us: number): void;
  /** The process exits when it sees this. */
  close(): void;
}

export interface NativeBinding {
  /**
   * Opens (creates) a TAP that owns its fd; `offloads` (TunOffload bits) is offered with
   * TUNSETOFFLOAD, `offloads` of the result says what was accepted. With `ioUring` each
   * writeFrames goes to the kernel as one io_uring_enter where io_uring is allowed.
   */
  Tap: new (name: string, persist: boolean, vnetHdr: boolean, offloads: number, ioUring: boolean) => NativeTap;
  /** What writeFrames would write, recorded into `out` as [u32 LE length][vnet header + packet]; returns bytes used. */
  coalesce(buf: Uint8Array, offs: Int32Array, lens: Int32Array, count: number, gro: boolean, out: Uint8Array, stats: Float64Array, mtu: number): number;
  /** The TAP reader's per-read work on one frame at buf[off, off+len) with room up to off+cap: [segs, segLen, lastLen] or [negative reason]. */
  segment(vnetHdr: Uint8Array, buf: Uint8Array, off: number, len: number, cap: number): number[];
  TapReader: new (
    tap: NativeTap,
    slab: Uint8Array,
    slotSize: number,
    headroom: number,
    offs: Int32Array,
    lens: Int32Array,
    segs: Int32Array,
    lasts: Int32Array,
    stats: Float64Array,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
    vnet: boolean,
    /** Read what the datapath process hands over for registered TAP `id` instead of the TAP. */
    datapath?: NativeDatapath,
    id?: number,
  ) => TapReaderHandle;
  UdpSocket: new (family: 4 | 6, stats: Float64Array) => UdpSocketHandle;
  /** With `datapath`, the cache forwards in the datapath process (stats, seen, tapStats in its memory), and `tunnelGso` ('on' or 'auto') asks it for tunnel GSO (native/tunnel.h). */
  FlowCache: new (tap: NativeTap, socket: UdpSocketHandle, vni: number, ownMac: number, maxFrame: number, learning: boolean, gro: boolean, gso: boolean, mtu: number, stats: Float64Array, seen: Float64Array, tapStats: Float64Array, datapath?: NativeDatapath, tunnelGso?: 'on' | 'auto' | 'off') => FlowCacheHandle;
  Datapath: new (shmBytes: number) => NativeDatapath;
  /** Busy polling after each batch, in microseconds (0 = off). Process-wide. */
  setBusyPoll(us: number): void;
  ifindex(name: string): number;
  getMtu(name: string): number;
  setMtu(name: string, mtu: number): void;
  getMac(name: string): Buffer;
  setMac(name: string, mac: Uint8Array): void;
  setUp(name: string, up: boolean): void;
  isUp(name: string): boolean;
  bridgePort(bridge: string, port: string, add: boolean): void;
  addAddress(name: string, family: 4 | 6, bytes: Uint8Array, prefixLen: number): void;
  /** `ip neigh replace IP lladdr MAC dev NAME nud permanent` (add) or `ip neigh del IP dev NAME`. */
  setNeigh(name: string, add: boolean, family: 4 | 6, ip: Uint8Array, mac: Uint8Array): void;
  /** `ip route replace DST/LEN via GW dev NAME onlink` (add) or `ip route del ...`. */
  setRoute(name: string, add: boolean, family: 4 | 6, dst: Uint8Array, prefixLen: number, gateway: Uint8Array): void;
  /** `ip link set dev NAME gso_max_segs N`. */
  setGsoMaxSegs(name: string, segs: number): void;
  /** The interface's IPv4 address (4 bytes), whatever its carrier state. */
  getIpv4(name: string): Buffer;
}

let cached: NativeBinding | undefined;

/** Loads the addon built by `npm install` (node-gyp-build finds build/Release/uvtep.node). */
export function loadBinding(): NativeBinding {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  try {
    const build = require('node-gyp-build') as (dir: string) => NativeBinding;
    cached = build(root);
  } catch (e) {
    throw new UvtepError(
      ErrorCode.NoNative,
      `the native TAP addon is not built (${(e as Error).message.split('\n')[0]}); run \`npm install\` or \`npm run build:native\` (needs g++, make, python3)`,
      { cause: e },
    );
  }
  return cached;
}
