/**
 * The `uvtep` command: options mirror `ip link add ... type vxlan` and `brctl addif`.
 * The only module that calls process.exit or installs signal handlers.
 *
 * Exit codes: 0 clean stop; 1 system error (not root, no /dev/net/tun, TAP removed...);
 * 2 bad option (the message names the option and what it accepts).
 */
import { Command, CommanderError, Option } from 'commander';
import pino, { type Logger } from 'pino';
import { DEFAULTS, resolveConfig, TAP_MTU_MAX, TAP_MTU_MIN, type VtepOptions } from './config.js';
import { ConfigError, isSystemError, UvtepError } from './errors.js';
import { createVtep, type TransportKind } from './index.js';
import { checkDgramOptions } from './transport/dgram.js';
import { loadBinding } from './native.js';
import { TapPort } from './port/tap.js';
import { formatMac } from './wire/ethernet.js';
import { VXLAN_PORT_IANA, VXLAN_PORT_LINUX, VXLAN_VNI_MAX } from './wire/vxlan.js';
import type { Vtep, VtepStats } from './vtep.js';
import { runDemo } from './demo.js';
import { ControlServer, controlPath } from './control.js';
import { MetricsServer, parseMetricsAddress, vtepRegistry } from './metrics.js';
import * as ops from './ops.js';
import { EXIT_OK, EXIT_SYSTEM, EXIT_USAGE } from './ops.js';
import { loadConfigFile } from './config-file.js';

/** A stop (SIGTERM/SIGINT) completes within this, whatever clients hold open. */
const STOP_DEADLINE_MS = 2000;

/** Library option names -> CLI flags, for error messages. */
const FLAG: Record<string, string> = {
  vni: '--vni',
  remote: '--remote',
  remotes: '--remote',
  group: '--group',
  local: '--local',
  dev: '--dev',
  dstPort: '--dstport',
  listenPort: '--listen-port',
  ttl: '--ttl',
  ageing: '--ageing',
  learning: '--no-learning',
  maxAddress: '--max-address',
  reservedBits: '--reserved-bits',
  underlayMtu: '--underlay-mtu',
  mac: '--mac',
  sndbuf: '--sndbuf',
  rcvbuf: '--rcvbuf',
  name: '--name',
  mtu: '--mtu',
  address: '--address',
  bridge: '--bridge',
  batchSize: '--batch-size',
  allowFrom: '--allow-from',
  srcport: '--srcport',
  srcportSockets: '--srcport',
  tos: '--tos',
  df: '--df',
  metrics: '--metrics',
  gso: '--no-gso',
  gro: '--no-gro',
  tso: '--no-tso',
  busyPoll: '--busy-poll',
  transport: '--transport',
  config: '--config',
  logLevel: '--log-level',
  control: '--control',
  persist: '--persist',
};


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
}

function tosArg(value: string): number | string {
  return value === 'inherit' ? value : int(value);
}

export function buildProgram(): Command {
  const program = new Command('uvtep');
  program
    .description(
      'Userspace VXLAN tunnel endpoint (RFC 7348): a TAP device whose frames travel to remote VTEPs in UDP.\n' +
        'Interoperates with the Linux kernel VTEP (ip link add ... type vxlan).\n\n' +
        'Example: uvtep --vni 1 --remote 172.31.0.107 --address 10.0.0.106/24',
    )
    .version('0.1.0')
    .showHelpAfterError('(run uvtep --help for every option)')
    .addOption(new Option('--vni <n>', `VXLAN Network Identifier, 0-${VXLAN_VNI_MAX} (required)`).argParser(int))
    .addOption(new Option('--remote <ip>', 'remote VTEP for broadcast/unknown traffic; repeat for head-end replication (ip or ip:port, [ipv6]:port)').argParser(collect))
    .addOption(new Option('--group <ip>', 'multicast group for broadcast/unknown traffic (needs --dev)'))
    .addOption(new Option('--local <ip>', 'local underlay address to bind (default: any address of the remotes\' family)'))
    .addOption(new Option('--dev <ifname>', 'underlay device: multicast is joined on it; its MTU sets the default --mtu'))
    .addOption(new Option('--dstport <port>', `UDP destination port (${VXLAN_PORT_IANA} IANA, ${VXLAN_PORT_LINUX} Linux default)`).default(DEFAULTS.dstPort).argParser(int))
    .addOption(new Option('--listen-port <port>', 'UDP port to listen on (default: --dstport, as the kernel)').argParser(int))
    .addOption(new Option('--ttl <n>', 'TTL of outer packets, 1-255 (default: system default; 1 for multicast)').argParser(int))
    .addOption(new Option('--ageing <s>', 'seconds before a learned FDB entry expires, 0 = never').default(DEFAULTS.ageingS).argParser(int))
    .addOption(new Option('--no-learning', 'do not learn inner source MACs (static FDB only)'))
    .addOption(new Option('--max-address <n>', 'cap on FDB entries, 0 = unlimited').default(DEFAULTS.maxAddress).argParser(int))
    .addOption(new Option('--reserved-bits <policy>', 'received reserved bits: ignore (RFC 7348) or strict (drop, as Linux)').default(DEFAULTS.reservedBits))
    .addOption(new Option('--srcport <min-max>', 'outer UDP source ports: one per inner flow from this range (RFC 7348 recommends 49152-65535); default: one ephemeral port'))
    .addOption(new Option('--tos <n|inherit>', 'outer TOS / traffic class, 0-255, or inherit from the inner IP header').default(0).argParser(tosArg))
    .addOption(new Option('--df <set|unset>', 'IPv4 DF bit of outer packets (as ip link ... df)').default('unset'))
    .addOption(new Option('--transport <kind>', 'UDP endpoint: native (recvmmsg/sendmmsg with UDP GSO/GRO, the default on Linux) or dgram (node:dgram, the portable fallback)').default('auto', 'native where the addon is built'))
    .addOption(new Option('--no-tso', 'no TCP/UDP segmentation offload on the TAP: the kernel segments and checksums before uvtep reads'))
    .addOption(new Option('--no-gro', 'no receive coalescing: one TAP write per frame, no UDP GRO on the socket'))
    .addOption(new Option('--no-gso', 'no UDP GSO on send: one datagram per message (still batched with sendmmsg)'))
    .addOption(new Option('--busy-poll <us>', 'after a batch, poll the TAP and the socket for up to this many microseconds before sleeping (lower latency, more CPU)').default(0).argParser(int))
    .addOption(new Option('--allow-from <cidr|peers>', 'accept datagrams only from these underlay sources (CIDR or address; peers = the --remote addresses); repeatable (default: anyone, as Linux)').argParser(collect))
    .addOption(new Option('--underlay-mtu <n>', 'underlay MTU (default: MTU of --dev, else 1500)').argParser(int))
    .addOption(new Option('--sndbuf <bytes>', 'UDP socket send buffer (SO_SNDBUF)').default(DEFAULTS.sndbuf).argParser(int))
    .addOption(new Option('--rcvbuf <bytes>', 'UDP socket receive buffer (SO_RCVBUF)').default(DEFAULTS.rcvbuf).argParser(int))
    .addOption(new Option('--name <ifname>', 'TAP device name (default: uvtep0, uvtep1, ... chosen by the kernel)'))
    .addOption(new Option('--mtu <n>', `TAP MTU, ${TAP_MTU_MIN}-${TAP_MTU_MAX} (default: underlay MTU - 50 for IPv4, - 70 for IPv6: 1450 on 1500)`).argParser(int))
    .addOption(new Option('--mac <mac>', 'TAP MAC address (default: random, locally administered)'))
    .addOption(new Option('--address <cidr>', 'address for the TAP, e.g. 10.0.0.106/24 or 2001:db8:1::1/64; repeatable').argParser(collect))
    .addOption(new Option('--bridge <name>', 'add the TAP as a port of this existing Linux bridge (like brctl addif)'))
    .addOption(new Option('--persist', 'keep the TAP device after uvtep exits'))
    .addOption(new Option('--control <path>', 'control socket for uvtep fdb/stats (default: /run/uvtep/<name>.sock; in a named netns /run/uvtep/netns/<ns>/<name>.sock)'))
    .addOption(new Option('--no-control', 'do not open a control socket'))
    .addOption(new Option('--metrics <[host:]port>', 'serve Prometheus metrics at http://host:port/metrics (a bare port binds 127.0.0.1)'))
    .addOption(new Option('--config <file>', 'read options from a JSON or YAML file (keys are the long option names); command-line options win'))
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .enablePositionalOptions()
    .action(async (opts: RunOpts, cmd: Command) => {
      if (opts.config !== undefined) {
        try {
          loadConfigFile(opts.config, cmd);
        } catch (e) {
          if (e instanceof ConfigError) {
            process.exitCode = usageError(configMessage(e));
            return;
          }
          throw e;
        }
        opts = cmd.opts<RunOpts>();
      }
      process.exitCode = await run(opts);
    });

  const io = { out: (t: string) => process.stdout.write(t + '\n'), err: (t: string) => process.stderr.write(t + '\n') };
  const target = (o: { name?: string; socket?: string }) => ({ name: o.name, socket: o.socket });
  const fdb = program.command('fdb').description('show or change the FDB of a running uvtep (like bridge fdb on a vxlan device)');
  const instanceOpts = (c: Command) =>
    c.option('--name <tap>', 'the instance, by TAP name (default: the only one running)').option('--socket <path>', 'the instance, by control socket path');
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
    .description('the uvtep instances running in this network namespace')
    .option('--json', 'JSON output')
    .action(async (o: { json?: boolean }) => {
      process.exitCode = await ops.list(io, o.json ?? false);
    });

  program
    .command('demo')
    .description('build two namespace hosts on this machine, run the seed experiments over uvtep, show the results, remove everything')
    .option('--keep', 'leave the namespaces in place for inspection (remove them with: uvtep demo --cleanup)')
    .option('--cleanup', 'only remove what an earlier demo left behind')
    .action(async (o: { keep?: boolean; cleanup?: boolean }) => {
      process.exitCode = await runDemo({ keep: o.keep ?? false, cleanupOnly: o.cleanup ?? false, out: process.stdout });
    });
  return program;
}

function usageError(message: string): number {
  process.stderr.write(`uvtep: error: ${message}\n(run uvtep --help for every option)\n`);
  return EXIT_USAGE;
}

function configMessage(e: ConfigError): string {
  const flag = FLAG[e.option] ?? `--${e.option}`;
  const what = e.message.startsWith(e.option + ':') ? e.message.slice(e.option.length + 1).trim() : e.message;
  return `option ${flag}: ${what}`;
}

function makeLogger(level: string): Logger {
  if (process.stdout.isTTY) {
    // Human-readable on a terminal; JSON lines otherwise (for journald, log shippers, tests).
    return pino({ level, base: { name: 'uvtep' } }, pino.transport({ target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname' } }));
  }
  return pino({ level, base: { name: 'uvtep' } }, pino.destination({ sync: true }));
}

function summary(s: VtepStats): string {
  const drops = Object.entries(s.drops)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}=${n}`)
    .join(' ');
  return `rx ${s.rxPackets} frames ${s.rxBytes} bytes, tx ${s.txPackets} datagrams ${s.txBytes} bytes (flood ${s.floodCopies}), drops ${s.dropsTotal}${drops ? ` (${drops})` : ''}, fdb ${s.fdbSize}`;
}

async function run(o: RunOpts): Promise<number> {
  if (o.vni === undefined) return usageError('option --vni <n> is required: the VXLAN Network Identifier, 0-16777215');
  if (o.group !== undefined && o.dev === undefined) {
    return usageError('option --group needs --dev <ifname>: the underlay device to join the multicast group on (as ip link add ... group requires)');
  }
  const log = makeLogger(o.logLevel);

  // Underlay MTU: from --dev when given (as the kernel derives the vxlan MTU from its lower device).
  let underlayMtu = o.underlayMtu;
  if (underlayMtu === undefined && o.dev !== undefined) {
    try {
      underlayMtu = loadBinding().getMtu(o.dev);
    } catch (e) {
      if (isSystemError(e) && e.code === 'ENODEV') return usageError(`option --dev: no interface named ${JSON.stringify(o.dev)}`);
      throw e;
    }
  }
  const vtepOptions: VtepOptions = {
    vni: o.vni as number,
    remotes: o.remote ?? [],
    dstPort: o.dstport as number,
    ageing: o.ageing as number,
    learning: o.learning,
    maxAddress: o.maxAddress as number,
    reservedBits: o.reservedBits as VtepOptions['reservedBits'],
    ...(o.group !== undefined ? { group: o.group } : {}),
    ...(o.local !== undefined ? { local: o.local } : {}),
    ...(o.dev !== undefined ? { dev: o.dev } : {}),
    ...(o.listenPort !== undefined ? { listenPort: o.listenPort as number } : {}),
    ...(o.ttl !== undefined ? { ttl: o.ttl as number } : {}),
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

  if (o.transport !== 'auto' && o.transport !== 'native' && o.transport !== 'dgram') {
    return usageError(`option --transport: expected native or dgram, got ${JSON.stringify(o.transport)}`);
  }
  let vtep: Vtep;
  let metricsAt: ReturnType<typeof parseMetricsAddress> | undefined;
  try {
    const config = resolveConfig(vtepOptions); // all option errors before touching the system
    if (o.transport === 'dgram') checkDgramOptions(config);
    if (o.metrics !== undefined) metricsAt = parseMetricsAddress(o.metrics, 'metrics');
    const tap = new TapPort({
      mtu: (o.mtu as number | undefined) ?? config.tapMtu,
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.mac !== undefined ? { mac: o.mac } : {}),
      ...(o.address !== undefined ? { addresses: o.address } : {}),
      ...(o.bridge !== undefined ? { bridge: o.bridge } : {}),
      ...(o.persist ? { persist: true } : {}),
      gro: o.gro,
      tso: o.tso,
    });
    vtep = createVtep({ ...vtepOptions, framePort: tap, ...(o.transport === 'auto' ? {} : { transport: o.transport as TransportKind }) });
    try {
      await vtep.start();
    } catch (e) {
      await vtep.close();
      throw e;
    }
  } catch (e) {
    if (e instanceof ConfigError) return usageError(configMessage(e));
    if (isSystemError(e) && e.syscall === 'bind') {
      log.fatal({ code: e.code, syscall: e.syscall }, `cannot bind the VXLAN port: ${e.message} (another VTEP uses this port, or --local is not an address of this host)`);
      return EXIT_SYSTEM;
    }
    if (isSystemError(e)) {
      log.fatal({ code: e.code, syscall: e.syscall }, e.message);
      return EXIT_SYSTEM;
    }
    if (e instanceof UvtepError) {
      log.fatal({ code: e.code }, e.message);
      return EXIT_SYSTEM;
    }
    throw e;
  }

  const tap = vtep.port as TapPort;
  const c = vtep.config;
  const bound = vtep.address();
  const dests = [...c.remotes.map((r) => (r.port === c.dstPort ? r.address : `${r.address}:${r.port}`)), ...(c.group ? [`group ${c.group}`] : [])];

  const startedAt = new Date().toISOString();
  let control: ControlServer | undefined;
  let metrics: MetricsServer | undefined;
  try {
    if (o.control !== false) {
      control = new ControlServer(vtep, {
        path: typeof o.control === 'string' ? o.control : controlPath(tap.name),
        info: () => ({ tap: tap.name, pid: process.pid, vni: c.vni, dstport: c.dstPort, listen: `${bound.address}:${bound.port}`, remotes: dests, mtu: tap.mtu, mac: formatMac(tap.mac), startedAt }),
      });
      await control.listen();
      log.debug({ control: control.path }, `control socket ${control.path}`);
    }
    if (metricsAt !== undefined) {
      metrics = new MetricsServer(vtepRegistry(vtep, tap.name));
      const at = await metrics.listen(metricsAt);
      log.info({ metrics: `${at.address}:${at.port}` }, `metrics at http://${at.address.includes(':') ? `[${at.address}]` : at.address}:${at.port}/metrics`);
    }
  } catch (e) {
    await control?.close();
    await vtep.close();
    log.fatal({ code: (e as NodeJS.ErrnoException).code }, `cannot start: ${(e as Error).message}`);
    return EXIT_SYSTEM;
  }
  const closeServers = async () => {
    await control?.close();
    await metrics?.close();
  };


  vtep.on('learned', (m, r) => log.debug({ mac: formatMac(m), dst: r.address }, 'learned'));
  vtep.on('aged', (m, r) => log.debug({ mac: formatMac(m), dst: r.address }, 'aged out'));
  let lastMigrationLog = 0;
  let migrations = 0;
  vtep.on('migrated', (m, from, to) => {
    migrations++;
    const now = Date.now();
    if (now - lastMigrationLog >= 1000) {
      log.info({ mac: formatMac(m), from: from.address, to: to.address, since_last_report: migrations }, `${formatMac(m)} migrated from ${from.address} to ${to.address}`);
      lastMigrationLog = now;
      migrations = 0;
    }
  });
  vtep.on('sendError', (info) => log.warn(info, `sending to ${info.address ?? '?'} failed: ${info.code}${info.count > 1 ? ` (${info.count} times)` : ''}`));

  return new Promise<number>((resolve) => {
    let stopping = false;
    const finish = (code: number, reason: string) => {
      const s = vtep.stats;
      log.info({ stats: s, fdb: vtep.fdb.list() }, `stopped (${reason}): ${summary(s)}`);
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        log.warn(`${sig} again: exiting now`);
        process.exit(EXIT_SYSTEM);
      }
      stopping = true;
      const s = vtep.stats;
      const fdb = vtep.fdb.list();
      // bounded: whatever a client of the control socket or the metrics port does, the stop
      // completes (and the final counters are logged) within STOP_DEADLINE_MS
      const deadline = new Promise<void>((r) => setTimeout(r, STOP_DEADLINE_MS).unref());
      void Promise.race([Promise.all([vtep.close(), closeServers()]), deadline]).then(() => {
        log.info({ stats: s, fdb }, `stopped (${sig}): ${summary(s)}`);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        resolve(EXIT_OK);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (c.learning && c.allowFrom.length === 0) {
      // open by default, like the kernel, but not silently
      log.warn('accepting VXLAN datagrams from any underlay source and learning MACs from them, as the kernel VTEP does; restrict the sources with --allow-from <cidr> or --allow-from peers');
    }
    // the startup line last: once it is out, SIGTERM is handled and the control socket answers
    log.info(
      { tap: tap.name, mtu: tap.mtu, mac: formatMac(tap.mac), vni: c.vni, remotes: dests, dstport: c.dstPort, listen: `${bound.address}:${bound.port}`, bridge: o.bridge, control: control?.path },
      `${tap.name} up: vni ${c.vni}, mtu ${tap.mtu}, mac ${formatMac(tap.mac)}, remotes ${dests.length ? dests.join(', ') : 'none (learning and static entries only)'}, dstport ${c.dstPort}, listening on ${bound.address}:${bound.port}${o.bridge ? `, bridge ${o.bridge}` : ''}`,
    );
    vtep.on('error', (err) => {
      if (stopping) return;
      stopping = true;
      const sys = err as NodeJS.ErrnoException;
      log.fatal({ code: sys.code, syscall: sys.syscall }, `${tap.name} failed: ${err.message}`);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      void closeServers().then(() => finish(EXIT_SYSTEM, 'error'));
    });
  });
}

export async function main(argv: string[]): Promise<void> {
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

