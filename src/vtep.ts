/**
 * Vtep: joins a FramePort (frames), a Transport (datagrams) and the Fdb.
 *
 *   encap: port batch -> per frame: FDB lookup by destination MAC (unknown unicast, broadcast
 *          and multicast go to the flood list) -> VXLAN header written in place in the
 *          headroom -> one TxBatch -> transport.send.
 *   decap: datagram -> checkVxlan -> VNI -> inner frame checks -> learn -> port.write.
 *
 * Per-packet problems are counted drops (`DropReason`), never exceptions or log lines.
 */
import { EventEmitter } from 'node:events';
import { ipAllowed, type AllowCidr, type VtepConfig } from './config.js';
import { StateError } from './errors.js';
import { Fdb, LearnResult, type Remote } from './fdb.js';
import type { FrameBatch, FramePort } from './port/port.js';
import { FRAME_HEADROOM } from './port/port.js';
import type { SendError, Transport } from './transport/transport.js';
import { TxBatch } from './transport/transport.js';
import { ETH_HLEN, ethDst, ethSrc, MAC_ZERO } from './wire/ethernet.js';
import { checkVxlan, emitVxlan, VXLAN_HLEN, vxlanVni, VxlanCheck } from './wire/vxlan.js';
import { flowHash, innerDsfield } from './wire/flow.js';

/** Why a frame or datagram was dropped. Numeric on the data path; names via `DROP_REASONS`. */
export const DropReason = {
  /** rx: datagram shorter than the 8-byte VXLAN header. */
  Truncated: 0,
  /** rx: I flag clear. */
  InvalidHeader: 1,
  /** rx: reserved bits set, with `reservedBits: 'strict'`. */
  ReservedBits: 2,
  /** rx: VNI is not ours. */
  VniMismatch: 3,
  /** rx: inner frame shorter than an Ethernet header (14 bytes). */
  InnerTruncated: 4,
  /** rx: inner source MAC is our own (a loop). */
  LocalMac: 5,
  /** rx: inner source MAC is zero or multicast. */
  InvalidSrcMac: 6,
  /** rx: inner source MAC has a static FDB entry pointing at another remote (spoof). */
  StaticConflict: 7,
  /** rx: the port (TAP) could not take the frame. */
  TapBusy: 8,
  /** tx: frame from the port shorter than an Ethernet header. */
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
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
export type DropReasonName = keyof typeof DropReason;
export const DROP_REASONS = Object.keys(DropReason) as DropReasonName[];

export interface VtepStats {
  /** Datagrams received from the underlay, valid or not. */
  rxDatagrams: number;
  /** Frames decapsulated and delivered to the port, and their bytes (inner frames). */
  rxPackets: number;
  rxBytes: number;
  /** Frames read from the port. */
  txFrames: number;
  /** Datagrams handed to the transport (one per remote: flood copies count), and inner bytes. */
  txPackets: number;
  txBytes: number;
  /** Datagrams sent to the flood list (broadcast, multicast, unknown unicast). */
  floodCopies: number;
  drops: Record<DropReasonName, number>;
  dropsTotal: number;
  fdbSize: number;
  /** New MACs not learned because the FDB was full. */
  learnRefused: number;
  /** Times the port was paused because the socket still held queued datagrams (backpressure). */
  txPauses: number;
  /** UDP GSO: sendmsg calls that carried several datagrams, and how many datagrams they carried. */
  txGsoSends: number;
  txGsoDatagrams: number;
  /** Receive coalescing: TAP writes that carried several frames of a TCP stream, and how many. */
  rxGroWrites: number;
  rxGroSegments: number;
}

export interface VtepSendErrorInfo {
  code: string;
  address: string | undefined;
  port: number | undefined;
  /** Errors like this one since the last report (reports are limited to one per second per remote and code). */
  count: number;
}

export interface VtepEvents {
  learned: [mac: number, remote: Remote];
  migrated: [mac: number, from: Remote, to: Remote];
  aged: [mac: number, remote: Remote];
  /** Rate-limited report of per-datagram send errors (the drops are counted either way). */
  sendError: [info: VtepSendErrorInfo];
  /** Fatal: the port or transport failed; the Vtep has closed itself. */
  error: [err: Error];
  close: [];
}

export interface VtepDeps {
  port: FramePort;
  transport: Transport;
  /** Clock in ms (FDB ageing); injectable for tests. */
  clock?: () => number;
}

const TX_BATCH_CAP = 256;
const SEND_ERROR_REPORT_MS = 1000;

type State = 'new' | 'starting' | 'running' | 'closed';

export class Vtep extends EventEmitter<VtepEvents> {
  readonly config: VtepConfig;
  readonly fdb: Fdb;
  readonly port: FramePort;
  readonly transport: Transport;
  private state: State;
  private readonly strict: boolean;
  private readonly vni: number;
  private readonly maxFrame: number;
  private readonly learning: boolean;
  private readonly ownMac: number;
  private readonly tx: TxBatch;
  private readonly wantHash: boolean;
  private readonly wantDs: boolean;
  private paused: boolean;
  private readonly sendErrors: Map<string, { last: number; count: number }>;
  private readonly allow: AllowCidr[];
  /** Decisions per underlay source, so the filter costs one Map lookup per datagram. */
  private readonly allowMemo: Map<string, boolean>;
  // counters
  private rxDatagrams = 0;
  private rxPackets = 0;
  private rxBytes = 0;
  private txFrames = 0;
  private txPackets = 0;
  private txBytes = 0;
  private floodCopies = 0;
  private txPauses = 0;
  private readonly drops: Float64Array;

  constructor(config: VtepConfig, deps: VtepDeps) {
    super();
    this.config = config;
    this.port = deps.port;
    this.transport = deps.transport;
    this.state = 'new';
    this.strict = config.strictReserved;
    this.vni = config.vni;
    this.maxFrame = config.maxFrame;
    this.learning = config.learning;
    // -1 never equals a MAC key: no loop check when the port has no MAC.
    this.ownMac = config.mac ?? deps.port.mac ?? -1;
    this.tx = new TxBatch(TX_BATCH_CAP);
    this.wantHash = deps.transport.needsFlowHash === true;
    this.wantDs = deps.transport.needsDsfield === true;
    this.paused = false;
    this.sendErrors = new Map();
    this.allow = config.allowFrom;
    this.allowMemo = new Map();
    this.drops = new Float64Array(DROP_REASONS.length);
    this.fdb = new Fdb({
      dstPort: config.dstPort,
      ageingMs: config.ageingS * 1000,
      maxAddress: config.maxAddress,
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
    this.fdb.on('learned', (m, r) => this.emit('learned', m, r));
    this.fdb.on('migrated', (m, f, t) => this.emit('migrated', m, f, t));
    this.fdb.on('aged', (m, r) => this.emit('aged', m, r));
    for (const r of config.remotes) this.fdb.append(MAC_ZERO, this.fdb.remote(r.address, r.port));
    if (config.group !== undefined) this.fdb.append(MAC_ZERO, this.fdb.remote(config.group, config.dstPort));
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Binds the transport and starts both directions. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new StateError(`start(): the Vtep is ${this.state}; a Vtep starts once`);
    this.state = 'starting';
    try {
      await this.transport.open({
        onDatagram: this.onDatagram,
        onSendError: this.onSendError,
        onError: this.onFatal,
      });
    } catch (e) {
      this.state = 'closed';
      await this.port.close().catch(() => undefined);
      throw e;
    }
    if (this.state !== 'starting') return; // closed meanwhile
    this.state = 'running';
    this.fdb.startAgeing();
    this.port.start(this.onFrames, this.onFatal);
  }

  /** Stops both directions and releases the port and the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.fdb.stopAgeing();
    await Promise.allSettled([this.port.close(), this.transport.close()]);
    this.emit('close');
  }

  /** The bound underlay address and port. */
  address(): { address: string; port: number } {
    return this.transport.address();
  }

  /** A snapshot of the counters as a plain object. */
  get stats(): VtepStats {
    const drops = {} as Record<DropReasonName, number>;
    const gso = this.transport.counters?.();
    const gro = this.port.counters?.();
    let total = 0;
    for (let i = 0; i < DROP_REASONS.length; i++) {
      drops[DROP_REASONS[i]!] = this.drops[i]!;
      total += this.drops[i]!;
    }
    // frames the port accepted but then failed to write (coalesced writes) are TapBusy drops too
    if (gro !== undefined && gro.writeErrors > 0) {
      drops.TapBusy += gro.writeErrors;
      total += gro.writeErrors;
    }
    return {
      rxDatagrams: this.rxDatagrams,
      rxPackets: this.rxPackets,
      rxBytes: this.rxBytes,
      txFrames: this.txFrames,
      txPackets: this.txPackets,
      txBytes: this.txBytes,
      floodCopies: this.floodCopies,
      drops,
      dropsTotal: total,
      fdbSize: this.fdb.size,
      learnRefused: this.fdb.learnRefused,
      txPauses: this.txPauses,
      txGsoSends: gso?.gsoSends ?? 0,
      txGsoDatagrams: gso?.gsoDatagrams ?? 0,
      rxGroWrites: gro?.groWrites ?? 0,
      rxGroSegments: gro?.groSegments ?? 0,
    };
  }

  /** Encapsulation: one call per port batch. */
  private readonly onFrames = (batch: FrameBatch): void => {
    if (this.state !== 'running') return;
    const buf = batch.buf;
    const n = batch.count;
    const tx = this.tx;
    const fdb = this.fdb;
    const vni = this.vni;
    this.txFrames += n;
    for (let i = 0; i < n; i++) {
      const off = batch.offs[i]!;
      const len = batch.lens[i]!;
      if (len < ETH_HLEN) {
        this.drops[DropReason.FrameTruncated]++;
        continue;
      }
      if (len > this.maxFrame) {
        this.drops[DropReason.TooBig]++;
        continue;
      }
      const entry = fdb.lookup(ethDst(buf, off));
      let remotes: Remote[];
      if (entry !== undefined) {
        remotes = entry.remotes;
      } else {
        remotes = fdb.flood;
        this.floodCopies += remotes.length;
      }
      const nr = remotes.length;
      if (nr === 0) {
        this.drops[DropReason.NoRemote]++;
        continue;
      }
      const hdr = off - FRAME_HEADROOM;
      emitVxlan(buf, hdr, vni);
      if (tx.count + nr > tx.cap) this.flushTx();
      const hash = this.wantHash ? flowHash(buf, off, len) : 0;
      const ds = this.wantDs ? innerDsfield(buf, off, len) : -1;
      for (let j = 0; j < nr; j++) tx.push(buf, hdr, len + VXLAN_HLEN, remotes[j]!, hash, ds);
      this.txPackets += nr;
      this.txBytes += len * nr;
    }
    this.flushTx();
    // The slab must not be overwritten while the kernel may still read it: hold the port until
    // the socket has taken every queued datagram.
    if (this.transport.pending() > 0 && !this.paused) {
      this.paused = true;
      this.txPauses++;
      this.port.pause();
      this.transport.whenDrained(this.onDrained);
    }
  };

  private flushTx(): void {
    if (this.tx.count === 0) return;
    this.transport.send(this.tx);
    this.tx.count = 0;
  }

  private readonly onDrained = (): void => {
    this.paused = false;
    if (this.state === 'running') this.port.resume();
  };

  /** Decapsulation: one call per datagram. */
  private readonly onDatagram = (buf: Buffer, off: number, len: number, src: string): void => {
    this.rxDatagrams++;
    if (this.allow.length > 0 && !this.allowed(src)) {
      this.drops[DropReason.NotAllowed]++;
      return;
    }
    const c = checkVxlan(buf, off, off + len, this.strict);
    if (c !== VxlanCheck.Ok) {
      this.drops[c === VxlanCheck.Truncated ? DropReason.Truncated : c === VxlanCheck.NoIFlag ? DropReason.InvalidHeader : DropReason.ReservedBits]++;
      return;
    }
    if (vxlanVni(buf, off) !== this.vni) {
      this.drops[DropReason.VniMismatch]++;
      return;
    }
    const inner = off + VXLAN_HLEN;
    const ilen = len - VXLAN_HLEN;
    if (ilen < ETH_HLEN) {
      this.drops[DropReason.InnerTruncated]++;
      return;
    }
    // Larger than the underlay carries unfragmented: it was reassembled from IP fragments, which
    // RFC 7348 section 4.3 lets the destination VTEP "silently discard".
    if (ilen > this.maxFrame) {
      this.drops[DropReason.TooBig]++;
      return;
    }
    const smac = ethSrc(buf, inner);
    if (smac === this.ownMac) {
      this.drops[DropReason.LocalMac]++;
      return;
    }
    // Zero or group (I/G bit) source: not a valid station; never learned, never delivered.
    if (smac === MAC_ZERO || (buf[inner + 6]! & 1) !== 0) {
      this.drops[DropReason.InvalidSrcMac]++;
      return;
    }
    if (this.learning && this.fdb.learn(smac, src) === LearnResult.StaticConflict) {
      this.drops[DropReason.StaticConflict]++;
      return;
    }
    if (!this.port.write(buf, inner, ilen)) {
      this.drops[DropReason.TapBusy]++;
      return;
    }
    this.rxPackets++;
    this.rxBytes += ilen;
  };

  private allowed(src: string): boolean {
    let ok = this.allowMemo.get(src);
    if (ok === undefined) {
      ok = ipAllowed(src, this.allow);
      if (this.allowMemo.size >= 4096) this.allowMemo.clear(); // bounded under a spoofed-source flood
      this.allowMemo.set(src, ok);
    }
    return ok;
  }

  private readonly onSendError = (err: SendError): void => {
    this.drops[DropReason.TxError]++;
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
      const info = { code, address: err.address, port: err.port, count: s.count };
      s.last = now;
      s.count = 0;
      this.emit('sendError', info);
    }
  };

  private readonly onFatal = (err: Error): void => {
    if (this.state === 'closed') return;
    void this.close().then(() => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
  };
}
