/**
 * The control socket: a running uvtep answers JSON requests on a Unix socket (default
 * /run/uvtep/<tap>.sock, mode 0600), one JSON object per line each way. See docs/control.md.
 *
 *   -> {"id":1,"method":"fdb.show"}
 *   <- {"id":1,"ok":true,"result":[{"mac":"02:00:00:00:00:0b","dst":"198.51.100.2",...}]}
 *   <- {"id":2,"ok":false,"error":{"code":"UVTEP_ERR_INVALID_MAC","message":"..."}}
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { checkIp, checkMac, checkPort } from './check.js';
import { ConfigError, ErrorCode, UvtepError } from './errors.js';
import type { Endpoint } from './endpoint.js';
import type { Vtep } from './vtep.js';

export const CONTROL_DIR = '/run/uvtep';
/** Largest request line accepted (a request is a few hundred bytes). */
const MAX_LINE = 64 * 1024;
/** Requests waiting on one connection, and answer bytes it may leave unread, before it is dropped. */
const MAX_QUEUED = 256;
const MAX_PENDING_OUT = 4 * 1024 * 1024;

/**
 * The named network namespace this process runs in (`ip netns identify`), if any. Interface
 * names are per namespace, so control sockets of instances in a named namespace live under
 * /run/uvtep/netns/<name>/ (the root namespace keeps /run/uvtep/<tap>.sock).
 */
export function currentNetns(): string | undefined {
  try {
    const self = statSync('/proc/self/ns/net').ino;
    for (const name of readdirSync('/run/netns')) {
      try {
        if (statSync(path.join('/run/netns', name)).ino === self) return name;
      } catch {
        // a namespace being deleted
      }
    }
  } catch {
    // no /run/netns: the root namespace
  }
  return undefined;
}

/** Directory of this namespace's control sockets. */
export function controlDir(): string {
  const ns = currentNetns();
  return ns === undefined ? CONTROL_DIR : path.join(CONTROL_DIR, 'netns', ns);
}

export function controlPath(tap: string, dir = controlDir()): string {
  return path.join(dir, `${tap}.sock`);
}

/** One VTEP a control socket serves. */
export interface ControlVtep {
  /** Its name (the TAP's): what `--name` picks. */
  name: string;
  vtep: Vtep;
  /** The shared UDP endpoint it is on, when it is on one. */
  endpoint?: Endpoint;
}

/** What a control socket serves: one VTEP, or every VTEP of an uvtep process (an Instance). */
export interface ControlTarget {
  list(): ControlVtep[];
  /** The VTEP meant by `name`, or the only one; throws a ConfigError naming the choices. */
  pick(name?: string): ControlVtep;
  /** The VTEP as `info` and `uvtep list` show it. */
  info(v: ControlVtep): Record<string, unknown>;
  /** `vtep.add`: a VTEP from option values as the command line takes them (process-specific). */
  add?(options: Record<string, unknown>): Promise<ControlVtep>;
  /** `vtep.del`. */
  remove?(name: string): Promise<unknown>;
}

/** A ControlTarget of one Vtep (a library user's), named `name`. */
export function singleVtep(vtep: Vtep, name: string, info: () => Record<string, unknown> = () => ({ tap: name, vni: vtep.config.vni })): ControlTarget {
  const one: ControlVtep = { name, vtep };
  return {
    list: () => [one],
    pick: (n?: string) => {
      if (n !== undefined && n !== name) throw new ConfigError(ErrorCode.InvalidOption, 'name', `name: no VTEP ${JSON.stringify(n)} here; VTEPs: ${name}`);
      return one;
    },
    info: () => info(),
  };
}

/** What `info` answers: the process and its VTEPs. */
export interface ControlInfo {
  pid: number;
  startedAt: string;
  /** The control socket's path. */
  control: string;
  vteps: Array<Record<string, unknown> & { tap: string; vni: number }>;
}

export type FdbOp = 'add' | 'append' | 'replace' | 'del';

export interface FdbChange {
  mac: string;
  dst?: string;
  port?: number;
  /** Default true for add/append/replace, as `bridge fdb` (permanent). */
  static?: boolean;
}

export interface ControlServerOptions {
  path: string;
}

/** Applies one `bridge fdb`-style change; throws ConfigError/UvtepError on bad input. */
export function applyFdbChange(vtep: Vtep, op: FdbOp, c: FdbChange): { changed: boolean } {
  const mac = checkMac(c.mac, 'mac');
  const fdb = vtep.fdb;
  let remote;
  if (c.dst !== undefined) {
    const ip = checkIp(c.dst, 'dst');
    if (ip.family !== vtep.config.family) {
      throw new ConfigError(ErrorCode.FamilyMismatch, 'dst', `dst: this VTEP's underlay is IPv${vtep.config.family}, got ${c.dst}`);
    }
    remote = fdb.remote(ip.address, c.port === undefined ? vtep.config.dstPort : checkPort(c.port, 'port'));
  }
  if (op === 'del') return { changed: fdb.delete(mac, remote) };
  if (remote === undefined) throw new ConfigError(ErrorCode.InvalidAddress, 'dst', `dst: fdb ${op} needs "dst <ip>"`);
  const opts = { static: c.static ?? true, origin: 'control' as const };
  if (op === 'add') fdb.add(mac, remote, opts);
  else if (op === 'append') fdb.append(mac, remote, opts);
  else fdb.replace(mac, remote, opts);
  return { changed: true };
}

export class ControlServer {
  readonly path: string;
  private readonly server: net.Server;
  private readonly target: ControlTarget;
  private readonly startedAt: string;
  /** Open client connections: destroyed on close, so a client holding one cannot delay a stop. */
  private readonly conns: Set<net.Socket> = new Set();
  /** Device and inode of the socket we created: close removes the path only if it is still ours. */
  private ours: { dev: number; ino: number } | undefined;

  constructor(target: ControlTarget, opts: ControlServerOptions) {
    this.target = target;
    this.path = opts.path;
    this.startedAt = new Date().toISOString();
    this.server = net.createServer((sock) => {
      this.conns.add(sock);
      sock.once('close', () => this.conns.delete(sock));
      this.serve(sock);
    });
  }

  /**
   * Listens; replaces a stale socket left by a crashed run, and refuses to start when another
   * live instance answers on the same path.
   */
  async listen(): Promise<void> {
    mkdirSync(path.dirname(this.path), { recursive: true, mode: 0o755 });
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(this.path);
    } catch {
      st = undefined;
    }
    if (st !== undefined) {
      // only a stale socket is replaced: never a regular file, a directory or a symlink's target
      if (!st.isSocket()) {
        throw new UvtepError(ErrorCode.State, `${this.path} exists and is not a socket; remove it or choose another --control path`);
      }
      if (await isLive(this.path)) {
        throw new UvtepError(ErrorCode.State, `another uvtep is running with control socket ${this.path}`);
      }
      unlinkSync(this.path);
    }
    // the socket is created 0600 (umask 0177 around bind): no window in which others may connect
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(this.path, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(this.path, 0o600);
    const mine = statSync(this.path);
    this.ours = { dev: mine.dev, ino: mine.ino };
    this.server.unref();
  }

  /**
   * Stops listening, ends every client connection, and removes the path if it is still our socket.
   * (libuv unlinks a listening pipe's path when the server closes; the check covers the rest.)
   */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const c of this.conns) c.destroy();
      this.conns.clear();
      try {
        const st = lstatSync(this.path);
        if (this.ours !== undefined && st.isSocket() && st.dev === this.ours.dev && st.ino === this.ours.ino) unlinkSync(this.path);
      } catch {
        // already gone
      }
    });
  }

  private serve(sock: net.Socket): void {
    let buf = '';
    // requests of a connection are answered in order, one at a time (some, like vtep.add, wait)
    let queue: string[] = [];
    let busy = false;
    const next = async (): Promise<void> => {
      busy = true;
      let run = 0;
      while (queue.length > 0 && !sock.destroyed) {
        const line = queue.shift()!;
        const res = await this.handle(line);
        // a client that sends thousands of requests gets them answered a few at a time between
        // the other work of the event loop: forwarding is never starved
        if (++run % 16 === 0) await new Promise((r) => setImmediate(r));
        // a client that does not read its answers is not served further (bounded memory)
        if (sock.writableLength > MAX_PENDING_OUT) {
          sock.destroy();
          break;
        }
        sock.write(JSON.stringify(res) + '\n');
      }
      busy = false;
    };
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        sock.end(JSON.stringify({ id: null, ok: false, error: { code: 'UVTEP_ERR_REQUEST', message: 'request too long' } }) + '\n');
        buf = '';
        queue = [];
        return;
      }
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) queue.push(line);
      }
      if (queue.length > MAX_QUEUED) {
        sock.end(JSON.stringify({ id: null, ok: false, error: { code: 'UVTEP_ERR_REQUEST', message: `more than ${MAX_QUEUED} requests waiting on one connection` } }) + '\n');
        queue = [];
        return;
      }
      if (!busy && queue.length > 0) void next();
    });
  }

  private async handle(line: string): Promise<Record<string, unknown>> {
    let id: unknown = null;
    try {
      const req = JSON.parse(line) as { id?: unknown; method?: unknown; params?: Record<string, unknown> };
      id = req.id ?? null;
      return { id, ok: true, result: await this.call(String(req.method), req.params ?? {}) };
    } catch (e) {
      const err = e as { code?: string; message?: string; option?: string };
      const code = e instanceof SyntaxError ? 'UVTEP_ERR_REQUEST' : (err.code ?? 'UVTEP_ERR_INTERNAL');
      return { id, ok: false, error: { code, message: err.message ?? String(e), ...(err.option ? { option: err.option } : {}) } };
    }
  }

  private async call(method: string, p: Record<string, unknown>): Promise<unknown> {
    const t = this.target;
    const name = typeof p.name === 'string' ? p.name : undefined;
    switch (method) {
      case 'info':
      case 'vtep.list': {
        const info: ControlInfo = { pid: process.pid, startedAt: this.startedAt, control: this.path, vteps: t.list().map((v) => ({ ...t.info(v) }) as ControlInfo['vteps'][number]) };
        return method === 'info' ? info : info.vteps;
      }
      case 'stats': {
        const v = t.pick(name);
        return { time: Date.now(), name: v.name, ...v.vtep.stats, ...(v.endpoint !== undefined ? { endpoint: v.endpoint.stats } : {}) };
      }
      case 'fdb.show': {
        const v = t.pick(name);
        return v.vtep.fdb.list().map((r) => ({ ...r, vni: v.vtep.config.vni }));
      }
      case 'fdb.add':
      case 'fdb.append':
      case 'fdb.replace':
      case 'fdb.del':
        return applyFdbChange(t.pick(name).vtep, method.slice(4) as FdbOp, p as unknown as FdbChange);
      case 'fdb.flush':
        return { removed: t.pick(name).vtep.fdb.flush({ dynamicOnly: p.dynamic === true }) };
      case 'vtep.add': {
        if (t.add === undefined) throw new UvtepError(ErrorCode.InvalidOption, 'this uvtep cannot add VTEPs at run time');
        if (p.options === null || typeof p.options !== 'object') throw new ConfigError(ErrorCode.InvalidOption, 'options', 'options: expected an object of run options, e.g. { "vni": 30, "remote": ["198.51.100.2"] }');
        return t.info(await t.add(p.options as Record<string, unknown>));
      }
      case 'vtep.del': {
        if (t.remove === undefined) throw new UvtepError(ErrorCode.InvalidOption, 'this uvtep cannot remove VTEPs at run time');
        if (name === undefined) throw new ConfigError(ErrorCode.InvalidOption, 'name', 'name: vtep.del needs the name of the VTEP (its TAP)');
        const v = t.pick(name);
        await t.remove(v.name);
        return { removed: v.name };
      }
      default:
        throw new UvtepError(ErrorCode.InvalidOption, `unknown method ${JSON.stringify(method)}; known: info, stats, fdb.show, fdb.add, fdb.append, fdb.replace, fdb.del, fdb.flush, vtep.list, vtep.add, vtep.del`);
    }
  }
}

/** Whether something answers on the Unix socket at `p`. */
export function isLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Error from a control request: `code` is the server's code, or the socket errno. */
export class ControlError extends Error {
  override name = 'ControlError';
  readonly code: string;
  readonly option: string | undefined;
  constructor(code: string, message: string, option?: string) {
    super(message);
    this.code = code;
    this.option = option;
  }
}

/** One request to the instance at `socketPath`. */
export function controlRequest(socketPath: string, method: string, params: Record<string, unknown> = {}, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ControlError('ETIMEDOUT', `no answer from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.once('connect', () => s.write(JSON.stringify({ id: 1, method, params }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      clearTimeout(timer);
      s.end();
      const res = JSON.parse(buf.slice(0, i)) as { ok: boolean; result?: unknown; error?: { code: string; message: string; option?: string } };
      if (res.ok) resolve(res.result);
      else reject(new ControlError(res.error!.code, res.error!.message, res.error!.option));
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ControlError(e.code ?? 'EIO', e.message));
    });
  });
}

/** Control sockets present in `dir` (live or not), by TAP name. */
export function listControlSockets(dir = controlDir()): Array<{ tap: string; path: string }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith('.sock')).map((n) => ({ tap: n.slice(0, -5), path: path.join(dir, n) }));
}

