/**
 * Vtep: joins a FrameDevice (frames), a Transport (datagrams) and the Fdb.
 *
 *   encap: device batch -> per entry (a frame, or a super-frame the device split into a run of
 *          MSS-sized frames): FDB lookup by destination MAC (unknown unicast, broadcast and
 *          multicast go to the flood list) -> VXLAN header written in place in each frame's
 *          headroom -> one TxBatch entry per remote -> transport.send (one GSO message each).
 *   decap: received batch -> per datagram: checkVxlan -> VNI -> inner frame checks -> learn
 *          -> the frame joins the batch written to the device with one writeBatch call.
 *
 * Per-packet problems are counted drops (`DropReason`), never exceptions or log lines.
 */
import { EventEmitter } from 'node:events';
import type { VtepConfig } from './config.js';
import { SourceFilter } from './allow.js';
import { ErrorCode, StateError } from './errors.js';
import { fail } from './check.js';
import { getSystemErrorName } from 'node:util';
import { Fdb, LearnResult, type FdbEvents, type Remote } from './fdb.js';
import type { FrameBatch, FrameDevice } from './device/device.js';
import { FRAME_HEADROOM } from './device/device.js';
import type { RxBatch, SendError, Transport, TransportCounters } from './transport/transport.js';
import type { DeviceCounters } from './device/device.js';
import { TxBatch } from './transport/transport.js';
import { ETH_HLEN, ethDst, ethSrc, isValidUnicastMac, MAC_ZERO } from './wire/ethernet.js';
import { checkVxlan, emitVxlan, VXLAN_HLEN, vxlanVni, VxlanCheck } from './wire/vxlan.js';
import { flowHash, innerDsfield } from './wire/flow.js';
import { EcnDecap, ecnDecapsulate, encapEcn, innerEcn, innerTtl } from './wire/inet.js';
import { isPartialTcp } from './wire/tcp.js';
import { proxyReply, type LocalStations, type NeighTable } from './neigh.js';
import { FlowCache } from './flowcache.js';
import { TUNNEL_HOLDS } from './native.js';
import { DatapathProcess, datapathDefault } from './datapath.js';

/** Why a frame or datagram was dropped. Numeric on the data path; names via `DROP_REASONS`. */
export const DropReason = {
  /** rx: datagram shorter than the 8-byte VXLAN header. */
  Truncated: 0,
  /** rx: I flag clear. */
  InvalidHeader: 1,
  /** rx: reserved bits set, with `reservedBits: 'strict'`. */
  ReservedBits: 2,
  /** rx: no VTEP serves the datagram's VNI (the kernel's VXLAN_VNI_NOT_FOUND). */
  UnknownVni: 3,
  /** rx: inner frame shorter than an Ethernet header (14 bytes). */
  InnerTruncated: 4,
  /** rx: inner source MAC is our own (a loop). */
  LocalMac: 5,
  /** rx: inner source MAC is zero or multicast. */
  InvalidSrcMac: 6,
  /** rx: inner source MAC has a static FDB entry pointing at another remote (spoof). */
  StaticConflict: 7,
  /** rx: the device (TAP) could not take the frame. */
  TapBusy: 8,
  /** tx: frame from the device shorter than an Ethernet header. */
  FrameTruncated: 9,
  /**
   * tx: the datagram would exceed the underlay MTU (VTEPs MUST NOT fragment, RFC 7348 4.3);
   * rx: a datagram larger than the underlay MTU allows (reassembled fragments).
   */
  TooBig: 10,
  /** tx: no FDB entry and an empty flood list. */
  NoRemote: 11,
  /** tx: the socket reported an error for the datagram (unreachable remote...). */
  TxError: 12,
  /** rx: the underlay source is not in `allowFrom`. */
  NotAllowed: 13,
  /**
   * tx: the device read a frame whose offload metadata (virtio_net_hdr) it could not honour: unknown
   * flags or GSO type, headers that contradict it, more segments than one GSO send carries.
   */
  OffloadInvalid: 14,
  /**
   * rx: the outer header is marked CE (congestion experienced) and the inner packet is not
   * ECN-capable: the signal cannot be passed on (RFC 6040), so the frame is dropped, as the
   * kernel does (it counts rx_frame_errors).
   */
  EcnError: 15,
  /**
   * tx or rx: the datapath process (src/datapath.ts) read the frame or datagram, the flow cache
   * did not cover it, and JS had not yet taken the megabytes it had already been handed: dropped
   * there (the process stops reading before that; this counts what a failing handover lost).
   */
  DatapathBusy: 16,
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
export type DropReasonName = keyof typeof DropReason;
/** The drop reason of each failed `checkVxlan` result, indexed by `VxlanCheck` (0, `Ok`, is never looked up). */
export const VXLAN_CHECK_DROP: readonly DropReason[] = [DropReason.Truncated, DropReason.Truncated, DropReason.InvalidHeader, DropReason.ReservedBits];
export const DROP_REASONS = Object.keys(DropReason) as DropReasonName[];

export interface VtepStats {
  /** Datagrams received from the underlay, valid or not. */
  rxDatagrams: number;
  /** Frames decapsulated and delivered to the device, and their bytes (inner frames). */
  rxPackets: number;
  rxBytes: number;
  /** Frames read from the device. */
  txFrames: number;
  /** Datagrams handed to the transport (one per remote: flood copies count), and inner bytes. */
  txPackets: number;
  txBytes: number;
  /** Datagrams sent to the flood list (broadcast, multicast, unknown unicast). */
  floodCopies: number;
  /** ARP requests and neighbour solicitations answered on the TAP instead of flooded (`proxy`). */
  proxyReplies: number;
  drops: Record<DropReasonName, number>;
  dropsTotal: number;
  fdbSize: number;
  /** Default destinations (the flood list). */
  floodDestinations: number;
  /** New MACs not learned because the FDB was full. */
  learnRefused: number;
  /** Times the device was paused because the socket still held queued datagrams (backpressure). */
  txPauses: number;
  /** UDP GSO: messages that carried several datagrams, and how many datagrams they carried. */
  txGsoSends: number;
  txGsoDatagrams: number;
  /** Receive coalescing: TAP writes that carried several frames of a TCP stream, and how many. */
  rxGroWrites: number;
  rxGroSegments: number;
  /** Syscalls and offloads of the device and the transport (what the fast path batches). */
  io: VtepIo;
}

export interface VtepIo extends Omit<DeviceCounters, 'offloadInvalid' | 'groWrites' | 'groSegments' | 'datapathDropped'>, Omit<TransportCounters, 'gsoSends' | 'gsoDatagrams' | 'datapathDropped'> {
  /** 'native' or 'dgram'. */
  transport: string;
  /** Whether the TAP's reads and writes go to the kernel in batches through io_uring. */
  ioUring: boolean;
  /** TCP super-frames received whole from a VTEP on this host (tunnel GSO over veth: a kernel VTEP, or uvtep with `tunnelGso`). */
  rxSuperFrames: number;
  /** Whether the native flow cache is in use, and the frames sent and datagrams received through it without JS. */
  flowCache: boolean;
  flowCacheTx: number;
  flowCacheRx: number;
  /** Where the flow cache forwards: 'process' (the datapath process, src/datapath.ts) or 'inline'. */
  datapath: 'process' | 'inline';
  /** Whether TCP super-frames to unicast remotes leave whole as tunnel GSO now (`tunnelGso`), and how many did. */
  tunnelGso: boolean;
  txTunnelSuperFrames: number;
  /** Super-frames that found the tunnel's send buffer full (as large as the socket's) and went on through the socket. */
  txTunnelFull: number;
  /**
   * Why tunnel GSO in its auto mode is not sent now, empty when it is (or is off): 'netfilter'
   * (hooks on OUTPUT or POSTROUTING), 'xfrm' (an outbound IPsec policy), 'cgroup-bpf' (a program
   * on egress, UDP sendmsg or socket creation), 'unknown' (one of these could not be read), or
   * 'unavailable' (this host cannot send it: `tunnelGsoError` says why).
   */
  tunnelGsoHeld: string[];
  /** Why tunnel GSO could not be set up here, when it could not. */
  tunnelGsoError?: string;
}

export interface VtepSendErrorInfo {
  code: string;
  address: string | undefined;
  port: number | undefined;
  /** Errors like this one since the last report (reports are limited to one per second per remote and code). */
  count: number;
  /** When the report was made (ms since the epoch): reports for one remote and code are at least a second apart by this clock. */
  at: number;
}

export interface VtepEvents extends FdbEvents {
  /** Rate-limited report of per-datagram send errors (the drops are counted either way). */
  sendError: [info: VtepSendErrorInfo];
  /** Fatal: the device or transport failed; the Vtep has closed itself. */
  error: [err: Error];
  close: [];
}

export interface VtepDeps {
  device: FrameDevice;
  transport: Transport;
  /** Clock in ms (FDB ageing); injectable for tests. */
  clock?: () => number;
}

const TX_BATCH_CAP = 256;
/** Frames of one received batch handed to the device at once: 64 messages of up to 64 GRO datagrams. */
const RX_FRAMES_CAP = 64 * 64;
const SEND_ERROR_REPORT_MS = 1000;

type State = 'new' | 'starting' | 'running' | 'closed';

export class Vtep extends EventEmitter<VtepEvents> {
  /** The resolved configuration; `update` replaces it when remotes or allowFrom change. */
  config: VtepConfig;
  readonly fdb: Fdb;
  readonly device: FrameDevice;
  readonly transport: Transport;
  private state: State = 'new';
  private readonly strict: boolean;
  private readonly vni: number;
  private readonly maxFrame: number;
  private readonly learning: boolean;
  private readonly ownMac: number;
  private readonly tx: TxBatch;
  private readonly wantHash: boolean;
  private readonly wantDs: boolean;
  /** `tos inherit`; else the fixed DSCP the inner ECN is added to (RFC 6040 encapsulation). */
  private readonly inheritTos: boolean;
  private readonly fixedDscp: number;
  /** `ttl inherit` on a transport that sets the TTL per entry. */
  private readonly wantTtl: boolean;
  private paused: boolean = false;
  private readonly sendErrors: Map<string, { last: number; count: number }> = new Map();
  /** The `allowFrom` prefixes, or undefined when everyone is accepted. */
  private allow: SourceFilter | undefined;
  /** Underlay addresses of the members of a control plane (`setMembers`), accepted besides `allow`. */
  private members: ReadonlySet<string> | undefined;
  /** The stations behind the device, told of every frame read (`observeStations`). */
  private stations: LocalStations | undefined;
  /** ARP/ND suppression: the neighbours answered for on the device (`setProxy`). */
  private neigh: NeighTable | undefined;
  private readonly proxyOut: Buffer;
  private readonly proxyOffs: Int32Array;
  private readonly proxyLens: Int32Array;
  private proxyReplies = 0;
  /** Decisions forwarded natively (src/flowcache.ts), when the device and the transport allow it. */
  private fc: FlowCache | undefined;
  private fcOn = false;
  /** Why the datapath process could not set up tunnel GSO (the auto mode goes on without it). */
  private tunnelError: string | undefined;
  private dp: DatapathProcess | undefined;
  // counters
  private rxDatagrams = 0;
  private rxPackets = 0;
  private rxBytes = 0;
  private txFrames = 0;
  private txPackets = 0;
  private txBytes = 0;
  private floodCopies = 0;
  private txPauses = 0;
  private rxSuperFrames = 0;
  private readonly drops: Float64Array;
  // the frames of a received batch, written to the device at the end of it
  private rxOffs: Int32Array;
  private rxLens: Int32Array;

  constructor(config: VtepConfig, deps: VtepDeps) {
    super();
    this.config = config;
    this.device = deps.device;
    this.transport = deps.transport;
    this.strict = config.strictReserved;
    this.vni = config.vni;
    this.maxFrame = config.maxFrame;
    this.learning = config.learning;
    // -1 never equals a MAC key: no loop check when the device has no MAC.
    this.ownMac = config.mac ?? deps.device.mac ?? -1;
    this.tx = new TxBatch(TX_BATCH_CAP);
    this.wantHash = deps.transport.needsFlowHash === true;
    this.wantDs = deps.transport.needsDsfield === true;
    this.inheritTos = config.tos === 'inherit';
    this.fixedDscp = config.tos === 'inherit' ? 0 : config.tos & 0xfc;
    this.wantTtl = config.ttl === 'inherit' && deps.transport.needsTtl === true;
    this.allow = config.allowFrom.length > 0 ? new SourceFilter(config.allowFrom) : undefined;
    this.proxyOut = Buffer.alloc(128);
    this.proxyOffs = new Int32Array(1);
    this.proxyLens = new Int32Array(1);
    this.drops = new Float64Array(DROP_REASONS.length);
    this.rxOffs = new Int32Array(RX_FRAMES_CAP);
    this.rxLens = new Int32Array(RX_FRAMES_CAP);
    this.fdb = new Fdb({
      dstPort: config.dstPort,
      vni: config.vni,
      ageingMs: config.ageingS * 1000,
      maxAddress: config.maxAddress,
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
    this.fdb.on('learned', (m, r) => this.emit('learned', m, r));
    this.fdb.on('migrated', (m, f, t) => this.emit('migrated', m, f, t));
    this.fdb.on('aged', (m, r) => this.emit('aged', m, r));
    for (const r of config.remotes) this.fdb.append(MAC_ZERO, this.fdb.remote(r.address, r.port), { origin: 'config' });
    if (config.group !== undefined) this.fdb.append(MAC_ZERO, this.fdb.remote(config.group, config.dstPort), { origin: 'config' });
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /**
   * Changes what can change while running (as SIGHUP does from the config file): the default
   * destinations (`remotes`: those of the old configuration that are gone are deleted from the
   * all-zero entry, new ones appended; destinations added at run time through the FDB stay) and
   * the underlay source filter (`allowFrom`, already resolved: `peers` expanded). Returns what
   * changed, as text.
   */
  update(next: Pick<VtepConfig, 'remotes' | 'allowFrom'>): string[] {
    const changed: string[] = [];
    const key = (r: { address: string; port: number }) => `${r.address}|${r.port}`;
    const old = new Set(this.config.remotes.map(key));
    const now = new Set(next.remotes.map(key));
    for (const r of this.config.remotes) {
      if (!now.has(key(r))) {
        this.fdb.delete(MAC_ZERO, this.fdb.remote(r.address, r.port));
        changed.push(`remote ${r.address}:${r.port} removed`);
      }
    }
    for (const r of next.remotes) {
      if (!old.has(key(r))) {
        this.fdb.append(MAC_ZERO, this.fdb.remote(r.address, r.port), { origin: 'config' });
        changed.push(`remote ${r.address}:${r.port} added`);
      }
    }
    const before = this.config.allowFrom.map((c) => c.text).join(',');
    const after = next.allowFrom.map((c) => c.text).join(',');
    if (before !== after) {
      this.allow = next.allowFrom.length > 0 ? new SourceFilter(next.allowFrom) : undefined;
      changed.push(`allow-from ${after || 'anyone'} (was ${before || 'anyone'})`);
    }
    this.config = { ...this.config, remotes: next.remotes.map((r) => ({ ...r })), allowFrom: next.allowFrom };
    this.enableFlowCache();
    return changed;
  }

  /**
   * Accept datagrams from these underlay addresses (canonical IP literals) besides `allowFrom`: a
   * control plane's members (`--etcd-allow`). Undefined: no member list (only `allowFrom` applies,
   * and with no `allowFrom` everyone is accepted). An empty set with no `allowFrom` accepts no one.
   */
  setMembers(addresses: ReadonlySet<string> | undefined): void {
    this.members = addresses;
    this.enableFlowCache();
  }

  /** Tell `stations` of every frame read from the device (what a control plane publishes), or stop. */
  observeStations(stations: LocalStations | undefined): void {
    this.stations = stations;
    this.enableFlowCache();
  }

  /**
   * ARP/ND suppression, as `ip link ... proxy`: ARP requests and neighbour solicitations from the
   * device for an address `neigh` knows are answered on the device and not flooded; unknown ones are
   * flooded as before. Undefined turns it off.
   */
  setProxy(neigh: NeighTable | undefined): void {
    this.neigh = neigh;
    this.enableFlowCache();
  }

  /** Binds the transport and starts both directions. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new StateError(`start(): the Vtep is ${this.state}; a Vtep starts once`);
    this.state = 'starting';
    try {
      await this.transport.open({
        onDatagrams: this.onDatagrams,
        onSendError: this.onSendError,
        onError: this.onFatal,
      });
    } catch (e) {
      this.state = 'closed';
      await this.device.close().catch(() => undefined);
      throw e;
    }
    if (this.state !== 'starting') return; // closed meanwhile
    this.state = 'running';
    this.fdb.startAgeing();
    this.device.start(this.onFrames, this.onFatal);
    try {
      this.openFlowCache();
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  /**
   * The native flow cache, where the device and the transport have native sides (the transport
   * has none for a source-port range) and no setting needs per-packet work it does not do (TOS or
   * TTL inherit).
   */
  private openFlowCache(): void {
    const tunnel = this.config.tunnelGso;
    const must = tunnel === 'on';
    if (!this.config.flowCache || this.inheritTos || this.wantTtl) {
      if (must) fail('tunnelGso', ErrorCode.InvalidOption, `tunnel GSO is sent by the flow cache, which ${this.config.flowCache ? 'a TOS or TTL of "inherit" keeps off' : 'is off'}`);
      return;
    }
    const canHand = this.device.useDatapath !== undefined && this.transport.useDatapath !== undefined && this.transport.flowSocket?.() !== undefined;
    // an explicit 'process' that cannot start is an error; the default falls back to inline. The
    // process reads only where the cache runs: while a policy keeps the cache off, it hands JS
    // every packet, which costs more than reading inline (docs/benchmarks.md)
    // by default only where the cache starts on: a source filter keeps it off for good
    const mode = this.config.datapath ?? (this.allow !== undefined && !must ? 'inline' : datapathDefault());
    const dp = canHand && mode === 'process' ? DatapathProcess.acquire() : undefined;
    const fc = FlowCache.open(this.device, this.transport, { vni: this.vni, ownMac: this.ownMac, maxFrame: this.maxFrame, learning: this.learning, gso: this.config.gso, tunnelGso: tunnel }, dp);
    if (dp !== undefined && fc?.datapath !== true) dp.release();
    else if (dp !== undefined) this.dp = dp;
    if (fc === undefined) {
      if (must) fail('tunnelGso', ErrorCode.InvalidOption, 'tunnel GSO needs the native TAP and UDP endpoint (not a memory device or the dgram transport, nor a --srcport range)');
      return;
    }
    this.fc = fc;
    if (must && !fc.datapath) fail('tunnelGso', ErrorCode.InvalidOption, `tunnel GSO is sent by the datapath process, which ${mode === 'inline' ? 'is not asked for (datapath "inline", or a source filter)' : 'could not take this VTEP'}`);
    if (tunnel !== 'off' && fc.datapath) {
      dp!.handle.hello(); // the process has made the table (and tried the injector) when it answers
      const state = fc.tunnelState;
      if (state < 0) this.tunnelError = `tunnel GSO is not available here: ${tunnelReason(-state)}`;
      if (must && this.tunnelError !== undefined) fail('tunnelGso', ErrorCode.InvalidOption, this.tunnelError);
    }
    const touch = (mac: number) => this.fdb.touch(mac);
    this.fdb.beforeAgeRead = () => fc.refresh(touch);
    this.fdb.onChange = () => {
      fc.refresh(touch);
      fc.clear();
    };
    this.enableFlowCache();
  }

  /** On unless something applies that the cache does not model: source filters, station tracking, ARP/ND suppression. */
  private enableFlowCache(): void {
    const on = this.state === 'running' && this.allow === undefined && this.members === undefined && this.stations === undefined && this.neigh === undefined;
    if (!on) this.fc?.clear();
    this.fc?.enable(on);
    this.fcOn = on && this.fc !== undefined;
  }

  /** Stops both directions and releases the device and the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.fdb.stopAgeing();
    this.fc?.close();
    await Promise.allSettled([this.device.close(), this.transport.close()]);
    this.dp?.release();
    this.dp = undefined;
    this.emit('close');
  }

  /** The pid of the datapath process forwarding for this VTEP (src/datapath.ts); undefined inline. */
  get datapathPid(): number | undefined {
    return this.dp?.pid;
  }

  /** The bound underlay address and port. */
  address(): { address: string; port: number } {
    return this.transport.address();
  }

  /** A snapshot of the counters as a plain object. */
  get stats(): VtepStats {
    const drops = {} as Record<DropReasonName, number>;
    const t = this.transport.counters?.();
    const p = this.device.counters?.();
    // what the flow cache forwarded natively counts as if JS had (rx lost: TapBusy)
    const f = this.fc?.counters();
    let total = 0;
    for (let i = 0; i < DROP_REASONS.length; i++) {
      // frames the device refused to read (bad offload metadata) are counted by the device, once
      const n =
        i === DropReason.OffloadInvalid
          ? (p?.offloadInvalid ?? 0)
          : i === DropReason.DatapathBusy
            ? (p?.datapathDropped ?? 0) + (t?.datapathDropped ?? 0)
            : this.drops[i]! + (i === DropReason.TapBusy ? (f?.rxLost ?? 0) : 0);
      drops[DROP_REASONS[i]!] = n;
      total += n;
    }
    return {
      rxDatagrams: this.rxDatagrams + (f?.rxDatagrams ?? 0),
      rxPackets: this.rxPackets + (f === undefined ? 0 : f.rxDatagrams - f.rxLost),
      rxBytes: this.rxBytes + (f?.rxBytes ?? 0),
      txFrames: this.txFrames + (f?.txFrames ?? 0),
      txPackets: this.txPackets + (f?.txFrames ?? 0),
      txBytes: this.txBytes + (f?.txBytes ?? 0),
      floodCopies: this.floodCopies,
      proxyReplies: this.proxyReplies,
      drops,
      dropsTotal: total,
      fdbSize: this.fdb.size,
      floodDestinations: this.fdb.flood.length,
      learnRefused: this.fdb.learnRefused,
      txPauses: this.txPauses,
      txGsoSends: t?.gsoSends ?? 0,
      txGsoDatagrams: t?.gsoDatagrams ?? 0,
      rxGroWrites: p?.groWrites ?? 0,
      rxGroSegments: p?.groSegments ?? 0,
      io: {
        transport: this.transport.kind,
        ioUring: this.device.ioUring === true,
        reads: p?.reads ?? 0,
        readFrames: p?.readFrames ?? 0,
        superFrames: p?.superFrames ?? 0,
        csumCompleted: p?.csumCompleted ?? 0,
        writes: p?.writes ?? 0,
        badCsum: p?.badCsum ?? 0,
        partialCsum: p?.partialCsum ?? 0,
        rxSuperFrames: this.rxSuperFrames + (f?.rxSuper ?? 0),
        flowCache: f !== undefined,
        datapath: this.fc?.datapath === true ? 'process' : 'inline',
        flowCacheTx: f?.txFrames ?? 0,
        flowCacheRx: f?.rxDatagrams ?? 0,
        tunnelGso: this.fc !== undefined && this.fcOn && this.fc.tunnelState > 0 && this.fc.tunnelHeld === 0,
        txTunnelSuperFrames: f?.txTunnel ?? 0,
        txTunnelFull: f?.tunnelFull ?? 0,
        tunnelGsoHeld: this.tunnelHeld(),
        ...(this.tunnelError !== undefined ? { tunnelGsoError: this.tunnelError } : {}),
        sendCalls: t?.sendCalls ?? 0,
        sentMsgs: t?.sentMsgs ?? 0,
        sentDatagrams: t?.sentDatagrams ?? 0,
        gsoFallbacks: t?.gsoFallbacks ?? 0,
        recvCalls: t?.recvCalls ?? 0,
        recvMsgs: t?.recvMsgs ?? 0,
        groMsgs: t?.groMsgs ?? 0,
      },
    };
  }

  /**
   * Encapsulation: one call per device batch. Entry i is a run of `segs` frames at a fixed stride
   * (one frame, or a TCP/UDP super-frame the device split): one FDB lookup and one TxBatch entry
   * per remote for the whole run, the VXLAN header written in place before each frame.
   */
  private readonly onFrames = (batch: FrameBatch): void => {
    if (this.state !== 'running') return;
    const buf = batch.buf;
    const n = batch.count;
    const tx = this.tx;
    const fdb = this.fdb;
    const vni = this.vni;
    const maxFrame = this.maxFrame;
    for (let i = 0; i < n; i++) {
      const off = batch.offs[i]!;
      const len = batch.lens[i]!;
      const segs = batch.segs[i]!;
      const last = batch.lasts[i]!;
      this.txFrames += segs;
      if (len < ETH_HLEN || last < ETH_HLEN) {
        this.drops[DropReason.FrameTruncated]! += segs;
        continue;
      }
      // a segment larger than the underlay carries (a bridge port with a larger MTU): never fragment
      if (len > maxFrame) {
        this.drops[DropReason.TooBig]! += segs;
        continue;
      }
      if (this.stations !== undefined) this.stations.see(buf, off, len);
      // a broadcast ARP request or a (multicast) neighbour solicitation: answered here if known
      if (this.neigh !== undefined && (buf[off]! & 1) !== 0 && segs === 1 && this.answer(buf, off, len)) continue;
      const entry = fdb.lookup(ethDst(buf, off));
      let remotes: Remote[];
      if (entry !== undefined) {
        remotes = entry.remotes;
      } else {
        remotes = fdb.flood;
        this.floodCopies += remotes.length * segs;
      }
      const nr = remotes.length;
      if (nr === 0) {
        this.drops[DropReason.NoRemote]! += segs;
        continue;
      }
      // a frame (or super-frame) to a known station with one destination: the next ones need no JS
      if (entry !== undefined && nr === 1 && this.fc !== undefined) this.fc.sawTx(entry.mac, remotes[0]!);
      const stride = len + VXLAN_HLEN;
      const hdr = off - FRAME_HEADROOM;
      for (let k = 0; k < segs; k++) emitVxlan(buf, hdr + k * stride, vni);
      const hash = this.wantHash ? flowHash(buf, off, len) : 0;
      // the outer DS field: the inner one (tos inherit) or the fixed DSCP, with the inner ECN
      // either way (CE inside is ECT(0) outside), as the kernel's ip_tunnel_ecn_encap
      let ds = -1;
      if (this.wantDs) {
        if (this.inheritTos) ds = innerDsfield(buf, off, len);
        else {
          const ecn = innerEcn(buf, off, len);
          if (ecn !== 0) ds = this.fixedDscp | encapEcn(ecn);
        }
      }
      const ttl = this.wantTtl ? innerTtl(buf, off, len) : -1;
      for (let j = 0; j < nr; j++) {
        if (tx.count === tx.cap) this.flushTx();
        tx.push(buf, hdr, stride, remotes[j]!, hash, ds, segs, last + VXLAN_HLEN, ttl);
      }
      this.txPackets += nr * segs;
      this.txBytes += nr * (len * (segs - 1) + last);
    }
    this.flushTx();
    // The slab must not be overwritten while the kernel may still read it: hold the device until
    // the socket has taken every queued datagram.
    if (this.transport.pending() > 0 && !this.paused) {
      this.paused = true;
      this.txPauses++;
      this.device.pause();
      this.transport.whenDrained(this.onDrained);
    }
  };

  /** Writes the proxy's reply to the request at `buf[off, off+len)` to the device; false if there is none. */
  private answer(buf: Buffer, off: number, len: number): boolean {
    const n = proxyReply(buf, off, len, this.neigh!, this.proxyOut);
    if (n === 0) return false;
    this.proxyOffs[0] = 0;
    this.proxyLens[0] = n;
    if (this.device.writeBatch(this.proxyOut, this.proxyOffs, this.proxyLens, 1) > 0) this.drops[DropReason.TapBusy]!++;
    else this.proxyReplies++;
    return true;
  }

  private flushTx(): void {
    if (this.tx.count === 0) return;
    this.transport.send(this.tx);
    this.tx.count = 0;
  }

  private readonly onDrained = (): void => {
    this.paused = false;
    if (this.state === 'running') this.device.resume();
  };

  /**
   * Decapsulation: one call per received batch. A message may hold several datagrams (UDP GRO);
   * each is checked on its own. The frames that pass are written to the device with one call at
   * the end of the batch (the device coalesces TCP segments of a flow); nothing is kept after.
   */
  private readonly onDatagrams = (b: RxBatch): void => {
    const buf = b.buf;
    const strict = this.strict;
    const myVni = this.vni;
    const maxFrame = this.maxFrame;
    const ownMac = this.ownMac;
    const learning = this.learning;
    const allow = this.allow;
    const members = this.members;
    const filtered = allow !== undefined || members !== undefined;
    let outOffs = this.rxOffs;
    let outLens = this.rxLens;
    let nOut = 0;
    let bytes = 0;
    // the last (source MAC, remote) learned in this batch: a run of one flow learns once
    let lastMac = -1;
    let lastSrc = '';
    let lastConflict = false;
    for (let m = 0; m < b.count; m++) {
      const total = b.lens[m]!;
      const src = b.srcs[m]!;
      if (total < 0) {
        // larger than the receive buffer: reassembled from fragments (RFC 7348 4.3: may discard)
        this.rxDatagrams++;
        this.drops[DropReason.TooBig]!++;
        continue;
      }
      const stride = b.segs[m]! > 0 ? b.segs[m]! : total;
      const nd = stride > 0 ? Math.ceil(total / stride) : 1;
      // the outer ECN mark of the message (every datagram of a GRO message has the same TOS)
      const tos = b.tos[m]!;
      const ecn = tos > 0 && (tos & 3) !== 0;
      this.rxDatagrams += nd;
      if (filtered && members?.has(src) !== true && allow?.allowed(src) !== true) {
        this.drops[DropReason.NotAllowed]! += nd;
        continue;
      }
      if (nOut + nd > outOffs.length) {
        const grow = Math.max(outOffs.length * 2, nOut + nd);
        const o = new Int32Array(grow);
        const l = new Int32Array(grow);
        o.set(outOffs);
        l.set(outLens);
        this.rxOffs = outOffs = o;
        this.rxLens = outLens = l;
      }
      const base = b.offs[m]!;
      for (let d = 0; d < nd; d++) {
        const off = base + d * stride;
        const len = d === nd - 1 ? total - d * stride : stride;
        const c = checkVxlan(buf, off, off + len, strict);
        if (c !== VxlanCheck.Ok) {
          this.drops[VXLAN_CHECK_DROP[c]!]!++;
          continue;
        }
        if (vxlanVni(buf, off) !== myVni) {
          this.drops[DropReason.UnknownVni]!++;
          continue;
        }
        const inner = off + VXLAN_HLEN;
        const ilen = len - VXLAN_HLEN;
        if (ilen < ETH_HLEN) {
          this.drops[DropReason.InnerTruncated]!++;
          continue;
        }
        // Larger than the underlay carries unfragmented: reassembled from IP fragments, which
        // RFC 7348 section 4.3 lets the destination VTEP "silently discard"; unless it is a TCP
        // super-frame a kernel VTEP on this host sent as one tunnel-GSO datagram (over veth with
        // tx checksum offload): the device writes that as a GSO frame, as the kernel would take it.
        if (ilen > maxFrame) {
          if (!isPartialTcp(buf, inner, ilen)) {
            this.drops[DropReason.TooBig]!++;
            continue;
          }
          this.rxSuperFrames++;
        }
        const smac = ethSrc(buf, inner);
        if (smac === ownMac) {
          this.drops[DropReason.LocalMac]!++;
          continue;
        }
        // Zero or group (I/G bit) source: not a valid station; never learned, never delivered.
        if (!isValidUnicastMac(smac)) {
          this.drops[DropReason.InvalidSrcMac]!++;
          continue;
        }
        if (learning) {
          if (smac !== lastMac || src !== lastSrc) {
            const lr = this.fdb.learn(smac, src);
            lastConflict = lr === LearnResult.StaticConflict;
            lastMac = smac;
            lastSrc = src;
            // learning it again would change nothing: the next datagrams from it need no JS
            if (lr === LearnResult.Known && this.fc !== undefined) this.fc.sawRx(smac, src);
          }
          if (lastConflict) {
            this.drops[DropReason.StaticConflict]!++;
            continue;
          }
        }
        // after learning, as the kernel's vxlan_rcv: the outer ECN mark onto the inner packet
        if (ecn && ecnDecapsulate(buf, inner, ilen, tos) === EcnDecap.Drop) {
          this.drops[DropReason.EcnError]!++;
          continue;
        }
        outOffs[nOut] = inner;
        outLens[nOut] = ilen;
        nOut++;
        bytes += ilen;
      }
    }
    if (nOut === 0) return;
    const lost = this.device.writeBatch(buf, outOffs, outLens, nOut);
    if (lost > 0) {
      this.drops[DropReason.TapBusy]! += lost;
      bytes -= this.device.lostBytes;
    }
    this.rxPackets += nOut - lost;
    this.rxBytes += bytes;
  };

  private readonly onSendError = (err: SendError): void => {
    this.drops[DropReason.TxError]! += err.datagrams ?? 1;
    const code = err.code ?? 'EUNKNOWN';
    const key = `${code}|${err.address ?? ''}|${err.port ?? ''}`;
    const now = Date.now();
    let s = this.sendErrors.get(key);
    if (s === undefined) {
      if (this.sendErrors.size > 1024) this.sendErrors.clear();
      s = { last: -Infinity, count: 0 };
      this.sendErrors.set(key, s);
    }
    s.count++;
    if (now - s.last >= SEND_ERROR_REPORT_MS) {
      const info = { code, address: err.address, port: err.port, count: s.count, at: now };
      s.last = now;
      s.count = 0;
      this.emit('sendError', info);
    }
  };

  /** io.tunnelGsoHeld: why the auto mode does not send tunnel GSO now. */
  private tunnelHeld(): string[] {
    if (this.config.tunnelGso !== 'auto' || this.fc === undefined || !this.fc.datapath) return [];
    if (this.tunnelError !== undefined) return ['unavailable'];
    return holdNames(this.fc.tunnelHeld);
  }

  private readonly onFatal = (err: Error): void => {
    if (this.state === 'closed') return;
    void this.close().then(() => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
  };
}

/** TUNNEL_HOLDS' names for the bits in `held`. */
function holdNames(held: number): string[] {
  return Object.entries(TUNNEL_HOLDS)
    .filter(([, bit]) => (held & bit) !== 0)
    .map(([name]) => name);
}

/** Why the datapath process could not send tunnel GSO (native/tunnel.cc logs the step too). */
function tunnelReason(errno: number): string {
  const name = getSystemErrorName(-errno);
  if (name === 'EINVAL') return 'this kernel has no UDP tunnel GSO for TAP devices or no tcx BPF hook (Linux 6.17 or later) (EINVAL)';
  if (name === 'EPERM' || name === 'EACCES') return `creating a TAP and loading a BPF program needs CAP_NET_ADMIN and CAP_BPF (${name})`;
  return `${name} (the datapath process's stderr names the step)`;
}
