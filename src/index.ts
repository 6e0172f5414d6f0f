/**
 * uvtep: a userspace VXLAN tunnel endpoint (RFC 7348). The public library API.
 *
 *   import { createVtep, MemoryPort } from 'uvtep';
 *   const vtep = createVtep({ vni: 1, remotes: ['198.51.100.2'], framePort: new MemoryPort() });
 *   await vtep.start();
 */
import { resolveConfig, type VtepOptions } from './config.js';
import type { FramePort } from './port/port.js';
import type { Transport } from './transport/transport.js';
import { DgramTransport } from './transport/dgram.js';
import { NativeTransport } from './transport/native.js';
import { loadBinding } from './native.js';
import { ConfigError, ErrorCode } from './errors.js';
import { Vtep } from './vtep.js';
import { TapPort, type TapOptions } from './port/tap.js';

export interface CreateVtepOptions extends VtepOptions {
  /** Where frames come from and go to. Default: a TAP device opened with `tap`. */
  framePort?: FramePort;
  /** TAP device settings, when `framePort` is not given. */
  tap?: TapOptions;
  /**
   * Where datagrams go: a Transport, or which built-in one to bind at `local`:`listenPort`:
   * 'native' (the addon's UDP endpoint: recvmmsg/sendmmsg, UDP GSO and GRO; the default on
   * Linux) or 'dgram' (node:dgram, the portable fallback).
   */
  transport?: Transport | TransportKind;
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

/**
 * Validates the options (throwing `ConfigError` with a stable `code`), opens the TAP device
 * unless a `framePort` is given, and returns a Vtep that `start()` binds and runs.
 */
export function createVtep(options: CreateVtepOptions): Vtep {
  const config = resolveConfig(options);
  const kind = options.transport ?? (nativeTransportAvailable() ? 'native' : 'dgram');
  if (typeof kind === 'string' && kind !== 'native' && kind !== 'dgram') {
    throw new ConfigError(ErrorCode.InvalidOption, 'transport', `transport: expected "native" or "dgram", got ${JSON.stringify(kind)}`);
  }
  const udp = {
    family: config.family,
    local: config.local,
    port: config.listenPort,
    group: config.group,
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
  const transport = kind === 'native' ? new NativeTransport(udp) : kind === 'dgram' ? new DgramTransport(udp) : kind;
  if (config.busyPoll > 0) loadBinding().setBusyPoll(config.busyPoll);
  const port = options.framePort ?? new TapPort({ mtu: config.tapMtu, gro: config.gro, ...options.tap });
  return new Vtep(config, { port, transport, ...(options.clock ? { clock: options.clock } : {}) });
}

export { Vtep, DropReason, DROP_REASONS } from './vtep.js';
export type { VtepStats, VtepIo, VtepEvents, VtepDeps, DropReasonName, VtepSendErrorInfo } from './vtep.js';
export { resolveConfig, DEFAULTS } from './config.js';
export type { VtepOptions, VtepConfig, RemoteSpec } from './config.js';
export { Fdb, FdbEntry, LearnResult, FDB_AGE_DEFAULT_S, FDB_AGE_INTERVAL_S, FDB_MAX_DEFAULT } from './fdb.js';
export type { Remote, FdbRow, FdbOptions } from './fdb.js';
export { MemoryPort } from './port/memory.js';
export type { MemoryPortOptions } from './port/memory.js';
export { TapPort } from './port/tap.js';
export type { TapOptions } from './port/tap.js';
export { FRAME_HEADROOM } from './port/port.js';
export type { FramePort, FrameBatch, FramesHandler, PortErrorHandler, PortCounters } from './port/port.js';
export { DgramTransport } from './transport/dgram.js';
export type { DgramTransportOptions } from './transport/dgram.js';
export { NativeTransport } from './transport/native.js';
export type { NativeTransportOptions } from './transport/native.js';
export { TxBatch, newRxBatch } from './transport/transport.js';
export type { Transport, TransportHandlers, DatagramsHandler, RxBatch, SendError, TransportCounters, UdpTransportOptions } from './transport/transport.js';
export { UvtepError, ConfigError, StateError, ErrorCode } from './errors.js';
export { ControlServer, controlRequest, controlPath, ControlError, applyFdbChange } from './control.js';
export type { ControlInfo, ControlServerOptions, FdbChange, FdbOp } from './control.js';
export { vtepRegistry, MetricsServer, parseMetricsAddress } from './metrics.js';
export { flowHash, innerDsfield } from './wire/flow.js';
export * as vxlan from './wire/vxlan.js';
export * as ethernet from './wire/ethernet.js';
