/**
 * Transport: where VXLAN datagrams go to and come from (the UDP underlay).
 * Batch-oriented so that a sendmmsg/GSO transport can replace node:dgram without touching the
 * codec or the FDB.
 */
import type { Remote } from '../fdb.js';

/**
 * Datagrams to send: datagram i is `bufs[i][offs[i], offs[i] + lens[i])` to `remotes[i]`.
 * Reused by its owner; the transport reads it during `send` only (it may keep references to
 * the *buffers* until `pending()` is 0 again).
 */
export class TxBatch {
  readonly bufs: Buffer[];
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  readonly remotes: Remote[];
  /** Per-datagram inner flow hash (filled when the transport `needsFlowHash`). */
  readonly hashes: Uint32Array;
  /** Per-datagram outer DS field, -1 = the socket's default (filled when it `needsDsfield`). */
  readonly dsfield: Int16Array;
  readonly cap: number;
  count: number;
  constructor(cap: number) {
    this.cap = cap;
    this.bufs = new Array<Buffer>(cap);
    this.offs = new Int32Array(cap);
    this.lens = new Int32Array(cap);
    this.remotes = new Array<Remote>(cap);
    this.hashes = new Uint32Array(cap);
    this.dsfield = new Int16Array(cap);
    this.count = 0;
  }
  push(buf: Buffer, off: number, len: number, remote: Remote, hash = 0, ds = -1): void {
    const i = this.count++;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.remotes[i] = remote;
    this.hashes[i] = hash;
    this.dsfield[i] = ds;
  }
}

/** One received datagram: `buf[off, off + len)` from underlay source `src` (an IP literal). */
export type DatagramHandler = (buf: Buffer, off: number, len: number, src: string) => void;

/** A send error, with the destination when known (Node's dgram errors carry it). */
export interface SendError extends NodeJS.ErrnoException {
  address?: string;
  port?: number;
}

/** A per-datagram send error (unreachable remote...): counted by the caller, never thrown. */
export type SendErrorHandler = (err: SendError) => void;

export interface TransportHandlers {
  onDatagram: DatagramHandler;
  onSendError: SendErrorHandler;
  /** A fatal socket error: the transport is unusable afterwards. */
  onError: (err: Error) => void;
}

export interface Transport {
  readonly family: 4 | 6;
  /** The transport picks a source port per flow: the Vtep fills `TxBatch.hashes`. */
  readonly needsFlowHash?: boolean;
  /** The transport copies the inner DS field: the Vtep fills `TxBatch.dsfield`. */
  readonly needsDsfield?: boolean;
  /** Binds and starts receiving. */
  open(handlers: TransportHandlers): Promise<void>;
  /** Sends every datagram of the batch. */
  send(batch: TxBatch): void;
  /** Datagrams accepted by `send` that the kernel has not taken yet (they still reference caller memory). */
  pending(): number;
  /** Calls `cb` once `pending()` is 0. */
  whenDrained(cb: () => void): void;
  /** The bound address and port. */
  address(): { address: string; port: number };
  /** Offload counters, when the transport batches sends (GSO). */
  counters?(): { gsoSends: number; gsoDatagrams: number };
  close(): Promise<void>;
}
