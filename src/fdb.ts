/**
 * The forwarding database: inner MAC -> remote VTEP(s), as the kernel's vxlan FDB.
 *
 * - Learning follows `vxlan_snoop()`: the inner source MAC maps to the outer source IP at the
 *   configured destination port (not the datagram's source port, which is a per-flow hash).
 *   A known MAC seen from a new IP migrates; static entries never migrate (the frame is dropped,
 *   as Linux does); zero and group source MACs are never learned.
 * - The all-zero MAC entry holds the default destinations (`bridge fdb append
 *   00:00:00:00:00:00 dst IP`): the flood list for broadcast, multicast and unknown unicast.
 * - Dynamic entries age out after `ageingMs` (default 300 s), swept every `sweepIntervalMs`
 *   (10 s, the kernel's FDB_AGE_INTERVAL) by an unref'd timer.
 * - `maxAddress` caps the number of entries (the all-zero entry not counted); 0 = unlimited.
 *   When full, new MACs are not learned (counted in `learnRefused`), as Linux returns ENOSPC.
 */
import { EventEmitter } from 'node:events';
import { ErrorCode, UvtepError } from './errors.js';
import { formatMac, isValidUnicastMac, MAC_ZERO } from './wire/ethernet.js';

/** Default ageing of learned entries, as the kernel's FDB_AGE_DEFAULT (300 s). */
export const FDB_AGE_DEFAULT_S = 300;
/** How often expired entries are swept, as the kernel's FDB_AGE_INTERVAL (10 s). */
export const FDB_AGE_INTERVAL_S = 10;
/**
 * Default cap on entries. Linux's default is unlimited; uvtep caps so that a MAC flood from an
 * open UDP port cannot exhaust memory. 0 means unlimited.
 */
export const FDB_MAX_DEFAULT = 32768;

/** A remote VTEP: an underlay IP literal and UDP port. Interned by the Fdb; compare by identity. */
export interface Remote {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
  /** `address|port`, unique per remote. */
  readonly key: string;
  /** The VNI of the FDB that interned it (-1 when unset): routes send errors on a shared endpoint. */
  readonly vni: number;
}

/** Unused interned remotes tolerated before a prune (see `Fdb.remotes`). */
const REMOTES_SLACK = 1024;

/**
 * Where a destination of an entry came from: the configuration (`--remote`, `--group`, the config
 * file), a change through the control socket or the library, learning from the wire, or (later)
 * an etcd control plane. A reconciler changes only the entries of its own origin.
 */
export type FdbOrigin = 'config' | 'control' | 'learned' | 'etcd';

export class FdbEntry {
  readonly mac: number;
  remotes: Remote[];
  /** The origin of each destination, aligned with `remotes`; undefined: learned (the common case, no array). */
  origins: FdbOrigin[] | undefined;
  isStatic: boolean;
  /** Clock time (ms) when last learned or refreshed; static entries keep their creation time. */
  updated: number;
  constructor(mac: number, remotes: Remote[], isStatic: boolean, updated: number, origins?: FdbOrigin[]) {
    this.mac = mac;
    this.remotes = remotes;
    this.origins = origins;
    this.isStatic = isStatic;
    this.updated = updated;
  }
  /** The origin of destination `i`. */
  originOf(i: number): FdbOrigin {
    return this.origins?.[i] ?? 'learned';
  }
}

/** Options of a change: static (default true, as `bridge fdb`) and the origin (default `control`). */
export interface FdbChangeOptions {
  static?: boolean;
  origin?: FdbOrigin;
}

/** Outcome of `Fdb.learn`, numeric for the data path. */
export const LearnResult = {
  /** Already known from this remote (refreshed). */
  Known: 0,
  Learned: 1,
  Migrated: 2,
  /** A static entry points elsewhere: the frame must be dropped (Linux does the same). */
  StaticConflict: 3,
  /** The table is full; not learned. */
  Full: 4,
  /** Zero or group source MAC: never learned. */
  Invalid: 5,
} as const;
export type LearnResult = (typeof LearnResult)[keyof typeof LearnResult];

export interface FdbOptions {
  /** Ageing of dynamic entries in ms; 0 = never age. */
  ageingMs?: number;
  /** Sweep interval in ms. */
  sweepIntervalMs?: number;
  /** Cap on entries (the all-zero entry not counted); 0 = unlimited. */
  maxAddress?: number;
  /** Port learned remotes are reached at (the VTEP's destination port). */
  dstPort: number;
  /** The VTEP's VNI, carried by every remote this FDB interns (default -1). */
  vni?: number;
  /** Clock in ms; injectable for tests. */
  clock?: () => number;
}

/** One row of `Fdb.list()`, as `bridge fdb show` prints. */
export interface FdbRow {
  mac: string;
  dst: string;
  port: number;
  static: boolean;
  /** Seconds since the entry was learned or refreshed. */
  ageS: number;
  /** Where this destination came from. */
  origin: FdbOrigin;
}

export interface FdbEvents {
  learned: [mac: number, remote: Remote];
  migrated: [mac: number, from: Remote, to: Remote];
  aged: [mac: number, remote: Remote];
}

export class Fdb extends EventEmitter<FdbEvents> {
  readonly ageingMs: number;
  readonly sweepIntervalMs: number;
  readonly maxAddress: number;
  readonly dstPort: number;
  readonly vni: number;
  readonly clock: () => number;
  /** Default destinations (the all-zero entry's remotes); the same array object while it lives. */
  flood: Remote[] = [];
  /** Learning attempts refused because the table was full. */
  learnRefused: number = 0;
  private readonly table: Map<number, FdbEntry> = new Map();
  /**
   * Interned remotes. Only those some entry uses are kept: a remote is dropped with the last entry
   * that uses it (ageing, delete, flush, migration), at the latest when the table of remotes grows
   * past twice the entries (+1024), so a flood of spoofed sources cannot grow it.
   */
  private remotes: Map<string, Remote> = new Map();
  private timer: NodeJS.Timeout | undefined;
  /**
   * Called after any change that can redirect or remove an existing entry (migration, append,
   * replace, delete, flush, ageing): what a cache of lookups must forget (src/flowcache.ts). A
   * new entry does not call it: nothing cached can depend on a MAC that was not there.
   */
  onChange: (() => void) | undefined;
  /** Called before the entries' ages are read (an ageing sweep, `list`): a cache that forwarded for entries refreshes them first. */
  beforeAgeRead: (() => void) | undefined;

  constructor(opts: FdbOptions) {
    super();
    this.ageingMs = opts.ageingMs ?? FDB_AGE_DEFAULT_S * 1000;
    this.sweepIntervalMs = opts.sweepIntervalMs ?? FDB_AGE_INTERVAL_S * 1000;
    this.maxAddress = opts.maxAddress ?? FDB_MAX_DEFAULT;
    this.dstPort = opts.dstPort;
    this.vni = opts.vni ?? -1;
    this.clock = opts.clock ?? Date.now;
  }

  /** Number of entries, the all-zero (flood) entry not counted. */
  get size(): number {
    return this.table.size - (this.table.has(MAC_ZERO) ? 1 : 0);
  }

  /** The interned remote for `address` (an IP literal, already validated) and `port`. */
  remote(address: string, port: number = this.dstPort): Remote {
    const key = address + '|' + port;
    let r = this.remotes.get(key);
    if (r === undefined) {
      r = { address, port, family: address.includes(':') ? 6 : 4, key, vni: this.vni };
      if (this.remotes.size >= 2 * this.table.size + REMOTES_SLACK) this.prune();
      this.remotes.set(key, r);
    }
    return r;
  }

  /** Remotes interned now (the ones entries use, and at most a bounded number of others). */
  get remoteCount(): number {
    return this.remotes.size;
  }

  /** Keeps only the remotes some entry uses (identity is preserved for those). */
  private prune(): void {
    const keep = new Map<string, Remote>();
    for (const e of this.table.values()) for (const r of e.remotes) keep.set(r.key, r);
    this.remotes = keep;
  }

  /** Exact lookup; no allocation. */
  lookup(mac: number): FdbEntry | undefined {
    return this.table.get(mac);
  }

  /**
   * `vxlan_snoop()`: learn that `mac` lives behind `address` (outer source IP).
   * Call only with learning enabled; the caller drops the frame on `StaticConflict`.
   */
  learn(mac: number, address: string): LearnResult {
    if (!isValidUnicastMac(mac)) return LearnResult.Invalid;
    const e = this.table.get(mac);
    if (e !== undefined) {
      const cur = e.remotes[0];
      if (cur !== undefined && cur.address === address) {
        if (!e.isStatic) e.updated = this.clock();
        return LearnResult.Known;
      }
      if (e.isStatic) return LearnResult.StaticConflict;
      const to = this.remote(address);
      const from = cur ?? to;
      e.remotes = [to];
      e.origins = undefined;
      e.updated = this.clock();
      this.onChange?.();
      this.emit('migrated', mac, from, to);
      return LearnResult.Migrated;
    }
    if (this.maxAddress > 0 && this.size >= this.maxAddress) {
      this.learnRefused++;
      return LearnResult.Full;
    }
    const r = this.remote(address);
    this.table.set(mac, new FdbEntry(mac, [r], false, this.clock()));
    this.emit('learned', mac, r);
    return LearnResult.Learned;
  }

  /** `bridge fdb add`: create an entry; fails if the MAC exists (EEXIST). Static by default. */
  add(mac: number, remote: Remote, opts: FdbChangeOptions = {}): void {
    if (this.table.has(mac)) {
      throw new UvtepError(ErrorCode.FdbExists, `fdb entry ${formatMac(mac)} exists; use replace or append`);
    }
    this.create(mac, [remote], opts.static ?? true, opts.origin ?? 'control');
  }

  /** `bridge fdb append`: add a destination to an entry, creating it if needed. */
  append(mac: number, remote: Remote, opts: FdbChangeOptions = {}): void {
    const origin = opts.origin ?? 'control';
    const e = this.table.get(mac);
    if (e === undefined) {
      this.create(mac, [remote], opts.static ?? true, origin);
      return;
    }
    if (!e.remotes.includes(remote)) {
      e.origins = [...e.remotes.map((_, i) => e.originOf(i)), origin];
      e.remotes = [...e.remotes, remote];
    }
    if (opts.static ?? true) e.isStatic = true;
    if (mac === MAC_ZERO) this.flood = e.remotes;
    this.onChange?.();
  }

  /** `bridge fdb replace`: the entry's destinations become `[remote]`, creating it if needed. */
  replace(mac: number, remote: Remote, opts: FdbChangeOptions = {}): void {
    const origin = opts.origin ?? 'control';
    const e = this.table.get(mac);
    if (e === undefined) {
      this.create(mac, [remote], opts.static ?? true, origin);
      return;
    }
    e.remotes = [remote];
    e.origins = [origin];
    e.isStatic = opts.static ?? true;
    e.updated = this.clock();
    if (mac === MAC_ZERO) this.flood = e.remotes;
    this.onChange?.();
  }

  /**
   * `bridge fdb del`: remove the entry, or only the destination `remote` when given.
   * Returns false when there was nothing to remove.
   */
  delete(mac: number, remote?: Remote): boolean {
    const e = this.table.get(mac);
    if (e === undefined) return false;
    if (remote !== undefined) {
      const at = e.remotes.indexOf(remote);
      if (at < 0) return false;
      if (e.origins !== undefined) e.origins = e.origins.filter((_, i) => i !== at);
      e.remotes = e.remotes.filter((r) => r !== remote);
      if (e.remotes.length > 0) {
        if (mac === MAC_ZERO) this.flood = e.remotes;
        this.onChange?.();
        return true;
      }
    }
    this.table.delete(mac);
    if (mac === MAC_ZERO) this.flood = [];
    this.prune();
    this.onChange?.();
    return true;
  }

  /**
   * What a reconciler of `origin` may remove: destination `remote` of the entry when it came from
   * `origin`, or without `remote` the whole entry when every destination did. Returns whether
   * something was removed.
   */
  deleteOwn(mac: number, remote: Remote | undefined, origin: FdbOrigin): boolean {
    const e = this.table.get(mac);
    if (e === undefined) return false;
    if (remote === undefined) return e.remotes.every((_, i) => e.originOf(i) === origin) && this.delete(mac);
    const at = e.remotes.indexOf(remote);
    if (at < 0 || e.originOf(at) !== origin) return false;
    return this.delete(mac, remote);
  }

  /**
   * What a reconciler of `origin` may install: the entry becomes the static destination `remote`
   * of `origin`, unless the configuration or the control socket holds it (those stay as they
   * are; learned and `origin`'s own entries are replaced). Returns false when it was left, or
   * the table is full.
   */
  replaceOwn(mac: number, remote: Remote, origin: FdbOrigin): boolean {
    const e = this.table.get(mac);
    if (e !== undefined && e.remotes.some((_, i) => e.originOf(i) !== origin && e.originOf(i) !== 'learned')) return false;
    try {
      this.replace(mac, remote, { static: true, origin });
    } catch {
      return false; // full (maxAddress): known unicast to it floods, as before
    }
    return true;
  }

  /**
   * `bridge fdb flush`: remove dynamic entries, or every entry when `dynamicOnly` is false. The
   * default destinations (the all-zero entry: `--remote`, `--group`, `fdb append 00:..:00`) stay,
   * as the kernel's flush keeps them; delete them with `delete(0, remote)`.
   */
  flush(opts: { dynamicOnly?: boolean } = {}): number {
    const dynamicOnly = opts.dynamicOnly ?? true;
    let n = 0;
    for (const [mac, e] of this.table) {
      if (mac === MAC_ZERO || (dynamicOnly && e.isStatic)) continue;
      this.table.delete(mac);
      n++;
    }
    this.prune();
    if (n > 0) this.onChange?.();
    return n;
  }

  /** Every entry, one row per destination, like `bridge fdb show`. */
  list(): FdbRow[] {
    this.beforeAgeRead?.();
    const now = this.clock();
    const rows: FdbRow[] = [];
    for (const e of this.table.values()) {
      e.remotes.forEach((r, i) => {
        rows.push({
          mac: formatMac(e.mac),
          dst: r.address,
          port: r.port,
          static: e.isStatic,
          ageS: Math.max(0, Math.floor((now - e.updated) / 1000)),
          origin: e.originOf(i),
        });
      });
    }
    return rows;
  }

  /** Removes expired dynamic entries; returns how many. Called by the ageing timer. */
  sweep(): number {
    if (this.ageingMs <= 0) return 0;
    this.beforeAgeRead?.();
    const now = this.clock();
    let n = 0;
    for (const [mac, e] of this.table) {
      if (e.isStatic || e.updated + this.ageingMs > now) continue;
      this.table.delete(mac);
      n++;
      const r = e.remotes[0];
      if (r !== undefined) this.emit('aged', mac, r);
    }
    if (n > 0) {
      this.prune();
      this.onChange?.();
    }
    return n;
  }

  /** A dynamic entry was used by a datagram from its station (as `learn` from the same address): its age restarts. */
  touch(mac: number): void {
    const e = this.table.get(mac);
    if (e !== undefined && !e.isStatic) e.updated = this.clock();
  }

  /** Starts the ageing timer (unref'd: it never keeps the process alive). */
  startAgeing(): void {
    if (this.timer !== undefined || this.ageingMs <= 0) return;
    this.timer = setInterval(() => this.sweep(), this.sweepIntervalMs);
    this.timer.unref();
  }

  stopAgeing(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private create(mac: number, remotes: Remote[], isStatic: boolean, origin: FdbOrigin): void {
    if (mac !== MAC_ZERO && this.maxAddress > 0 && this.size >= this.maxAddress) {
      throw new UvtepError(ErrorCode.FdbFull, `fdb is full (maxAddress ${this.maxAddress}); cannot add ${formatMac(mac)}`);
    }
    this.table.set(mac, new FdbEntry(mac, remotes, isStatic, this.clock(), remotes.map(() => origin)));
    if (mac === MAC_ZERO) this.flood = remotes;
  }
}
