/**
 * Transport over node:dgram: the portable fallback (`--transport dgram`), for platforms or
 * builds without the native endpoint. IPv4 or IPv6 underlay, a UDP socket bound to the VXLAN
 * port, optional multicast group, optionally a pool of sending sockets on ports of a source-port
 * range (one per inner flow, RFC 7348 section 5).
 *
 * What it cannot do, next to the native endpoint: one send and one receive callback per datagram
 * (no GSO/GRO, no sendmmsg/recvmmsg); the outer TOS cannot be set (`tos` must be 0), the outer TOS
 * of received datagrams is not visible (ECN decapsulation needs the native endpoint), and the
 * IPv4 DF bit stays the OS default (Linux: set, where the kernel VTEP leaves it clear).
 *
 * Cost notes (measured in bench/): an unconnected dgram socket calls its `lookup` for every
 * send; remotes are validated IP literals, so the lookup answers synchronously instead of going
 * through dns.lookup's nextTick. Send errors are reported through one callback per remote, made
 * once (no closure per datagram).
 */
import dgram from 'node:dgram';
import { ConfigError, ErrorCode } from '../errors.js';
import type { Remote } from '../fdb.js';
import { loadBinding } from '../native.js';
import { bindPool, newRxBatch, type RxBatch, type SendError, type Transport, type TransportCounters, type TransportHandlers, type TxBatch, type UdpTransportOptions } from './transport.js';

export type DgramTransportOptions = UdpTransportOptions;

/** Throws a ConfigError naming the option when node:dgram cannot do what `opts` asks. */
export function checkDgramOptions(opts: Pick<UdpTransportOptions, 'tos' | 'df' | 'ttl'>): void {
  if (opts.ttl === 'inherit') throw new ConfigError(ErrorCode.InvalidOption, 'ttl', 'ttl: inherit needs the native transport (node:dgram cannot set the TTL per datagram); use --transport native');
  if (typeof opts.tos === 'number' ? opts.tos !== 0 : opts.tos === 'inherit') {
    throw new ConfigError(ErrorCode.InvalidOption, 'tos', 'tos: the outer TOS needs the native transport (node:dgram cannot set it); use --transport native');
  }
  if (opts.df === 'set') throw new ConfigError(ErrorCode.InvalidOption, 'df', 'df: setting the DF bit needs the native transport; use --transport native');
}

type LookupCb = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

export class DgramTransport implements Transport {
  readonly family: 4 | 6;
  readonly kind = 'dgram';
  readonly needsFlowHash: boolean;
  private readonly opts: DgramTransportOptions;
  private readonly socket: dgram.Socket;
  /** Sockets that send: the pool when a source-port range is set, else the main socket. */
  private senders: dgram.Socket[] = [];
  private handlers: TransportHandlers | undefined;
  private drainWaiters: Array<() => void> = [];
  private closed: boolean = false;
  private readonly lookup: (address: string, o: unknown, cb: LookupCb) => void;
  private readonly rx: RxBatch;
  private sendCalls: number = 0;
  private recvCalls: number = 0;
  private readonly sentCbs: WeakMap<Remote, (err: Error | null) => void>;
  /** The multicast interface address once a group was joined ('' = the system's choice). */
  private mcastIface: string | undefined;

  constructor(opts: DgramTransportOptions) {
    checkDgramOptions(opts);
    this.family = opts.family;
    this.opts = opts;
    this.needsFlowHash = opts.srcport !== undefined && opts.srcport.sockets > 1;
    const fam = opts.family;
    // Remotes are IP literals validated by config: answer the per-send lookup synchronously.
    this.lookup = (address: string, _o: unknown, cb: LookupCb): void => cb(null, address, fam);
    this.socket = this.createSocket();
    this.rx = newRxBatch(Buffer.alloc(0), 1);
    this.sentCbs = new WeakMap();
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
      const pool: dgram.Socket[] = [];
      if (this.opts.srcport !== undefined) pool.push(...(await this.bindPool(this.opts.srcport)));
      this.senders = pool.length > 0 ? pool : [this.socket];
      if (this.opts.group !== undefined) this.joinGroup(this.opts.group);
      const rx = this.rx;
      for (const s of [this.socket, ...pool]) {
        s.on('error', (err) => this.handlers?.onError(err));
        s.on('message', (msg, rinfo) => {
          this.recvCalls++;
          rx.buf = msg;
          rx.offs[0] = 0;
          rx.lens[0] = msg.length;
          rx.srcs[0] = rinfo.address;
          rx.count = 1;
          handlers.onDatagrams(rx);
        });
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
    if (typeof o.ttl === 'number' && o.ttl > 0) s.setTTL(o.ttl);
  }

  /**
   * Joins `group` on the main socket. The first join gives every socket that sends the multicast
   * settings: interface (--dev), TTL, and no loopback (a VTEP must never hear, or learn from,
   * what it sent itself).
   */
  joinGroup(group: string): void {
    const o = this.opts;
    if (this.mcastIface === undefined) {
      const iface = o.dev === undefined ? '' : this.interfaceAddress(o.dev);
      for (const s of new Set([this.socket, ...this.senders])) {
        s.setMulticastLoopback(false);
        s.setMulticastTTL(typeof o.ttl === 'number' && o.ttl > 0 ? o.ttl : 1);
        if (iface !== '') s.setMulticastInterface(iface);
      }
      this.mcastIface = iface;
    }
    this.socket.addMembership(group, this.mcastIface === '' ? undefined : this.mcastIface);
  }

  leaveGroup(group: string): void {
    if (this.closed || this.mcastIface === undefined) return;
    try {
      this.socket.dropMembership(group, this.mcastIface === '' ? undefined : this.mcastIface);
    } catch {
      // not a member
    }
  }

  /**
   * The address to join multicast on for `dev`: its IPv4 address (read with SIOCGIFADDR: the
   * kernel joins whatever the carrier state, and so does uvtep), or `::%dev` for IPv6.
   */
  private interfaceAddress(dev: string): string {
    if (this.family === 6) return `::%${dev}`;
    try {
      return [...loadBinding().getIpv4(dev)].join('.');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENODEV' || code === 'EADDRNOTAVAIL') {
        throw new ConfigError(ErrorCode.InvalidOption, 'dev', `dev: interface ${JSON.stringify(dev)} ${code === 'ENODEV' ? 'does not exist' : 'has no IPv4 address to join the multicast group on'}`);
      }
      throw e;
    }
  }

  /** The source-port pool (`srcport`): each socket bound and configured as the main one. */
  private bindPool(r: { min: number; max: number; sockets: number }): Promise<dgram.Socket[]> {
    return bindPool(r, this.opts.port, this.opts.local, async (port) => {
      const s = this.createSocket();
      try {
        await bind(s, this.opts.local, port);
      } catch (e) {
        s.close();
        throw e;
      }
      this.configure(s);
      return s;
    });
  }

  /** Send callback per remote (made once): counts errors; wakes drain waiters when the queue has emptied. */
  private onSentFor(r: Remote): (err: Error | null) => void {
    let cb = this.sentCbs.get(r);
    if (cb === undefined) {
      cb = (err: Error | null): void => {
        if (err !== null && this.handlers !== undefined) {
          // Node's send errors carry the destination (`address`, `port`); the remote says whose
          this.handlers.onSendError(Object.assign(err, { remote: r }) as SendError);
        }
        if (this.drainWaiters.length > 0 && this.pending() === 0) {
          const ws = this.drainWaiters;
          this.drainWaiters = [];
          for (const w of ws) w();
        }
      };
      this.sentCbs.set(r, cb);
    }
    return cb;
  }

  send(batch: TxBatch): void {
    const senders = this.senders;
    const k = senders.length;
    const n = batch.count;
    for (let i = 0; i < n; i++) {
      const r = batch.remotes[i]!;
      const s = k === 1 ? senders[0]! : senders[batch.hashes[i]! % k]!;
      const buf = batch.bufs[i]!;
      const len = batch.lens[i]!;
      const segs = batch.segs[i]!;
      let off = batch.offs[i]!;
      const cb = this.onSentFor(r);
      for (let d = 0; d < segs; d++) {
        s.send(buf, off, d === segs - 1 ? batch.lasts[i]! : len, r.port, r.address, cb);
        off += len;
      }
      this.sendCalls += segs;
    }
  }

  counters(): TransportCounters {
    return { sendCalls: this.sendCalls, sentMsgs: this.sendCalls, sentDatagrams: this.sendCalls, gsoSends: 0, gsoDatagrams: 0, gsoFallbacks: 0, recvCalls: this.recvCalls, recvMsgs: this.recvCalls, groMsgs: 0 };
  }

  pending(): number {
    if (this.closed) return 0;
    let n = 0;
    for (const s of this.senders) n += s.getSendQueueCount();
    return n;
  }

  /** Woken by the send callback of the last queued datagram (libuv sends it on writability). */
  whenDrained(cb: () => void): void {
    if (this.pending() === 0) cb();
    else this.drainWaiters.push(cb);
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
    const sockets = new Set([this.socket, ...this.senders]);
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
