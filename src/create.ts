/**
 * Constructors of the public API: `createVtep` (a Vtep on a TAP or any FrameDevice, with its own
 * UDP transport or on a shared Endpoint) and `createEndpoint`.
 */
import { resolveConfig, type VtepConfig, type VtepOptions } from './config.js';
import { Endpoint } from './endpoint.js';
import type { FrameDevice } from './device/device.js';
import type { Transport } from './transport/transport.js';
import { DgramTransport } from './transport/dgram.js';
import { NativeTransport } from './transport/native.js';
import { loadBinding } from './native.js';
import { ConfigError, ErrorCode } from './errors.js';
import { Vtep } from './vtep.js';
import { TapDevice, type TapOptions } from './device/tap.js';

export interface CreateVtepOptions extends VtepOptions {
  /** Where frames come from and go to. Default: a TAP device opened with `tap`. */
  frameDevice?: FrameDevice;
  /** @deprecated the name before 0.2: `frameDevice`. */
  framePort?: FrameDevice;
  /** TAP device settings, when `frameDevice` is not given. */
  tap?: TapOptions;
  /**
   * Where datagrams go: a Transport, or which built-in one to bind at `local`:`listenPort`:
   * 'native' (the addon's UDP endpoint: recvmmsg/sendmmsg, UDP GSO and GRO; the default on
   * Linux) or 'dgram' (node:dgram, the portable fallback).
   */
  transport?: Transport | TransportKind;
  /**
   * A UDP endpoint shared with other VTEPs (`createEndpoint`): this VTEP sends through it and
   * receives the datagrams of its VNI. The endpoint's settings (local address, port, TTL, TOS,
   * DF, source ports, buffers, GSO/GRO) apply; `transport` must not be given with it.
   */
  endpoint?: Endpoint;
  /** Clock in ms for FDB ageing (tests). */
  clock?: () => number;
}

export type TransportKind = 'native' | 'dgram';

/** Whether the native UDP endpoint can be used here (Linux, addon built). */
export function nativeTransportAvailable(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    return typeof loadBinding().UdpSocket === 'function';
  } catch {
    return false;
  }
}

/** Settings of a UDP endpoint: the transport-level options of `VtepOptions`. */
export interface EndpointOptions extends Pick<VtepOptions, 'local' | 'dev' | 'ttl' | 'sndbuf' | 'rcvbuf' | 'srcport' | 'srcportSockets' | 'tos' | 'df' | 'gso' | 'gro' | 'busyPoll'> {
  /** UDP port to bind (default 4789; 0 = any free port). */
  port?: number;
  /** Underlay family when `local` is not given (default 4). */
  family?: 4 | 6;
  /** Which built-in transport, or one of your own (not yet opened). */
  transport?: Transport | TransportKind;
}

export function transportKind(k: Transport | TransportKind | undefined): Transport | TransportKind {
  const kind = k ?? (nativeTransportAvailable() ? 'native' : 'dgram');
  if (typeof kind === 'string' && kind !== 'native' && kind !== 'dgram') {
    throw new ConfigError(ErrorCode.InvalidOption, 'transport', `transport: expected "native" or "dgram", got ${JSON.stringify(kind)}`);
  }
  return kind;
}

export function udpTransport(config: VtepConfig, kind: Transport | TransportKind, group: string | undefined): Transport {
  if (typeof kind !== 'string') return kind;
  const udp = {
    family: config.family,
    local: config.local,
    port: config.listenPort,
    group,
    dev: config.dev,
    ttl: config.ttl,
    sndbuf: config.sndbuf,
    rcvbuf: config.rcvbuf,
    srcport: config.srcport,
    tos: config.tos,
    df: config.df,
    gso: config.gso,
    gro: config.gro,
  };
  return kind === 'native' ? new NativeTransport(udp) : new DgramTransport(udp);
}

/**
 * A UDP endpoint several VTEPs share (one socket for many VNIs on one port, as the kernel):
 *
 *   const ep = createEndpoint({ port: 4789 });
 *   const a = createVtep({ vni: 10, remotes: ['198.51.100.2'], endpoint: ep });
 *   const b = createVtep({ vni: 20, remotes: ['198.51.100.2'], endpoint: ep });
 *   await Promise.all([a.start(), b.start()]);   // ... later: close the Vteps, then ep.close()
 *
 * It binds when the first Vtep starts (or on `open()`), and stays bound until `close()`.
 */
export function createEndpoint(options: EndpointOptions = {}): Endpoint {
  const { port, family, transport, ...rest } = options;
  const config = resolveConfig({ vni: 0, ...rest, ...(port !== undefined ? { listenPort: port } : {}), ...(rest.local === undefined && family === 6 ? { local: '::' } : {}) });
  if (config.busyPoll > 0) loadBinding().setBusyPoll(config.busyPoll);
  return new Endpoint(udpTransport(config, transportKind(transport), undefined));
}

/**
 * Validates the options (throwing `ConfigError` with a stable `code`), opens the TAP device
 * unless a `frameDevice` is given, and returns a Vtep that `start()` binds and runs.
 */
export function createVtep(options: CreateVtepOptions): Vtep {
  const config = resolveConfig(options);
  let transport: Transport;
  if (options.endpoint !== undefined) {
    if (options.transport !== undefined) throw new ConfigError(ErrorCode.InvalidOption, 'transport', 'transport: give either a transport or an endpoint, not both');
    if (options.endpoint.family !== config.family) {
      throw new ConfigError(ErrorCode.FamilyMismatch, 'remote', `remote: the endpoint's underlay is IPv${options.endpoint.family}, this VTEP's is IPv${config.family}`);
    }
    transport = options.endpoint.lane(config.vni, config.group);
  } else {
    transport = udpTransport(config, transportKind(options.transport), config.group);
    if (config.busyPoll > 0) loadBinding().setBusyPoll(config.busyPoll);
  }
  const device = options.frameDevice ?? options.framePort ?? new TapDevice({ mtu: config.tapMtu, gro: config.gro, ...options.tap });
  return new Vtep(config, { device, transport, ...(options.clock ? { clock: options.clock } : {}) });
}

