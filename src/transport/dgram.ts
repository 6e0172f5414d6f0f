/**
 * Transport over node:dgram: IPv4 or IPv6 underlay, one unconnected UDP socket bound to the
 * VXLAN port, optional multicast group for BUM traffic.
 *
 * Cost notes (measured in bench/micro): an unconnected dgram socket calls its `lookup` for
 * every send; remotes are validated IP literals, so the lookup answers synchronously instead of
 * going through dns.lookup's nextTick. Send errors are reported through one shared callback
 * (no closure per datagram).
 */
import dgram from 'node:dgram';
import { networkInterfaces } from 'node:os';
import { ConfigError, ErrorCode } from '../errors.js';
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
}

type LookupCb = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

export class DgramTransport implements Transport {
  readonly family: 4 | 6;
  private readonly opts: DgramTransportOptions;
  private readonly socket: dgram.Socket;
  private handlers: TransportHandlers | undefined;
  private drainWaiters: Array<() => void>;
  private drainScheduled: boolean;
  private closed: boolean;

  constructor(opts: DgramTransportOptions) {
    this.family = opts.family;
    this.opts = opts;
    const fam = opts.family;
    // Remotes are IP literals validated by config: answer the per-send lookup synchronously.
    const lookup = (address: string, _o: unknown, cb: LookupCb): void => cb(null, address, fam);
    this.socket = dgram.createSocket({
      type: fam === 6 ? 'udp6' : 'udp4',
      ipv6Only: fam === 6,
      reuseAddr: false,
      lookup: lookup as unknown as dgram.SocketOptions['lookup'],
    });
    this.handlers = undefined;
    this.drainWaiters = [];
    this.drainScheduled = false;
    this.closed = false;
  }

  open(handlers: TransportHandlers): Promise<void> {
    this.handlers = handlers;
    const s = this.socket;
    return new Promise<void>((resolve, reject) => {
      const onBindError = (err: Error): void => reject(err);
      s.once('error', onBindError);
      s.bind({ address: this.opts.local, port: this.opts.port, exclusive: true }, () => {
        s.off('error', onBindError);
        try {
          this.configure();
        } catch (e) {
          s.close();
          reject(e);
          return;
        }
        s.on('error', (err) => this.handlers?.onError(err));
        s.on('message', (msg, rinfo) => handlers.onDatagram(msg, 0, msg.length, rinfo.address));
        resolve();
      });
    });
  }

  private configure(): void {
    const s = this.socket;
    const o = this.opts;
    if (o.sndbuf !== undefined) s.setSendBufferSize(o.sndbuf);
    if (o.rcvbuf !== undefined) s.setRecvBufferSize(o.rcvbuf);
    if (o.ttl !== undefined && o.ttl > 0) s.setTTL(o.ttl);
    if (o.group !== undefined) {
      const iface = o.dev === undefined ? undefined : interfaceAddress(o.dev, this.family);
      s.setMulticastLoopback(false);
      s.setMulticastTTL(o.ttl !== undefined && o.ttl > 0 ? o.ttl : 1);
      if (iface !== undefined) s.setMulticastInterface(iface);
      s.addMembership(o.group, iface);
    }
  }

  /** Shared send callback: counts errors; success needs nothing. */
  private readonly onSent = (err: Error | null): void => {
    if (err !== null && this.handlers !== undefined) {
      // Node's send errors carry the destination (`address`, `port`).
      this.handlers.onSendError(err as SendError);
    }
  };

  send(batch: TxBatch): void {
    const s = this.socket;
    const n = batch.count;
    for (let i = 0; i < n; i++) {
      const r = batch.remotes[i]!;
      s.send(batch.bufs[i]!, batch.offs[i]!, batch.lens[i]!, r.port, r.address, this.onSent);
    }
  }

  pending(): number {
    return this.closed ? 0 : this.socket.getSendQueueCount();
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
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // never bound
      }
      for (const w of ws) w();
    });
  }
}

/** The address to join multicast on for `dev`: its first IPv4 address, or `::%dev` for IPv6. */
function interfaceAddress(dev: string, family: 4 | 6): string {
  if (family === 6) return `::%${dev}`;
  const addrs = networkInterfaces()[dev];
  const v4 = addrs?.find((a) => a.family === 'IPv4');
  if (v4 === undefined) {
    throw new ConfigError(ErrorCode.InvalidOption, 'dev', `dev: interface ${JSON.stringify(dev)} does not exist or has no IPv4 address to join the multicast group on`);
  }
  return v4.address;
}
