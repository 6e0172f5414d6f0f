/**
 * Options -> validated configuration. Every default lives here, and every check throws a
 * `ConfigError` naming the option, what was given and what is accepted, before any socket or
 * device is touched.
 */
import { checkAllowCidr, type AllowCidr } from './allow.js';
import { checkBool, checkInt, checkIp, checkPort, checkRemote, checkUnicastMac, checkVni, fail, isMulticastIp, show, type RemoteSpec } from './check.js';
import { ErrorCode } from './errors.js';
import { FDB_AGE_DEFAULT_S, FDB_MAX_DEFAULT } from './fdb.js';
import {
  ReservedBitsPolicy,
  VXLAN_MTU_HEADROOM_V4,
  VXLAN_MTU_HEADROOM_V6,
  VXLAN_OVERHEAD_V4,
  VXLAN_OVERHEAD_V6,
  VXLAN_PORT_IANA,
} from './wire/vxlan.js';

export const DEFAULTS = {
  dstPort: VXLAN_PORT_IANA,
  ageingS: FDB_AGE_DEFAULT_S,
  learning: true,
  maxAddress: FDB_MAX_DEFAULT,
  reservedBits: ReservedBitsPolicy.Ignore,
  underlayMtu: 1500,
  /** Socket buffers: large enough to absorb a TAP batch burst (the kernel doubles the value). */
  sndbuf: 4 * 1024 * 1024,
  rcvbuf: 4 * 1024 * 1024,
  /** Multicast TTL, as the kernel's vxlan (1 unless `ttl` is set). */
  ttl: 0,
} as const;

/** Smallest underlay MTU: IPv4's minimum (RFC 791 section 3.2: 68), raised to fit a minimal frame. */
export const UNDERLAY_MTU_MIN = 68 + VXLAN_MTU_HEADROOM_V6;
export const UNDERLAY_MTU_MAX = 65535;

export interface VtepOptions {
  /** VXLAN Network Identifier, 0..16777215. */
  vni: number;
  /**
   * Default destinations (head-end replication), like `bridge fdb append 00:00:00:00:00:00 dst IP`.
   * IP literals, optionally with a port: `198.51.100.2`, `198.51.100.2:4790`, `[2001:db8::2]:4790`.
   */
  remotes?: readonly string[];
  /** Multicast group for BUM traffic, instead of or besides remotes. */
  group?: string;
  /** Local underlay address to bind (default: the wildcard of the remotes' family). */
  local?: string;
  /** Underlay device: multicast is joined on it. */
  dev?: string;
  /** UDP destination port (default 4789, IANA; 8472 is the Linux default). */
  dstPort?: number;
  /** UDP port to listen on (default: dstPort, as the kernel does; 0 = any free port). */
  listenPort?: number;
  /**
   * TTL of the outer packets: 0 = the system default (1 for multicast, as Linux), 1..255, or
   * `inherit`: the inner IP packet's TTL / hop limit (as `ip link ... ttl inherit`; native transport).
   */
  ttl?: number | 'inherit';
  /** Ageing of learned FDB entries in seconds; 0 = never (default 300). */
  ageing?: number;
  /** Learn inner source MACs from received datagrams (default true). */
  learning?: boolean;
  /** Cap on FDB entries; 0 = unlimited (default 32768). */
  maxAddress?: number;
  /** Reserved bits on receive: `ignore` (RFC 7348, default) or `strict` (drop, as Linux). */
  reservedBits?: ReservedBitsPolicy;
  /** MTU of the underlay path (default 1500); datagrams larger than it are dropped, never fragmented. */
  underlayMtu?: number;
  /** Our own MAC (the TAP's): frames arriving with it as source are loops and are dropped. */
  mac?: string;
  /** SO_SNDBUF / SO_RCVBUF of the UDP socket, bytes. */
  sndbuf?: number;
  rcvbuf?: number;
  /**
   * Accept datagrams only from these underlay sources (CIDR or address, or `peers`: the
   * configured remotes; default: anyone, as Linux). VXLAN has no authentication (RFC 7348
   * section 7); this is the filter it lacks.
   */
  allowFrom?: readonly string[];
  /**
   * Outer UDP source port range `min-max` (default: one ephemeral port). uvtep binds a pool of
   * sockets on ports in the range and picks one per inner flow (hash of the inner headers), so
   * one flow always uses one port and different flows spread for ECMP. RFC 7348 recommends
   * 49152-65535.
   */
  srcport?: string;
  /** Sockets in the source-port pool (default 16, at most the range size). */
  srcportSockets?: number;
  /** Outer TOS / traffic class: 0-255, or `inherit` from the inner IP header (default 0). */
  tos?: number | 'inherit';
  /** IPv4 DF bit of outer packets: `unset` (default, as the kernel VTEP) or `set`. */
  df?: 'set' | 'unset';
  /** UDP GSO on send: a run of equal-size datagrams to one remote leaves as one message (default true). */
  gso?: boolean;
  /** UDP GRO on receive (native transport): one message carries up to 64 datagrams (default true). */
  gro?: boolean;
  /**
   * Busy polling, in microseconds (default 0 = off): after a batch, keep polling the TAP and the
   * socket for up to this long before sleeping. Lower latency for more CPU; process-wide.
   */
  busyPoll?: number;
  /**
   * The native flow cache (default true, where the device and the transport are native): batches
   * that only repeat the VTEP's forwarding decisions are forwarded without calling JS
   * (src/flowcache.ts). Off: every packet goes through the TypeScript path.
   */
  flowCache?: boolean;
  /**
   * Where the flow cache forwards (src/datapath.ts): 'process' (the default on Linux where
   * build/Release/uvtep-datapath is built) reads the TAP and the socket in a small native
   * process of its own and hands JS only what the cache does not cover; 'inline' does it in this
   * process's event loop. Applies only where the flow cache does.
   */
  datapath?: DatapathMode;
  /**
   * Tunnel GSO (Linux 6.17 or later, the datapath process, IPv4 or IPv6 underlay): TCP
   * super-frames leave whole, as one VXLAN-in-UDP packet with its offload metadata, the way the
   * kernel's VTEP sends them, instead of UDP GSO messages of MSS-sized datagrams. A kernel VTEP
   * on the same host takes them without cutting them apart; a NIC with UDP tunnel segmentation
   * cuts them in hardware. They go through a TAP of the datapath process's own (`uvt-gso<pid>`)
   * and a BPF program that hands them to the underlay device, past what the socket's datagrams
   * meet on their way out: netfilter OUTPUT and POSTROUTING, IPsec policies, cgroup BPF
   * programs (docs/design.md).
   *
   * - `'auto'` (the default): only while none of these is there for the underlay's family
   *   (looked at again every second), and only where it can work; otherwise the socket sends,
   *   and `io.tunnelGsoHeld` says why.
   * - `true` (`'on'`): always, past whatever is there; opening the VTEP fails with the reason
   *   where it cannot work.
   * - `false` (`'off'`): never.
   */
  tunnelGso?: TunnelGsoMode | boolean;
}

export type TunnelGsoMode = 'auto' | 'on' | 'off';

export type DatapathMode = 'process' | 'inline';

export type { AllowCidr } from './allow.js';
export type { RemoteSpec } from './check.js';

export interface VtepConfig {
  vni: number;
  family: 4 | 6;
  remotes: RemoteSpec[];
  group: string | undefined;
  local: string;
  dev: string | undefined;
  dstPort: number;
  listenPort: number;
  ttl: number | 'inherit';
  ageingS: number;
  learning: boolean;
  maxAddress: number;
  strictReserved: boolean;
  underlayMtu: number;
  /** Largest Ethernet frame (with its 14-byte header) that fits the underlay MTU unfragmented. */
  maxFrame: number;
  /** Default TAP MTU for this underlay: underlayMtu - 50 (IPv4) or - 70 (IPv6). */
  tapMtu: number;
  mac: number | undefined;
  sndbuf: number;
  rcvbuf: number;
  /** Empty = accept from anyone. */
  allowFrom: AllowCidr[];
  /** Source port pool, or undefined for the listening socket's port. */
  srcport: { min: number; max: number; sockets: number } | undefined;
  tos: number | 'inherit';
  df: 'set' | 'unset';
  gso: boolean;
  gro: boolean;
  busyPoll: number;
  flowCache: boolean;
  /** Undefined: the default (src/datapath.ts datapathDefault). */
  datapath: DatapathMode | undefined;
  tunnelGso: TunnelGsoMode;
}

export function resolveConfig(o: VtepOptions): VtepConfig {
  if (o === null || typeof o !== 'object') fail('options', ErrorCode.InvalidOption, 'expected an object with at least { vni }');
  const vni = checkVni(o.vni);
  const dstPort = checkPort(o.dstPort ?? DEFAULTS.dstPort, 'dstPort');
  const listenPort = checkPort(o.listenPort ?? dstPort, 'listenPort', 0);

  const families = new Set<4 | 6>();
  const remotes: RemoteSpec[] = [];
  if (o.remotes !== undefined && !Array.isArray(o.remotes)) fail('remotes', ErrorCode.InvalidAddress, 'expected an array of IP addresses');
  for (const r of o.remotes ?? []) {
    const spec = checkRemote(r, 'remote', dstPort);
    if (isMulticastIp(spec.address, spec.family)) {
      fail('remote', ErrorCode.InvalidAddress, `expected a unicast address, got multicast ${show(r)}; use group for multicast`);
    }
    families.add(spec.family);
    if (!remotes.some((x) => x.address === spec.address && x.port === spec.port)) remotes.push({ address: spec.address, port: spec.port });
  }
  let group: string | undefined;
  if (o.group !== undefined) {
    const g = checkIp(o.group, 'group');
    if (!isMulticastIp(g.address, g.family)) {
      fail('group', ErrorCode.InvalidAddress, `expected a multicast address (224.0.0.0/4 or ff00::/8), got ${show(o.group)}`);
    }
    families.add(g.family);
    group = g.address;
  }
  let local: string | undefined;
  if (o.local !== undefined) {
    const l = checkIp(o.local, 'local');
    if (isMulticastIp(l.address, l.family)) fail('local', ErrorCode.InvalidAddress, `expected a unicast address, got ${show(o.local)}`);
    families.add(l.family);
    local = l.address;
  }
  if (families.size > 1) {
    fail('remote', ErrorCode.FamilyMismatch, 'remotes, group and local must all be IPv4 or all IPv6 (as `ip link add type vxlan` requires)');
  }
  const family: 4 | 6 = families.has(6) ? 6 : 4;
  local ??= family === 6 ? '::' : '0.0.0.0';

  let dev: string | undefined;
  if (o.dev !== undefined) {
    if (typeof o.dev !== 'string' || !/^[^\s/:]{1,15}$/.test(o.dev)) fail('dev', ErrorCode.InvalidOption, `expected an interface name of 1 to 15 characters, got ${show(o.dev)}`);
    dev = o.dev;
  }

  const underlayMtu = checkInt(o.underlayMtu ?? DEFAULTS.underlayMtu, 'underlayMtu', UNDERLAY_MTU_MIN, UNDERLAY_MTU_MAX);
  const overhead = family === 6 ? VXLAN_OVERHEAD_V6 : VXLAN_OVERHEAD_V4;
  const headroom = family === 6 ? VXLAN_MTU_HEADROOM_V6 : VXLAN_MTU_HEADROOM_V4;

  if (o.allowFrom !== undefined && !Array.isArray(o.allowFrom)) fail('allowFrom', ErrorCode.InvalidAddress, 'expected an array of CIDRs');
  // `peers`: the configured remotes, each as a host prefix (the most common safe setting)
  const allowFrom: AllowCidr[] = [];
  for (const c of o.allowFrom ?? []) {
    if (c === 'peers') {
      if (remotes.length === 0) fail('allowFrom', ErrorCode.InvalidOption, '"peers" accepts the configured remotes, and there are none; give --remote, or CIDRs');
      for (const r of remotes) allowFrom.push(checkAllowCidr(r.address, 'allowFrom'));
    } else {
      allowFrom.push(checkAllowCidr(c, 'allowFrom'));
    }
  }

  let srcport: VtepConfig['srcport'];
  if (o.srcport !== undefined) {
    const m = typeof o.srcport === 'string' ? /^(\d+)-(\d+)$/.exec(o.srcport.trim()) : null;
    const min = m ? Number(m[1]) : NaN;
    const max = m ? Number(m[2]) : NaN;
    if (!m || min < 1 || max > 65535 || min > max) {
      fail('srcport', ErrorCode.InvalidPort, `expected a port range min-max within 1-65535 such as 49152-65535, got ${show(o.srcport)}`);
    }
    const sockets = checkInt(o.srcportSockets ?? 16, 'srcportSockets', 1, 256);
    srcport = { min, max, sockets: Math.min(sockets, max - min + 1) };
  }
  const tos = o.tos === 'inherit' ? 'inherit' : checkInt(o.tos ?? 0, 'tos', 0, 255, '"inherit" or an integer');
  if (o.datapath !== undefined && o.datapath !== 'process' && o.datapath !== 'inline') fail('datapath', ErrorCode.InvalidOption, `expected "process" or "inline", got ${show(o.datapath)}`);
  const t = o.tunnelGso ?? 'auto';
  if (t !== true && t !== false && t !== 'auto' && t !== 'on' && t !== 'off') fail('tunnelGso', ErrorCode.InvalidOption, `expected "auto", "on", "off" or a boolean, got ${show(t)}`);
  const tunnelGso: TunnelGsoMode = t === true ? 'on' : t === false ? 'off' : t;
  if (tunnelGso === 'on' && o.datapath === 'inline') fail('tunnelGso', ErrorCode.InvalidOption, 'tunnel GSO is sent by the datapath process: not with datapath "inline"');
  if (tunnelGso === 'on' && o.flowCache === false) fail('tunnelGso', ErrorCode.InvalidOption, 'tunnel GSO is sent by the flow cache: not with flowCache false');
  const df = o.df ?? 'unset';
  if (df !== 'set' && df !== 'unset') fail('df', ErrorCode.InvalidOption, `expected "set" or "unset", got ${show(df)}`);

  const reservedBits = o.reservedBits ?? DEFAULTS.reservedBits;
  if (reservedBits !== ReservedBitsPolicy.Ignore && reservedBits !== ReservedBitsPolicy.Strict) {
    fail('reservedBits', ErrorCode.InvalidOption, `expected "ignore" or "strict", got ${show(reservedBits)}`);
  }

  return {
    vni,
    family,
    remotes,
    group,
    local,
    dev,
    dstPort,
    listenPort,
    ttl: o.ttl === 'inherit' ? 'inherit' : checkInt(o.ttl ?? DEFAULTS.ttl, 'ttl', 0, 255, '"inherit" or an integer'),
    ageingS: checkInt(o.ageing ?? DEFAULTS.ageingS, 'ageing', 0, 2147483, 'whole seconds (0 = never)'),
    learning: checkBool(o.learning ?? DEFAULTS.learning, 'learning'),
    maxAddress: checkInt(o.maxAddress ?? DEFAULTS.maxAddress, 'maxAddress', 0, 2 ** 31 - 1, 'a count (0 = unlimited)'),
    strictReserved: reservedBits === ReservedBitsPolicy.Strict,
    underlayMtu,
    maxFrame: underlayMtu - overhead,
    tapMtu: underlayMtu - headroom,
    mac: o.mac === undefined ? undefined : checkUnicastMac(o.mac, 'mac'),
    sndbuf: checkInt(o.sndbuf ?? DEFAULTS.sndbuf, 'sndbuf', 1024, 2 ** 31 - 1, 'bytes'),
    rcvbuf: checkInt(o.rcvbuf ?? DEFAULTS.rcvbuf, 'rcvbuf', 1024, 2 ** 31 - 1, 'bytes'),
    allowFrom,
    srcport,
    tos,
    df,
    gso: checkBool(o.gso ?? true, 'gso'),
    gro: checkBool(o.gro ?? true, 'gro'),
    busyPoll: checkInt(o.busyPoll ?? 0, 'busyPoll', 0, 1_000_000, 'microseconds'),
    flowCache: checkBool(o.flowCache ?? true, 'flowCache'),
    datapath: o.datapath,
    tunnelGso,
  };
}
