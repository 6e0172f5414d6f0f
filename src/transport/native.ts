/**
 * The native UDP endpoint (the default on Linux): the addon owns the socket (native/udp.cc),
 * receives with recvmmsg and UDP_GRO into one slab and calls JS once per batch, and sends a
 * whole TxBatch with sendmmsg, each entry (a run of equal-size datagrams) as one UDP_SEGMENT
 * message. Socket options are chosen here, by number (Linux ABI: include/uapi/linux/in.h,
 * in6.h, socket.h, udp.h), and set through the endpoint.
 *
 * Backpressure: when the socket is full, what is left of the batch waits in a queue (entries
 * only: the bytes stay in the caller's slab, which the Vtep keeps by pausing the TAP) and is sent
 * when the socket becomes writable again (uv_poll, never a timer or a loop-turn check).
 */
import { getSystemErrorName } from 'node:util';
import type { Remote } from '../fdb.js';
import type { FlowCache } from '../flowcache.js';
import type { DatapathProcess } from '../datapath.js';
import { ConfigError, ErrorCode } from '../errors.js';
import { loadBinding, SOCK_STATS, SockStat, SRC_STRIDE, type NativeBinding, type UdpSocketHandle } from '../native.js';
import { ipv6Text } from '../wire/ipv6.js';
import { addressBytes, bindPool, newRxBatch, TxBatch, type RxBatch, type SendError, type Transport, type TransportCounters, type TransportHandlers, type UdpTransportOptions } from './transport.js';

export interface NativeTransportOptions extends UdpTransportOptions {
  /** The native binding (tests inject a scripted one). */
  native?: NativeBinding;
  /** Messages per receive batch (default 64; each message has room for a 64 KiB GRO datagram). */
  rxBatch?: number;
}

const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const IPPROTO_IP = 0;
const IP_TOS = 1;
const IP_TTL = 2;
const IP_MTU_DISCOVER = 10;
const IP_RECVTOS = 13;
const IP_MULTICAST_IF = 32;
const IP_MULTICAST_TTL = 33;
const IP_MULTICAST_LOOP = 34;
const IP_ADD_MEMBERSHIP = 35;
const IP_DROP_MEMBERSHIP = 36;
const IP_PMTUDISC_DONT = 0;
const IP_PMTUDISC_DO = 2;
const IPPROTO_IPV6 = 41;
const IPV6_UNICAST_HOPS = 16;
const IPV6_MULTICAST_IF = 17;
const IPV6_MULTICAST_HOPS = 18;
const IPV6_MULTICAST_LOOP = 19;
const IPV6_ADD_MEMBERSHIP = 20;
const IPV6_DROP_MEMBERSHIP = 21;
const IPV6_V6ONLY = 26;
const IPV6_RECVTCLASS = 66;
const IPV6_TCLASS = 67;
const SOL_UDP = 17;
const UDP_GRO = 104;
const EAGAIN = 11;

/** Bytes per entry in the sockaddr table handed to send (sizeof(struct sockaddr_in6)). */
const ADDR_STRIDE = 28;
/** Receive room per message: the largest UDP payload (a GRO message is at most 64 KiB). */
const RX_MSG = 65536;
const RX_BATCH_DEFAULT = 64;
/** Error records per send call (entry, errno, datagrams). */
const RES_ERRORS = 64;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class NativeTransport implements Transport {
  readonly family: 4 | 6;
  readonly kind = 'native';
  readonly needsFlowHash: boolean;
  readonly needsDsfield: boolean = true;
  /** The TTL per entry (`ttl inherit`): the Vtep fills `TxBatch.ttls`. */
  readonly needsTtl: boolean;
  private readonly opts: NativeTransportOptions;
  private readonly native: NativeBinding;
  private sockets: UdpSocketHandle[] = [];
  /** Sockets that send: the pool when a source-port range is set, else the main socket. */
  private senders: UdpSocketHandle[] = [];
  private readonly stats: Float64Array[] = [];
  private handlers: TransportHandlers | undefined;
  private readonly rx: RxBatch;
  private readonly rxSrcs: Uint8Array;
  private readonly res: Int32Array;
  private addrs: Uint8Array;
  private readonly sockaddrs: WeakMap<Remote, Uint8Array>;
  private readonly queue: TxBatch[] = [];
  private queued: number = 0;
  private waiting: boolean = false;
  private drainWaiters: Array<() => void> = [];
  private gso: boolean;
  /** UDP GRO accepted by the kernel on the receiving socket. */
  groActive: boolean = false;
  private closed: boolean = false;
  private boundPort: number = 0;
  /** Every socket carries the multicast settings (set by the first group joined). */
  private mcast: boolean = false;
  // source address strings, cached (bounded) so a batch from one peer builds no string
  private lastV4: number = -1;
  private lastV4s: string = '';
  private readonly lastV6: Uint8Array;
  private lastV6s: string = '';
  private readonly srcCache: Map<number, string> = new Map();
  private onBatch: ((count: number) => void) | undefined;
  private onError: ((err: Error) => void) | undefined;
  private datapath: DatapathProcess | undefined;

  constructor(opts: NativeTransportOptions) {
    this.family = opts.family;
    this.opts = opts;
    this.native = opts.native ?? loadBinding();
    this.needsFlowHash = opts.srcport !== undefined && opts.srcport.sockets > 1;
    // the outer DS field per entry: the inner ECN is encapsulated whatever the TOS (RFC 6040)
    this.needsTtl = opts.ttl === 'inherit';
    const n = opts.rxBatch ?? RX_BATCH_DEFAULT;
    this.rx = newRxBatch(Buffer.allocUnsafeSlow(RX_MSG * n), n);
    this.rxSrcs = new Uint8Array(SRC_STRIDE * n);
    this.res = new Int32Array(3 + 3 * RES_ERRORS);
    this.addrs = new Uint8Array(ADDR_STRIDE * 256);
    this.sockaddrs = new WeakMap();
    this.gso = opts.gso ?? true;
    this.lastV6 = new Uint8Array(16);
  }

  flowSocket(): UdpSocketHandle | undefined {
    const main = this.sockets[0];
    return !this.closed && main !== undefined && this.senders.length === 1 && this.senders[0] === main ? main : undefined;
  }

  attachFlowCache(vni: number, fc: FlowCache | undefined): void {
    this.sockets[0]?.setFlowCache(vni, fc?.native ?? null);
  }

  useDatapath(dp: DatapathProcess): boolean {
    if (this.datapath !== undefined) return this.datapath === dp;
    const main = this.flowSocket();
    if (main === undefined || this.onBatch === undefined || this.onError === undefined || !dp.room(SOCK_STATS)) return false;
    const st = dp.alloc(SOCK_STATS);
    const id = dp.handle.addUdp(main, st, RX_MSG);
    dp.retain();
    this.datapath = dp;
    this.stats.push(st);
    const rx = this.rx;
    main.recvStop();
    main.recvStart(rx.buf, RX_MSG, rx.offs, rx.lens, rx.segs, this.rxSrcs, rx.tos, this.onBatch, this.onError, dp.handle, id);
    return true;
  }

  private newSocket(): UdpSocketHandle {
    const st = new Float64Array(SOCK_STATS);
    const s = new this.native.UdpSocket(this.family, st);
    this.stats.push(st);
    this.sockets.push(s);
    return s;
  }

  async open(handlers: TransportHandlers): Promise<void> {
    this.handlers = handlers;
    const o = this.opts;
    try {
      const main = this.newSocket();
      if (this.family === 6) this.opt(main, IPPROTO_IPV6, IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
      main.bind(addressBytes(o.local, this.family), o.port, 0);
      this.boundPort = main.localPort();
      this.configure(main);
      this.groActive = o.gro !== false && main.setOpt(SOL_UDP, UDP_GRO, 1) === 0;
      if (this.family === 4) main.setOpt(IPPROTO_IP, IP_RECVTOS, 1);
      else main.setOpt(IPPROTO_IPV6, IPV6_RECVTCLASS, 1);
      const pool = o.srcport === undefined ? [] : await this.bindPool(o.srcport);
      this.senders = pool.length > 0 ? pool : [main];
      if (o.group !== undefined) this.joinGroup(o.group);
      const rx = this.rx;
      const onBatch = (count: number): void => {
        const srcs = this.rxSrcs;
        for (let i = 0; i < count; i++) rx.srcs[i] = this.srcString(srcs, i * SRC_STRIDE);
        rx.count = count;
        this.handlers?.onDatagrams(rx);
      };
      const onError = (err: Error): void => this.handlers?.onError(err);
      this.onBatch = onBatch;
      this.onError = onError;
      for (const s of this.sockets) s.recvStart(rx.buf, RX_MSG, rx.offs, rx.lens, rx.segs, this.rxSrcs, rx.tos, onBatch, onError);
    } catch (e) {
      await this.close();
      throw e;
    }
    await Promise.resolve();
  }

  private opt(s: UdpSocketHandle, level: number, name: number, value: number, what: string): void {
    const r = s.setOpt(level, name, value);
    if (r < 0) throw Object.assign(new Error(`setsockopt(${what}) failed: ${getSystemErrorName(r)}`), { code: getSystemErrorName(r), errno: r, syscall: `setsockopt(${what})` });
  }

  /** Options every socket gets: buffers, TTL, TOS, DF. */
  private configure(s: UdpSocketHandle): void {
    const o = this.opts;
    // SO_*BUFFORCE passes net.core.[rw]mem_max with CAP_NET_ADMIN; without it, the capped request
    if (o.sndbuf !== undefined && s.setOpt(SOL_SOCKET, SO_SNDBUFFORCE, o.sndbuf) < 0) s.setOpt(SOL_SOCKET, SO_SNDBUF, o.sndbuf);
    if (o.rcvbuf !== undefined && s.setOpt(SOL_SOCKET, SO_RCVBUFFORCE, o.rcvbuf) < 0) s.setOpt(SOL_SOCKET, SO_RCVBUF, o.rcvbuf);
    const v6 = this.family === 6;
    if (typeof o.ttl === 'number' && o.ttl > 0) this.opt(s, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL, o.ttl, 'TTL');
    if (typeof o.tos === 'number' && o.tos !== 0) this.opt(s, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS, o.tos, 'TOS');
    if (!v6 && o.df !== undefined) this.opt(s, IPPROTO_IP, IP_MTU_DISCOVER, o.df === 'set' ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT, 'IP_MTU_DISCOVER');
    if (this.mcast) this.multicastOptions(s);
  }

  /** Multicast TTL, no loopback (a VTEP never hears itself), and the interface of --dev. */
  private multicastOptions(s: UdpSocketHandle): void {
    const o = this.opts;
    const v6 = this.family === 6;
    const ttl = typeof o.ttl === 'number' && o.ttl > 0 ? o.ttl : 1;
    this.opt(s, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MULTICAST_HOPS : IP_MULTICAST_TTL, ttl, 'multicast TTL');
    this.opt(s, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MULTICAST_LOOP : IP_MULTICAST_LOOP, 0, 'multicast loop');
    if (o.dev !== undefined) {
      const idx = this.ifindex(o.dev);
      if (v6) this.opt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, idx, 'IPV6_MULTICAST_IF');
      else this.optBytes(s, IPPROTO_IP, IP_MULTICAST_IF, this.mreqn('0.0.0.0', idx), 'IP_MULTICAST_IF');
    }
  }

  private optBytes(s: UdpSocketHandle, level: number, name: number, value: Uint8Array, what: string): void {
    const r = s.setOptBytes(level, name, value);
    if (r < 0) throw Object.assign(new Error(`setsockopt(${what}) failed: ${getSystemErrorName(r)}`), { code: getSystemErrorName(r), errno: r, syscall: `setsockopt(${what})` });
  }

  private ifindex(dev: string): number {
    try {
      return this.native.ifindex(dev);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENODEV') throw new ConfigError(ErrorCode.InvalidOption, 'dev', `dev: interface ${JSON.stringify(dev)} does not exist`);
      throw e;
    }
  }

  /** struct ip_mreqn { in_addr multiaddr; in_addr address; int ifindex; } */
  private mreqn(group: string, ifindex: number): Uint8Array {
    const b = new Uint8Array(12);
    b.set(addressBytes(group, 4), 0);
    new DataView(b.buffer).setInt32(8, ifindex, LITTLE_ENDIAN);
    return b;
  }

  /**
   * Joins `group` on --dev (by ifindex, whatever the carrier state or address, as the kernel). The
   * first group gives every socket the multicast settings.
   */
  joinGroup(group: string): void {
    if (!this.mcast) {
      for (const s of this.sockets) this.multicastOptions(s);
      this.mcast = true;
    }
    this.membership(group, true);
  }

  leaveGroup(group: string): void {
    if (this.closed || !this.mcast) return;
    try {
      this.membership(group, false);
    } catch {
      // not a member
    }
  }

  private membership(group: string, join: boolean): void {
    const o = this.opts;
    const s = this.sockets[0]!;
    const idx = o.dev === undefined ? 0 : this.ifindex(o.dev);
    if (this.family === 4) {
      this.optBytes(s, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, this.mreqn(group, idx), join ? 'IP_ADD_MEMBERSHIP' : 'IP_DROP_MEMBERSHIP');
    } else {
      const b = new Uint8Array(20);
      b.set(addressBytes(group, 6), 0);
      new DataView(b.buffer).setUint32(16, idx, LITTLE_ENDIAN);
      this.optBytes(s, IPPROTO_IPV6, join ? IPV6_ADD_MEMBERSHIP : IPV6_DROP_MEMBERSHIP, b, join ? 'IPV6_ADD_MEMBERSHIP' : 'IPV6_DROP_MEMBERSHIP');
    }
  }

  /** The source-port pool (`srcport`): each socket bound and configured as the main one. */
  private bindPool(r: { min: number; max: number; sockets: number }): Promise<UdpSocketHandle[]> {
    const local = addressBytes(this.opts.local, this.family);
    return bindPool(r, this.boundPort, this.opts.local, (port) => {
      const s = this.newSocket();
      try {
        if (this.family === 6) this.opt(s, IPPROTO_IPV6, IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
        s.bind(local, port, 0);
      } catch (e) {
        s.close();
        this.sockets.pop();
        this.stats.pop();
        throw e;
      }
      this.configure(s);
      return s;
    });
  }

  /** The source of received message at `at` as an IP literal, without building a string per message. */
  private srcString(b: Uint8Array, at: number): string {
    if (b[at] === 4) {
      const key = ((b[at + 4]! << 24) | (b[at + 5]! << 16) | (b[at + 6]! << 8) | b[at + 7]!) >>> 0;
      if (key === this.lastV4) return this.lastV4s;
      let s = this.srcCache.get(key);
      if (s === undefined) {
        s = `${b[at + 4]}.${b[at + 5]}.${b[at + 6]}.${b[at + 7]}`;
        if (this.srcCache.size >= 1024) this.srcCache.clear(); // bounded under a spoofed-source flood
        this.srcCache.set(key, s);
      }
      this.lastV4 = key;
      this.lastV4s = s;
      return s;
    }
    const l = this.lastV6;
    let same = this.lastV6s !== '';
    for (let i = 0; same && i < 16; i++) same = l[i] === b[at + 4 + i];
    if (same) return this.lastV6s;
    l.set(b.subarray(at + 4, at + 20));
    this.lastV6s = ipv6Text(l, 0);
    return this.lastV6s;
  }

  /** The remote as a struct sockaddr_in / sockaddr_in6, built once per remote. */
  private sockaddr(r: Remote): Uint8Array {
    let a = this.sockaddrs.get(r);
    if (a === undefined) {
      a = new Uint8Array(ADDR_STRIDE);
      const dv = new DataView(a.buffer);
      dv.setUint16(0, r.family === 4 ? 2 : 10, LITTLE_ENDIAN); // AF_INET / AF_INET6, host order
      dv.setUint16(2, r.port, false);
      a.set(addressBytes(r.address, r.family), r.family === 4 ? 4 : 8);
      this.sockaddrs.set(r, a);
    }
    return a;
  }

  send(batch: TxBatch): void {
    if (this.closed || batch.count === 0) return;
    if (this.queued > 0) {
      this.enqueue(batch, 0, 0); // behind what waits, in order
      return;
    }
    this.sendFrom(batch);
  }

  /** Sends batch entries in runs per sending socket; queues the rest when a socket is full. */
  private sendFrom(batch: TxBatch): boolean {
    const senders = this.senders;
    const k = senders.length;
    const n = batch.count;
    if (this.addrs.length < n * ADDR_STRIDE) this.addrs = new Uint8Array(n * ADDR_STRIDE);
    const addrs = this.addrs;
    const res = this.res;
    let i = 0;
    while (i < n) {
      const si = k === 1 ? 0 : batch.hashes[i]! % k;
      const buf = batch.bufs[i]!;
      let j = i;
      while (j < n && batch.bufs[j] === buf && (k === 1 || batch.hashes[j]! % k === si)) {
        addrs.set(this.sockaddr(batch.remotes[j]!), j * ADDR_STRIDE);
        j++;
      }
      const s = senders[si]!;
      const rc = s.send(buf, batch.offs, batch.lens, batch.segs, batch.lasts, addrs, ADDR_STRIDE, batch.dsfield, batch.ttls, i, j - i, this.gso, res);
      if (res[2]! > 0) this.reportErrors(batch);
      if (rc === -EAGAIN) {
        this.enqueue(batch, res[0]!, res[1]!);
        this.waitWritable(s);
        return false;
      }
      if (rc < 0) {
        // bad arguments (a bug, not the network): count every datagram of the run as lost
        for (let x = i; x < j; x++) this.handlers?.onSendError(this.sendError(-rc, batch.remotes[x]!, batch.segs[x]!));
      }
      i = j;
    }
    return true;
  }

  private sendError(errno: number, r: Remote, datagrams: number): SendError {
    const code = getSystemErrorName(-errno);
    return Object.assign(new Error(`send ${code} ${r.address}:${r.port}`), { code, errno: -errno, syscall: 'sendmmsg', address: r.address, port: r.port, remote: r, datagrams });
  }

  private reportErrors(batch: TxBatch): void {
    const res = this.res;
    const h = this.handlers;
    for (let e = 0; e < res[2]!; e++) {
      const idx = res[3 + 3 * e]!;
      h?.onSendError(this.sendError(res[4 + 3 * e]!, batch.remotes[idx]!, res[5 + 3 * e]!));
    }
    res[2] = 0;
  }

  /** Copies entries from..count (the first with `done` datagrams already sent) into the queue. */
  private enqueue(batch: TxBatch, from: number, done: number): void {
    for (let i = from; i < batch.count; i++) {
      let q = this.queue[this.queue.length - 1];
      if (q === undefined || q.count === q.cap) {
        q = new TxBatch(256);
        this.queue.push(q);
      }
      const skip = i === from ? done : 0;
      const segs = batch.segs[i]! - skip;
      q.push(batch.bufs[i]!, batch.offs[i]! + skip * batch.lens[i]!, batch.lens[i]!, batch.remotes[i]!, batch.hashes[i]!, batch.dsfield[i]!, segs, batch.lasts[i]!, batch.ttls[i]!);
      this.queued += segs;
    }
  }

  private waitWritable(s: UdpSocketHandle): void {
    if (this.waiting) return;
    this.waiting = true;
    s.waitWritable(this.onWritable);
  }

  private readonly onWritable = (): void => {
    this.waiting = false;
    if (this.closed) return;
    const q = this.queue.splice(0);
    this.queued = 0;
    for (let b = 0; b < q.length; b++) {
      if (this.queued > 0) {
        this.enqueue(q[b]!, 0, 0);
        continue;
      }
      this.sendFrom(q[b]!);
    }
    if (this.queued === 0) {
      const ws = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of ws) w();
    }
  };

  pending(): number {
    return this.closed ? 0 : this.queued;
  }

  whenDrained(cb: () => void): void {
    if (this.pending() === 0) cb();
    else this.drainWaiters.push(cb);
  }

  address(): { address: string; port: number } {
    return { address: this.opts.local, port: this.boundPort };
  }

  counters(): TransportCounters {
    const c: TransportCounters = { sendCalls: 0, sentMsgs: 0, sentDatagrams: 0, gsoSends: 0, gsoDatagrams: 0, gsoFallbacks: 0, recvCalls: 0, recvMsgs: 0, groMsgs: 0, datapathDropped: 0 };
    for (const st of this.stats) {
      c.sendCalls += st[SockStat.SendCalls]!;
      c.sentMsgs += st[SockStat.MsgsSent]!;
      c.sentDatagrams += st[SockStat.DgramsSent]!;
      c.gsoSends += st[SockStat.GsoMsgs]!;
      c.gsoDatagrams += st[SockStat.GsoDgrams]!;
      c.gsoFallbacks += st[SockStat.GsoFallbacks]!;
      c.recvCalls += st[SockStat.RecvCalls]!;
      c.recvMsgs += st[SockStat.MsgsRecv]!;
      c.groMsgs += st[SockStat.GroMsgs]!;
      c.datapathDropped! += st[SockStat.ProxyDropped]!;
    }
    return c;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    for (const s of this.sockets) s.close();
    // answered: the process has closed its copy, the port is free when this returns
    if (this.datapath !== undefined) {
      this.datapath.handle.removeUdp(this.sockets[0]!);
      this.datapath.release();
    }
    this.queue.length = 0;
    this.queued = 0;
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of ws) w();
    return Promise.resolve();
  }
}
