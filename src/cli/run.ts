/**
 * The daemon: checked options -> the VTEPs of this process (an Instance), the etcd agent or the
 * flannel member, the control socket and metrics, the signals (SIGTERM/SIGINT stop, SIGHUP reads
 * the command line and the config file again), the log and the exit code.
 */
import { isatty } from 'node:tty';
import pino, { type Logger } from 'pino';
import { LogSink } from './log-sink.js';
import { resolveConfig, type VtepConfig } from '../config.js';
import { ConfigError, ErrorCode, isSystemError, UvtepError } from '../errors.js';
import type { TransportKind } from '../create.js';
import { checkSpecs, Instance, type HostedVtep, type VtepSpec } from '../instance.js';
import { checkDgramOptions } from '../transport/dgram.js';
import { formatMac } from '../wire/ethernet.js';
import { summaryLine } from '../counters.js';
import { ControlServer, controlPath, type ControlTarget } from '../control.js';
import { metricsRegistry, MetricsServer, parseMetricsAddress } from '../metrics.js';
import { FLAG, IDENTITY, keysOf, specOf, type RunOpts, vtepOptionsCommand } from './options.js';
import { configMessage, EXIT_OK, EXIT_SYSTEM, usageError } from './ops.js';
import { optionValues } from './config-file.js';
import { FLANNEL_LEASE_TTL_S, FlannelMember, type FlannelNetwork } from '../flannel.js';
import { checkKeyPrefix } from '../check.js';
import { advertiseAddress, EtcdAgent, etcdPlane, resolveEtcdSettings, type EtcdSettings } from '../etcd.js';

/** The command line and the config file read again, as at start; throws with the message of a bad option. */
export type Reread = () => Promise<{ o: RunOpts; entries: Array<Record<string, unknown>> | undefined }>;

/** A stop (SIGTERM/SIGINT) completes within this, whatever clients hold open. */
const STOP_DEADLINE_MS = 2000;


/**
 * Human-readable on a terminal; JSON lines otherwise (for journald, log shippers, tests), through
 * a sink that never blocks forwarding on a stalled reader (log-sink.ts).
 */
function makeLogger(level: string): { log: Logger; sink: LogSink | undefined } {
  if (isatty(1)) {
    return { log: pino({ level, base: { name: 'uvtep' } }, pino.transport({ target: 'pino-pretty', options: { colorize: true, ignore: 'pid,hostname' } })), sink: undefined };
  }
  const sink = new LogSink(1);
  return { log: pino({ level, base: { name: 'uvtep' } }, sink), sink };
}

/** The exit code and log line for an error while starting or adding a VTEP. */
export function startError(e: unknown, log: Logger, where = ''): number {
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
export async function runFlannel(o: RunOpts, entries: Array<Record<string, unknown>> | undefined, reread: Reread): Promise<number> {
  if (entries !== undefined) return usageError('option --flannel: one flannel member per process; --config must not hold a vteps: list');
  if ((o.etcd ?? []).length === 0) return usageError('option --flannel: needs --etcd <url>: the etcd of the flannel network');
  for (const k of ['vni', 'remote', 'group', 'name', 'listenPort', 'etcdMacs', 'proxy', 'etcdAllow', 'bridge', 'address'] as const) {
    if (o[k] !== undefined && o[k] !== false) return usageError(`option ${FLAG[k]!}: not with --flannel: ${k === 'vni' || k === 'listenPort' ? 'the VNI and port come from the network config' : k === 'name' ? 'the TAP is flannel.<VNI>, as flanneld names it' : k === 'address' || k === 'bridge' ? 'the TAP gets <subnet>.0/32; pods go on a bridge of their own (flannel\'s CNI plugin)' : 'the members come from the subnet leases'}`);
  }
  let etcd: Omit<EtcdSettings, 'log'>;
  let publicIp: string;
  let metricsAt: ReturnType<typeof parseMetricsAddress> | undefined;
  try {
    if (o.metrics !== undefined) metricsAt = parseMetricsAddress(o.metrics, 'metrics');
    etcd = { ...resolveEtcdSettings(o)!, ttlS: FLANNEL_LEASE_TTL_S };
    checkKeyPrefix(o.flannelPrefix, 'flannel-prefix');
    // the lease's PublicIP: an IPv4 underlay address (the checks of a VTEP's options, VNI aside)
    const c = resolveConfig({ vni: 1, ...(o.local !== undefined ? { local: o.local } : {}), ...(o.dev !== undefined ? { dev: o.dev } : {}) });
    if (c.family !== 4) throw new ConfigError(ErrorCode.InvalidOption, 'local', 'local: flannel\'s PublicIP is IPv4; give an IPv4 --local');
    publicIp = advertiseAddress(c, '', '--flannel');
  } catch (e) {
    if (e instanceof ConfigError) return usageError(configMessage(e));
    throw e;
  }
  const spec = (net: FlannelNetwork): VtepSpec =>
    specOf({ ...o, vni: net.vni, dstport: net.port, listenPort: net.port, learning: false, name: `flannel.${net.vni}`, ...(net.mtu !== undefined ? { mtu: net.mtu } : {}) });
  const { log, sink } = makeLogger(o.logLevel);
  const code = await serve(
    reread,
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

export async function run(o: RunOpts, entries: Array<Record<string, unknown>> | undefined, reread: Reread): Promise<number> {
  if (o.transport !== 'auto' && o.transport !== 'native' && o.transport !== 'dgram') {
    return usageError(`option --transport: expected native or dgram, got ${JSON.stringify(o.transport)}`);
  }
  if (o.flannel === true) return runFlannel(o, entries, reread);
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
  const code = await serve(reread, o, entries, specs, metricsAt, etcd, undefined, log, () => sink?.stopping());
  // the final records: written if the reader reads within a second, else dropped (never a hang)
  await sink?.close(1000);
  return code;
}

async function serve(
  /** The command line and the config file read again (SIGHUP). */
  reread: Reread,
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
    const dpPid = h.vtep.datapathPid;
    log.info(
      { tap: h.name, mtu: i.mtu, mac: i.mac, vni: i.vni, remotes: i.remotes, dstport: i.dstport, listen: i.listen, bridge: h.bridge, control: control?.path, datapath: dpPid !== undefined ? 'process' : 'inline', datapathPid: dpPid },
      `${h.name} up: vni ${i.vni}, mtu ${i.mtu}, mac ${i.mac}, remotes ${i.remotes.length ? i.remotes.join(', ') : 'none (learning and static entries only)'}, dstport ${i.dstport}, listening on ${i.listen}${h.bridge ? `, bridge ${h.bridge}` : ''}${dpPid !== undefined ? `, datapath process ${dpPid}` : ''}`,
    );
    // tunnel GSO by default (auto) that this host cannot send: said once
    const e = h.vtep.stats.io.tunnelGsoError;
    if (e !== undefined) log.info({ tap: h.name, tunnelGso: h.vtep.config.tunnelGso }, `${h.name}: ${e}; super-frames leave as UDP GSO messages`);
  };
  /** A VTEP's counters, its endpoint's and its FDB, for its last record. */
  const snapshot = (h: HostedVtep) => ({ tap: h.name, vni: h.vtep.config.vni, stats: h.vtep.stats, endpoint: h.endpoint.stats, fdb: h.vtep.fdb.list() });
  const finalRecord = (r: ReturnType<typeof snapshot>, reason: string) => log.info(r, `stopped (${reason}): ${r.tap}: ${summaryLine(r.stats)}`);

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
      for (const k of keysOf('process')) {
        if (k === 'logLevel' || k === 'config') continue;
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
          if (JSON.stringify(sp.tap[k]) !== JSON.stringify(h.spec.tap[k])) fixed.push(`${h.name}: ${FLAG[k] ?? k}`);
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
      log.info(r, `${h.name} removed (vni ${r.vni}): ${summaryLine(r.stats)}`);
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

