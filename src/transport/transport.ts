/**
 * Transport: where VXLAN datagrams go to and come from (the UDP underlay). Batches in both
 * directions: `send` takes a TxBatch, and received datagrams arrive as an RxBatch per
 * recvmmsg (native endpoint) or per datagram (node:dgram fallback).
 */
import { Address4, Address6 } from 'ip-address';
import type { Remote } from '../fdb.js';
import type { DatapathProcess } from '../datapath.js';
import type { FlowCache } from '../flowcache.js';
import type { UdpSocketHandle } from '../native.js';
import { ConfigError, ErrorCode } from '../errors.js';

/**
 * Datagrams to send, as entries: entry i is `segs[i]` datagrams of `lens[i]` bytes (the last
 * `lasts[i]` bytes) laid out back to back from `bufs[i][offs[i]]`, all to `remotes[i]`: one run
 * for one GSO send. Reused by its owner; the transport reads it during `send` only (it may keep
 * references to the *buffers* until `pending()` is 0 again).
 */
export class TxBatch {
  readonly bufs: Buffer[];
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  readonly segs: Int32Array;
  readonly lasts: Int32Array;
  readonly remotes: Remote[];
  /** Per-entry inner flow hash (filled when the transport `needsFlowHash`). */
  readonly hashes: Uint32Array;
  /** Per-entry outer DS field, -1 = the socket's default (filled when it `needsDsfield`). */
  readonly dsfield: Int16Array;
  /** Per-entry outer TTL / hop limit, -1 = the socket's (`ttl inherit`, native transport). */
  readonly ttls: Int16Array;
  readonly cap: number;
  count: number = 0;
  constructor(cap: number) {
    this.cap = cap;
    this.bufs = new Array<Buffer>(cap);
    this.offs = new Int32Array(cap);
    this.lens = new Int32Array(cap);
    this.segs = new Int32Array(cap);
    this.lasts = new Int32Array(cap);
    this.remotes = new Array<Remote>(cap);
    this.hashes = new Uint32Array(cap);
    this.dsfield = new Int16Array(cap);
    this.ttls = new Int16Array(cap).fill(-1);
  }
  /** Adds one entry; the caller checks `count < cap` first. */
  push(buf: Buffer, off: number, len: number, remote: Remote, hash = 0, ds = -1, segs = 1, last = len, ttl = -1): void {
    const i = this.count++;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.segs[i] = segs;
    this.lasts[i] = last;
    this.remotes[i] = remote;
    this.hashes[i] = hash;
    this.dsfield[i] = ds;
    this.ttls[i] = ttl;
  }
}

/**
 * Received datagrams, as messages in one buffer: message i is `buf[offs[i], offs[i] + lens[i])`
 * from underlay source `srcs[i]` (an IP literal). With UDP GRO a message holds several datagrams
 * of `segs[i]` bytes each (the last may be shorter); `segs[i]` 0 means one datagram. `lens[i]` -1:
 * the datagram was larger than the receive buffer (truncated, dropped). `tos[i]` is the outer
 * TOS / traffic class, -1 where the transport cannot see it. Valid during the handler call only.
 */
export interface RxBatch {
  buf: Buffer;
  offs: Int32Array;
  lens: Int32Array;
  segs: Int32Array;
  srcs: string[];
  tos: Int16Array;
  count: number;
}

export function newRxBatch(buf: Buffer, cap: number): RxBatch {
  return { buf, offs: new Int32Array(cap), lens: new Int32Array(cap), segs: new Int32Array(cap), srcs: new Array<string>(cap).fill(''), tos: new Int16Array(cap).fill(-1), count: 0 };
}

/** One call per received batch. */
export type DatagramsHandler = (batch: RxBatch) => void;

/** A send error, with the destination when known. */
export interface SendError extends NodeJS.ErrnoException {
  address?: string;
  port?: number;
  /** The remote the datagrams were for (its `vni` says which VTEP sent them on a shared endpoint). */
  remote?: Remote;
  /** Datagrams lost to this error (default 1). */
  datagrams?: number;
}

/** A per-datagram send error (unreachable remote...): counted by the caller, never thrown. */
export type SendErrorHandler = (err: SendError) => void;

export interface TransportHandlers {
  onDatagrams: DatagramsHandler;
  onSendError: SendErrorHandler;
  /** A fatal socket error: the transport is unusable afterwards. */
  onError: (err: Error) => void;
}

/** What a transport counts about its own work (syscalls and offloads). */
export interface TransportCounters {
  /** Send syscalls, messages and datagrams they carried; GSO messages and their datagrams. */
  sendCalls: number;
  sentMsgs: number;
  sentDatagrams: number;
  gsoSends: number;
  gsoDatagrams: number;
  /** GSO messages the route refused, resent as single datagrams. */
  gsoFallbacks: number;
  /** Receive syscalls and the messages they returned; messages that held several datagrams (UDP GRO). */
  recvCalls: number;
  recvMsgs: number;
  groMsgs: number;
  /** Datagrams the datapath process received and could not hand to JS (src/datapath.ts). */
  datapathDropped?: number;
}

export interface Transport {
  readonly family: 4 | 6;
  /** 'native' (the addon's UDP endpoint) or 'dgram' (node:dgram, the portable fallback). */
  readonly kind: string;
  /** The transport picks a source port per flow: the Vtep fills `TxBatch.hashes`. */
  readonly needsFlowHash?: boolean;
  /** The transport sets the outer DS field per entry: the Vtep fills `TxBatch.dsfield`. */
  readonly needsDsfield?: boolean;
  /** The transport sets the outer TTL per entry (`ttl inherit`): the Vtep fills `TxBatch.ttls`. */
  readonly needsTtl?: boolean;
  /** Binds and starts receiving. */
  open(handlers: TransportHandlers): Promise<void>;
  /** Sends every datagram of the batch. */
  send(batch: TxBatch): void;
  /** Datagrams accepted by `send` that the kernel has not taken yet (they still reference caller memory). */
  pending(): number;
  /** Calls `cb` once `pending()` is 0 (woken by writability, never by polling). */
  whenDrained(cb: () => void): void;
  /** The bound address and port. */
  address(): { address: string; port: number };
  /**
   * Joins a multicast group after `open` (a VTEP with a group attached to a shared endpoint):
   * every sending socket gets the multicast interface, TTL and no loopback the first time.
   */
  joinGroup?(group: string): void;
  /** Leaves a group joined with `joinGroup`. */
  leaveGroup?(group: string): void;
  counters?(): TransportCounters;
  /**
   * The native socket a flow cache sends through (src/flowcache.ts): the transport's one socket
   * while open; undefined for node:dgram or a source-port range (several sending sockets).
   */
  flowSocket?(): UdpSocketHandle | undefined;
  /** Datagrams of `vni` go through `fc` when a whole batch qualifies; undefined removes it. */
  attachFlowCache?(vni: number, fc: FlowCache | undefined): void;
  /**
   * From now on the datapath process receives on the flow socket, and this transport takes what
   * the process hands over; false when it cannot. Sends stay with this process.
   */
  useDatapath?(datapath: DatapathProcess): boolean;
  close(): Promise<void>;
}

/**
 * A source-port pool: `r.sockets` sockets bound to free ports of [min, max], tried from a random
 * start by a stride coprime with most spans, skipping `exclude` (the listening port). `bindOne`
 * binds a new socket to the port, or closes it and throws; EADDRINUSE moves on to the next port.
 * No free port at all is a ConfigError naming `--srcport`.
 */
export async function bindPool<S>(r: { min: number; max: number; sockets: number }, exclude: number, local: string, bindOne: (port: number) => S | Promise<S>): Promise<S[]> {
  const pool: S[] = [];
  const span = r.max - r.min + 1;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span && pool.length < r.sockets; i++) {
    const port = r.min + ((start + i * 7919) % span);
    if (port === exclude) continue;
    try {
      pool.push(await bindOne(port));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    }
  }
  if (pool.length === 0) throw new ConfigError(ErrorCode.InvalidPort, 'srcport', `srcport: no free UDP port in ${r.min}-${r.max} on ${local}`);
  return pool;
}

/** The bytes of an IP literal (already validated) of `family`: 4, or 16 for IPv6. */
export function addressBytes(address: string, family: 4 | 6): Uint8Array {
  if (family === 4) return Uint8Array.from(new Address4(address).toArray());
  const b = new Address6(address).toByteArray().map((x) => x & 0xff);
  const out = new Uint8Array(16);
  out.set(b.slice(-16), 16 - Math.min(16, b.length));
  return out;
}

/** Settings of a UDP transport (the native endpoint and the node:dgram fallback take the same). */
export interface UdpTransportOptions {
  family: 4 | 6;
  /** Local address to bind (wildcard allowed). */
  local: string;
  /** Local port (0 = any). */
  port: number;
  /** Multicast group to join for BUM traffic. */
  group?: string | undefined;
  /** Underlay device: the multicast group is joined and sent on it. */
  dev?: string | undefined;
  /** Outer TTL; 0 = system default (multicast 1, as Linux); `inherit`: per entry (`TxBatch.ttls`). */
  ttl?: number | 'inherit';
  sndbuf?: number;
  rcvbuf?: number;
  /** Source-port pool: `sockets` sockets bound to distinct ports in [min, max]. */
  srcport?: { min: number; max: number; sockets: number } | undefined;
  /** Outer TOS / traffic class, or `inherit` (per entry from the inner header). */
  tos?: number | 'inherit';
  /** IPv4 DF bit: `unset` (kernel VTEP default) or `set`. Undefined leaves the OS default. */
  df?: 'set' | 'unset' | undefined;
  /** UDP GSO on send (UDP_SEGMENT): a run of equal-size datagrams leaves as one message. */
  gso?: boolean;
  /** UDP GRO on receive: one message carries up to 64 datagrams of one stride. */
  gro?: boolean;
}
