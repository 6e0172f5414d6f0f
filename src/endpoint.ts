/**
 * Endpoint: one UDP endpoint (a Transport bound to a local address and port) shared by any
 * number of VTEPs, as the kernel keeps one socket per port for all its vxlan devices.
 *
 *   rx: the transport's batch -> per datagram: length, I flag, VNI -> the VTEP serving that VNI.
 *       When every datagram of a batch is for one VTEP (the common case: one tenant busy at a
 *       time, or a single VTEP) the batch is handed over as it is; otherwise it is split into
 *       one batch per VTEP over the same buffer (no copy). A VNI nobody serves is a counted drop
 *       (`UnknownVni`, the kernel's VXLAN_VNI_NOT_FOUND), and so is a datagram with no valid
 *       VXLAN header (it cannot be attributed to any VTEP).
 *   tx: every VTEP sends through the one transport, its batches and its backpressure.
 *
 * Each VTEP gets a `lane(vni, group)`: a Transport that the Vtep opens and closes as its own.
 * Closing a lane detaches the VTEP (and leaves its multicast group when no other VTEP uses it);
 * the endpoint's socket stays open until `close()`.
 */
import { ConfigError, ErrorCode, StateError } from './errors.js';
import type { FlowCache } from './flowcache.js';
import type { DatapathProcess } from './datapath.js';
import type { UdpSocketHandle } from './native.js';
import { newRxBatch, type RxBatch, type SendError, type Transport, type TransportCounters, type TransportHandlers, type TxBatch } from './transport/transport.js';
import type { DropReasonName } from './vtep.js';
import { VXLAN_HLEN } from './wire/vxlan.js';

/** The drops an endpoint counts itself: datagrams no VTEP can be given. */
export const ENDPOINT_DROPS = ['Truncated', 'InvalidHeader', 'TooBig', 'UnknownVni', 'TxError'] as const satisfies readonly DropReasonName[];
export type EndpointDropName = (typeof ENDPOINT_DROPS)[number];

export interface EndpointStats {
  /** `address:port` the endpoint is bound to. */
  listen: string;
  /** 'native' or 'dgram'. */
  transport: string;
  /** VNIs served. */
  vnis: number[];
  /** Datagrams received, valid or not, for any VNI. */
  rxDatagrams: number;
  /** Datagrams no VTEP was given, by reason; `TxError`: send errors for a VTEP that has left. */
  drops: Record<EndpointDropName, number>;
  dropsTotal: number;
  /** The transport's syscall and offload counters (shared by every VTEP on the endpoint). */
  io: TransportCounters;
}

type State = 'new' | 'opening' | 'open' | 'closed';

/** Marks a message whose datagrams go to different VTEPs, or some to none. */
const SPLIT = null;

export class Endpoint {
  readonly transport: Transport;
  private state: State = 'new';
  private opening: Promise<void> | undefined;
  private readonly lanes: Map<number, Lane> = new Map();
  /** Multicast groups joined, with the number of lanes using each. */
  private readonly groups: Map<string, number> = new Map();
  private readonly drops: Record<EndpointDropName, number> = { Truncated: 0, InvalidHeader: 0, TooBig: 0, UnknownVni: 0, TxError: 0 };
  private rxDatagrams: number = 0;
  // per message of the batch being dispatched: its lane, or SPLIT
  private msgLane: Array<Lane | null> = [];
  private lastVni: number = -1;
  private lastLane: Lane | undefined;

  constructor(transport: Transport) {
    this.transport = transport;
  }

  get family(): 4 | 6 {
    return this.transport.family;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** The VNIs served now. */
  get vnis(): number[] {
    return [...this.lanes.keys()];
  }

  /** Whether a VTEP serves `vni` here. */
  serves(vni: number): boolean {
    return this.lanes.has(vni);
  }

  /**
   * A Transport for the VTEP of `vni`: opening it attaches the VTEP (and opens the endpoint's
   * socket if it is not open yet), closing it detaches the VTEP. `group`: a multicast group the
   * VTEP floods to, joined while the VTEP is attached.
   */
  lane(vni: number, group?: string): Transport {
    return new Lane(this, vni, group);
  }

  /** Binds the socket and starts receiving (the first lane's open does it too). */
  open(): Promise<void> {
    if (this.state === 'closed') return Promise.reject(new StateError('open(): the endpoint is closed'));
    if (this.state === 'open') return Promise.resolve();
    this.opening ??= (async () => {
      this.state = 'opening';
      try {
        await this.transport.open({ onDatagrams: this.onDatagrams, onSendError: this.onSendError, onError: this.onError });
      } catch (e) {
        this.state = 'closed';
        throw e;
      }
      if (this.state === 'opening') this.state = 'open';
    })();
    return this.opening;
  }

  /** Closes the socket. VTEPs still attached stop receiving; close them first. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.lanes.clear();
    this.groups.clear();
    this.lastLane = undefined;
    this.lastVni = -1;
    await this.transport.close();
  }

  address(): { address: string; port: number } {
    return this.transport.address();
  }

  get stats(): EndpointStats {
    const a = this.state === 'open' ? this.transport.address() : undefined;
    let total = 0;
    for (const r of ENDPOINT_DROPS) total += this.drops[r];
    return {
      listen: a === undefined ? '' : a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
      transport: this.transport.kind,
      vnis: this.vnis,
      rxDatagrams: this.rxDatagrams + this.flowRx(),
      drops: { ...this.drops },
      dropsTotal: total,
      io: this.io(),
    };
  }

  /** Datagrams the lanes' flow caches took without JS (src/flowcache.ts). */
  private flowRx(): number {
    let n = 0;
    for (const lane of this.lanes.values()) n += lane.flowCache?.counters().rxDatagrams ?? 0;
    return n;
  }

  /** The transport's syscall and offload counters. */
  io(): TransportCounters {
    return this.transport.counters?.() ?? { sendCalls: 0, sentMsgs: 0, sentDatagrams: 0, gsoSends: 0, gsoDatagrams: 0, gsoFallbacks: 0, recvCalls: 0, recvMsgs: 0, groMsgs: 0 };
  }

  /** @internal Lane.open */
  async attach(lane: Lane): Promise<void> {
    if (this.lanes.has(lane.vni)) {
      throw new ConfigError(ErrorCode.Exists, 'vni', `vni: VNI ${lane.vni} is already served on this UDP port; one VTEP per VNI and port (as the kernel)`);
    }
    await this.open();
    if (this.state !== 'open') throw new StateError('the endpoint was closed while opening');
    if (this.lanes.has(lane.vni)) {
      throw new ConfigError(ErrorCode.Exists, 'vni', `vni: VNI ${lane.vni} is already served on this UDP port; one VTEP per VNI and port (as the kernel)`);
    }
    if (lane.group !== undefined) {
      const n = this.groups.get(lane.group) ?? 0;
      if (n === 0) {
        if (this.transport.joinGroup === undefined) throw new ConfigError(ErrorCode.InvalidOption, 'group', 'group: this transport cannot join multicast groups after it is open');
        this.transport.joinGroup(lane.group);
      }
      this.groups.set(lane.group, n + 1);
    }
    this.lanes.set(lane.vni, lane);
    this.lastVni = -1;
    this.lastLane = undefined;
  }

  /** @internal Lane.close */
  detach(lane: Lane): void {
    if (this.lanes.get(lane.vni) !== lane) return;
    this.lanes.delete(lane.vni);
    this.lastVni = -1;
    this.lastLane = undefined;
    if (lane.group !== undefined) {
      const n = (this.groups.get(lane.group) ?? 1) - 1;
      if (n > 0) this.groups.set(lane.group, n);
      else {
        this.groups.delete(lane.group);
        this.transport.leaveGroup?.(lane.group);
      }
    }
  }

  /** The lane of a VXLAN datagram at buf[off, off+len), or undefined after counting why not. */
  private classify(buf: Buffer, off: number, len: number, count: boolean): Lane | undefined {
    if (len < VXLAN_HLEN) {
      if (count) this.drops.Truncated++;
      return undefined;
    }
    if ((buf[off]! & 0x08) === 0) {
      if (count) this.drops.InvalidHeader++;
      return undefined;
    }
    const vni = (buf[off + 4]! << 16) | (buf[off + 5]! << 8) | buf[off + 6]!;
    if (vni === this.lastVni) return this.lastLane;
    const lane = this.lanes.get(vni);
    if (lane === undefined) {
      if (count) this.drops.UnknownVni++;
      return undefined;
    }
    this.lastVni = vni;
    this.lastLane = lane;
    return lane;
  }

  private readonly onDatagrams = (b: RxBatch): void => {
    const buf = b.buf;
    const n = b.count;
    if (this.msgLane.length < n) this.msgLane = new Array<Lane | null>(n).fill(null);
    const msgLane = this.msgLane;
    let only: Lane | undefined;
    let whole = true;
    for (let m = 0; m < n; m++) {
      const total = b.lens[m]!;
      if (total < 0) {
        // larger than the receive buffer: reassembled from fragments (RFC 7348 4.3: may discard)
        this.rxDatagrams++;
        this.drops.TooBig++;
        msgLane[m] = SPLIT;
        whole = false;
        continue;
      }
      const stride = b.segs[m]! > 0 ? b.segs[m]! : total;
      const nd = stride > 0 ? Math.ceil(total / stride) : 1;
      this.rxDatagrams += nd;
      const base = b.offs[m]!;
      let ml: Lane | undefined;
      let split = false;
      for (let d = 0; d < nd; d++) {
        const off = base + d * stride;
        const lane = this.classify(buf, off, d === nd - 1 ? total - d * stride : stride, true);
        if (lane === undefined) split = true;
        else if (ml === undefined) ml = lane;
        else if (ml !== lane) split = true;
      }
      if (split || ml === undefined) {
        msgLane[m] = SPLIT;
        whole = false;
        continue;
      }
      msgLane[m] = ml;
      if (only === undefined) only = ml;
      else if (only !== ml) whole = false;
    }
    if (whole) {
      // one VTEP, every datagram valid: the batch as it is
      if (only !== undefined) only.handlers?.onDatagrams(b);
      return;
    }
    for (const lane of this.lanes.values()) lane.rx.count = 0;
    for (let m = 0; m < n; m++) {
      const ml = msgLane[m]!;
      if (ml !== SPLIT) {
        ml.push(b.offs[m]!, b.lens[m]!, b.segs[m]!, b.srcs[m]!, b.tos[m]!);
        continue;
      }
      const total = b.lens[m]!;
      if (total < 0) continue;
      const stride = b.segs[m]! > 0 ? b.segs[m]! : total;
      const nd = stride > 0 ? Math.ceil(total / stride) : 1;
      const base = b.offs[m]!;
      for (let d = 0; d < nd; d++) {
        const off = base + d * stride;
        const len = d === nd - 1 ? total - d * stride : stride;
        this.classify(buf, off, len, false)?.push(off, len, 0, b.srcs[m]!, b.tos[m]!);
      }
    }
    for (const lane of this.lanes.values()) {
      if (lane.rx.count === 0) continue;
      lane.rx.buf = buf;
      lane.handlers?.onDatagrams(lane.rx);
    }
  };

  private readonly onSendError = (err: SendError): void => {
    const vni = err.remote?.vni;
    const lane = vni === undefined ? undefined : this.lanes.get(vni);
    if (lane !== undefined) lane.handlers?.onSendError(err);
    else if (this.lanes.size === 1) this.lanes.values().next().value!.handlers?.onSendError(err);
    else this.drops.TxError += err.datagrams ?? 1;
  };

  private readonly onError = (err: Error): void => {
    for (const lane of [...this.lanes.values()]) lane.handlers?.onError(err);
  };
}

/** One VTEP's view of a shared endpoint: a Transport whose open/close attach and detach it. */
class Lane implements Transport {
  readonly family: 4 | 6;
  readonly kind: string;
  readonly needsFlowHash: boolean;
  readonly needsDsfield: boolean;
  readonly needsTtl: boolean;
  readonly vni: number;
  readonly group: string | undefined;
  handlers: TransportHandlers | undefined;
  /** This VTEP's part of a batch the endpoint had to split. */
  readonly rx: RxBatch;
  /** The VTEP's flow cache on the endpoint's socket. */
  flowCache: FlowCache | undefined;
  private readonly ep: Endpoint;
  private attached: boolean = false;

  constructor(ep: Endpoint, vni: number, group: string | undefined) {
    this.ep = ep;
    const t = ep.transport;
    this.family = t.family;
    this.kind = t.kind;
    this.needsFlowHash = t.needsFlowHash === true;
    this.needsDsfield = t.needsDsfield === true;
    this.needsTtl = t.needsTtl === true;
    this.vni = vni;
    this.group = group;
    this.rx = newRxBatch(Buffer.alloc(0), 64);
  }

  /** Appends one message (or one datagram of a split GRO message) to `rx`, growing it as needed. */
  push(off: number, len: number, segs: number, src: string, tos: number): void {
    let rx = this.rx;
    if (rx.count === rx.offs.length) {
      const cap = rx.offs.length * 2;
      const grown = newRxBatch(rx.buf, cap);
      grown.offs.set(rx.offs);
      grown.lens.set(rx.lens);
      grown.segs.set(rx.segs);
      grown.tos.set(rx.tos);
      for (let i = 0; i < rx.count; i++) grown.srcs[i] = rx.srcs[i]!;
      grown.count = rx.count;
      Object.assign(rx, grown);
      rx = this.rx;
    }
    const i = rx.count++;
    rx.offs[i] = off;
    rx.lens[i] = len;
    rx.segs[i] = segs;
    rx.srcs[i] = src;
    rx.tos[i] = tos;
  }

  async open(handlers: TransportHandlers): Promise<void> {
    this.handlers = handlers;
    await this.ep.attach(this);
    this.attached = true;
  }

  send(batch: TxBatch): void {
    if (this.attached) this.ep.transport.send(batch);
  }

  pending(): number {
    return this.attached ? this.ep.transport.pending() : 0;
  }

  whenDrained(cb: () => void): void {
    if (this.attached) this.ep.transport.whenDrained(cb);
    else cb();
  }

  address(): { address: string; port: number } {
    return this.ep.address();
  }

  /** The shared endpoint's counters: every VTEP on it reports the same. */
  counters(): TransportCounters {
    return this.ep.io();
  }

  flowSocket(): UdpSocketHandle | undefined {
    return this.attached ? this.ep.transport.flowSocket?.() : undefined;
  }

  useDatapath(dp: DatapathProcess): boolean {
    return this.attached && this.ep.transport.useDatapath?.(dp) === true;
  }

  attachFlowCache(vni: number, fc: FlowCache | undefined): void {
    this.flowCache = fc;
    this.ep.transport.attachFlowCache?.(vni, fc);
  }

  close(): Promise<void> {
    if (this.flowCache !== undefined) this.attachFlowCache(this.vni, undefined);
    if (this.attached) this.ep.detach(this);
    this.attached = false;
    this.handlers = undefined;
    return Promise.resolve();
  }
}
