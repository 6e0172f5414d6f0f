/**
 * Every option of the `uvtep` command, in one table: the flag, the attribute it sets, its parser,
 * default and help, whether it is repeatable, whether it belongs to one VTEP or to the whole
 * process, and where it goes (the VTEP's options, its TAP's, its control-plane part). The
 * commander options, the run options' type, the flag names in error messages, the config file's
 * keys and what `uvtep vtep add` inherits all derive from it; `specOf` turns one VTEP's run
 * options into what the Instance builds it from.
 */
import { Command, Option } from 'commander';
import { DEFAULTS, resolveConfig, type VtepOptions } from '../config.js';
import { TAP_MTU_MAX, TAP_MTU_MIN, type TapOptions } from '../device/tap.js';
import { ConfigError, ErrorCode, isSystemError } from '../errors.js';
import type { PlaneOptions, VtepSpec } from '../instance.js';
import { loadBinding } from '../native.js';
import { VXLAN_PORT_IANA, VXLAN_PORT_LINUX, VXLAN_VNI_MAX } from '../wire/vxlan.js';
import { advertiseAddress, ETCD_PASSWORD_ENV, ETCD_PREFIX_DEFAULT, ETCD_TTL_DEFAULT_S } from '../etcd.js';
import { FLANNEL_PREFIX_DEFAULT, FLANNEL_SUBNET_FILE_DEFAULT } from '../flannel.js';
/** Integers: digits only; anything else goes on as text so the range check can quote it. */
export function int(value: string): number | string {
  return /^-?\d+$/.test(value.trim()) ? Number(value) : value;
}

/** A repeatable option's values, in order. */
export function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

/** A number, or the word `inherit` (--tos, --ttl). */
export function tosArg(value: string): number | string {
  return value === 'inherit' ? value : int(value);
}

/** One option. `T` is its value's type; `D` whether it always has one (a default). */
export interface OptionDef<T = unknown, D extends boolean = boolean> {
  /** commander's flags: `--vni <n>`, `--no-learning`, `--persist`. */
  flags: string;
  help: string;
  parse?: (value: string, previous: T) => T;
  default?: T;
  /** How `--help` shows the default, when not the value itself. */
  defaultHelp?: string;
  choices?: readonly string[];
  /** Of one VTEP (a `vteps:` entry, `uvtep vtep add`), or of the whole process. */
  scope: 'vtep' | 'process';
  /** Makes a VTEP what it is: `uvtep vtep add` never takes it from the running process. */
  identity?: true;
  /** Given several times (a list in the config file). */
  repeatable?: true;
  /** The help of a `--no-...` form beside the one taking a value (`--control <path>`, `--no-control`). */
  negate?: string;
  /** Where `specOf` puts the value: the VTEP's options, its TAP's, its control-plane part. */
  vtep?: keyof VtepOptions;
  tap?: keyof TapOptions;
  plane?: keyof PlaneOptions;
  /** Other names the library's errors give it (resolved config fields). */
  aka?: readonly string[];
  /** Type witness only. */
  readonly __has?: D;
}

function def<T>(d: OptionDef<T> & { default: T }): OptionDef<T, true>;
function def<T>(d: OptionDef<T>): OptionDef<T, false>;
function def<T>(d: OptionDef<T>): OptionDef<T> {
  return d;
}
/** A `--no-...` switch: true unless given. */
const off = (flags: string, help: string, where: Partial<OptionDef<boolean>>, scope: 'vtep' | 'process' = 'vtep') => def<boolean>({ flags, help, scope, default: true, ...where });

/** The table, in the order of `uvtep --help`. */
export const OPTIONS = {
  vni: def<number | string>({ flags: '--vni <n>', help: `VXLAN Network Identifier, 0-${VXLAN_VNI_MAX} (required)`, parse: int, scope: 'vtep', identity: true, vtep: 'vni' }),
  remote: def<string[]>({ flags: '--remote <ip>', help: 'remote VTEP for broadcast/unknown traffic; repeat for head-end replication (ip or ip:port, [ipv6]:port)', parse: collect, repeatable: true, scope: 'vtep', identity: true, vtep: 'remotes' }),
  group: def<string>({ flags: '--group <ip>', help: 'multicast group for broadcast/unknown traffic (needs --dev)', scope: 'vtep', identity: true, vtep: 'group' }),
  local: def<string>({ flags: '--local <ip>', help: "local underlay address to bind (default: any address of the remotes' family)", scope: 'vtep', vtep: 'local' }),
  dev: def<string>({ flags: '--dev <ifname>', help: 'underlay device: multicast is joined on it; its MTU sets the default --mtu', scope: 'vtep', vtep: 'dev' }),
  dstport: def<number | string>({ flags: '--dstport <port>', help: `UDP destination port (${VXLAN_PORT_IANA} IANA, ${VXLAN_PORT_LINUX} Linux default)`, parse: int, default: DEFAULTS.dstPort, scope: 'vtep', vtep: 'dstPort' }),
  listenPort: def<number | string>({ flags: '--listen-port <port>', help: 'UDP port to listen on (default: --dstport, as the kernel)', parse: int, scope: 'vtep', vtep: 'listenPort' }),
  ttl: def<number | string>({ flags: '--ttl <n|inherit>', help: 'TTL of outer packets, 1-255, or inherit from the inner IP header (default: system default; 1 for multicast)', parse: tosArg, scope: 'vtep', vtep: 'ttl' }),
  ageing: def<number | string>({ flags: '--ageing <s>', help: 'seconds before a learned FDB entry expires, 0 = never', parse: int, default: DEFAULTS.ageingS, scope: 'vtep', vtep: 'ageing', aka: ['ageingS'] }),
  learning: off('--no-learning', 'do not learn inner source MACs (static FDB only)', { vtep: 'learning' }),
  maxAddress: def<number | string>({ flags: '--max-address <n>', help: 'cap on FDB entries, 0 = unlimited', parse: int, default: DEFAULTS.maxAddress, scope: 'vtep', vtep: 'maxAddress' }),
  reservedBits: def<string>({ flags: '--reserved-bits <policy>', help: 'received reserved bits: ignore (RFC 7348) or strict (drop, as Linux)', default: DEFAULTS.reservedBits, scope: 'vtep', vtep: 'reservedBits', aka: ['strictReserved'] }),
  srcport: def<string>({ flags: '--srcport <min-max>', help: 'outer UDP source ports: one per inner flow from this range (RFC 7348 recommends 49152-65535); default: one ephemeral port', scope: 'vtep', vtep: 'srcport', aka: ['srcportSockets'] }),
  tos: def<number | string>({ flags: '--tos <n|inherit>', help: 'outer TOS / traffic class, 0-255, or inherit from the inner IP header', parse: tosArg, default: 0, scope: 'vtep', vtep: 'tos' }),
  df: def<string>({ flags: '--df <set|unset>', help: 'IPv4 DF bit of outer packets (as ip link ... df)', default: 'unset', scope: 'vtep', vtep: 'df' }),
  tso: off('--no-tso', 'no TCP/UDP segmentation offload on the TAP: the kernel segments and checksums before uvtep reads', { tap: 'tso' }),
  gro: off('--no-gro', 'no receive coalescing: one TAP write per frame, no UDP GRO on the socket', { vtep: 'gro', tap: 'gro' }),
  ioUring: off('--no-io-uring', 'one read() or writev() per TAP frame instead of one io_uring_enter per batch of reads or writes (io_uring is used only where the kernel and seccomp allow it)', { tap: 'ioUring' }),
  gso: off('--no-gso', 'no UDP GSO on send: one datagram per message (still batched with sendmmsg)', { vtep: 'gso' }),
  flowCache: off('--no-flow-cache', 'no native flow cache: every packet goes through the TypeScript path (by default, batches that only repeat forwarding decisions already made are forwarded natively, without waking JS)', { vtep: 'flowCache' }),
  datapath: def<string>({ flags: '--datapath <where>', help: 'where the flow cache forwards: process (a small native process of its own reads the TAP and the socket and hands JS only what the cache does not cover; the default on Linux) or inline (in this process, through its event loop)', choices: ['process', 'inline'], defaultHelp: 'process where uvtep-datapath is built', scope: 'vtep', vtep: 'datapath' }),
  tunnelGso: def<string>({ flags: '--tunnel-gso <mode>', help: 'send TCP super-frames whole as tunnel GSO, as the kernel VTEP does (Linux 6.17+, the datapath process), so that a kernel VTEP on this host takes them without cutting them apart. They leave through a BPF program, past netfilter OUTPUT/POSTROUTING, IPsec policies and cgroup BPF programs: auto sends them only while none of these is there (checked every second; stats say why not), on always, off never (docs/design.md)', choices: ['auto', 'on', 'off'], default: 'auto', scope: 'vtep', vtep: 'tunnelGso' }),
  allowFrom: def<string[]>({ flags: '--allow-from <cidr|peers>', help: 'accept datagrams only from these underlay sources (CIDR or address; peers = the --remote addresses); repeatable (default: anyone, as Linux)', parse: collect, repeatable: true, scope: 'vtep', identity: true, vtep: 'allowFrom' }),
  underlayMtu: def<number | string>({ flags: '--underlay-mtu <n>', help: 'underlay MTU (default: MTU of --dev, else 1500)', parse: int, scope: 'vtep', vtep: 'underlayMtu' }),
  sndbuf: def<number | string>({ flags: '--sndbuf <bytes>', help: 'UDP socket send buffer (SO_SNDBUF)', parse: int, default: DEFAULTS.sndbuf, scope: 'vtep', vtep: 'sndbuf' }),
  rcvbuf: def<number | string>({ flags: '--rcvbuf <bytes>', help: 'UDP socket receive buffer (SO_RCVBUF)', parse: int, default: DEFAULTS.rcvbuf, scope: 'vtep', vtep: 'rcvbuf' }),
  name: def<string>({ flags: '--name <ifname>', help: 'TAP device name (default: uvtep0, uvtep1, ... chosen by the kernel)', scope: 'vtep', identity: true, tap: 'name' }),
  mtu: def<number | string>({ flags: '--mtu <n>', help: `TAP MTU, ${TAP_MTU_MIN}-${TAP_MTU_MAX} (default: underlay MTU - 50 for IPv4, - 70 for IPv6: 1450 on 1500)`, parse: int, scope: 'vtep', identity: true, tap: 'mtu' }),
  mac: def<string>({ flags: '--mac <mac>', help: 'TAP MAC address (default: random, locally administered)', scope: 'vtep', identity: true, tap: 'mac' }),
  address: def<string[]>({ flags: '--address <cidr>', help: 'address for the TAP, e.g. 10.0.0.106/24 or 2001:db8:1::1/64; repeatable', parse: collect, repeatable: true, scope: 'vtep', identity: true, tap: 'addresses' }),
  bridge: def<string>({ flags: '--bridge <name>', help: 'add the TAP as a port of this existing Linux bridge (like brctl addif)', scope: 'vtep', identity: true, tap: 'bridge' }),
  persist: def<boolean>({ flags: '--persist', help: 'keep the TAP device after the VTEP stops', scope: 'vtep', identity: true, tap: 'persist' }),
  etcdAllow: def<boolean>({ flags: '--etcd-allow', help: 'with --etcd: accept datagrams only from the members of this VNI (and --allow-from)', scope: 'vtep', plane: 'allow' }),
  etcdMacs: def<boolean>({ flags: '--etcd-macs', help: "with --etcd: publish the MACs (and their IPs) behind the TAP, and install the other members' as static FDB entries: known unicast is never flooded", scope: 'vtep', plane: 'macs' }),
  proxy: def<boolean>({ flags: '--proxy', help: 'with --etcd-macs: answer ARP requests and IPv6 neighbour solicitations for known addresses on the TAP instead of flooding them (as ip link ... proxy)', scope: 'vtep', plane: 'proxy' }),
  // the process's
  transport: def<string>({ flags: '--transport <kind>', help: 'UDP endpoint: native (recvmmsg/sendmmsg with UDP GSO/GRO, the default on Linux) or dgram (node:dgram, the portable fallback)', default: 'auto', defaultHelp: 'native where the addon is built', scope: 'process' }),
  busyPoll: def<number | string>({ flags: '--busy-poll <us>', help: 'after a batch, poll the TAP and the socket for up to this many microseconds before sleeping (lower latency, more CPU)', parse: int, default: 0, scope: 'process', vtep: 'busyPoll' }),
  control: def<string | boolean>({ flags: '--control <path>', help: 'control socket for uvtep fdb/stats/vtep (default: /run/uvtep/<name of the first VTEP>.sock; in a named netns /run/uvtep/netns/<ns>/<name>.sock)', negate: 'do not open a control socket', scope: 'process' }),
  metrics: def<string>({ flags: '--metrics <[host:]port>', help: 'serve Prometheus metrics at http://host:port/metrics (a bare port binds 127.0.0.1)', scope: 'process' }),
  config: def<string>({ flags: '--config <file>', help: 'read options from a JSON or YAML file (keys are the long option names; a vteps: list for several VTEPs); command-line options win', scope: 'process' }),
  logLevel: def<string>({ flags: '--log-level <level>', help: 'log level', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', scope: 'process' }),
  etcd: def<string[]>({ flags: '--etcd <url>', help: 'etcd v3 endpoints (http://host:2379 or https://...; repeat or comma-separate): VTEPs of a VNI find each other there and --remote becomes optional; each advertises --local (or the address of --dev)', parse: collect, repeatable: true, scope: 'process' }),
  etcdPrefix: def<string>({ flags: '--etcd-prefix <prefix>', help: 'etcd key prefix', default: ETCD_PREFIX_DEFAULT, scope: 'process' }),
  etcdTtl: def<number | string>({ flags: '--etcd-ttl <s>', help: 'etcd lease TTL: a crashed host leaves the others this long after its last keepalive', parse: int, default: ETCD_TTL_DEFAULT_S, scope: 'process' }),
  etcdCacert: def<string>({ flags: '--etcd-cacert <file>', help: 'etcd TLS: CA certificate of the servers (as etcdctl --cacert)', scope: 'process' }),
  etcdCert: def<string>({ flags: '--etcd-cert <file>', help: 'etcd TLS: client certificate (with --etcd-key)', scope: 'process' }),
  etcdKey: def<string>({ flags: '--etcd-key <file>', help: 'etcd TLS: client key', scope: 'process' }),
  etcdUser: def<string>({ flags: '--etcd-user <name>', help: `etcd user; the password from the environment variable ${ETCD_PASSWORD_ENV} or --etcd-password-file, never the command line`, scope: 'process' }),
  etcdPasswordFile: def<string>({ flags: '--etcd-password-file <file>', help: 'etcd password, in a file (first line)', scope: 'process' }),
  flannel: def<boolean>({ flags: '--flannel', help: 'join a flannel network (etcd v3, vxlan backend) as flanneld would: lease a subnet, TAP flannel.<VNI> with VNI and port from the network config, FDB, neighbour and route per other host; needs --etcd and --local (or --dev)', scope: 'process' }),
  flannelPrefix: def<string>({ flags: '--flannel-prefix <prefix>', help: "with --flannel: the network's etcd prefix (flanneld's --etcd-prefix)", default: FLANNEL_PREFIX_DEFAULT, scope: 'process' }),
  subnetFile: def<string>({ flags: '--subnet-file <file>', help: "with --flannel: where the leased subnet is written for flannel's CNI plugin", default: FLANNEL_SUBNET_FILE_DEFAULT, scope: 'process' }),
  ipMasq: def<boolean>({ flags: '--ip-masq', help: 'with --flannel: FLANNEL_IPMASQ=true in the subnet file (uvtep installs no masquerade rule: add it as for flanneld --ip-masq)', scope: 'process' }),
  etcdNode: def<string>({ flags: '--etcd-node <name>', help: "this host's node name in etcd (default: the host name); a restart of the same node takes its keys over, another node claiming its address is refused", scope: 'process' }),
};

type Table = typeof OPTIONS;
type ValueOf<D> = D extends { default?: infer T } ? T : never;
type Always<K extends keyof Table> = NonNullable<Table[K]['__has']> extends true ? K : never;
/** What commander gives the main command: an attribute per option of the table. */
export type RunOpts = { [K in keyof Table as Always<K>]: ValueOf<Table[K]> } & { [K in keyof Table as K extends Always<K> ? never : K]?: ValueOf<Table[K]> };
export type OptionKey = keyof Table;

const ENTRIES = Object.entries(OPTIONS) as Array<[OptionKey, OptionDef]>;
/** The attributes of one scope. */
export const keysOf = (scope: 'vtep' | 'process'): OptionKey[] => ENTRIES.filter(([, d]) => d.scope === scope).map(([k]) => k);
/** Options that make a VTEP what it is: `uvtep vtep add` never takes them from the running process. */
export const IDENTITY: readonly OptionKey[] = ENTRIES.filter(([, d]) => d.identity === true).map(([k]) => k);
/** Options given several times (lists in the config file). */
export const REPEATABLE: ReadonlySet<string> = new Set(ENTRIES.filter(([, d]) => d.repeatable === true).map(([k]) => k));
/** Options of the process, not of one VTEP: never in a `vteps:` entry or `uvtep vtep add`. */
export const PROCESS_OPTIONS: ReadonlySet<string> = new Set([...keysOf('process'), 'version']);

/** Option and library names -> the command-line flag, for error messages. */
export const FLAG: Readonly<Record<string, string>> = Object.fromEntries(
  ENTRIES.flatMap(([k, d]) => {
    const flag = d.flags.split(' ')[0]!;
    return [k, d.vtep, d.tap, ...(d.aka ?? [])].filter((n): n is string => n !== undefined).map((n) => [n, flag]);
  }),
);

/**
 * The commander options of one scope (or every option); `defaults` false for `uvtep vtep add`
 * (what it does not give comes from the running process).
 */
export function commanderOptions(scope: 'vtep' | 'process' | 'all', defaults: boolean): Option[] {
  const out: Option[] = [];
  for (const [, d] of ENTRIES) {
    if (scope !== 'all' && d.scope !== scope) continue;
    const o = new Option(d.flags, d.help);
    if (d.parse !== undefined) o.argParser(d.parse as (v: string, p: unknown) => unknown);
    if (d.choices !== undefined) o.choices(d.choices);
    if (defaults && d.default !== undefined && !d.flags.startsWith('--no-')) o.default(d.default, d.defaultHelp);
    out.push(o);
    if (d.negate !== undefined) out.push(new Option(`--no-${d.flags.slice(2).split(' ')[0]!}`, d.negate));
  }
  return out;
}

/** A command that knows only the per-VTEP options (checks the values of a `vtep.add` request). */
export function vtepOptionsCommand(): Command {
  const c = new Command('vtep-options');
  for (const o of commanderOptions('vtep', false)) c.addOption(o);
  return c;
}

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
  // each value where the table puts it (the values are checked by resolveConfig and the TAP)
  const vtep: Record<string, unknown> = {};
  const tap: Record<string, unknown> = {};
  const plane: Record<string, unknown> = {};
  for (const [k, d] of ENTRIES) {
    const v = o[k];
    if (v === undefined) continue;
    if (d.vtep !== undefined) vtep[d.vtep] = v;
    if (d.tap !== undefined) tap[d.tap] = v;
    if (d.plane !== undefined && v === true) plane[d.plane] = true;
  }
  if (underlayMtu !== undefined) vtep.underlayMtu = underlayMtu;
  const config = resolveConfig(vtep as unknown as VtepOptions); // every option error before the system is touched
  const withEtcd = (o.etcd ?? []).length > 0;
  for (const k of ['etcdAllow', 'etcdMacs', 'proxy'] as const) {
    if (o[k] === true && !withEtcd) throw new ConfigError(ErrorCode.InvalidOption, k, `${k}: needs --etcd <url>: it works from what the members publish there`);
  }
  if (o.proxy === true && o.etcdMacs !== true) throw new ConfigError(ErrorCode.InvalidOption, 'proxy', 'proxy: answers from the MAC routes of --etcd-macs; give --etcd-macs too');
  if (withEtcd) advertiseAddress(config, `VNI ${config.vni}: `, '--etcd');
  tap.mtu ??= config.tapMtu;
  return { vtep: vtep as unknown as VtepOptions, tap: tap as TapOptions, ...(withEtcd ? { plane: plane as PlaneOptions } : {}) };
}
