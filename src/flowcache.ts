/**
 * The flow cache, TypeScript's side (native/flowcache.h has the data path): the Vtep's forwarding
 * decisions, handed to native code so that batches which only repeat them never wake JS. A lone
 * ping crossing uvtep then costs the syscalls and no call into V8 (on the benchmark machine the
 * wakeup of the process costs more than either: docs/benchmarks.md).
 *
 * The Vtep stays in charge, as ovs-vswitchd is of the flows it installs in the kernel datapath:
 *   - an entry is installed only after the Vtep forwarded a packet that way itself: `sawTx` (this
 *     unicast MAC went to this one remote) and `sawRx` (learning this source MAC at this address
 *     changed nothing);
 *   - any change of the FDB clears the whole cache (`clear`); the entries come back as JS forwards
 *     the next packets;
 *   - it is off while anything it does not model applies (`enable(false)`): source filters,
 *     station tracking, ARP/ND suppression; and never made for per-packet TOS/TTL or a
 *     source-port range;
 *   - a batch is taken natively only when every packet in it qualifies, so order within a flow
 *     never changes; the rest goes to JS as before, with every check and counter of the slow path.
 * Datagrams it delivers refresh their FDB entries' age (`refresh`, before the FDB reads ages: its
 * ageing sweep, `fdb show`).
 */
import type { Remote } from './fdb.js';
import type { FrameDevice } from './device/device.js';
import type { DatapathProcess } from './datapath.js';
import { FLOW_CACHE_SLOTS, FLOW_CACHE_STATS, FlowCacheStat, type FlowCacheHandle } from './native.js';
import { addressBytes, type Transport } from './transport/transport.js';

/** What the native cache forwarded without JS. */
export interface FlowCacheCounters {
  /** Frames read from the TAP and sent, and their bytes. */
  txFrames: number;
  txBytes: number;
  /** Datagrams received, and the bytes of the frames the TAP took. */
  rxDatagrams: number;
  rxBytes: number;
  /** Frames the TAP did not take (counted as `TapBusy` drops); its writes are the TAP's own counters. */
  rxLost: number;
  /** TCP super-frames sent whole as tunnel GSO (their frames and bytes are in txFrames and txBytes). */
  txTunnel: number;
  /** TCP super-frames received whole (tunnel GSO from a VTEP on this host) and written as GSO frames. */
  rxSuper: number;
  /** Super-frames the injector's full send buffer turned back: they went through the socket. */
  tunnelFull: number;
}

/** What a device and a transport need to build the native cache for a VTEP. */
export interface FlowCacheParams {
  vni: number;
  /** The device's MAC key, -1 for none: datagrams with it as source are loops (the slow path drops them). */
  ownMac: number;
  maxFrame: number;
  learning: boolean;
  /** Runs of equal-size frames to one destination leave as one UDP GSO message. */
  gso: boolean;
  /** TCP super-frames leave whole as tunnel GSO (the datapath process only: native/tunnel.h): always, or only while nothing would be skipped. */
  tunnelGso?: 'on' | 'auto' | 'off';
  stats: Float64Array;
  seen: Float64Array;
}

export class FlowCache {
  readonly stats: Float64Array;
  readonly seen: Float64Array;
  private handle: FlowCacheHandle | undefined;
  private readonly family: 4 | 6;
  private readonly tx: Set<number> = new Set();
  /** rx entries: MAC -> slot of `seen`. */
  private readonly rx: Map<number, number> = new Map();
  private readonly detachDevice: () => void;
  private readonly transport: Transport;
  private readonly vni: number;

  /**
   * The cache of the VTEP `p.vni` between `device` and `transport`, attached to both (off until
   * `enable(true)`); undefined when either has no native side (a memory device, the dgram
   * transport, a source-port range).
   */
  static open(device: FrameDevice, transport: Transport, p: Omit<FlowCacheParams, 'stats' | 'seen'>, datapath?: DatapathProcess): FlowCache | undefined {
    const socket = transport.flowSocket?.();
    if (socket === undefined || device.flowCache === undefined || transport.attachFlowCache === undefined) return undefined;
    // in the datapath process when both sides can hand their reading over; else in this one
    const dp = datapath !== undefined && datapath.room(FLOW_CACHE_STATS + FLOW_CACHE_SLOTS) && device.useDatapath?.(datapath) === true && transport.useDatapath?.(datapath) === true ? datapath : undefined;
    const stats = dp !== undefined ? dp.alloc(FLOW_CACHE_STATS) : new Float64Array(FLOW_CACHE_STATS);
    const seen = dp !== undefined ? dp.alloc(FLOW_CACHE_SLOTS) : new Float64Array(FLOW_CACHE_SLOTS);
    const d = device.flowCache(socket, { ...p, stats, seen }, dp);
    if (d === undefined) return undefined;
    const fc = new FlowCache(transport, p.vni, d.handle, stats, seen, d.detach);
    fc.datapath = dp !== undefined;
    transport.attachFlowCache(p.vni, fc);
    return fc;
  }

  /** Whether the cache forwards in the datapath process (src/datapath.ts). */
  datapath: boolean = false;

  private constructor(transport: Transport, vni: number, handle: FlowCacheHandle, stats: Float64Array, seen: Float64Array, detachDevice: () => void) {
    this.stats = stats;
    this.seen = seen;
    this.family = transport.family;
    this.handle = handle;
    this.detachDevice = detachDevice;
    this.transport = transport;
    this.vni = vni;
  }

  /** The native handle, for the reader and the socket to hold. */
  get native(): FlowCacheHandle | undefined {
    return this.handle;
  }

  /** 1: tunnel GSO may be sent; -errno: asked for and could not be; 0: not asked (read after a round trip to the datapath process). */
  get tunnelState(): number {
    return this.stats[FlowCacheStat.TunnelState]!;
  }

  /** In the auto mode, the TunnelHold bits (TUNNEL_HOLDS) that keep tunnel GSO from being sent now. */
  get tunnelHeld(): number {
    return this.stats[FlowCacheStat.TunnelHeld]!;
  }

  enable(on: boolean): void {
    this.handle?.enable(on);
  }

  /** The Vtep sent a frame (or a split super-frame) to unicast `mac`'s only remote `r`. */
  sawTx(mac: number, r: Remote): void {
    if (this.handle === undefined || this.tx.has(mac) || r.family !== this.family) return;
    if (this.handle.setTx(mac, addressBytes(r.address, this.family), r.port)) this.tx.add(mac);
  }

  /** Learning `mac` from the underlay `address` (a source of this socket, so of its family) changed nothing. */
  sawRx(mac: number, address: string): void {
    if (this.handle === undefined || this.rx.has(mac)) return;
    const slot = this.handle.setRx(mac, addressBytes(address, this.family));
    if (slot >= 0) this.rx.set(mac, slot);
  }

  /** Calls `touch` for every rx entry that delivered a datagram since the last call. */
  refresh(touch: (mac: number) => void): void {
    for (const [mac, slot] of this.rx) {
      if (this.seen[slot] === 0) continue;
      this.seen[slot] = 0;
      touch(mac);
    }
  }

  /** Forgets every entry (the FDB or the policy changed). */
  clear(): void {
    if (this.tx.size === 0 && this.rx.size === 0) return;
    this.handle?.clear();
    this.tx.clear();
    this.rx.clear();
  }

  counters(): FlowCacheCounters {
    const s = this.stats;
    return {
      txFrames: s[FlowCacheStat.TxFrames]!,
      txBytes: s[FlowCacheStat.TxBytes]!,
      rxDatagrams: s[FlowCacheStat.RxDatagrams]!,
      rxBytes: s[FlowCacheStat.RxBytes]!,
      rxLost: s[FlowCacheStat.RxLost]!,
      txTunnel: s[FlowCacheStat.TxTunnel]!,
      rxSuper: s[FlowCacheStat.RxSuper]!,
      tunnelFull: s[FlowCacheStat.TunnelFull]!,
    };
  }

  close(): void {
    if (this.handle === undefined) return;
    this.detachDevice();
    this.transport.attachFlowCache?.(this.vni, undefined);
    this.handle.close();
    this.handle = undefined;
    this.tx.clear();
    this.rx.clear();
  }
}
