/**
 * uvtep: a userspace VXLAN tunnel endpoint (RFC 7348). The public library API.
 *
 *   import { createVtep, MemoryDevice } from 'uvtep';
 *   const vtep = createVtep({ vni: 1, remotes: ['198.51.100.2'], frameDevice: new MemoryDevice() });
 *   await vtep.start();
 */
export { createVtep, createEndpoint, nativeTransportAvailable } from './create.js';
export { datapathDefault, datapathExecutable } from './datapath.js';
export type { CreateVtepOptions, EndpointOptions, TransportKind } from './create.js';
export { Vtep, DropReason, DROP_REASONS } from './vtep.js';
export { Endpoint, ENDPOINT_DROPS } from './endpoint.js';
export type { EndpointStats, EndpointDropName } from './endpoint.js';
export type { VtepStats, VtepIo, VtepEvents, VtepDeps, DropReasonName, VtepSendErrorInfo } from './vtep.js';
export { resolveConfig, DEFAULTS } from './config.js';
export type { VtepOptions, VtepConfig, RemoteSpec, DatapathMode } from './config.js';
export { Fdb, FdbEntry, LearnResult, FDB_AGE_DEFAULT_S, FDB_AGE_INTERVAL_S, FDB_MAX_DEFAULT } from './fdb.js';
export type { Remote, FdbRow, FdbOptions, FdbOrigin, FdbChangeOptions } from './fdb.js';
export { MemoryDevice } from './device/memory.js';
export type { MemoryDeviceOptions } from './device/memory.js';
export { TapDevice } from './device/tap.js';
export type { TapOptions } from './device/tap.js';
export { FRAME_HEADROOM } from './device/device.js';
export type { FrameDevice, FrameBatch, FramesHandler, DeviceErrorHandler, DeviceCounters } from './device/device.js';
// the names before 0.2 (FramePort and its kin read like a UDP port number)
export { MemoryDevice as MemoryPort } from './device/memory.js';
export { TapDevice as TapPort } from './device/tap.js';
export type { FrameDevice as FramePort, DeviceCounters as PortCounters } from './device/device.js';
export { DgramTransport } from './transport/dgram.js';
export type { DgramTransportOptions } from './transport/dgram.js';
export { NativeTransport } from './transport/native.js';
export type { NativeTransportOptions } from './transport/native.js';
export { TxBatch, newRxBatch } from './transport/transport.js';
export type { Transport, TransportHandlers, DatagramsHandler, RxBatch, SendError, TransportCounters, UdpTransportOptions } from './transport/transport.js';
export { UvtepError, ConfigError, StateError, ErrorCode } from './errors.js';
export { ControlServer, controlRequest, controlPath, ControlError, applyFdbChange, singleVtep } from './control.js';
export type { ControlInfo, ControlServerOptions, ControlTarget, ControlVtep, FdbChange, FdbOp } from './control.js';
export { Instance, checkSpecs } from './instance.js';
export type { VtepSpec, HostedVtep, VtepInfo, InstanceEvents, ControlPlane, PlaneOptions } from './instance.js';
export { vtepRegistry, metricsRegistry, MetricsServer, parseMetricsAddress } from './metrics.js';
export { EtcdAgent, EtcdConflictError, etcdPlane, resolveEtcdSettings, memberKey, macKey, ETCD_PREFIX_DEFAULT, ETCD_TTL_DEFAULT_S } from './etcd.js';
export type { EtcdSettings, EtcdStats, EtcdAgentEvents, EtcdLogger, MemberSpec, MemberRecord, MacRoute, EtcdOptionValues } from './etcd.js';
export { LocalStations, NeighTable, proxyReply } from './neigh.js';
export type { Station, StationEvents } from './neigh.js';
export type { MetricsSource } from './metrics.js';
export { flowHash, innerDsfield } from './wire/flow.js';
export * as vxlan from './wire/vxlan.js';
export * as ethernet from './wire/ethernet.js';
