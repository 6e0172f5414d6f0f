/**
 * The `uvtep` command: options mirror `ip link add ... type vxlan` and `brctl addif`.
 * The only module that calls process.exit or installs signal handlers.
 *
 * Exit codes: 0 clean stop; 1 system error (not root, no /dev/net/tun, TAP removed...);
 * 2 bad option (the message names the option and what it accepts).
 */
import { Command, CommanderError, Option } from 'commander';
import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { LogSink } from './log-sink.js';
import { DEFAULTS, resolveConfig, type VtepConfig, type VtepOptions } from './config.js';
import { TAP_MTU_MAX, TAP_MTU_MIN } from './port/tap.js';
import { ConfigError, ErrorCode, isSystemError, UvtepError } from './errors.js';
import type { TransportKind } from './create.js';
import { checkSpecs, Instance, type HostedVtep, type VtepSpec } from './instance.js';
import { checkDgramOptions } from './transport/dgram.js';
import { loadBinding } from './native.js';
import { formatMac } from './wire/ethernet.js';
import { VXLAN_PORT_IANA, VXLAN_PORT_LINUX, VXLAN_VNI_MAX } from './wire/vxlan.js';
import type { VtepStats } from './vtep.js';
import { runDemo } from './lab/demo.js';
import { ControlServer, controlPath, type ControlTarget } from './control.js';
import { metricsRegistry, MetricsServer, parseMetricsAddress } from './metrics.js';
import * as ops from './ops.js';
import { configMessage, EXIT_OK, EXIT_SYSTEM, EXIT_USAGE, FLAG } from './ops.js';
import { loadConfigFile, optionValues } from './config-file.js';
import { FLANNEL_LEASE_TTL_S, FLANNEL_PREFIX_DEFAULT, FLANNEL_SUBNET_FILE_DEFAULT, FlannelMember, type FlannelNetwork } from './flannel.js';
import { advertiseAddress, ETCD_PASSWORD_ENV, ETCD_PREFIX_DEFAULT, ETCD_TTL_DEFAULT_S, EtcdAgent, etcdPlane, resolveEtcdSettings, type EtcdSettings } from './etcd.js';

/** A stop (SIGTERM/SIGINT) completes within this, whatever clients hold open. */
const STOP_DEADLINE_MS = 2000;

/** Integers: digits only; anything else goes on as text so the range check can quote it. */
function int(value: string): number | string {
  return /^-?\d+$/.test(value.trim()) ? Number(value) : value;
}

function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

interface RunOpts {
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
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  etcdNode?: string;
  etcdAllow?: boolean;
  etcdMacs?: boolean;
  proxy?: boolean;
  flannel?: boolean;
  flannelPrefix: string;
  subnetFile: string;
  ipMasq?: boolean;
}

/** A number, or the word `inherit` (--tos, --ttl). */
function tosArg(value: string): number | string {
  return value === 'inherit' ? value : int(value);
}

/**
 * The options of one VTEP, as the main command and `uvtep vtep add` take them; `defaults` false
 * for `vtep add` (what it does not give comes from the running process).
 */
function vtepOptionList(defaults: boolean): Option[] {
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
function vtepOptionsCommand(): Command {
  const c = new Command('vtep-options');
  for (const o of vtepOptionList(false)) c.addOption(o);
  return c;
}

/** What the main command does with its checked options: run (the default), or hand them over (SIGHUP). */
interface RunHook {
  run: (o: RunOpts, entries: Array<Record<string, unknown>> | undefined) => Promise<number>;
  /** A bad option or config file: the message (without `uvtep: error: `); the default prints it and exits 2. */
  usage: (message: string) => number;
}

/** The command line the process started with (SIGHUP reads it and the config file again). */
let startArgv: string[] = [];

export function buildProgram(hook: RunHook = { run: (o, e) => run(o, e), usage: usageError }): Command {
  const program = new Command('uvtep');
  program
    .description(
      'Userspace VXLAN tunnel endpoint (RFC 7348): a TAP device whose frames travel to remote VTEPs in UDP.\n' +
        'Interoperates with the Linux kernel VTEP (ip link add ... type vxlan). One process hosts any\n' +
        'number of VTEPs (a vteps: list in --config, or uvtep vtep add); VTEPs on one UDP port share its socket.\n' +
        'VTEPs can find each other through etcd (--etcd) instead of --remote lists, or join a flannel network (--flannel).\n\n' +
        'Example: uvtep --vni 1 --remote 172.31.0.107 --address 10.0.0.106/24',
    )
    .version('0.1.0')
    .showHelpAfterError('(run uvtep --help for every option)');
  for (const o of vtepOptionList(true)) program.addOption(o);
  program
    .addOption(new Option('--transport <kind>', 'UDP endpoint: native (recvmmsg/sendmmsg with UDP GSO/GRO, the default on Linux) or dgram (node:dgram, the portable fallback)').default('auto', 'native where the addon is built'))
    .addOption(new Option('--busy-poll <us>', 'after a batch, poll the TAP and the socket for up to this many microseconds before sleeping (lower latency, more CPU)').default(0).argParser(int))
    .addOption(new Option('--control <path>', 'control socket for uvtep fdb/stats/vtep (default: /run/uvtep/<name of the first VTEP>.sock; in a named netns /run/uvtep/netns/<ns>/<name>.sock)'))
    .addOption(new Option('--no-control', 'do not open a control socket'))
    .addOption(new Option('--metrics <[host:]port>', 'serve Prometheus metrics at http://host:port/metrics (a bare port binds 127.0.0.1)'))
    .addOption(new Option('--config <file>', 'read options from a JSON or YAML file (keys are the long option names; a vteps: list for several VTEPs); command-line options win'))
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--etcd <url>', 'etcd v3 endpoints (http://host:2379 or https://...; repeat or comma-separate): VTEPs of a VNI find each other there and --remote becomes optional; each advertises --local (or the address of --dev)').argParser(collect))
    .addOption(new Option('--etcd-prefix <prefix>', 'etcd key prefix').default(ETCD_PREFIX_DEFAULT))
    .addOption(new Option('--etcd-ttl <s>', 'etcd lease TTL: a crashed host leaves the others this long after its last keepalive').default(ETCD_TTL_DEFAULT_S).argParser(int))
    .addOption(new Option('--etcd-cacert <file>', 'etcd TLS: CA certificate of the servers (as etcdctl --cacert)'))
    .addOption(new Option('--etcd-cert <file>', 'etcd TLS: client certificate (with --etcd-key)'))
    .addOption(new Option('--etcd-key <file>', 'etcd TLS: client key'))
    .addOption(new Option('--etcd-user <name>', `etcd user; the password from the environment variable ${ETCD_PASSWORD_ENV} or --etcd-password-file, never the command line`))
    .addOption(new Option('--etcd-password-file <file>', 'etcd password, in a file (first line)'))
    .addOption(new Option('--flannel', 'join a flannel network (etcd v3, vxlan backend) as flanneld would: lease a subnet, TAP flannel.<VNI> with VNI and port from the network config, FDB, neighbour and route per other host; needs --etcd and --local (or --dev)'))
    .addOption(new Option('--flannel-prefix <prefix>', 'with --flannel: the network\'s etcd prefix (flanneld\'s --etcd-prefix)').default(FLANNEL_PREFIX_DEFAULT))
    .addOption(new Option('--subnet-file <file>', 'with --flannel: where the leased subnet is written for flannel\'s CNI plugin').default(FLANNEL_SUBNET_FILE_DEFAULT))
    .addOption(new Option('--ip-masq', 'with --flannel: FLANNEL_IPMASQ=true in the subnet file (uvtep installs no masquerade rule: add it as for flanneld --ip-masq)'))
    .addOption(new Option('--etcd-node <name>', 'this host\'s node name in etcd (default: the host name); a restart of the same node takes its keys over, another node claiming its address is refused'))
    .enablePositionalOptions()
    .action(async (opts: RunOpts, cmd: Command) => {
      let entries: Array<Record<string, unknown>> | undefined;
      if (opts.config !== undefined) {
        try {
          entries = loadConfigFile(opts.config, cmd);
        } catch (e) {
          if (e instanceof ConfigError) {
            process.exitCode = hook.usage(configMessage(e));
            return;
          }
          throw e;
        }
        opts = cmd.opts<RunOpts>();
        if (entries !== undefined) {
          const identity = (['vni', 'name'] as const).filter((k) => cmd.getOptionValueSource(k) === 'cli');
          if (identity.length > 0) {
            process.exitCode = hook.usage(`option --${identity[0]}: ${opts.config} has a vteps: list; add VTEPs to it, or at run time with uvtep vtep add`);
            return;
          }
        }
      }
      process.exitCode = await hook.run(opts, entries);
    });

  const io = { out: (t: string) => process.stdout.write(t + '\n'), err: (t: string) => process.stderr.write(t + '\n') };
  const target = (o: { name?: string; socket?: string }) => ({ name: o.name, socket: o.socket });
  const fdb = program.command('fdb').description('show or change the FDB of a running uvtep (like bridge fdb on a vxlan device)');
  const instanceOpts = (c: Command) =>
    c.option('--name <tap>', 'the VTEP, by TAP name (default: the only one running)').option('--socket <path>', 'the uvtep process, by control socket path');
  instanceOpts(fdb.command('show').description('list the entries: MAC, remote, port, VNI, static/dynamic, age').option('--json', 'JSON output')).action(
    async (o: { name?: string; socket?: string; json?: boolean }) => {
      process.exitCode = await ops.fdbShow(io, target(o), o.json ?? false);
    },
  );
  for (const op of ['add', 'append', 'replace', 'del'] as const) {
    const help = {
      add: 'create an entry (fails if the MAC exists): uvtep fdb add <mac> dst <ip> [port <p>] [static|dynamic]',
      append: 'add a destination; uvtep fdb append 00:00:00:00:00:00 dst <ip> adds a flood destination',
      replace: 'create or replace an entry',
      del: 'delete an entry, or one destination of it: uvtep fdb del <mac> [dst <ip>] [port <p>]',
    }[op];
    instanceOpts(fdb.command(`${op} <mac> [words...]`).description(help)).action(async (mac: string, words: string[], o: { name?: string; socket?: string }) => {
      process.exitCode = await ops.fdbChange(io, target(o), op, mac, words ?? []);
    });
  }
  instanceOpts(fdb.command('flush').description('remove every entry, or with --dynamic only learned ones').option('--dynamic', 'only dynamic (learned) entries')).action(
    async (o: { name?: string; socket?: string; dynamic?: boolean }) => {
      process.exitCode = await ops.fdbFlush(io, target(o), o.dynamic ?? false);
    },
  );
  instanceOpts(
    program
      .command('stats')
      .description('counters of a running uvtep: rx/tx frames and bytes, drops by reason, flood copies, FDB size')
      .option('--json', 'JSON output')
      .option('--watch [seconds]', 'refresh every interval (default 1 s) with rates per second')
      .option('--count <n>', 'with --watch: stop after n refreshes'),
  ).action(async (o: { name?: string; socket?: string; json?: boolean; watch?: string | boolean; count?: string }) => {
    const watch = o.watch === undefined ? undefined : o.watch === true ? 1 : Number(o.watch);
    const count = o.count === undefined ? undefined : Number(o.count);
    if ((watch !== undefined && !(watch > 0)) || (count !== undefined && !(Number.isInteger(count) && count > 0))) {
      process.exitCode = usageError('option --watch takes seconds > 0 and --count a whole number > 0');
      return;
    }
    process.exitCode = await ops.stats({ ...io, tty: process.stdout.isTTY === true }, target(o), { json: o.json ?? false, watch, count });
  });
  program
    .command('list')
    .description('the VTEPs of every uvtep running in this network namespace: TAP, process, VNI, UDP endpoint, remotes')
    .option('--json', 'JSON output')
    .action(async (o: { json?: boolean }) => {
      process.exitCode = await ops.list(io, o.json ?? false);
    });

  const vtep = program.command('vtep').description('add or remove VTEPs of a running uvtep (as ip link add/del does for kernel devices)');
  const add = vtep
    .command('add')
    .description('add a VTEP to the running uvtep of this network namespace: uvtep vtep add --vni 30 --name vx30 --remote 198.51.100.2 --address 10.30.0.1/24')
    .option('--control <path>', 'the uvtep to add it to, by control socket path (default: the only one running here)')
    .option('--socket <path>', 'the same as --control');
  for (const o of vtepOptionList(false)) add.addOption(o);
  add.action(async (o: Record<string, unknown>, cmd: Command) => {
    const options: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) if (k !== 'socket' && k !== 'control' && cmd.getOptionValueSource(k) === 'cli') options[k] = v;
    if (options.vni === undefined) {
      process.exitCode = usageError('option --vni <n> is required: the VXLAN Network Identifier, 0-16777215');
      return;
    }
    process.exitCode = await ops.vtepAdd(io, { socket: (o.control ?? o.socket) as string | undefined }, options);
  });
  vtep
    .command('del <name>')
    .description('stop a VTEP of a running uvtep and remove its TAP (unless it was started with --persist)')
    .option('--control <path>', 'the uvtep, by control socket path (default: the one hosting <name>)')
    .option('--socket <path>', 'the same as --control')
    .action(async (name: string, o: { socket?: string; control?: string }) => {
      process.exitCode = await ops.vtepDel(io, { socket: o.control ?? o.socket }, name);
    });

  program
    .command('demo')
    .description('build two namespace hosts on this machine, run the seed experiments over uvtep, show the results, remove everything')
    .option('--keep', 'leave the namespaces in place for inspection (remove them with: uvtep demo --cleanup)')
    .option('--cleanup', 'only remove what an earlier demo left behind')
    .action(async (o: { keep?: boolean; cleanup?: boolean }) => {
      // Ctrl-C or SIGTERM: the demo removes its hosts and resolves with 130
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        process.exitCode = await runDemo({ keep: o.keep ?? false, cleanupOnly: o.cleanup ?? false, out: process.stdout, signal: stop.signal });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  return program;
}

function usageError(message: string): number {
  process.stderr.write(`uvtep: error: ${message}\n(run uvtep --help for every option)\n`);
  return EXIT_USAGE;
}


/**
 * Human-readable on a terminal; JSON lines otherwise (for journald, log shippers, tests), through
 * a sink that never blocks forwarding on a stalled reader (src/log-sink.ts).
 */
function makeLogger(level: string): { log: Logger; sink: LogSink | undefined } {
  if (isatty(1)) {
    return { log: pino({ level, base: { name: 'uvtep' } }, pino.transport({ target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname' } })), sink: undefined };
  }
  const sink = new LogSink(1);
  return { log: pino({ level, base: { name: 'uvtep' } }, sink), sink };
}

function summary(s: VtepStats): string {
  const drops = Object.entries(s.drops)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}=${n}`)
    .join(' ');
  return `rx ${s.rxPackets} frames ${s.rxBytes} bytes, tx ${s.txPackets} datagrams ${s.txBytes} bytes (flood ${s.floodCopies}), drops ${s.dropsTotal}${drops ? ` (${drops})` : ''}, fdb ${s.fdbSize}`;
}

/** Options that make a VTEP what it is: `uvtep vtep add` never takes them from the running process. */
const IDENTITY: ReadonlyArray<keyof RunOpts> = ['vni', 'name', 'remote', 'group', 'address', 'bridge', 'mac', 'mtu', 'persist', 'allowFrom'];

/**
 * One VTEP's run options -> what the Instance builds it from. Throws ConfigError naming the
 * option; touches nothing but reads the MTU of --dev.
 */
function specOf(o: RunOpts): VtepSpec {
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
  if (withEtcd) advertiseAddress(config);
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

/** The exit code and log line for an error while starting or adding a VTEP. */
function startError(e: unknown, log: Logger, where = ''): number {
  if (e instanceof ConfigError) return usageError(where + configMessage(e));
  if (isSystemError(e) && e.syscall === 'bind') {
    log.fatal({ code: e.code, syscall: e.syscall }, `${where}cannot bind the VXLAN port: ${e.message} (another process uses this port, or --local is not an address of this host; to serve another VNI on a port a uvtep already uses, add it to that uvtep: uvtep vtep add)`);
    return EXIT_SYSTEM;
  }
  if (isSystemError(e)) {
    log.fatal({ code: e.code, syscall: e.syscall }, where + e.message);
    return EXIT_SYSTEM;
  }
  if (e instanceof UvtepError) {
    log.fatal({ code: e.code }, where + e.message);
    return EXIT_SYSTEM;
  }
  throw e;
}

/**
 * `--flannel`: one VTEP, whose VNI, port and MTU come from the flannel network config in etcd.
 * The options that would contradict it are refused before anything is touched.
 */
async function runFlannel(o: RunOpts, entries: Array<Record<string, unknown>> | undefined): Promise<number> {
  if (entries !== undefined) return usageError('option --flannel: one flannel member per process; --config must not hold a vteps: list');
  if ((o.etcd ?? []).length === 0) return usageError('option --flannel: needs --etcd <url>: the etcd of the flannel network');
  for (const [k, flag] of [['vni', 'vni'], ['remote', 'remote'], ['group', 'group'], ['name', 'name'], ['listenPort', 'listen-port'], ['etcdMacs', 'etcd-macs'], ['proxy', 'proxy'], ['etcdAllow', 'etcd-allow'], ['bridge', 'bridge'], ['address', 'address']] as const) {
    if (o[k] !== undefined && o[k] !== false) return usageError(`option --${flag}: not with --flannel: ${k === 'vni' || k === 'listenPort' ? 'the VNI and port come from the network config' : k === 'name' ? 'the TAP is flannel.<VNI>, as flanneld names it' : k === 'address' || k === 'bridge' ? 'the TAP gets <subnet>.0/32; pods go on a bridge of their own (flannel\'s CNI plugin)' : 'the members come from the subnet leases'}`);
  }
  let etcd: Omit<EtcdSettings, 'log'>;
  let publicIp: string;
  let metricsAt: ReturnType<typeof parseMetricsAddress> | undefined;
  try {
    if (o.metrics !== undefined) metricsAt = parseMetricsAddress(o.metrics, 'metrics');
    etcd = { ...resolveEtcdSettings(o)!, ttlS: FLANNEL_LEASE_TTL_S };
    if (!/^\/[A-Za-z0-9._\-/]*$/.test(o.flannelPrefix)) throw new ConfigError(ErrorCode.InvalidOption, 'flannel-prefix', `flannel-prefix: expected a key prefix starting with /, got ${JSON.stringify(o.flannelPrefix)}`);
    // the lease's PublicIP: an IPv4 underlay address (the checks of a VTEP's options, VNI aside)
    const c = resolveConfig({ vni: 1, ...(o.local !== undefined ? { local: o.local } : {}), ...(o.dev !== undefined ? { dev: o.dev } : {}) });
    if (c.family !== 4) throw new ConfigError(ErrorCode.InvalidOption, 'local', 'local: flannel\'s PublicIP is IPv4; give an IPv4 --local');
    publicIp = advertiseAddress(c);
  } catch (e) {
    if (e instanceof ConfigError) return usageError(configMessage(e).replace('VNI 1: with --etcd', 'with --flannel'));
    throw e;
  }
  const spec = (net: FlannelNetwork): VtepSpec =>
    specOf({ ...o, vni: net.vni, dstport: net.port, listenPort: net.port, learning: false, name: `flannel.${net.vni}`, ...(net.mtu !== undefined ? { mtu: net.mtu } : {}) });
  const { log, sink } = makeLogger(o.logLevel);
  const code = await serve(
    o,
    undefined,
    [],
    metricsAt,
    etcd,
    { member: (agent, l) => new FlannelMember({ agent, prefix: o.flannelPrefix, publicIp, subnetFile: o.subnetFile, ipMasq: o.ipMasq === true, log: l.child({ flannel: o.flannelPrefix }) }), spec },
    log,
    () => sink?.stopping(),
  );
  await sink?.close(1000);
  return code;
}

async function run(o: RunOpts, entries: Array<Record<string, unknown>> | undefined): Promise<number> {
  if (o.transport !== 'auto' && o.transport !== 'native' && o.transport !== 'dgram') {
    return usageError(`option --transport: expected native or dgram, got ${JSON.stringify(o.transport)}`);
  }
  if (o.flannel === true) return runFlannel(o, entries);
  // every VTEP's options, checked before anything is created
  const perVtep: RunOpts[] = entries === undefined ? [o] : entries.map((e) => ({ ...o, ...e }) as RunOpts);
  const specs: VtepSpec[] = [];
  let metricsAt: ReturnType<typeof parseMetricsAddress> | undefined;
  let etcd: Omit<EtcdSettings, 'log'> | undefined;
  try {
    if (o.metrics !== undefined) metricsAt = parseMetricsAddress(o.metrics, 'metrics');
    etcd = resolveEtcdSettings(o);
    for (let i = 0; i < perVtep.length; i++) {
      try {
        specs.push(specOf(perVtep[i]!));
        if (o.transport === 'dgram') checkDgramOptions(resolveConfig(specs[i]!.vtep));
      } catch (e) {
        if (e instanceof ConfigError && entries !== undefined) return usageError(`vteps[${i}]: ${configMessage(e)}`);
        throw e;
      }
    }
    if (entries !== undefined) checkSpecs(specs);
  } catch (e) {
    if (e instanceof ConfigError) return usageError(`${'index' in e ? `vteps[${String(e.index)}]: ` : ''}${configMessage(e)}`);
    throw e;
  }
  const { log, sink } = makeLogger(o.logLevel);
  const code = await serve(o, entries, specs, metricsAt, etcd, undefined, log, () => sink?.stopping());
  // the final records: written if the reader reads within a second, else dropped (never a hang)
  await sink?.close(1000);
  return code;
}

async function serve(
  o: RunOpts,
  entries: Array<Record<string, unknown>> | undefined,
  specsGiven: VtepSpec[],
  metricsAt: ReturnType<typeof parseMetricsAddress> | undefined,
  etcdSettings: Omit<EtcdSettings, 'log'> | undefined,
  /** `--flannel`: the member, and the VTEP's spec from the network config (read once etcd answers). */
  flannelMode: { member: (agent: EtcdAgent, log: Logger) => FlannelMember; spec: (net: FlannelNetwork) => VtepSpec } | undefined,
  log: Logger,
  /** Called when the stop begins: the log keeps the final records whatever its queue. */
  onStopping: () => void,
): Promise<number> {
  let specs = specsGiven;
  // the etcd client and lease first: the VTEPs join as they start
  let agent: EtcdAgent | undefined;
  if (etcdSettings !== undefined) {
    agent = new EtcdAgent({ ...etcdSettings, log: log.child({ etcd: etcdSettings.endpoints }) });
    if (await agent.start()) log.info({ etcd: agent.endpoints, node: agent.node, ttl: agent.ttlS }, `etcd: connected to ${agent.endpoints.join(', ')} as node ${agent.node} (lease TTL ${agent.ttlS} s)`);
  }
  // flannel: the network config decides the VTEP (VNI, port, MTU)
  let flannel: FlannelMember | undefined;
  if (flannelMode !== undefined && agent !== undefined) {
    flannel = flannelMode.member(agent, log);
    try {
      if (agent.leaseId === undefined) throw new UvtepError(ErrorCode.State, `flannel: etcd at ${agent.endpoints.join(', ')} does not answer`);
      specs = [flannelMode.spec(await flannel.readConfig())];
    } catch (e) {
      await agent.close({ revoke: false });
      return startError(e, log);
    }
  }
  const instance = new Instance({ ...(o.transport === 'auto' ? {} : { transport: o.transport as TransportKind }), ...(agent !== undefined && flannel === undefined ? { plane: etcdPlane(agent) } : {}) });
  /**
   * The lease revoked first (the other hosts see these VTEPs leave at once), then the VTEPs
   * stopped. A flannel lease is kept, as flanneld keeps it: a restart reuses the subnet.
   */
  const closeInstance = async () => {
    await flannel?.leave();
    await agent?.close(flannel !== undefined ? { revoke: false } : {});
    await instance.close();
  };
  // a VTEP that fails while the others start is handled like one that fails later (never lost)
  const early: Array<[HostedVtep, Error]> = [];
  const onEarly = (h: HostedVtep, err: Error) => early.push([h, err]);
  instance.on('failed', onEarly);
  for (let i = 0; i < specs.length; i++) {
    try {
      await instance.add(specs[i]!);
    } catch (e) {
      await closeInstance();
      return startError(e, log, entries !== undefined ? `vteps[${i}]: ` : '');
    }
  }

  // `uvtep vtep add`: the new VTEP's options over the process's shared ones
  const baseOf = (x: RunOpts): Partial<RunOpts> => {
    const b: Partial<RunOpts> = { ...x };
    for (const k of IDENTITY) delete b[k];
    return b;
  };
  let base = baseOf(o);
  const checker = vtepOptionsCommand();
  const target: ControlTarget = {
    list: () => instance.list().map((h) => ({ name: h.name, vtep: h.vtep, endpoint: h.endpoint })),
    pick: (name) => {
      const h = instance.pick(name);
      return { name: h.name, vtep: h.vtep, endpoint: h.endpoint };
    },
    info: (v) => ({ ...instance.info(instance.get(v.name)!) }),
    add: async (raw) => {
      const values = Object.fromEntries(optionValues(raw, checker, 'the request', { perVtep: true }));
      let h: HostedVtep;
      try {
        h = await instance.add(specOf({ ...base, ...values } as RunOpts));
      } catch (e) {
        // a TAP name in use by another process: the same answer as a name this uvtep uses
        if (isSystemError(e) && e.code === 'EBUSY' && /TUNSETIFF/.test(e.syscall)) throw new ConfigError(ErrorCode.Exists, 'name', `name: the TAP ${JSON.stringify(values.name)} exists and is in use by another process`);
        throw e;
      }
      return { name: h.name, vtep: h.vtep, endpoint: h.endpoint };
    },
    remove: (name) => instance.remove(name),
  };

  // flannel: a subnet for the TAP, and the other hosts mirrored
  let flannelLost: ((reason: string) => void) | undefined;
  let lostEarly: string | undefined;
  if (flannel !== undefined) {
    const h = instance.list()[0];
    if (h !== undefined) {
      try {
        const subnet = await flannel.join(h.vtep, h.name, h.tap.mac, (reason) => (flannelLost !== undefined ? flannelLost(reason) : (lostEarly = reason)));
        log.info({ tap: h.name, subnet, subnetFile: flannel.subnetFile }, `flannel: ${h.name} holds ${subnet}; ${flannel.subnetFile} written`);
      } catch (e) {
        await closeInstance();
        return startError(e, log);
      }
    }
  }

  const first = instance.list()[0];
  if (first === undefined) {
    // every VTEP failed while starting (its TAP deleted at once): nothing to serve
    for (const [h, err] of early) log.fatal({ tap: h.name }, `${h.name} failed: ${err.message}`);
    await closeInstance();
    return EXIT_SYSTEM;
  }
  let control: ControlServer | undefined;
  let metrics: MetricsServer | undefined;
  try {
    if (o.control !== false) {
      control = new ControlServer(target, { path: typeof o.control === 'string' ? o.control : controlPath(first.name) });
      await control.listen();
      log.debug({ control: control.path }, `control socket ${control.path}`);
    }
    if (metricsAt !== undefined) {
      metrics = new MetricsServer(metricsRegistry({ list: target.list, etcd: () => agent?.stats }));
      const at = await metrics.listen(metricsAt);
      log.info({ metrics: `${at.address}:${at.port}` }, `metrics at http://${at.address.includes(':') ? `[${at.address}]` : at.address}:${at.port}/metrics`);
    }
  } catch (e) {
    await control?.close();
    await closeInstance();
    log.fatal({ code: (e as NodeJS.ErrnoException).code }, `cannot start: ${(e as Error).message}`);
    return EXIT_SYSTEM;
  }
  const closeServers = async () => {
    await control?.close();
    await metrics?.close();
  };

  const watch = (h: HostedVtep): void => {
    const v = h.vtep;
    v.on('learned', (m, r) => log.debug({ tap: h.name, mac: formatMac(m), dst: r.address }, 'learned'));
    v.on('aged', (m, r) => log.debug({ tap: h.name, mac: formatMac(m), dst: r.address }, 'aged out'));
    let lastMigrationLog = 0;
    let migrations = 0;
    v.on('migrated', (m, from, to) => {
      migrations++;
      const now = Date.now();
      if (now - lastMigrationLog >= 1000) {
        log.info({ tap: h.name, mac: formatMac(m), from: from.address, to: to.address, since_last_report: migrations }, `${formatMac(m)} migrated from ${from.address} to ${to.address}`);
        lastMigrationLog = now;
        migrations = 0;
      }
    });
    v.on('sendError', (info) => log.warn({ tap: h.name, ...info }, `${h.name}: sending to ${info.address ?? '?'} failed: ${info.code}${info.count > 1 ? ` (${info.count} times)` : ''}`));
    if (v.config.learning && v.config.allowFrom.length === 0 && h.spec.plane?.allow !== true) {
      // open by default, like the kernel, but not silently
      log.warn({ tap: h.name }, `${h.name}: accepting VXLAN datagrams from any underlay source and learning MACs from them, as the kernel VTEP does; restrict the sources with --allow-from <cidr> or --allow-from peers`);
    }
  };
  /** The startup line of a VTEP (and its event logs from then on). */
  const announce = (h: HostedVtep): void => {
    watch(h);
    const i = instance.info(h);
    log.info(
      { tap: h.name, mtu: i.mtu, mac: i.mac, vni: i.vni, remotes: i.remotes, dstport: i.dstport, listen: i.listen, bridge: h.bridge, control: control?.path },
      `${h.name} up: vni ${i.vni}, mtu ${i.mtu}, mac ${i.mac}, remotes ${i.remotes.length ? i.remotes.join(', ') : 'none (learning and static entries only)'}, dstport ${i.dstport}, listening on ${i.listen}${h.bridge ? `, bridge ${h.bridge}` : ''}`,
    );
  };
  /** A VTEP's counters, its endpoint's and its FDB, for its last record. */
  const snapshot = (h: HostedVtep) => ({ tap: h.name, vni: h.vtep.config.vni, stats: h.vtep.stats, endpoint: h.endpoint.stats, fdb: h.vtep.fdb.list() });
  const finalRecord = (r: ReturnType<typeof snapshot>, reason: string) => log.info(r, `stopped (${reason}): ${r.tap}: ${summary(r.stats)}`);

  /**
   * SIGHUP: the command line and the config file read again. Applied while forwarding: VTEPs added
   * and removed, remotes and allow-from of the others, the log level; anything else that differs
   * is reported and left as it runs. A bad file changes nothing.
   */
  let reloading = false;
  const reload = async (): Promise<void> => {
    if (o.config === undefined) {
      log.warn('SIGHUP: uvtep was started without --config: there is nothing to read again');
      return;
    }
    if (reloading) return;
    reloading = true;
    try {
      let next: Awaited<ReturnType<typeof reread>>;
      const specs: VtepSpec[] = [];
      try {
        next = await reread();
        const list = next.entries === undefined ? [next.o] : next.entries.map((e) => ({ ...next.o, ...e }) as RunOpts);
        list.forEach((x, i) => {
          try {
            specs.push(specOf(x));
          } catch (e) {
            throw e instanceof ConfigError && next.entries !== undefined ? Object.assign(e, { index: i }) : e;
          }
        });
        if (next.entries !== undefined) checkSpecs(specs);
      } catch (e) {
        const msg = e instanceof ConfigError ? `${'index' in e ? `vteps[${String(e.index)}]: ` : ''}${configMessage(e)}` : (e as Error).message;
        log.error({ config: o.config }, `SIGHUP: ${o.config}: ${msg}; nothing changed`);
        return;
      }
      const changes: string[] = [];
      const fixed: string[] = [];
      if (next.o.logLevel !== log.level) {
        changes.push(`log-level ${next.o.logLevel} (was ${log.level})`);
        log.level = next.o.logLevel;
      }
      for (const k of ['transport', 'busyPoll', 'control', 'metrics', 'etcd', 'etcdPrefix', 'etcdTtl', 'etcdNode', 'etcdCacert', 'etcdCert', 'etcdKey', 'etcdUser', 'etcdPasswordFile'] as const) {
        if (JSON.stringify(next.o[k]) !== JSON.stringify(o[k])) fixed.push(`${FLAG[k] ?? k} (process)`);
      }
      // which running VTEP each entry is: by TAP name, else by VNI
      const running = instance.list();
      const matched = new Map<VtepSpec, HostedVtep>();
      for (const sp of specs) {
        const h = sp.tap.name !== undefined ? running.find((r) => r.name === sp.tap.name) : running.find((r) => r.vtep.config.vni === sp.vtep.vni && r.spec.tap.name === undefined);
        if (h !== undefined) matched.set(sp, h);
      }
      const keep = new Set(matched.values());
      for (const h of running) {
        if (keep.has(h)) continue;
        await instance.remove(h.name);
        changes.push(`${h.name} removed`);
      }
      for (const [sp, h] of matched) {
        const c = resolveConfig(sp.vtep);
        const cur = h.vtep.config;
        for (const k of Object.keys(c) as Array<keyof VtepConfig>) {
          if (k === 'remotes' || k === 'allowFrom' || k === 'maxFrame' || k === 'tapMtu' || k === 'family') continue;
          if (JSON.stringify(c[k]) !== JSON.stringify(cur[k])) fixed.push(`${h.name}: ${FLAG[k] ?? k}`);
        }
        for (const k of Object.keys({ ...sp.tap, ...h.spec.tap }) as Array<keyof typeof sp.tap>) {
          if (JSON.stringify(sp.tap[k]) !== JSON.stringify(h.spec.tap[k])) fixed.push(`${h.name}: ${FLAG[k === 'addresses' ? 'address' : k] ?? k}`);
        }
        for (const k of ['allow', 'macs', 'proxy'] as const) {
          if ((sp.plane?.[k] ?? false) !== (h.spec.plane?.[k] ?? false)) fixed.push(`${h.name}: ${k === 'proxy' ? '--proxy' : `--etcd-${k}`}`);
        }
        for (const ch of h.vtep.update(c)) changes.push(`${h.name}: ${ch}`);
      }
      for (const sp of specs) {
        if (matched.has(sp)) continue;
        try {
          const h = await instance.add(sp);
          changes.push(`${h.name} added (vni ${h.vtep.config.vni})`);
        } catch (e) {
          const msg = e instanceof ConfigError ? configMessage(e) : (e as Error).message;
          log.error({ vni: sp.vtep.vni, name: sp.tap.name }, `SIGHUP: VNI ${sp.vtep.vni}${sp.tap.name ? ` (${sp.tap.name})` : ''} not added: ${msg}`);
        }
      }
      base = baseOf(next.o);
      log.info(
        { config: o.config, changes, unchanged: fixed },
        `SIGHUP: ${o.config} read again: ${changes.length ? changes.join('; ') : 'nothing to change'}` +
          (fixed.length ? `; cannot change while running (restart to apply): ${[...new Set(fixed)].join(', ')}` : ''),
      );
    } finally {
      reloading = false;
    }
  };

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        log.warn(`${sig} again: exiting now`);
        process.exit(EXIT_SYSTEM);
      }
      stopping = true;
      onStopping();
      const last = instance.list().map(snapshot);
      // bounded: whatever a client of the control socket or the metrics port does, the stop
      // completes (and the final counters are logged) within STOP_DEADLINE_MS
      const deadline = new Promise<void>((r) => setTimeout(r, STOP_DEADLINE_MS).unref());
      void Promise.race([Promise.all([closeInstance(), closeServers()]), deadline]).then(() => {
        for (const r of last) finalRecord(r, sig);
        if (last.length === 0) log.info(`stopped (${sig}): no VTEP was running`);
        detach();
        resolve(EXIT_OK);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const onHup = () => {
      if (!stopping) void reload();
    };
    process.on('SIGHUP', onHup);
    const detach = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('SIGHUP', onHup);
    };
    instance.on('added', announce);
    instance.on('removed', (h) => {
      const r = snapshot(h);
      log.info(r, `${h.name} removed (vni ${r.vni}): ${summary(r.stats)}`);
    });
    const onFailed = (h: HostedVtep, err: Error) => {
      if (instance.list().length === 0) onStopping(); // the last one: its records are final
      const sys = err as NodeJS.ErrnoException;
      log.fatal({ tap: h.name, code: sys.code, syscall: sys.syscall }, `${h.name} failed: ${err.message}`);
      finalRecord(snapshot(h), 'error');
      // the others keep running; when none is left, uvtep exits so that its supervisor restarts it
      if (instance.list().length > 0 || stopping) return;
      stopping = true;
      detach();
      void Promise.all([closeInstance(), closeServers()]).then(() => resolve(EXIT_SYSTEM));
    };
    // flannel: this host's own lease deleted from etcd: stop, as flanneld does
    flannelLost = (reason) => {
      if (stopping) return;
      stopping = true;
      onStopping();
      log.fatal({ reason }, `flannel: ${reason}; stopping, as flanneld does`);
      const last = instance.list().map(snapshot);
      detach();
      void Promise.all([closeInstance(), closeServers()]).then(() => {
        for (const r of last) finalRecord(r, 'flannel lease lost');
        resolve(EXIT_SYSTEM);
      });
    };
    if (lostEarly !== undefined) flannelLost(lostEarly);
    instance.off('failed', onEarly);
    instance.on('failed', onFailed);
    for (const [h, err] of early) onFailed(h, err);
    // the startup lines last: once they are out, SIGTERM is handled and the control socket answers
    for (const h of instance.list()) announce(h);
  });
}

/** The command line and the config file read again, as at start; throws with the message of a bad option. */
async function reread(): Promise<{ o: RunOpts; entries: Array<Record<string, unknown>> | undefined }> {
  let got: { o: RunOpts; entries: Array<Record<string, unknown>> | undefined } | undefined;
  let bad: string | undefined;
  const p = buildProgram({
    run: (o, entries) => {
      got = { o, entries };
      return Promise.resolve(EXIT_OK);
    },
    usage: (m) => {
      bad = m;
      return EXIT_USAGE;
    },
  });
  const code = process.exitCode;
  p.exitOverride();
  p.configureOutput({ writeErr: (t) => (bad ??= t.trim()), writeOut: () => undefined });
  try {
    await p.parseAsync(startArgv);
  } catch (e) {
    bad ??= (e as Error).message;
  } finally {
    process.exitCode = code;
  }
  if (got === undefined) throw new Error(bad ?? 'the options could not be read');
  return got;
}

export async function main(argv: string[]): Promise<void> {
  startArgv = argv;
  const program = buildProgram();
  program.exitOverride();
  program.configureOutput({
    outputError: (str, write) => write(str.startsWith('error:') ? `uvtep: ${str}` : str),
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
      return;
    }
    throw e;
  }
}

