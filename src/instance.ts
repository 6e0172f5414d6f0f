/**
 * Instance: the VTEPs one uvtep process hosts, as a host's kernel holds its vxlan devices. Each
 * VTEP is a VNI with its TAP, FDB and remotes; VTEPs on the same (local address, UDP port) share
 * one Endpoint (one socket), and VTEPs on different ports get one each. VTEPs are added and
 * removed while the others forward (`uvtep vtep add/del`); one that fails (its TAP deleted)
 * leaves, and the others keep running.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { resolveConfig, type VtepConfig, type VtepOptions } from './config.js';
import { createVtep, transportKind, udpTransport, type TransportKind } from './create.js';
import { Endpoint } from './endpoint.js';
import { ConfigError, ErrorCode, StateError } from './errors.js';
import { loadBinding } from './native.js';
import { TapDevice, type TapOptions } from './device/tap.js';
import { checkDgramOptions } from './transport/dgram.js';
import type { Vtep } from './vtep.js';
import { formatMac } from './wire/ethernet.js';

/** What one VTEP is made of: its options (as `createVtep` takes them) and its TAP's. */
export interface VtepSpec {
  vtep: VtepOptions;
  tap: TapOptions;
  /** How it takes part in the instance's control plane (etcd), when the instance has one. */
  plane?: PlaneOptions;
}

/** A VTEP's part in a control plane (`--etcd-allow`, `--etcd-macs`, `--proxy`). */
export interface PlaneOptions {
  /** Accept datagrams only from the members (besides `allowFrom`). */
  allow?: boolean;
  /** Publish the stations behind the TAP as MAC routes; install the others' as static entries. */
  macs?: boolean;
  /** Answer ARP/ND on the TAP from the MAC routes' addresses. */
  proxy?: boolean;
  /** The underlay address the others reach it at (default: its `local`, which must not be a wildcard). */
  advertise?: string;
}

/**
 * A control plane the Instance's VTEPs join when they start and leave when they stop (etcd:
 * `etcdPlane` in etcd.ts). A `join` that throws fails the add; nothing is left behind.
 */
export interface ControlPlane {
  join(h: HostedVtep): Promise<void>;
  leave(h: HostedVtep): Promise<void>;
}

export interface HostedVtep {
  /** The TAP's name: the VTEP's name in `uvtep fdb/stats --name`. */
  readonly name: string;
  readonly vtep: Vtep;
  readonly tap: TapDevice;
  readonly endpoint: Endpoint;
  readonly bridge: string | undefined;
  readonly startedAt: string;
  /** What it was made from. */
  readonly spec: VtepSpec;
}

/** A VTEP as `uvtep list` and the control socket's `info` describe it. */
export interface VtepInfo {
  tap: string;
  vni: number;
  dstport: number;
  /** The UDP endpoint it receives on, `address:port` (shared with the VTEPs on the same port). */
  listen: string;
  /** Default destinations, `ip`, `ip:port`, `group <ip>`. */
  remotes: string[];
  mtu: number;
  mac: string;
  bridge?: string;
  startedAt: string;
}

export interface InstanceEvents {
  added: [h: HostedVtep];
  removed: [h: HostedVtep];
  /** A VTEP failed (its TAP removed, its socket broke) and has left; the others keep running. */
  failed: [h: HostedVtep, err: Error];
}

/** The endpoint settings VTEPs sharing a (local, port) must agree on, as config fields. */
const SHARED: ReadonlyArray<keyof VtepConfig> = ['dev', 'ttl', 'tos', 'df', 'srcport', 'sndbuf', 'rcvbuf', 'gso', 'gro'];

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The endpoint a VTEP binds: family, local address and listening port (port 0: its own). */
function endpointKey(c: VtepConfig): string | undefined {
  return c.listenPort === 0 ? undefined : `${c.family}|${c.local}|${c.listenPort}`;
}

/** The first endpoint setting on which `c` differs from `other` (VTEPs sharing a port), as a ConfigError. */
function disagreement(c: VtepConfig, other: VtepConfig, where: string): ConfigError | undefined {
  for (const f of SHARED) {
    if (!same(c[f], other[f])) {
      return new ConfigError(
        ErrorCode.InvalidOption,
        f,
        `${f}: ${JSON.stringify(c[f]) ?? 'unset'} differs from ${JSON.stringify(other[f]) ?? 'unset'} of the VTEPs on ${where}; VTEPs that share a UDP port share its settings (or give this one another --dstport/--listen-port)`,
      );
    }
  }
  return undefined;
}

/**
 * Checks VTEPs meant to run together (a config file's `vteps:` list) before anything is created:
 * VNIs unique per port, TAP names unique, equal settings on a shared port. Throws a ConfigError
 * with `index`: the entry it is about.
 */
export function checkSpecs(specs: readonly VtepSpec[]): void {
  const byKey = new Map<string, { config: VtepConfig; vnis: Set<number> }>();
  const names = new Set<string>();
  specs.forEach((spec, i) => {
    const fail = (e: ConfigError): never => {
      throw Object.assign(e, { index: i });
    };
    const c = resolveConfig(spec.vtep);
    const name = spec.tap.name;
    if (name !== undefined) {
      if (names.has(name)) fail(new ConfigError(ErrorCode.Exists, 'name', `name: ${JSON.stringify(name)} is the name of another VTEP in the list`));
      names.add(name);
    }
    const key = endpointKey(c);
    if (key === undefined) return;
    const e = byKey.get(key);
    if (e === undefined) {
      byKey.set(key, { config: c, vnis: new Set([c.vni]) });
      return;
    }
    if (e.vnis.has(c.vni)) fail(new ConfigError(ErrorCode.Exists, 'vni', `vni: VNI ${c.vni} is in the list twice on ${c.local}:${c.listenPort}`));
    e.vnis.add(c.vni);
    const d = disagreement(c, e.config, `${c.local}:${c.listenPort}`);
    if (d !== undefined) fail(d);
  });
}

export function formatListen(a: { address: string; port: number }): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

export class Instance extends EventEmitter<InstanceEvents> {
  private readonly kind: TransportKind;
  private readonly vteps: Map<string, HostedVtep> = new Map();
  private readonly endpoints: Map<string, { ep: Endpoint; config: VtepConfig }> = new Map();
  /** Adds and removes run one at a time (control clients may race). */
  private serial: Promise<unknown> = Promise.resolve();
  private closed: boolean = false;
  private anyPort: number = 0;
  private readonly plane: ControlPlane | undefined;

  constructor(opts: { transport?: TransportKind; plane?: ControlPlane } = {}) {
    super();
    this.plane = opts.plane;
    this.kind = transportKind(opts.transport) as TransportKind;
  }

  /** The transport every endpoint uses: 'native' or 'dgram'. */
  get transport(): TransportKind {
    return this.kind;
  }

  /** The hosted VTEPs, in the order they were added. */
  list(): HostedVtep[] {
    return [...this.vteps.values()];
  }

  /** The endpoints (one per local address and port in use). */
  listEndpoints(): Endpoint[] {
    return [...this.endpoints.values()].map((e) => e.ep);
  }

  get(name: string): HostedVtep | undefined {
    return this.vteps.get(name);
  }

  /**
   * The VTEP meant by `name`, or the only one when no name is given. Throws a ConfigError that
   * names the VTEPs to choose from.
   */
  pick(name?: string): HostedVtep {
    if (name !== undefined) {
      const h = this.vteps.get(name);
      if (h === undefined) throw new ConfigError(ErrorCode.InvalidOption, 'name', `name: no VTEP ${JSON.stringify(name)} here; VTEPs: ${[...this.vteps.keys()].join(', ') || 'none'}`);
      return h;
    }
    if (this.vteps.size === 1) return this.vteps.values().next().value!;
    if (this.vteps.size === 0) throw new ConfigError(ErrorCode.InvalidOption, 'name', 'name: this uvtep hosts no VTEP now; add one with uvtep vtep add');
    throw new ConfigError(ErrorCode.InvalidOption, 'name', `name: this uvtep hosts several VTEPs (${[...this.vteps.keys()].join(', ')}): choose one with --name <tap>`);
  }

  info(h: HostedVtep): VtepInfo {
    const c = h.vtep.config;
    return {
      tap: h.name,
      vni: c.vni,
      dstport: c.dstPort,
      listen: h.endpoint.isOpen ? formatListen(h.endpoint.address()) : '',
      remotes: [...c.remotes.map((r) => (r.port === c.dstPort ? r.address : `${r.address}:${r.port}`)), ...(c.group !== undefined ? [`group ${c.group}`] : [])],
      mtu: h.tap.mtu,
      mac: formatMac(h.tap.mac),
      ...(h.bridge !== undefined ? { bridge: h.bridge } : {}),
      startedAt: h.startedAt,
    };
  }

  /**
   * Validates `spec` against itself and the running VTEPs (VNI and TAP name free, endpoint
   * settings equal to those of the VTEPs already on its port), then opens its TAP, attaches it to
   * its port's endpoint (binding that when it is the first) and starts it. On any error nothing
   * of the running VTEPs changes and nothing is left behind.
   */
  add(spec: VtepSpec): Promise<HostedVtep> {
    const run = this.serial.then(() => this.doAdd(spec));
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Stops the VTEP and removes its TAP (unless it was opened with `persist`). */
  remove(name: string): Promise<HostedVtep> {
    const run = this.serial.then(async () => {
      const h = this.pick(name);
      await this.release(h);
      this.emit('removed', h);
      return h;
    });
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Stops every VTEP and closes every endpoint. */
  async close(): Promise<void> {
    this.closed = true;
    await this.serial;
    if (this.plane !== undefined) await Promise.allSettled([...this.vteps.values()].map((h) => this.plane!.leave(h)));
    await Promise.allSettled([...this.vteps.values()].map((h) => h.vtep.close()));
    this.vteps.clear();
    await Promise.allSettled([...this.endpoints.values()].map((e) => e.ep.close()));
    this.endpoints.clear();
  }

  private async doAdd(spec: VtepSpec): Promise<HostedVtep> {
    if (this.closed) throw new StateError('the instance is stopping');
    const config = resolveConfig(spec.vtep);
    if (this.kind === 'dgram') checkDgramOptions(config);
    const name = spec.tap.name;
    if (name !== undefined && (this.vteps.has(name) || (existsSync(`/sys/class/net/${name}`) && !existsSync(`/sys/class/net/${name}/tun_flags`)))) {
      throw new ConfigError(ErrorCode.Exists, 'name', `name: a network device named ${JSON.stringify(name)} exists already${this.vteps.has(name) ? ' (a VTEP of this uvtep)' : ''}`);
    }
    const key = endpointKey(config) ?? `any|${++this.anyPort}`;
    const shared = this.endpoints.get(key);
    if (shared !== undefined) {
      if (shared.ep.serves(config.vni)) {
        throw new ConfigError(ErrorCode.Exists, 'vni', `vni: VNI ${config.vni} is served already on ${formatListen(shared.ep.address())} (by ${this.servedBy(config.vni, shared.ep)})`);
      }
      const d = disagreement(config, shared.config, formatListen(shared.ep.address()));
      if (d !== undefined) throw d;
    }
    if (config.busyPoll > 0) loadBinding().setBusyPoll(config.busyPoll);
    const ep = shared?.ep ?? new Endpoint(udpTransport(config, this.kind, undefined));
    if (shared === undefined) {
      this.endpoints.set(key, { ep, config });
    }
    let vtep: Vtep | undefined;
    try {
      const tap = new TapDevice({ mtu: config.tapMtu, gro: config.gro, ...spec.tap });
      // a control plane that keeps the flow cache off (source filter, station tracking, ARP/ND
      // suppression) gains nothing from the datapath process: inline unless asked for
      const cacheOff = this.plane !== undefined && (spec.plane?.allow === true || spec.plane?.macs === true || spec.plane?.proxy === true);
      vtep = createVtep({ ...spec.vtep, ...(cacheOff && spec.vtep.datapath === undefined && spec.vtep.tunnelGso !== true && spec.vtep.tunnelGso !== 'on' ? { datapath: 'inline' as const } : {}), frameDevice: tap, endpoint: ep });
      await vtep.start();
      const h: HostedVtep = { name: tap.name, vtep, tap, endpoint: ep, bridge: spec.tap.bridge, startedAt: new Date().toISOString(), spec };
      if (this.plane !== undefined) await this.plane.join(h);
      this.vteps.set(h.name, h);
      vtep.on('error', (err) => {
        if (this.vteps.get(h.name) !== h) return;
        void this.release(h).then(() => this.emit('failed', h, err));
      });
      this.emit('added', h);
      return h;
    } catch (e) {
      await vtep?.close();
      await this.closeIfIdle(ep);
      throw e;
    }
  }

  private servedBy(vni: number, ep: Endpoint): string {
    for (const h of this.vteps.values()) if (h.endpoint === ep && h.vtep.config.vni === vni) return h.name;
    return 'another VTEP';
  }

  private async release(h: HostedVtep): Promise<void> {
    this.vteps.delete(h.name);
    await this.plane?.leave(h).catch(() => undefined);
    await h.vtep.close();
    await this.closeIfIdle(h.endpoint);
  }

  /** Closes `ep` once no VTEP is attached to it (every hosted VTEP holds a lane while it runs). */
  private async closeIfIdle(ep: Endpoint): Promise<void> {
    if (ep.vnis.length > 0) return;
    for (const [key, e] of this.endpoints) if (e.ep === ep) this.endpoints.delete(key);
    await ep.close();
  }
}
