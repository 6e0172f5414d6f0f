/**
 * Transport over node:dgram: IPv4 or IPv6 underlay, a UDP socket bound to the VXLAN port,
 * optional multicast group for BUM traffic, and optionally a pool of sending sockets on ports
 * of a source-port range (one per inner flow, RFC 7348 section 5).
 *
 * Cost notes (measured in bench/): an unconnected dgram socket calls its `lookup` for every
 * send; remotes are validated IP literals, so the lookup answers synchronously instead of going
 * through dns.lookup's nextTick. Send errors are reported through one shared callback (no
 * closure per datagram).
 *
 * Outer TOS and DF are socket options node:dgram does not expose: they are set with the native
 * addon on the socket's fd, which Node keeps in the socket's internal state (checked at start,
 * with a clear error if a Node version hides it).
 */
import dgram from 'node:dgram';
import { constants as osConstants, endianness } from 'node:os';
import { Address4, Address6 } from 'ip-address';
import type { Remote } from '../fdb.js';
import { ConfigError, ErrorCode, UvtepError } from '../errors.js';
import { loadBinding, type NativeBinding } from '../native.js';
import type { SendError, Transport, TransportHandlers, TxBatch } from './transport.js';

export interface DgramTransportOptions {
  family: 4 | 6;
  /** Local address to bind (wildcard allowed). */
  local: string;
  /** Local port (0 = any). */
  port: number;
  /** Multicast group to join for BUM traffic. */
  group?: string | undefined;
  /** Underlay device: the multicast group is joined and sent on it. */
  dev?: string | undefined;
  /** Outer TTL; 0 = system default (multicast 1, as Linux). */
  ttl?: number;
  sndbuf?: number;
  rcvbuf?: number;
  /** Source-port pool: `sockets` sockets bound to distinct ports in [min, max]. */
  srcport?: { min: number; max: number; sockets: number } | undefined;
  /** Outer TOS / traffic class, or `inherit` (per datagram from the inner header). */
  tos?: number | 'inherit';
  /** IPv4 DF bit: `unset` (kernel VTEP default) or `set`. Undefined leaves the OS default. */
  df?: 'set' | 'unset' | undefined;
  /**
   * UDP GSO on send (UDP_SEGMENT): a run of equal-size datagrams to one remote in a batch leaves
   * in one sendmsg. Falls back to one send per datagram where the kernel or device refuses it.
   */
  gso?: boolean;
  /** The native binding for TOS/DF/GSO (default: the built addon). */
  native?: NativeBinding;
}

/** Datagrams per GSO send, and bytes (a UDP datagram's payload limit, with room to spare). */
const GSO_MAX_SEGMENTS = 64;
const GSO_MAX_BYTES = 65000;
const ERRNO_NAME = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));
const E = osConstants.errno;
const LITTLE_ENDIAN = endianness() === 'LE';

type LookupCb = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

// Linux socket option numbers (stable ABI: include/uapi/linux/in.h, in6.h).
const IPPROTO_IP = 0;
const IP_TOS = 1;
const IP_MTU_DISCOVER = 10;
const IP_PMTUDISC_DONT = 0;
const IP_PMTUDISC_DO = 2;
const IPPROTO_IPV6 = 41;
const IPV6_TCLASS = 67;

interface Sender {
  socket: dgram.Socket;
  fd: number;
  /** The DS field last set on the socket (tos inherit). */
  ds: number;
}

export class DgramTransport implements Transport {
  readonly family: 4 | 6;
  readonly needsFlowHash: boolean;
  readonly needsDsfield: boolean;
  private readonly opts: DgramTransportOptions;
  private readonly socket: dgram.Socket;
  /** Sockets that send: the pool when a source-port range is set, else the main socket. */
  private senders: Sender[];
  private native: NativeBinding | undefined;
  private handlers: TransportHandlers | undefined;
  private drainWaiters: Array<() => void>;
  private drainScheduled: boolean;
  private closed: boolean;
  private readonly lookup: (address: string, o: unknown, cb: LookupCb) => void;
  /** GSO in use (asked for, native available, not refused by the kernel). */
  private gso: boolean;
  private readonly sockaddrs: WeakMap<Remote, Uint8Array>;
  /** sendmsg calls that carried more than one datagram, and the datagrams they carried. */
  gsoSends: number;
  gsoDatagrams: number;

  constructor(opts: DgramTransportOptions) {
    this.family = opts.family;
    this.opts = opts;
    this.needsFlowHash = opts.srcport !== undefined && opts.srcport.sockets > 1;
    this.needsDsfield = opts.tos === 'inherit';
    const fam = opts.family;
    // Remotes are IP literals validated by config: answer the per-send lookup synchronously.
    this.lookup = (address: string, _o: unknown, cb: LookupCb): void => cb(null, address, fam);
    this.socket = this.createSocket();
    this.senders = [];
    this.native = opts.native;
    this.handlers = undefined;
    this.drainWaiters = [];
    this.drainScheduled = false;
    this.closed = false;
    this.gso = false;
    this.sockaddrs = new WeakMap();
    this.gsoSends = 0;
    this.gsoDatagrams = 0;
  }

  private createSocket(): dgram.Socket {
    return dgram.createSocket({
      type: this.family === 6 ? 'udp6' : 'udp4',
      ipv6Only: this.family === 6,
      reuseAddr: false,
      lookup: this.lookup as unknown as dgram.SocketOptions['lookup'],
    });
  }

  async open(handlers: TransportHandlers): Promise<void> {
    this.handlers = handlers;
    await bind(this.socket, this.opts.local, this.opts.port);
    try {
      this.configure(this.socket);
      this.joinGroup();
      const pool: dgram.Socket[] = [];
      if (this.opts.srcport !== undefined) pool.push(...(await this.bindPool(this.opts.srcport)));
      const sending = pool.length > 0 ? pool : [this.socket];
      this.senders = sending.map((socket) => ({ socket, fd: -1, ds: -1 }));
      for (const s of this.senders) this.applyIpOptions(s);
      if (this.opts.gso === true && this.opts.tos !== 'inherit') this.enableGso();
      for (const s of [this.socket, ...pool]) {
        s.on('error', (err) => this.handlers?.onError(err));
        s.on('message', (msg, rinfo) => handlers.onDatagram(msg, 0, msg.length, rinfo.address));
      }
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  private configure(s: dgram.Socket): void {
    const o = this.opts;
    if (o.sndbuf !== undefined) s.setSendBufferSize(o.sndbuf);
    if (o.rcvbuf !== undefined) s.setRecvBufferSize(o.rcvbuf);
    if (o.ttl !== undefined && o.ttl > 0) s.setTTL(o.ttl);
  }

  private joinGroup(): void {
    const o = this.opts;
    if (o.group === undefined) return;
    const s = this.socket;
    const iface = o.dev === undefined ? undefined : this.interfaceAddress(o.dev);
    s.setMulticastLoopback(false);
    s.setMulticastTTL(o.ttl !== undefined && o.ttl > 0 ? o.ttl : 1);
    if (iface !== undefined) s.setMulticastInterface(iface);
    s.addMembership(o.group, iface);
  }

  /**
   * The address to join multicast on for `dev`: its IPv4 address (read with SIOCGIFADDR: the
   * kernel joins whatever the carrier state, and so does uvtep), or `::%dev` for IPv6.
   */
  private interfaceAddress(dev: string): string {
    if (this.family === 6) return `::%${dev}`;
    try {
      this.native ??= loadBinding();
      return [...this.native.getIpv4(dev)].join('.');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENODEV' || code === 'EADDRNOTAVAIL') {
        throw new ConfigError(ErrorCode.InvalidOption, 'dev', `dev: interface ${JSON.stringify(dev)} ${code === 'ENODEV' ? 'does not exist' : 'has no IPv4 address to join the multicast group on'}`);
      }
      throw e;
    }
  }

  /** Binds `sockets` sockets on free ports of [min, max], trying ports in a random order. */
  private async bindPool(r: { min: number; max: number; sockets: number }): Promise<dgram.Socket[]> {
    const pool: dgram.Socket[] = [];
    const span = r.max - r.min + 1;
    const start = Math.floor(Math.random() * span);
    for (let i = 0; i < span && pool.length < r.sockets; i++) {
      const port = r.min + ((start + i * 7919) % span); // a stride coprime with most spans
      if (port === this.opts.port) continue;
      const s = this.createSocket();
      try {
        await bind(s, this.opts.local, port);
      } catch (e) {
        s.close();
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw e;
      }
      this.configure(s);
      pool.push(s);
    }
    if (pool.length === 0) {
      throw new ConfigError(ErrorCode.InvalidPort, 'srcport', `srcport: no free UDP port in ${r.min}-${r.max} on ${this.opts.local}`);
    }
    return pool;
  }

  private enableGso(): void {
    try {
      this.native ??= loadBinding();
      for (const s of this.senders) if (s.fd < 0) s.fd = socketFd(s.socket);
      this.gso = true;
    } catch {
      this.gso = false; // no addon or no fd: one send per datagram, as before
    }
  }

  /** The remote as a struct sockaddr_in / sockaddr_in6, built once per remote. */
  private sockaddr(r: Remote): Uint8Array {
    let a = this.sockaddrs.get(r);
    if (a === undefined) {
      if (r.family === 4) {
        a = new Uint8Array(16);
        new DataView(a.buffer).setUint16(0, 2, LITTLE_ENDIAN); // AF_INET, host byte order
        new DataView(a.buffer).setUint16(2, r.port, false);
        a.set(new Address4(r.address).toArray(), 4);
      } else {
        a = new Uint8Array(28);
        new DataView(a.buffer).setUint16(0, 10, LITTLE_ENDIAN); // AF_INET6, host byte order
        new DataView(a.buffer).setUint16(2, r.port, false);
        const b = new Address6(r.address).toByteArray().map((x) => x & 0xff);
        a.set(b.slice(-16), 8 + 16 - Math.min(16, b.length));
      }
      this.sockaddrs.set(r, a);
    }
    return a;
  }

  /** TOS and DF through the native addon, on the socket's fd. */
  private applyIpOptions(s: Sender): void {
    const o = this.opts;
    const wantTos = typeof o.tos === 'number' && o.tos !== 0;
    const wantDf = o.df !== undefined && this.family === 4;
    if (!wantTos && !wantDf && o.tos !== 'inherit') return;
    let native = this.native;
    if (native === undefined) {
      try {
        native = loadBinding();
      } catch (e) {
        if (!wantTos && o.tos !== 'inherit' && o.df === 'unset') return; // the default: best effort
        throw e;
      }
      this.native = native;
    }
    s.fd = socketFd(s.socket);
    if (wantDf) native.setSockOptInt(s.fd, IPPROTO_IP, IP_MTU_DISCOVER, o.df === 'set' ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT);
    if (wantTos) this.setDs(s, o.tos as number, true);
  }

  private setDs(s: Sender, ds: number, strict: boolean): void {
    const native = this.native!;
    const [level, name] = this.family === 6 ? [IPPROTO_IPV6, IPV6_TCLASS] : [IPPROTO_IP, IP_TOS];
    if (strict) native.setSockOptInt(s.fd, level, name, ds);
    else native.setSockOptIntFast(s.fd, level, name, ds);
    s.ds = ds;
  }

  /** Shared send callback: counts errors; success needs nothing. */
  private readonly onSent = (err: Error | null): void => {
    if (err !== null && this.handlers !== undefined) {
      // Node's send errors carry the destination (`address`, `port`).
      this.handlers.onSendError(err as SendError);
    }
  };

  send(batch: TxBatch): void {
    if (this.gso) {
      this.sendGso(batch);
      return;
    }
    const senders = this.senders;
    const k = senders.length;
    const inherit = this.needsDsfield;
    const n = batch.count;
    for (let i = 0; i < n; i++) {
      const r = batch.remotes[i]!;
      const s = k === 1 ? senders[0]! : senders[batch.hashes[i]! % k]!;
      if (inherit) {
        const ds = batch.dsfield[i]!;
        const want = ds < 0 ? 0 : ds;
        if (want !== s.ds) this.setDs(s, want, false);
      }
      s.socket.send(batch.bufs[i]!, batch.offs[i]!, batch.lens[i]!, r.port, r.address, this.onSent);
    }
  }

  /**
   * Runs of datagrams with the same remote, buffer and sending socket, all `seg` bytes but the
   * last (which may be shorter), leave in one sendmsg with UDP_SEGMENT. Order is kept: while a
   * socket still has dgram-queued datagrams, its datagrams queue behind them.
   */
  private sendGso(batch: TxBatch): void {
    const senders = this.senders;
    const k = senders.length;
    const n = batch.count;
    const { bufs, offs, lens, remotes, hashes } = batch;
    let i = 0;
    while (i < n) {
      const r = remotes[i]!;
      const buf = bufs[i]!;
      const seg = lens[i]!;
      const si = k === 1 ? 0 : hashes[i]! % k;
      const s = senders[si]!;
      let j = i + 1;
      while (j < n && j - i < GSO_MAX_SEGMENTS && (j - i + 1) * seg <= GSO_MAX_BYTES && remotes[j] === r && bufs[j] === buf && (k === 1 || hashes[j]! % k === si)) {
        const l = lens[j]!;
        if (l > seg) break;
        j++;
        if (l < seg) break; // a shorter datagram ends the run
      }
      const count = j - i;
      if (count === 1 || s.socket.getSendQueueCount() > 0) {
        for (let x = i; x < j; x++) s.socket.send(bufs[x]!, offs[x]!, lens[x]!, r.port, r.address, this.onSent);
        i = j;
        continue;
      }
      const rc = this.native!.sendGso(s.fd, this.sockaddr(r), buf, offs, lens, i, count, seg);
      if (rc >= 0) {
        this.gsoSends++;
        this.gsoDatagrams += count;
      } else if (rc === -E.EAGAIN || rc === -E.ENOBUFS || rc === -E.EIO || rc === -E.EINVAL || rc === -E.EOPNOTSUPP || rc === -E.EMSGSIZE) {
        // socket full: queue through dgram (backpressure pauses the TAP). Refused (no checksum
        // offload on the route, no GSO): stop trying and send one by one from now on.
        if (rc !== -E.EAGAIN && rc !== -E.ENOBUFS) this.gso = false;
        for (let x = i; x < j; x++) s.socket.send(bufs[x]!, offs[x]!, lens[x]!, r.port, r.address, this.onSent);
      } else if (this.handlers !== undefined) {
        const code = ERRNO_NAME.get(-rc) ?? 'EIO';
        for (let x = i; x < j; x++) {
          this.handlers.onSendError(Object.assign(new Error(`send ${code} ${r.address}:${r.port}`), { code, errno: rc, syscall: 'sendmsg', address: r.address, port: r.port }));
        }
      }
      i = j;
    }
  }

  /** Whether GSO sends are in use (asked for and not refused). */
  get gsoActive(): boolean {
    return this.gso;
  }

  counters(): { gsoSends: number; gsoDatagrams: number } {
    return { gsoSends: this.gsoSends, gsoDatagrams: this.gsoDatagrams };
  }

  pending(): number {
    if (this.closed) return 0;
    let n = 0;
    for (const s of this.senders) n += s.socket.getSendQueueCount();
    return n;
  }

  whenDrained(cb: () => void): void {
    if (this.pending() === 0) {
      cb();
      return;
    }
    this.drainWaiters.push(cb);
    this.scheduleDrainCheck();
  }

  /** libuv drains the queue on writability; check once per loop turn until it is empty. */
  private scheduleDrainCheck(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      if (this.pending() > 0) {
        this.scheduleDrainCheck();
        return;
      }
      const ws = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of ws) w();
    });
  }

  address(): { address: string; port: number } {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    const sockets = new Set([this.socket, ...this.senders.map((s) => s.socket)]);
    return Promise.all(
      [...sockets].map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // never bound, or closed already
            }
          }),
      ),
    ).then(() => {
      for (const w of ws) w();
    });
  }
}

function bind(s: dgram.Socket, address: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    s.once('error', onError);
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', onError);
      resolve();
    });
  });
}

/** The fd of a bound dgram socket, from Node's internal state (Node 18-24 keep it there). */
function socketFd(s: dgram.Socket): number {
  const sym = Object.getOwnPropertySymbols(s).find((x) => x.description === 'state symbol');
  const fd = sym === undefined ? undefined : (s as unknown as Record<symbol, { handle?: { fd?: number } }>)[sym]?.handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new UvtepError(ErrorCode.NoNative, `cannot reach the UDP socket's fd on Node ${process.version}: --tos and --df are unavailable`);
  }
  return fd;
}

