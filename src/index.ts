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
import { Vtep } from './vtep.js';
import { TapPort, type TapOptions } from './port/tap.js';

export interface CreateVtepOptions extends VtepOptions {
  /** Where frames come from and go to. Default: a TAP device opened with `tap`. */
  framePort?: FramePort;
  /** TAP device settings, when `framePort` is not given. */
  tap?: TapOptions;
  /** Where datagrams go. Default: node:dgram bound to `local`:`listenPort`. */
  transport?: Transport;
  /** Clock in ms for FDB ageing (tests). */
  clock?: () => number;
}

/**
 * Validates the options (throwing `ConfigError` with a stable `code`), opens the TAP device
 * unless a `framePort` is given, and returns a Vtep that `start()` binds and runs.
 */
export function createVtep(options: CreateVtepOptions): Vtep {
  const config = resolveConfig(options);
  const transport =
    options.transport ??
    new DgramTransport({
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
    });
  const port = options.framePort ?? new TapPort({ mtu: config.tapMtu, ...options.tap });
  return new Vtep(config, { port, transport, ...(options.clock ? { clock: options.clock } : {}) });
}

export { Vtep, DropReason, DROP_REASONS } from './vtep.js';
export type { VtepStats, VtepEvents, VtepDeps, DropReasonName, VtepSendErrorInfo } from './vtep.js';
export { resolveConfig, DEFAULTS } from './config.js';
export type { VtepOptions, VtepConfig, RemoteSpec } from './config.js';
export { Fdb, FdbEntry, LearnResult, FDB_AGE_DEFAULT_S, FDB_AGE_INTERVAL_S, FDB_MAX_DEFAULT } from './fdb.js';
export type { Remote, FdbRow, FdbOptions } from './fdb.js';
export { MemoryPort } from './port/memory.js';
export type { MemoryPortOptions } from './port/memory.js';
export { TapPort } from './port/tap.js';
export type { TapOptions } from './port/tap.js';
export { FRAME_HEADROOM } from './port/port.js';
export type { FramePort, FrameBatch, FramesHandler, PortErrorHandler } from './port/port.js';
export { DgramTransport } from './transport/dgram.js';
export type { DgramTransportOptions } from './transport/dgram.js';
export { TxBatch } from './transport/transport.js';
export type { Transport, TransportHandlers, DatagramHandler, SendError } from './transport/transport.js';
export { UvtepError, ConfigError, StateError, ErrorCode } from './errors.js';
export { ControlServer, controlRequest, controlPath, ControlError, applyFdbChange } from './control.js';
export type { ControlInfo, ControlServerOptions, FdbChange, FdbOp } from './control.js';
export { vtepRegistry, MetricsServer, parseMetricsAddress } from './metrics.js';
export { flowHash, innerDsfield } from './wire/flow.js';
export * as vxlan from './wire/vxlan.js';
export * as ethernet from './wire/ethernet.js';
