/**
 * The etcd v3 control plane: VTEPs find each other through etcd instead of `--remote` lists.
 *
 * Key layout (values JSON, every key bound to the process's one lease):
 *
 *   <prefix>/v1/vni/<vni>/vteps/<addr>:<port>    a member: {address, port, mac, node, vni, version}
 *   <prefix>/v1/vni/<vni>/macs/<mac>             a MAC route: {mac, address, port, ips, node}
 *
 * (IPv6 members are `[addr]:port`.) One `EtcdAgent` per process holds the client (one gRPC
 * connection) and the lease, whatever the number of VTEPs; each VTEP that joins is a
 * `Membership`:
 *
 * - claim: its member key is created only if absent (a transaction); a key of another node is a
 *   conflict (`EtcdConflictError`), a key of this node (a restart within the TTL) is taken over.
 * - reconcile: it lists its VNI's directory, then watches from the next revision. The other
 *   members are its flood list (FDB destinations of origin `etcd`, and with `allow` its accepted
 *   sources); the MAC routes of others are static FDB entries (origin `etcd`), and their addresses
 *   fill the neighbour table `proxy` answers from. Entries of other origins are never touched.
 * - publish (`macs`): the stations seen behind its TAP are put as MAC routes, and deleted when
 *   they age out.
 * - faults: a lost watch, a compaction or a reconnect lists again and reconciles; a lost lease
 *   (etcd away longer than the TTL) is granted anew, and everything is put again. While etcd is
 *   away nothing is flushed: forwarding goes on with the last known state.
 * - stop: `close()` revokes the lease, so the keys go at once; a crashed process's keys expire
 *   after the TTL.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname, networkInterfaces } from 'node:os';
import type { Etcd3, IKeyValue, IOptions, Lease, Watcher } from 'etcd3';
import type { VtepConfig } from './config.js';
import { checkIp, checkKeyPrefix } from './check.js';
import { ConfigError, ErrorCode, StateError, UvtepError } from './errors.js';
import { formatListen, type ControlPlane, type HostedVtep } from './instance.js';
import type { Remote } from './fdb.js';
import { LocalStations, NeighTable, type Station } from './neigh.js';
import type { Vtep } from './vtep.js';
import { formatMac, MAC_ZERO, parseMac } from './wire/ethernet.js';

export const ETCD_PREFIX_DEFAULT = '/uvtep';
export const ETCD_TTL_DEFAULT_S = 10;
/** The layout version in every key. */
export const ETCD_LAYOUT = 'v1';
const VERSION = '0.1.0';
/** Deadline of one etcd request (streams excepted). */
const CALL_DEADLINE_MS = 3000;
/** Local MAC changes are put together after this long (one transaction for a burst). */
const PUBLISH_DELAY_MS = 20;
/** Puts per transaction (etcd's default limit is 128 operations). */
const TXN_OPS_MAX = 64;
/** Warnings about etcd being away: at most one per this interval (the count says how many more). */
const WARN_INTERVAL_MS = 10_000;

export class EtcdConflictError extends UvtepError {
  constructor(message: string) {
    super(ErrorCode.EtcdConflict, message);
    this.name = 'EtcdConflictError';
  }
}

/** What the agent logs through (pino's signature). */
export interface EtcdLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface EtcdSettings {
  /** Client URLs, `http://host:2379` or `https://...`. */
  endpoints: readonly string[];
  /** Key prefix (default `/uvtep`). */
  prefix?: string;
  /** Lease TTL in seconds (default 10). */
  ttlS?: number;
  /** This node's name in member and MAC records (default: the host name). */
  node?: string;
  /** TLS: the CA that signed the servers' certificates, and a client certificate and key. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** Password authentication. */
  auth?: { username: string; password: string };
  log?: EtcdLogger;
}

/** How one VTEP takes part. */
export interface MemberSpec {
  /** The underlay address and port the other VTEPs send to. */
  advertise: { address: string; port: number };
  /** Its TAP's name (for logs) and MAC (in its record). */
  name?: string;
  mac?: string;
  /** Accept datagrams only from members (and `allowFrom`). */
  allow?: boolean;
  /** Publish the stations behind the TAP and install the others' as static FDB entries. */
  macs?: boolean;
  /** Answer ARP/ND for addresses of the MAC routes on the TAP (needs `macs`). */
  proxy?: boolean;
}

export interface MemberRecord {
  address: string;
  port: number;
  mac?: string;
  node: string;
  vni: number;
  version: string;
}

export interface MacRoute {
  mac: string;
  address: string;
  port: number;
  ips: string[];
  node: string;
}

export interface EtcdStats {
  up: boolean;
  /** Requests sent to etcd (ranges, puts, transactions, deletes, lease grants, watch creations). */
  requests: number;
  /** Failed requests and broken watches or keepalives. */
  errors: number;
  /** Leases granted (1 + one per recovery after a lost lease). */
  leases: number;
  /** Lists of a VNI's directory (1 per join + one per lost watch or recovery). */
  resyncs: number;
  /** Watch events applied. */
  events: number;
  members: number;
}

export interface EtcdAgentEvents {
  up: [];
  down: [reason: string];
  /** A VTEP's claim was refused after a recovery (another node holds its address): it stays out. */
  conflict: [vtep: Vtep, err: EtcdConflictError];
}

export function vniDir(prefix: string, vni: number): string {
  return `${prefix}/${ETCD_LAYOUT}/vni/${vni}/`;
}

export function memberKey(prefix: string, vni: number, a: { address: string; port: number }): string {
  return `${vniDir(prefix, vni)}vteps/${formatListen(a)}`;
}

export function macKey(prefix: string, vni: number, mac: number): string {
  return `${vniDir(prefix, vni)}macs/${formatMac(mac)}`;
}

function parseJson(v: Buffer | string): Record<string, unknown> | undefined {
  try {
    const o: unknown = JSON.parse(v.toString());
    return o !== null && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The canonical form of an IP literal (as the transport reports sources), or undefined. */
function canonicalIp(v: unknown): string | undefined {
  try {
    return checkIp(v, 'address').address;
  } catch {
    return undefined;
  }
}

/** The underlay address and port of a record, canonical, or undefined when they are not valid. */
function underlayOf(o: Record<string, unknown>): { address: string; port: number } | undefined {
  const address = canonicalIp(o.address);
  const port = o.port;
  if (address === undefined || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { address, port };
}

/** A member record as found in etcd; undefined when it is not one (ignored, never trusted). */
export function readMember(v: Buffer | string): MemberRecord | undefined {
  const o = parseJson(v);
  const at = o === undefined ? undefined : underlayOf(o);
  if (o === undefined || at === undefined) return undefined;
  return { ...at, node: String(o.node ?? ''), vni: Number(o.vni), version: String(o.version ?? ''), ...(typeof o.mac === 'string' ? { mac: o.mac } : {}) };
}

export function readMacRoute(v: Buffer | string): MacRoute | undefined {
  const o = parseJson(v);
  if (o === undefined || typeof o.mac !== 'string' || parseMac(o.mac) === undefined) return undefined;
  const at = underlayOf(o);
  if (at === undefined) return undefined;
  const ips = Array.isArray(o.ips) ? o.ips.slice(0, 64).flatMap((x) => canonicalIp(x) ?? []) : [];
  return { mac: o.mac, ...at, ips, node: String(o.node ?? '') };
}

/** What a mirrored directory (`EtcdAgent.watchDir`) tells its owner. */
export interface DirHandlers {
  /** A full list: the directory holds exactly these keys now. */
  reset(kvs: IKeyValue[]): void;
  put(kv: IKeyValue): void;
  delete(kv: IKeyValue): void;
}

/** A directory mirrored by `EtcdAgent.watchDir`. */
export interface DirWatch {
  readonly dir: string;
  /** For messages: `VNI 42`, `flannel subnets`. */
  readonly what: string;
  readonly handlers: DirHandlers;
  watcher: Watcher | undefined;
  /** The watch broke: the next `connected` lists again. */
  stale: boolean;
  closed: boolean;
}

/** One VTEP's part in the control plane. */
class Membership implements DirHandlers {
  readonly vtep: Vtep;
  readonly spec: MemberSpec;
  readonly vni: number;
  readonly selfKey: string;
  readonly self: string;
  readonly dir: string;
  /** Members (not this one) installed as flood destinations, by key. */
  readonly peers: Map<string, Remote> = new Map();
  /** Member addresses accepted with `allow` (the set the Vtep reads). */
  readonly allowed: Set<string> = new Set();
  /** MAC routes of others installed, by MAC. */
  readonly routes: Map<number, { remote: Remote; ips: string[] }> = new Map();
  readonly neigh: NeighTable | undefined;
  readonly stations: LocalStations | undefined;
  /** Stations to put, and MACs to delete, at the next publish. */
  readonly dirty: Set<number> = new Set();
  readonly gone: Set<number> = new Set();
  /** Its VNI's directory, mirrored once claimed. */
  dirWatch: DirWatch | undefined;
  claimed: boolean = false;
  publishTimer: NodeJS.Timeout | undefined;

  constructor(agent: EtcdAgent, vtep: Vtep, spec: MemberSpec) {
    this.vtep = vtep;
    this.spec = spec;
    this.vni = vtep.config.vni;
    this.dir = vniDir(agent.prefix, this.vni);
    this.selfKey = memberKey(agent.prefix, this.vni, spec.advertise);
    this.self = formatListen(spec.advertise);
    this.neigh = spec.proxy === true ? new NeighTable() : undefined;
    this.stations =
      spec.macs === true
        ? new LocalStations(
            {
              changed: (s) => {
                this.gone.delete(s.mac);
                this.dirty.add(s.mac);
                agent.schedulePublish(this);
              },
              expired: (s) => {
                this.dirty.delete(s.mac);
                this.gone.add(s.mac);
                agent.schedulePublish(this);
              },
            },
            { ageingS: vtep.config.ageingS },
          )
        : undefined;
    // entries of origin etcd already in the FDB (an earlier agent's, on a VTEP that joins again)
    // are adopted, so the first reconcile removes those no longer listed
    for (const row of vtep.fdb.list()) {
      if (row.origin !== 'etcd') continue;
      const mac = parseMac(row.mac)!;
      const remote = vtep.fdb.remote(row.dst, row.port);
      if (mac === MAC_ZERO) {
        this.peers.set(memberKey(agent.prefix, this.vni, remote), remote);
        this.allowed.add(remote.address);
      } else this.routes.set(mac, { remote, ips: [] });
    }
  }

  record(node: string): MemberRecord {
    return { address: this.spec.advertise.address, port: this.spec.advertise.port, ...(this.spec.mac !== undefined ? { mac: this.spec.mac } : {}), node, vni: this.vni, version: VERSION };
  }

  routeOf(s: Station, node: string): MacRoute {
    return { mac: formatMac(s.mac), address: this.spec.advertise.address, port: this.spec.advertise.port, ips: [...s.ips], node };
  }

  /** A member key appeared or changed. */
  putMember(key: string, v: Buffer): void {
    if (key === this.selfKey) return;
    const m = readMember(v);
    if (m === undefined) {
      this.deleteMember(key);
      return;
    }
    const fdb = this.vtep.fdb;
    const remote = fdb.remote(m.address, m.port);
    const had = this.peers.get(key);
    if (had === remote) return;
    if (had !== undefined) this.deleteMember(key);
    fdb.append(MAC_ZERO, remote, { origin: 'etcd' });
    this.peers.set(key, remote);
    this.allowed.add(remote.address);
  }

  deleteMember(key: string): void {
    const remote = this.peers.get(key);
    if (remote === undefined) return;
    this.peers.delete(key);
    this.vtep.fdb.deleteOwn(MAC_ZERO, remote, 'etcd');
    if (![...this.peers.values()].some((r) => r.address === remote.address)) this.allowed.delete(remote.address);
  }

  putRoute(mac: number, v: Buffer): void {
    const r = readMacRoute(v);
    if (r === undefined || parseMac(r.mac) !== mac) {
      this.deleteRoute(mac);
      return;
    }
    if (r.address === this.spec.advertise.address && r.port === this.spec.advertise.port) {
      // our own route (published by this VTEP): what another member had for it goes
      this.deleteRoute(mac);
      return;
    }
    const fdb = this.vtep.fdb;
    const remote = fdb.remote(r.address, r.port);
    const old = this.routes.get(mac);
    if (old !== undefined && this.neigh !== undefined) for (const ip of old.ips) this.neigh.delete(ip, mac);
    // an entry of the configuration or the control socket stays as it is (the route is still
    // remembered, for its addresses)
    fdb.replaceOwn(mac, remote, 'etcd');
    this.routes.set(mac, { remote, ips: r.ips });
    if (this.neigh !== undefined) for (const ip of r.ips) this.neigh.set(ip, mac);
  }

  deleteRoute(mac: number): void {
    const old = this.routes.get(mac);
    if (old === undefined) return;
    this.routes.delete(mac);
    if (this.neigh !== undefined) for (const ip of old.ips) this.neigh.delete(ip, mac);
    this.vtep.fdb.deleteOwn(mac, undefined, 'etcd');
  }

  put(kv: IKeyValue): void {
    this.apply('put', kv);
  }

  delete(kv: IKeyValue): void {
    this.apply('delete', kv);
  }

  reset(kvs: IKeyValue[]): void {
    this.reconcile(kvs);
  }

  apply(kind: 'put' | 'delete', kv: IKeyValue): void {
    const key = kv.key.toString();
    if (!key.startsWith(this.dir)) return;
    const rest = key.slice(this.dir.length);
    if (rest.startsWith('vteps/')) {
      if (kind === 'put') this.putMember(key, kv.value);
      else this.deleteMember(key);
    } else if (rest.startsWith('macs/')) {
      const mac = parseMac(rest.slice(5));
      if (mac === undefined) return;
      if (kind === 'put') this.putRoute(mac, kv.value);
      else this.deleteRoute(mac);
    }
  }

  /** The state after a full list: what is installed and no longer listed goes, the rest is put. */
  reconcile(kvs: IKeyValue[]): void {
    const members = new Set<string>();
    const macs = new Set<number>();
    for (const kv of kvs) {
      const key = kv.key.toString();
      const rest = key.slice(this.dir.length);
      if (rest.startsWith('vteps/')) members.add(key);
      else if (rest.startsWith('macs/')) {
        const mac = parseMac(rest.slice(5));
        if (mac !== undefined) macs.add(mac);
      }
      this.apply('put', kv);
    }
    for (const key of [...this.peers.keys()]) if (!members.has(key)) this.deleteMember(key);
    for (const mac of [...this.routes.keys()]) if (!macs.has(mac)) this.deleteRoute(mac);
  }

  /**
   * Stops observing and answering (the VTEP leaves; its FDB goes with it or stays as it is). The
   * accepted sources of `allow` stay the last members known: a VTEP that drops out of the control
   * plane (a refused claim after a recovery) fails closed, not open.
   */
  detach(): void {
    if (this.publishTimer !== undefined) clearTimeout(this.publishTimer);
    this.publishTimer = undefined;
    this.vtep.observeStations(undefined);
    this.vtep.setProxy(undefined);
  }
}

/**
 * The process's etcd client and lease, and the memberships of its VTEPs. `start()` once, `join()`
 * each VTEP, `leave()` it when it stops, `close()` at the end (revokes the lease).
 */
export class EtcdAgent extends EventEmitter<EtcdAgentEvents> {
  readonly prefix: string;
  readonly ttlS: number;
  readonly node: string;
  readonly endpoints: readonly string[];
  private readonly client: Etcd3;
  private readonly log: EtcdLogger | undefined;
  private readonly members: Map<Vtep, Membership> = new Map();
  private readonly dirs: Set<DirWatch> = new Set();
  private readonly leaseHooks: Array<(leaseId: string) => Promise<void>> = [];
  private lease: Lease | undefined;
  private currentLease: string | undefined;
  private isUp: boolean = false;
  private closed: boolean = false;
  private recovering: boolean = false;
  private recoverTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private lastWarn: number = 0;
  private warnsSuppressed: number = 0;
  private readonly counts = { requests: 0, errors: 0, leases: 0, resyncs: 0, events: 0 };

  constructor(settings: EtcdSettings) {
    super();
    this.prefix = (settings.prefix ?? ETCD_PREFIX_DEFAULT).replace(/\/+$/, '');
    this.ttlS = settings.ttlS ?? ETCD_TTL_DEFAULT_S;
    this.node = settings.node ?? hostname();
    this.endpoints = [...settings.endpoints];
    this.log = settings.log;
    // etcd3, gRPC and cockatiel hold about 30 MB of memory once loaded: the first agent loads
    // them, a uvtep without --etcd never does (a smaller process wakes faster: docs/benchmarks.md)
    const load = createRequire(import.meta.url);
    const { Etcd3: Client, isRecoverableError } = load('etcd3') as typeof import('etcd3');
    const { ConstantBackoff, ExponentialBackoff, handleWhen, noop, retry } = load('cockatiel') as typeof import('cockatiel');
    const options: IOptions = {
      hosts: [...settings.endpoints],
      dialTimeout: CALL_DEADLINE_MS,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
      // uvtep backs off itself (recover, resync): no circuit breaker that would hold a recovered
      // etcd closed for seconds, one quick retry for a request that met a reconnecting channel
      faultHandling: {
        host: () => noop,
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 1, backoff: new ConstantBackoff(100) }),
        // a factory, as the watch manager uses it (etcd3's declared type says a backoff)
        watchBackoff: new ExponentialBackoff({ initialDelay: 200, maxDelay: 2000 }) as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>,
      },
      grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 200, 'grpc.max_reconnect_backoff_ms': 2000, 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5000 },
      ...(settings.tls !== undefined
        ? { credentials: { rootCertificate: settings.tls.ca, ...(settings.tls.key !== undefined ? { privateKey: settings.tls.key } : {}), ...(settings.tls.cert !== undefined ? { certChain: settings.tls.cert } : {}) } }
        : {}),
      ...(settings.auth !== undefined ? { auth: { username: settings.auth.username, password: settings.auth.password } } : {}),
    };
    this.client = new Client(options);
  }

  /** The etcd client (one gRPC connection), for other control planes of the process. */
  get etcd(): Etcd3 {
    return this.client;
  }

  /** The lease every key of this process is bound to (undefined while etcd is away). */
  get leaseId(): string | undefined {
    return this.currentLease;
  }

  /** Counts a request made through `etcd` in `stats.requests`. */
  counted(n = 1): void {
    this.counts.requests += n;
  }

  /** Runs `hook` with the new lease after every recovery (a control plane puts its keys again). */
  onNewLease(hook: (leaseId: string) => Promise<void>): void {
    this.leaseHooks.push(hook);
  }

  /** Whether etcd answers and the lease is alive (`uvtep_etcd_up`). */
  get up(): boolean {
    return this.isUp;
  }

  get stats(): EtcdStats {
    return { up: this.isUp, ...this.counts, members: [...this.members.values()].reduce((n, m) => n + m.peers.size, 0) };
  }

  /** The members a VTEP has now (not itself), as `addr:port`. */
  peersOf(vtep: Vtep): string[] {
    const m = this.members.get(vtep);
    return m === undefined ? [] : [...m.peers.values()].map((r) => formatListen(r));
  }

  /**
   * Connects and grants the lease. Resolves true when etcd answered; false when it did not (the
   * agent keeps trying in the background and VTEPs forward with what they have meanwhile).
   */
  async start(): Promise<boolean> {
    this.tickTimer = setInterval(() => {
      for (const m of this.members.values()) m.stations?.tick();
    }, 1000);
    this.tickTimer.unref();
    try {
      await this.grantLease();
      this.markUp();
      return true;
    } catch (e) {
      this.markDown(`cannot reach etcd at ${this.endpoints.join(', ')}: ${(e as Error).message}`);
      this.scheduleRecover();
      return false;
    }
  }

  /**
   * A VTEP joins its VNI: claims its key, lists and watches. Throws `EtcdConflictError` when
   * another node holds its address (nothing of the VTEP changed). When etcd is away it joins in
   * the background, as soon as etcd answers.
   */
  async join(vtep: Vtep, spec: MemberSpec): Promise<void> {
    if (this.closed) throw new StateError('the etcd agent is closed');
    const m = new Membership(this, vtep, spec);
    this.members.set(vtep, m);
    if (spec.allow === true) vtep.setMembers(m.allowed);
    if (m.neigh !== undefined) vtep.setProxy(m.neigh);
    if (m.stations !== undefined) vtep.observeStations(m.stations);
    if (this.leaseId === undefined) return;
    try {
      await this.claim(m);
      m.dirWatch = await this.watchDir(m.dir, `VNI ${m.vni}`, m);
    } catch (e) {
      if (e instanceof EtcdConflictError) {
        this.members.delete(vtep);
        m.detach();
        throw e;
      }
      this.fault(`VNI ${m.vni}: ${(e as Error).message}`);
    }
  }

  /** A VTEP leaves: its keys are deleted (when etcd answers) and its watch ends. */
  async leave(vtep: Vtep): Promise<void> {
    const m = this.members.get(vtep);
    if (m === undefined) return;
    this.members.delete(vtep);
    m.detach();
    if (m.dirWatch !== undefined) await this.unwatchDir(m.dirWatch);
    if (!m.claimed || this.leaseId === undefined) return;
    const keys = [m.selfKey, ...(m.stations?.list() ?? []).map((s) => macKey(this.prefix, m.vni, s.mac))];
    try {
      for (let i = 0; i < keys.length; i += TXN_OPS_MAX) {
        this.counts.requests++;
        const txn = this.client.if(m.selfKey, 'Lease', '==', this.leaseId);
        await txn.then(...keys.slice(i, i + TXN_OPS_MAX).map((k) => this.client.delete().key(k))).commit();
      }
    } catch (e) {
      this.counts.errors++;
      this.log?.debug({ vni: m.vni, err: (e as Error).message }, 'etcd: leaving: keys left to expire with the lease');
    }
  }

  /**
   * Revokes the lease (every key of this process goes at once) and closes the client. With
   * `revoke: false` the keys are left to expire after the TTL, as a crash leaves them.
   */
  async close(opts: { revoke?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.recoverTimer !== undefined) clearTimeout(this.recoverTimer);
    if (this.tickTimer !== undefined) clearInterval(this.tickTimer);
    for (const m of this.members.values()) m.detach();
    this.members.clear();
    for (const d of this.dirs) void this.unwatchDir(d);
    const lease = this.lease;
    this.lease = undefined;
    if (lease !== undefined && opts.revoke === false) lease.release();
    else if (lease !== undefined && this.leaseId !== undefined) {
      this.counts.requests++;
      await lease.revoke({ deadline: Date.now() + 1000 }).catch(() => undefined);
    }
    this.client.close();
  }

  // --- inside ---

  private async grantLease(): Promise<void> {
    const lease = this.client.lease(this.ttlS, { autoKeepAlive: true });
    lease.on('lost', (err: Error) => {
      if (this.lease !== lease || this.closed) return;
      this.lease = undefined;
      this.currentLease = undefined;
      this.markDown(`the etcd lease was lost: ${err.message}`);
      this.scheduleRecover();
    });
    lease.on('keepaliveFailed', (err: unknown) => {
      if (this.lease !== lease || this.closed) return;
      this.counts.errors++;
      this.markDown(`etcd keepalive failed: ${(err as Error).message ?? String(err)}`);
    });
    lease.on('keepaliveSucceeded', () => {
      if (this.lease === lease) this.maybeUp();
    });
    this.counts.requests++;
    try {
      const id = await lease.grant();
      this.lease = lease;
      this.currentLease = id;
      this.counts.leases++;
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  /** Creates the member key if absent; takes it over if this node held it; else a conflict. */
  private async claim(m: Membership): Promise<void> {
    const id = this.leaseId!;
    const value = JSON.stringify(m.record(this.node));
    this.counts.requests++;
    const r = await this.client.if(m.selfKey, 'Create', '==', 0).then(this.client.put(m.selfKey).value(value).lease(id)).else(this.client.get(m.selfKey)).commit();
    if (!r.succeeded) {
      const kv = r.responses[0]?.response_range.kvs[0];
      const held = kv !== undefined ? readMember(kv.value) : undefined;
      if (kv !== undefined && held?.node !== this.node) {
        throw new EtcdConflictError(
          `etcd: ${m.self} is the address of another VTEP of VNI ${m.vni} (node ${JSON.stringify(held?.node ?? '?')}, key ${m.selfKey}); ` +
            `each VTEP advertises its own underlay address: give this one --local <its address>, or stop the other`,
        );
      }
      // ours from before (a restart within the TTL, or a lease lost and granted anew): take it over
      this.counts.requests++;
      await this.client.put(m.selfKey).value(value).lease(id);
    }
    m.claimed = true;
    // the stations known so far: put again with this lease
    if (m.stations !== undefined) for (const s of m.stations.list()) m.dirty.add(s.mac);
    if (m.dirty.size > 0) await this.publish(m);
  }

  /**
   * Mirrors a directory of keys: lists it, hands the whole state to `handlers.reset`, then watches
   * it from the list's revision + 1 (so nothing between the two is missed) and hands each change
   * over. A broken watch (etcd away, compaction) is listed again when etcd answers. This is the
   * reconciler's engine, for the memberships here and for other control planes (flannel.ts).
   */
  async watchDir(dir: string, what: string, handlers: DirHandlers): Promise<DirWatch> {
    const d: DirWatch = { dir, what, handlers, watcher: undefined, stale: true, closed: false };
    this.dirs.add(d);
    try {
      await this.resyncDir(d);
    } catch (e) {
      this.fault(`${what}: ${(e as Error).message}`);
      this.resyncDirLater(d);
    }
    return d;
  }

  async unwatchDir(d: DirWatch): Promise<void> {
    d.closed = true;
    this.dirs.delete(d);
    const w = d.watcher;
    d.watcher = undefined;
    await w?.cancel().catch(() => undefined);
  }

  private async resyncDir(d: DirWatch): Promise<void> {
    const old = d.watcher;
    d.watcher = undefined;
    await old?.cancel().catch(() => undefined);
    this.counts.requests++;
    this.counts.resyncs++;
    const res = await this.client.getAll().prefix(d.dir).exec();
    if (d.closed) return;
    d.handlers.reset(res.kvs);
    d.stale = false;
    const next = (BigInt(res.header.revision) + 1n).toString();
    this.counts.requests++;
    const w = await this.client.watch().prefix(d.dir).startRevision(next).create();
    if (d.closed || this.closed) {
      await w.cancel().catch(() => undefined);
      return;
    }
    d.watcher = w;
    w.on('put', (kv) => {
      this.counts.events++;
      d.handlers.put(kv);
    });
    w.on('delete', (kv) => {
      this.counts.events++;
      d.handlers.delete(kv);
    });
    w.on('disconnected', (err: Error) => {
      if (d.watcher !== w) return;
      d.stale = true;
      this.counts.errors++;
      this.markDown(`etcd watch of ${d.what} lost: ${err.message}`);
    });
    w.on('connected', () => {
      // back: what happened meanwhile may be compacted away, so list again rather than replay
      if (d.watcher !== w || !d.stale) return;
      this.resyncDirLater(d, 0);
    });
    w.on('error', (err: Error) => {
      // canceled by etcd (compaction past our revision): list again
      if (d.watcher !== w) return;
      d.stale = true;
      this.counts.errors++;
      this.warn(`etcd watch of ${d.what} canceled: ${err.message}; listing again`);
      this.resyncDirLater(d, 0);
    });
  }

  private resyncDirLater(d: DirWatch, delayMs = 1000): void {
    if (this.closed || d.closed) return;
    setTimeout(() => {
      if (this.closed || d.closed || this.recovering) return;
      this.resyncDir(d).then(
        () => this.maybeUp(),
        (e: Error) => {
          this.fault(`${d.what}: listing again failed: ${e.message}`);
          this.resyncDirLater(d);
        },
      );
    }, delayMs).unref();
  }

  /** Called by a membership's stations: puts the changes after a short delay, together. */
  schedulePublish(m: Membership): void {
    if (m.publishTimer !== undefined || this.closed) return;
    m.publishTimer = setTimeout(() => {
      m.publishTimer = undefined;
      if (this.leaseId === undefined || !m.claimed || this.members.get(m.vtep) !== m) return;
      this.publish(m).catch((e: Error) => this.fault(`VNI ${m.vni}: publishing MAC routes failed: ${e.message}`));
    }, PUBLISH_DELAY_MS);
    m.publishTimer.unref();
  }

  private async publish(m: Membership): Promise<void> {
    const id = this.leaseId!;
    const puts = [...m.dirty].flatMap((mac) => {
      const s = m.stations?.get(mac);
      return s === undefined ? [] : [this.client.put(macKey(this.prefix, m.vni, mac)).value(JSON.stringify(m.routeOf(s, this.node))).lease(id)];
    });
    const dels = [...m.gone].map((mac) => macKey(this.prefix, m.vni, mac));
    m.dirty.clear();
    m.gone.clear();
    for (let i = 0; i < puts.length; i += TXN_OPS_MAX) {
      this.counts.requests++;
      await this.client
        .if(m.selfKey, 'Create', '>', 0)
        .then(...puts.slice(i, i + TXN_OPS_MAX))
        .commit();
    }
    for (const key of dels) {
      // deleted only while it is still ours (another VTEP may have the MAC now)
      this.counts.requests++;
      await this.client.if(key, 'Lease', '==', id).then(this.client.delete().key(key)).commit();
    }
  }

  private scheduleRecover(delayMs = 500): void {
    if (this.closed || this.recoverTimer !== undefined) return;
    this.recoverTimer = setTimeout(() => {
      this.recoverTimer = undefined;
      void this.recover(delayMs);
    }, delayMs);
    this.recoverTimer.unref();
  }

  /** A new lease, every key put again, every VNI listed again. */
  private async recover(delayMs: number): Promise<void> {
    if (this.closed || this.recovering) return;
    this.recovering = true;
    // the directories mirrored before: listed again at the end (those a claim below creates are fresh)
    const before = [...this.dirs];
    try {
      if (this.leaseId === undefined) await this.grantLease();
      for (const m of [...this.members.values()]) {
        try {
          await this.claim(m);
        } catch (e) {
          if (!(e instanceof EtcdConflictError)) throw e;
          this.members.delete(m.vtep);
          m.detach();
          if (m.dirWatch !== undefined) await this.unwatchDir(m.dirWatch);
          this.log?.error({ vni: m.vni, err: e.message }, e.message);
          this.emit('conflict', m.vtep, e);
          continue;
        }
        if (m.dirWatch === undefined) m.dirWatch = await this.watchDir(m.dir, `VNI ${m.vni}`, m);
      }
      for (const hook of this.leaseHooks) await hook(this.leaseId!);
      for (const d of before) if (!d.closed) await this.resyncDir(d);
      this.recovering = false;
      this.maybeUp();
    } catch (e) {
      this.recovering = false;
      this.fault((e as Error).message);
      this.scheduleRecover(Math.min(delayMs * 2, 5000));
    }
  }

  /** Up again once the lease lives, every directory is mirrored and every VTEP has its key. */
  private maybeUp(): void {
    if (this.leaseId === undefined || this.recovering || this.closed) return;
    for (const d of this.dirs) if (d.stale) return;
    for (const m of this.members.values()) if (!m.claimed) return;
    this.markUp();
  }

  private markUp(): void {
    if (this.isUp || this.closed) return;
    this.isUp = true;
    if (this.warnsSuppressed > 0 || this.lastWarn > 0) this.log?.info({ etcd: this.endpoints }, `etcd: connected again (${this.endpoints.join(', ')})`);
    this.lastWarn = 0;
    this.warnsSuppressed = 0;
    this.emit('up');
  }

  private markDown(reason: string): void {
    if (this.closed) return;
    if (this.isUp) {
      this.isUp = false;
      this.emit('down', reason);
    }
    this.warn(`${reason}; forwarding goes on with the last known members`);
  }

  /** A failed request: counted, logged (rate-limited), recovered from in the background. */
  private fault(reason: string): void {
    this.counts.errors++;
    this.markDown(reason);
    if (this.leaseId === undefined) this.scheduleRecover();
    else if ([...this.members.values()].some((m) => !m.claimed)) this.scheduleRecover();
  }

  private warn(msg: string): void {
    const now = Date.now();
    if (now - this.lastWarn < WARN_INTERVAL_MS) {
      this.warnsSuppressed++;
      return;
    }
    this.log?.warn({ etcd: this.endpoints, since_last_report: this.warnsSuppressed }, `etcd: ${msg}`);
    this.lastWarn = now;
    this.warnsSuppressed = 0;
  }
}

/** The etcd options as the command line and the config file give them. */
export interface EtcdOptionValues {
  etcd?: readonly string[];
  etcdPrefix?: string;
  etcdTtl?: number | string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  etcdNode?: string;
}

/** The environment variable the etcd password is read from (never the command line). */
export const ETCD_PASSWORD_ENV = 'UVTEP_ETCD_PASSWORD';

function bad(option: string, what: string): never {
  throw new ConfigError(ErrorCode.InvalidOption, option, `${option}: ${what}`);
}

function readFile(option: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    bad(option, `cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * Checks the etcd options and reads their files: undefined without `--etcd`. Throws a
 * ConfigError naming the option. The password comes from `--etcd-password-file` or the
 * environment variable UVTEP_ETCD_PASSWORD.
 */
export function resolveEtcdSettings(o: EtcdOptionValues, env: NodeJS.ProcessEnv = process.env): Omit<EtcdSettings, 'log'> | undefined {
  const urls = (o.etcd ?? []).flatMap((u) => u.split(',')).map((u) => u.trim()).filter((u) => u.length > 0);
  if (urls.length === 0) {
    for (const [k, flag] of [['etcdCacert', 'etcd-cacert'], ['etcdCert', 'etcd-cert'], ['etcdKey', 'etcd-key'], ['etcdUser', 'etcd-user'], ['etcdPasswordFile', 'etcd-password-file']] as const) {
      if (o[k] !== undefined) bad(flag, 'needs --etcd <url>: the etcd endpoints to use');
    }
    return undefined;
  }
  for (const u of urls) {
    let url: URL | undefined;
    try {
      url = new URL(u);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || url.pathname.length > 1) {
      bad('etcd', `expected a client URL such as http://198.51.100.10:2379 or https://etcd1:2379, got ${JSON.stringify(u)}`);
    }
  }
  const prefix = checkKeyPrefix(o.etcdPrefix ?? ETCD_PREFIX_DEFAULT, 'etcd-prefix');
  const ttl = typeof o.etcdTtl === 'string' && /^\d+$/.test(o.etcdTtl) ? Number(o.etcdTtl) : (o.etcdTtl ?? ETCD_TTL_DEFAULT_S);
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 2 || ttl > 86400) bad('etcd-ttl', `expected whole seconds from 2 to 86400, got ${JSON.stringify(o.etcdTtl)}`);
  const https = urls.some((u) => u.startsWith('https:'));
  if ((o.etcdCert === undefined) !== (o.etcdKey === undefined)) bad(o.etcdCert === undefined ? 'etcd-cert' : 'etcd-key', 'a client certificate needs both --etcd-cert and --etcd-key');
  if (o.etcdCacert === undefined && (https || o.etcdCert !== undefined)) bad('etcd-cacert', 'https endpoints need the CA that signed the etcd servers\' certificates (as etcdctl --cacert)');
  if (o.etcdCacert !== undefined && !https) bad('etcd-cacert', 'TLS needs https:// endpoints in --etcd');
  const tls =
    o.etcdCacert !== undefined
      ? { ca: readFile('etcd-cacert', o.etcdCacert), ...(o.etcdCert !== undefined ? { cert: readFile('etcd-cert', o.etcdCert), key: readFile('etcd-key', o.etcdKey!) } : {}) }
      : undefined;
  let auth: EtcdSettings['auth'];
  if (o.etcdUser !== undefined) {
    if (o.etcdUser.includes(':')) bad('etcd-user', `expected a user name; the password never goes on the command line: put it in ${ETCD_PASSWORD_ENV} or a file for --etcd-password-file`);
    const password = o.etcdPasswordFile !== undefined ? readFile('etcd-password-file', o.etcdPasswordFile).toString().replace(/\r?\n$/, '') : env[ETCD_PASSWORD_ENV];
    if (password === undefined || password === '') bad('etcd-user', `needs a password: in the environment variable ${ETCD_PASSWORD_ENV}, or in a file given with --etcd-password-file`);
    auth = { username: o.etcdUser, password };
  } else if (o.etcdPasswordFile !== undefined) {
    bad('etcd-password-file', 'needs --etcd-user <name>');
  }
  const node = o.etcdNode ?? hostname();
  if (typeof node !== 'string' || !/^[A-Za-z0-9._-]{1,253}$/.test(node)) bad('etcd-node', `expected a node name (letters, digits, . _ -), got ${JSON.stringify(node)}`);
  return { endpoints: urls, prefix, ttlS: ttl, node, ...(tls !== undefined ? { tls } : {}), ...(auth !== undefined ? { auth } : {}) };
}

/** The address of interface `dev` of `family` in this network namespace, if it has one. */
export function deviceAddress(dev: string, family: 4 | 6): string | undefined {
  const list = networkInterfaces()[dev] ?? [];
  const want = family === 6 ? 'IPv6' : 'IPv4';
  // a global address before a link-local one
  const ok = list.filter((a) => a.family === want && !a.internal);
  return (ok.find((a) => !a.address.startsWith('fe80:')) ?? ok[0])?.address;
}

/**
 * The underlay address a host advertises in etcd: `--local` (not a wildcard), else the address
 * of `--dev`. Throws a ConfigError saying what to give; `who` prefixes it (`VNI 42: `) and
 * `mode` names the option that needs it (`--etcd`, `--flannel`).
 */
export function advertiseAddress(c: Pick<VtepConfig, 'local' | 'dev' | 'family'>, who: string, mode: string): string {
  if (c.local !== '0.0.0.0' && c.local !== '::') return c.local;
  if (c.dev !== undefined) {
    const a = deviceAddress(c.dev, c.family);
    if (a !== undefined) return a;
    bad('local', `${who}--dev ${c.dev} has no IPv${c.family} address to advertise in etcd; give --local <this host's underlay address>`);
  }
  bad('local', `${who}with ${mode}, give --local <this host's underlay address> (or --dev <ifname>): it is the address the other hosts send to`);
}

/** The Instance's control plane over `agent`: each VTEP with plane options joins its VNI. */
export function etcdPlane(agent: EtcdAgent): ControlPlane {
  return {
    join: async (h: HostedVtep) => {
      const p = h.spec.plane ?? {};
      const address = p.advertise ?? advertiseAddress(h.vtep.config, `VNI ${h.vtep.config.vni}: `, '--etcd');
      await agent.join(h.vtep, {
        advertise: { address, port: h.endpoint.address().port },
        name: h.name,
        mac: formatMac(h.tap.mac),
        ...(p.allow === true ? { allow: true } : {}),
        ...(p.macs === true ? { macs: true } : {}),
        ...(p.proxy === true ? { proxy: true } : {}),
      });
    },
    leave: (h: HostedVtep) => agent.leave(h.vtep),
  };
}
