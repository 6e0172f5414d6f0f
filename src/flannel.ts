/**
 * flannel-compatible mode (`uvtep --flannel`): a uvtep host is a member of a flannel network
 * (etcd v3, vxlan backend) next to hosts running flanneld, with nothing changed on them.
 *
 * flannel's protocol, as flanneld implements it:
 *
 *   <prefix>/config                  {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 0}}
 *   <prefix>/subnets/10.244.3.0-24   {"PublicIP": "198.51.100.3", "PublicIPv6": null, "BackendType": "vxlan",
 *                                     "BackendData": {"VNI": 1, "VtepMAC": "02:.."}}   bound to a 24-hour lease
 *
 * Each host holds one subnet lease. Its device `flannel.<VNI>` has MAC = VtepMAC, the address
 * `<subnet>.0/32` and no learning. For every other lease it installs three things, and removes
 * them when the lease goes:
 *
 * - a permanent neighbour `<subnet>.0 lladdr VtepMAC`;
 * - a permanent FDB entry `VtepMAC dst PublicIP`;
 * - a route `<subnet> via <subnet>.0 onlink`.
 *
 * No ARP and no broadcast cross the tunnel. `/run/flannel/subnet.env` tells flannel's CNI plugin
 * the host's subnet. This module does the same with a TAP, static FDB entries (origin `etcd`),
 * and the neighbours and routes through the addon's rtnetlink. The etcd client, lease and
 * directory mirror are the `EtcdAgent`'s.
 */
import { randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Address4 } from 'ip-address';
import type { IKeyValue } from 'etcd3';
import { ConfigError, ErrorCode, UvtepError } from './errors.js';
import type { DirWatch, EtcdAgent, EtcdLogger } from './etcd.js';
import type { Remote } from './fdb.js';
import { loadBinding, type NativeBinding } from './native.js';
import type { Vtep } from './vtep.js';
import { ipv4Text } from './wire/ipv4.js';
import { formatMac, parseMac, writeMac } from './wire/ethernet.js';
import { VXLAN_PORT_LINUX } from './wire/vxlan.js';

export const FLANNEL_PREFIX_DEFAULT = '/coreos.com/network';
export const FLANNEL_SUBNET_FILE_DEFAULT = '/run/flannel/subnet.env';
/** flanneld's subnet lease: 24 hours. */
export const FLANNEL_LEASE_TTL_S = 24 * 3600;

/** A flannel network's config, as uvtep supports it (IPv4, vxlan backend, no GBP/DirectRouting). */
export interface FlannelNetwork {
  /** The overlay network, e.g. 10.244.0.0/16, as a 32-bit number and a length. */
  network: number;
  networkLen: number;
  subnetLen: number;
  /** First and last subnet that may be leased (32-bit network numbers). */
  subnetMin: number;
  subnetMax: number;
  vni: number;
  /** UDP port (flannel's Port 0 means the kernel default, 8472). */
  port: number;
  /** Backend MTU, when the config sets one. */
  mtu: number | undefined;
}

export interface FlannelLease {
  subnet: number;
  subnetLen: number;
  publicIp: string;
  vtepMac: number;
  vni: number;
}

/** Dotted-quad text of a 32-bit address. */
const ip4 = (n: number): string => ipv4Text(bytes4(n), 0);

function parseIp4(s: string): number | undefined {
  if (!Address4.isValid(s) || s.includes('/')) return undefined;
  return s.split('.').reduce((a, p) => a * 256 + Number(p), 0);
}

function parseCidr4(s: unknown): { net: number; len: number } | undefined {
  if (typeof s !== 'string') return undefined;
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(s);
  if (m === null) return undefined;
  const a = parseIp4(m[1]!);
  const len = Number(m[2]);
  if (a === undefined || len > 32) return undefined;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { net: (a & mask) >>> 0, len };
}

const cidr = (net: number, len: number) => `${ip4(net)}/${len}`;

function bytes4(n: number): Uint8Array {
  return Uint8Array.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

/**
 * `<prefix>/config` -> the network, or a ConfigError (option `flannel`) saying what uvtep does not
 * support: another backend type, GBP, DirectRouting, an IPv6-only network.
 */
export function parseFlannelConfig(text: string): FlannelNetwork {
  const bad = (what: string): never => {
    throw new ConfigError(ErrorCode.InvalidOption, 'flannel', `flannel: ${what}`);
  };
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return bad(`the network config is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
  }
  if (o === null || typeof o !== 'object') bad('the network config is not a JSON object');
  const be = (o.Backend ?? {}) as Record<string, unknown>;
  const type = be.Type ?? 'udp';
  if (type !== 'vxlan') bad(`the network's backend is ${JSON.stringify(type)}; uvtep joins vxlan networks only`);
  if (be.GBP === true) bad('the network uses VXLAN GBP (group policy); uvtep does not support it');
  if (be.DirectRouting === true) bad('the network uses DirectRouting; uvtep does not support it');
  if (o.Network === undefined) bad(o.IPv6Network !== undefined ? 'IPv6-only flannel networks are not supported yet; the config needs "Network" (IPv4)' : 'the network config has no "Network"');
  if (o.EnableIPv6 === true) bad('dual-stack flannel networks (EnableIPv6) are not supported yet');
  const n = parseCidr4(o.Network);
  if (n === undefined) return bad(`"Network" must be an IPv4 CIDR such as 10.244.0.0/16, got ${JSON.stringify(o.Network)}`);
  const subnetLen = o.SubnetLen === undefined ? (n.len <= 22 ? 24 : n.len + 2) : Number(o.SubnetLen);
  if (!Number.isInteger(subnetLen) || subnetLen <= n.len || subnetLen > 30) bad(`"SubnetLen" ${JSON.stringify(o.SubnetLen)} must be longer than the network's ${n.len} and at most 30`);
  const size = 2 ** (32 - subnetLen);
  const last = n.net + 2 ** (32 - n.len) - size;
  const min = o.SubnetMin === undefined ? n.net + size : parseIp4(String(o.SubnetMin));
  const max = o.SubnetMax === undefined ? last : parseIp4(String(o.SubnetMax));
  if (min === undefined || max === undefined || min < n.net || max > last || min > max) bad(`"SubnetMin"/"SubnetMax" must lie within ${cidr(n.net, n.len)}`);
  const vni = be.VNI === undefined ? 1 : Number(be.VNI);
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) bad(`"VNI" must be 0-16777215, got ${JSON.stringify(be.VNI)}`);
  const port = be.Port === undefined || be.Port === 0 ? VXLAN_PORT_LINUX : Number(be.Port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`"Port" must be a UDP port, got ${JSON.stringify(be.Port)}`);
  const mtu = be.MTU === undefined || be.MTU === 0 ? undefined : Number(be.MTU);
  return { network: n.net, networkLen: n.len, subnetLen, subnetMin: min!, subnetMax: max!, vni, port, mtu };
}

/** `<prefix>/subnets/10.244.3.0-24` + its JSON -> a lease; undefined when it is not one. */
export function parseLease(key: string, value: Buffer | string): FlannelLease | undefined {
  const m = /\/subnets\/(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(key);
  if (m === null) return undefined;
  const subnet = parseIp4(m[1]!);
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(value.toString()) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const data = (o?.BackendData ?? {}) as Record<string, unknown>;
  const mac = typeof data.VtepMAC === 'string' ? parseMac(data.VtepMAC) : undefined;
  const pub = typeof o?.PublicIP === 'string' && parseIp4(o.PublicIP) !== undefined ? o.PublicIP : undefined;
  if (subnet === undefined || o?.BackendType !== 'vxlan' || mac === undefined || pub === undefined) return undefined;
  return { subnet, subnetLen: Number(m[2]), publicIp: pub, vtepMac: mac, vni: Number(data.VNI ?? 1) };
}

/** The lease's JSON as flanneld writes it. */
export function leaseValue(publicIp: string, vni: number, vtepMac: number): string {
  return JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: vni, VtepMAC: formatMac(vtepMac) } });
}

/** FLANNEL_SUBNET of an existing subnet file (the subnet this host had), if readable. */
export function readSubnetFile(file: string): { net: number; len: number } | undefined {
  try {
    const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(readFileSync(file, 'utf8'));
    return m === null ? undefined : parseCidr4(m[1]);
  } catch {
    return undefined;
  }
}

export interface FlannelOptions {
  agent: EtcdAgent;
  prefix?: string;
  /** This host's underlay address (the lease's PublicIP). */
  publicIp: string;
  subnetFile?: string;
  /** FLANNEL_IPMASQ in the subnet file (uvtep installs no masquerade rule itself). */
  ipMasq?: boolean;
  log?: EtcdLogger;
  native?: NativeBinding;
}

export interface FlannelEvents {
  /** This host's own lease key was deleted: flanneld stops, and so does uvtep. */
  lost: [reason: string];
}

/** What the reconciler installed for one other host's lease. */
interface Peer {
  lease: FlannelLease;
  remote: Remote;
}

/**
 * A flannel member on a running Vtep (TAP `flannel.<VNI>`): `readConfig()`, create the Vtep from
 * it, then `join(vtep, tap)`: claims the subnet, addresses the TAP, writes the subnet file, and
 * mirrors the other leases into the FDB, the neighbours and the routes.
 */
export class FlannelMember {
  readonly prefix: string;
  readonly publicIp: string;
  readonly subnetFile: string;
  private readonly agent: EtcdAgent;
  private readonly log: EtcdLogger | undefined;
  private readonly native: NativeBinding;
  private readonly ipMasq: boolean;
  private readonly peers: Map<string, Peer> = new Map();
  private network: FlannelNetwork | undefined;
  private vtep: Vtep | undefined;
  private tap: string = '';
  private tapMac: number = 0;
  private ownKey: string | undefined;
  private dir: DirWatch | undefined;
  private onLost: ((reason: string) => void) | undefined;

  constructor(o: FlannelOptions) {
    this.agent = o.agent;
    this.prefix = (o.prefix ?? FLANNEL_PREFIX_DEFAULT).replace(/\/+$/, '');
    this.publicIp = o.publicIp;
    this.subnetFile = o.subnetFile ?? FLANNEL_SUBNET_FILE_DEFAULT;
    this.ipMasq = o.ipMasq ?? false;
    this.log = o.log;
    this.native = o.native ?? loadBinding();
  }

  /**
   * Reads `<prefix>/config`, waiting for it (as flanneld does) up to `waitMs`; throws a
   * ConfigError for what uvtep does not support, a UvtepError when there is none by then.
   */
  async readConfig(waitMs = 30_000): Promise<FlannelNetwork> {
    const deadline = Date.now() + waitMs;
    let logged = false;
    for (;;) {
      this.agent.counted();
      const text = await this.agent.etcd.get(`${this.prefix}/config`).string().catch(() => null);
      if (text !== null) {
        this.network = parseFlannelConfig(text);
        return this.network;
      }
      if (Date.now() > deadline) throw new UvtepError(ErrorCode.InvalidOption, `flannel: no network config at ${this.prefix}/config in etcd (${this.agent.endpoints.join(', ')}); write it as for flanneld, e.g. etcdctl put ${this.prefix}/config '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`);
      if (!logged) this.log?.warn({ key: `${this.prefix}/config` }, `flannel: waiting for the network config at ${this.prefix}/config`);
      logged = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /**
   * Claims a subnet for the TAP `tap` of `vtep` and mirrors the others; resolves with the subnet
   * (`10.244.3.0/24`). `onLost` is called when this host's own lease key is deleted (flanneld
   * stops then).
   */
  async join(vtep: Vtep, tap: string, tapMac: number, onLost: (reason: string) => void): Promise<string> {
    const net = this.network;
    if (net === undefined) throw new UvtepError(ErrorCode.State, 'flannel: readConfig() first');
    this.vtep = vtep;
    this.tap = tap;
    this.tapMac = tapMac;
    this.onLost = onLost;
    const id = this.agent.leaseId;
    if (id === undefined) throw new UvtepError(ErrorCode.State, `flannel: etcd at ${this.agent.endpoints.join(', ')} does not answer`);
    const { key, subnet } = await this.claim(id);
    this.ownKey = key;
    // the device: <subnet>.0/32, as flanneld configures flannel.<VNI>
    this.native.addAddress(tap, 4, bytes4(subnet), 32);
    this.writeSubnetFile(subnet);
    this.agent.onNewLease(async (lease) => {
      // a new lease (etcd was away longer than the lease): the key again, ours
      this.agent.counted();
      await this.agent.etcd.put(key).value(leaseValue(this.publicIp, net.vni, this.tapMac)).lease(lease);
    });
    this.dir = await this.agent.watchDir(`${this.prefix}/subnets/`, 'flannel subnets', {
      reset: (kvs) => this.reset(kvs),
      put: (kv) => this.put(kv),
      delete: (kv) => this.delete(kv),
    });
    return cidr(subnet, net.subnetLen);
  }

  /** Stops mirroring and removes what it installed (routes, neighbours, FDB entries). */
  async leave(): Promise<void> {
    if (this.dir !== undefined) await this.agent.unwatchDir(this.dir);
    this.dir = undefined;
    for (const key of [...this.peers.keys()]) this.remove(key);
  }

  /** Reuse a lease with our PublicIP; else the subnet file's subnet if free; else a random free one. */
  private async claim(id: string): Promise<{ key: string; subnet: number }> {
    const net = this.network!;
    const client = this.agent.etcd;
    const value = leaseValue(this.publicIp, net.vni, this.tapMac);
    this.agent.counted();
    const all = await client.getAll().prefix(`${this.prefix}/subnets/`).exec();
    const taken = new Set<number>();
    for (const kv of all.kvs) {
      const l = parseLease(kv.key.toString(), kv.value);
      if (l === undefined) continue;
      taken.add(l.subnet);
      if (l.publicIp === this.publicIp && l.subnetLen === net.subnetLen) {
        // ours from before (a restart): put it again with this lease and this MAC, if unchanged since
        this.agent.counted();
        const r = await client.if(kv.key.toString(), 'Mod', '==', Number(kv.mod_revision)).then(client.put(kv.key.toString()).value(value).lease(id)).commit();
        if (r.succeeded) {
          this.log?.info({ subnet: cidr(l.subnet, l.subnetLen) }, `flannel: reusing the lease of ${this.publicIp}: ${cidr(l.subnet, l.subnetLen)}`);
          return { key: kv.key.toString(), subnet: l.subnet };
        }
      }
    }
    const size = 2 ** (32 - net.subnetLen);
    const inRange = (s: number) => s >= net.subnetMin && s <= net.subnetMax && (s - net.network) % size === 0;
    const candidates: number[] = [];
    const fromFile = readSubnetFile(this.subnetFile);
    if (fromFile !== undefined && fromFile.len === net.subnetLen && inRange(fromFile.net) && !taken.has(fromFile.net)) candidates.push(fromFile.net);
    const count = (net.subnetMax - net.subnetMin) / size + 1;
    for (let tries = 0; tries < 64 && candidates.length < 65; tries++) {
      const s = net.subnetMin + randomInt(count) * size;
      if (!taken.has(s)) candidates.push(s);
    }
    if (candidates.length === 0) for (let s = net.subnetMin; s <= net.subnetMax; s += size) if (!taken.has(s)) candidates.push(s);
    for (const s of candidates) {
      const key = `${this.prefix}/subnets/${ip4(s)}-${net.subnetLen}`;
      this.agent.counted();
      const r = await client.if(key, 'Create', '==', 0).then(client.put(key).value(value).lease(id)).commit();
      if (r.succeeded) {
        this.log?.info({ subnet: cidr(s, net.subnetLen) }, `flannel: leased ${cidr(s, net.subnetLen)} for ${this.publicIp}`);
        return { key, subnet: s };
      }
    }
    throw new UvtepError(ErrorCode.InvalidOption, `flannel: no free subnet of /${net.subnetLen} left in ${cidr(net.network, net.networkLen)} (${taken.size} leased)`);
  }

  private writeSubnetFile(subnet: number): void {
    const net = this.network!;
    const mtu = this.vtep!.config.tapMtu;
    const text =
      `FLANNEL_NETWORK=${cidr(net.network, net.networkLen)}\n` +
      `FLANNEL_SUBNET=${ip4(subnet + 1)}/${net.subnetLen}\n` +
      `FLANNEL_MTU=${net.mtu ?? mtu}\n` +
      `FLANNEL_IPMASQ=${this.ipMasq}\n`;
    mkdirSync(path.dirname(this.subnetFile), { recursive: true });
    const tmp = `${this.subnetFile}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, this.subnetFile);
  }

  private reset(kvs: IKeyValue[]): void {
    const keys = new Set<string>();
    for (const kv of kvs) {
      keys.add(kv.key.toString());
      this.put(kv);
    }
    if (this.ownKey !== undefined && !keys.has(this.ownKey)) this.lost(`this host's lease ${this.ownKey} is gone from etcd`);
    for (const key of [...this.peers.keys()]) if (!keys.has(key)) this.remove(key);
  }

  private put(kv: IKeyValue): void {
    const key = kv.key.toString();
    if (key === this.ownKey) return;
    const l = parseLease(key, kv.value);
    if (l === undefined || l.publicIp === this.publicIp) {
      this.remove(key);
      return;
    }
    const old = this.peers.get(key);
    if (old !== undefined && old.lease.vtepMac === l.vtepMac && old.lease.publicIp === l.publicIp) return;
    if (old !== undefined) this.remove(key);
    const fdb = this.vtep!.fdb;
    const remote = fdb.remote(l.publicIp, this.network!.port);
    try {
      if (!fdb.replaceOwn(l.vtepMac, remote, 'etcd')) throw new Error(`the FDB is full, or holds ${formatMac(l.vtepMac)} from the configuration or the control socket`);
      const mac = Buffer.alloc(6);
      writeMac(mac, 0, l.vtepMac);
      this.native.setNeigh(this.tap, true, 4, bytes4(l.subnet), mac);
      this.native.setRoute(this.tap, true, 4, bytes4(l.subnet), l.subnetLen, bytes4(l.subnet));
      this.peers.set(key, { lease: l, remote });
      this.log?.info({ subnet: cidr(l.subnet, l.subnetLen), publicIp: l.publicIp }, `flannel: ${cidr(l.subnet, l.subnetLen)} via ${l.publicIp}`);
    } catch (e) {
      this.log?.error({ subnet: cidr(l.subnet, l.subnetLen), err: (e as Error).message }, `flannel: cannot install ${cidr(l.subnet, l.subnetLen)}: ${(e as Error).message}`);
    }
  }

  private delete(kv: IKeyValue): void {
    const key = kv.key.toString();
    if (key === this.ownKey) {
      this.lost(`this host's lease ${key} was deleted from etcd`);
      return;
    }
    this.remove(key);
  }

  private remove(key: string): void {
    const p = this.peers.get(key);
    if (p === undefined) return;
    this.peers.delete(key);
    const l = p.lease;
    try {
      this.native.setRoute(this.tap, false, 4, bytes4(l.subnet), l.subnetLen, bytes4(l.subnet));
      this.native.setNeigh(this.tap, false, 4, bytes4(l.subnet), Buffer.alloc(6));
    } catch (e) {
      // the TAP is gone (uvtep stopping): its routes and neighbours went with it
      this.log?.debug({ err: (e as Error).message }, 'flannel: removing');
    }
    this.vtep!.fdb.deleteOwn(l.vtepMac, undefined, 'etcd');
    this.log?.info({ subnet: cidr(l.subnet, l.subnetLen) }, `flannel: ${cidr(l.subnet, l.subnetLen)} (${l.publicIp}) left`);
  }

  private lost(reason: string): void {
    const cb = this.onLost;
    this.onLost = undefined;
    cb?.(reason);
  }
}
