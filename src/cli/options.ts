/**
 * The options of one VTEP, as the main command, `uvtep vtep add`, a `vteps:` entry and a
 * `vtep.add` request take them, and what the Instance builds a VTEP from (`specOf`).
 */
import { Command, Option } from 'commander';
import { DEFAULTS, resolveConfig, type VtepOptions } from '../config.js';
import { TAP_MTU_MAX, TAP_MTU_MIN } from '../device/tap.js';
import { ConfigError, ErrorCode, isSystemError } from '../errors.js';
import type { VtepSpec } from '../instance.js';
import { loadBinding } from '../native.js';
import { VXLAN_PORT_IANA, VXLAN_PORT_LINUX, VXLAN_VNI_MAX } from '../wire/vxlan.js';
import { advertiseAddress, type EtcdOptionValues } from '../etcd.js';

/** Integers: digits only; anything else goes on as text so the range check can quote it. */
export function int(value: string): number | string {
  return /^-?\d+$/.test(value.trim()) ? Number(value) : value;
}

export function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

/** What commander gives the main command (the etcd connection options as `EtcdOptionValues` names them). */
export interface RunOpts extends EtcdOptionValues {
  vni?: number | string;
  remote?: string[];
  group?: string;
  local?: string;
  dev?: string;
  dstport: number | string;
  listenPort?: number | string;
  ttl?: number | string;
  ageing: number | string;
  learning: boolean;
  maxAddress: number | string;
  reservedBits: string;
  underlayMtu?: number | string;
  name?: string;
  mtu?: number | string;
  mac?: string;
  address?: string[];
  bridge?: string;
  persist?: boolean;
  allowFrom?: string[];
  sndbuf?: number | string;
  rcvbuf?: number | string;
  srcport?: string;
  tos?: number | string;
  df: string;
  control: string | boolean;
  gso: boolean;
  gro: boolean;
  tso: boolean;
  transport: string;
  busyPoll: number | string;
  metrics?: string;
  config?: string;
  logLevel: string;
  etcd?: string[];
  etcdPrefix: string;
  etcdTtl: number | string;
  etcdAllow?: boolean;
  etcdMacs?: boolean;
  proxy?: boolean;
  flannel?: boolean;
  flannelPrefix: string;
  subnetFile: string;
  ipMasq?: boolean;
}

/** A number, or the word `inherit` (--tos, --ttl). */
export function tosArg(value: string): number | string {
  return value === 'inherit' ? value : int(value);
}

/**
 * The options of one VTEP, as the main command and `uvtep vtep add` take them; `defaults` false
 * for `vtep add` (what it does not give comes from the running process).
 */
export function vtepOptionList(defaults: boolean): Option[] {
  const d = <T>(o: Option, v: T, desc?: string): Option => (defaults ? o.default(v, desc) : o);
  return [
    new Option('--vni <n>', `VXLAN Network Identifier, 0-${VXLAN_VNI_MAX} (required)`).argParser(int),
    new Option('--remote <ip>', 'remote VTEP for broadcast/unknown traffic; repeat for head-end replication (ip or ip:port, [ipv6]:port)').argParser(collect),
    new Option('--group <ip>', 'multicast group for broadcast/unknown traffic (needs --dev)'),
    new Option('--local <ip>', "local underlay address to bind (default: any address of the remotes' family)"),
    new Option('--dev <ifname>', 'underlay device: multicast is joined on it; its MTU sets the default --mtu'),
    d(new Option('--dstport <port>', `UDP destination port (${VXLAN_PORT_IANA} IANA, ${VXLAN_PORT_LINUX} Linux default)`).argParser(int), DEFAULTS.dstPort),
    new Option('--listen-port <port>', 'UDP port to listen on (default: --dstport, as the kernel)').argParser(int),
    new Option('--ttl <n|inherit>', 'TTL of outer packets, 1-255, or inherit from the inner IP header (default: system default; 1 for multicast)').argParser(tosArg),
    d(new Option('--ageing <s>', 'seconds before a learned FDB entry expires, 0 = never').argParser(int), DEFAULTS.ageingS),
    new Option('--no-learning', 'do not learn inner source MACs (static FDB only)'),
    d(new Option('--max-address <n>', 'cap on FDB entries, 0 = unlimited').argParser(int), DEFAULTS.maxAddress),
    d(new Option('--reserved-bits <policy>', 'received reserved bits: ignore (RFC 7348) or strict (drop, as Linux)'), DEFAULTS.reservedBits),
    new Option('--srcport <min-max>', 'outer UDP source ports: one per inner flow from this range (RFC 7348 recommends 49152-65535); default: one ephemeral port'),
    d(new Option('--tos <n|inherit>', 'outer TOS / traffic class, 0-255, or inherit from the inner IP header').argParser(tosArg), 0),
    d(new Option('--df <set|unset>', 'IPv4 DF bit of outer packets (as ip link ... df)'), 'unset'),
    new Option('--no-tso', 'no TCP/UDP segmentation offload on the TAP: the kernel segments and checksums before uvtep reads'),
    new Option('--no-gro', 'no receive coalescing: one TAP write per frame, no UDP GRO on the socket'),
    new Option('--no-gso', 'no UDP GSO on send: one datagram per message (still batched with sendmmsg)'),
    new Option('--allow-from <cidr|peers>', 'accept datagrams only from these underlay sources (CIDR or address; peers = the --remote addresses); repeatable (default: anyone, as Linux)').argParser(collect),
    new Option('--underlay-mtu <n>', 'underlay MTU (default: MTU of --dev, else 1500)').argParser(int),
    d(new Option('--sndbuf <bytes>', 'UDP socket send buffer (SO_SNDBUF)').argParser(int), DEFAULTS.sndbuf),
    d(new Option('--rcvbuf <bytes>', 'UDP socket receive buffer (SO_RCVBUF)').argParser(int), DEFAULTS.rcvbuf),
    new Option('--name <ifname>', 'TAP device name (default: uvtep0, uvtep1, ... chosen by the kernel)'),
    new Option('--mtu <n>', `TAP MTU, ${TAP_MTU_MIN}-${TAP_MTU_MAX} (default: underlay MTU - 50 for IPv4, - 70 for IPv6: 1450 on 1500)`).argParser(int),
    new Option('--mac <mac>', 'TAP MAC address (default: random, locally administered)'),
    new Option('--address <cidr>', 'address for the TAP, e.g. 10.0.0.106/24 or 2001:db8:1::1/64; repeatable').argParser(collect),
    new Option('--bridge <name>', 'add the TAP as a port of this existing Linux bridge (like brctl addif)'),
    new Option('--persist', 'keep the TAP device after the VTEP stops'),
    new Option('--etcd-allow', 'with --etcd: accept datagrams only from the members of this VNI (and --allow-from)'),
    new Option('--etcd-macs', 'with --etcd: publish the MACs (and their IPs) behind the TAP, and install the other members\' as static FDB entries: known unicast is never flooded'),
    new Option('--proxy', 'with --etcd-macs: answer ARP requests and IPv6 neighbour solicitations for known addresses on the TAP instead of flooding them (as ip link ... proxy)'),
  ];
}

/** A command that knows only the per-VTEP options (checks the values of a `vtep.add` request). */
export function vtepOptionsCommand(): Command {
  const c = new Command('vtep-options');
  for (const o of vtepOptionList(false)) c.addOption(o);
  return c;
}

/** Options that make a VTEP what it is: `uvtep vtep add` never takes them from the running process. */
export const IDENTITY: ReadonlyArray<keyof RunOpts> = ['vni', 'name', 'remote', 'group', 'address', 'bridge', 'mac', 'mtu', 'persist', 'allowFrom'];

/**
 * One VTEP's run options -> what the Instance builds it from. Throws ConfigError naming the
 * option; touches nothing but reads the MTU of --dev.
 */
export function specOf(o: RunOpts): VtepSpec {
  if (o.vni === undefined) throw new ConfigError(ErrorCode.InvalidVni, 'vni', 'vni: required: the VXLAN Network Identifier, 0-16777215');
  if (o.group !== undefined && o.dev === undefined) {
    throw new ConfigError(ErrorCode.InvalidOption, 'group', 'group: needs --dev <ifname>: the underlay device to join the multicast group on (as ip link add ... group requires)');
  }
  // Underlay MTU: from --dev when given (as the kernel derives the vxlan MTU from its lower device).
  let underlayMtu = o.underlayMtu;
  if (underlayMtu === undefined && o.dev !== undefined) {
    try {
      underlayMtu = loadBinding().getMtu(o.dev);
    } catch (e) {
      if (isSystemError(e) && e.code === 'ENODEV') throw new ConfigError(ErrorCode.InvalidOption, 'dev', `dev: no interface named ${JSON.stringify(o.dev)}`);
      throw e;
    }
  }
  const vtep: VtepOptions = {
    vni: o.vni as number,
    remotes: o.remote ?? [],
    dstPort: o.dstport as number,
    ageing: o.ageing as number,
    learning: o.learning,
    maxAddress: o.maxAddress as number,
    reservedBits: o.reservedBits as NonNullable<VtepOptions['reservedBits']>,
    ...(o.group !== undefined ? { group: o.group } : {}),
    ...(o.local !== undefined ? { local: o.local } : {}),
    ...(o.dev !== undefined ? { dev: o.dev } : {}),
    ...(o.listenPort !== undefined ? { listenPort: o.listenPort as number } : {}),
    ...(o.ttl !== undefined ? { ttl: o.ttl as number | 'inherit' } : {}),
    ...(underlayMtu !== undefined ? { underlayMtu: underlayMtu as number } : {}),
    ...(o.allowFrom !== undefined ? { allowFrom: o.allowFrom } : {}),
    sndbuf: o.sndbuf as number,
    rcvbuf: o.rcvbuf as number,
    ...(o.srcport !== undefined ? { srcport: o.srcport } : {}),
    tos: o.tos as number | 'inherit',
    df: o.df as 'set' | 'unset',
    gso: o.gso,
    gro: o.gro,
    busyPoll: o.busyPoll as number,
  };
  const config = resolveConfig(vtep); // every option error before the system is touched
  const withEtcd = (o.etcd ?? []).length > 0;
  for (const [k, flag] of [['etcdAllow', 'etcd-allow'], ['etcdMacs', 'etcd-macs'], ['proxy', 'proxy']] as const) {
    if (o[k] === true && !withEtcd) throw new ConfigError(ErrorCode.InvalidOption, flag, `${flag}: needs --etcd <url>: it works from what the members publish there`);
  }
  if (o.proxy === true && o.etcdMacs !== true) throw new ConfigError(ErrorCode.InvalidOption, 'proxy', 'proxy: answers from the MAC routes of --etcd-macs; give --etcd-macs too');
  if (withEtcd) advertiseAddress(config, `VNI ${config.vni}: `, '--etcd');
  return {
    vtep,
    ...(withEtcd ? { plane: { ...(o.etcdAllow === true ? { allow: true } : {}), ...(o.etcdMacs === true ? { macs: true } : {}), ...(o.proxy === true ? { proxy: true } : {}) } } : {}),
    tap: {
      mtu: (o.mtu as number | undefined) ?? config.tapMtu,
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.mac !== undefined ? { mac: o.mac } : {}),
      ...(o.address !== undefined ? { addresses: o.address } : {}),
      ...(o.bridge !== undefined ? { bridge: o.bridge } : {}),
      ...(o.persist ? { persist: true } : {}),
      gro: o.gro,
      tso: o.tso,
    },
  };
}

