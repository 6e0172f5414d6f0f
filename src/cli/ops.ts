/**
 * `uvtep fdb ...`, `uvtep stats`, `uvtep list`: clients of a running instance's control socket.
 * Each returns an exit code (0 ok, 1 system/instance error, 2 bad input); main.ts sets the exit code.
 */
import { checkIp, checkMac, checkPort } from '../check.js';
import { ConfigError } from '../errors.js';
import { ControlError, controlDir, controlPath, controlRequest, isLive, listControlSockets, type ControlInfo, type FdbOp } from '../control.js';
import type { FdbRow } from '../fdb.js';
import type { VtepStats } from '../vtep.js';
import type { EndpointStats } from '../endpoint.js';
import { FLAG } from './options.js';
import { statsLines } from '../counters.js';

export interface Out {
  out: (s: string) => void;
  err: (s: string) => void;
}

export interface Target {
  name?: string | undefined;
  socket?: string | undefined;
}

/** Exit codes of every uvtep command: 0 ok, 1 system or instance error, 2 bad input. */
export const EXIT_OK = 0;
export const EXIT_SYSTEM = 1;
export const EXIT_USAGE = 2;

/** `option --flag: what is wrong`, from an error that names its option. */
export function configMessage(e: { option: string; message: string }): string {
  const flag = FLAG[e.option] ?? `--${e.option}`;
  const what = e.message.startsWith(e.option + ':') ? e.message.slice(e.option.length + 1).trim() : e.message;
  return `option ${flag}: ${what}`;
}

class OpError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

interface Live {
  path: string;
  info: ControlInfo;
}

/** Every uvtep answering in this network namespace, with what it serves. */
async function liveInstances(): Promise<Live[]> {
  const out: Live[] = [];
  for (const s of listControlSockets()) {
    try {
      out.push({ path: s.path, info: (await controlRequest(s.path, 'info', {}, 2000)) as ControlInfo });
    } catch {
      // a stale socket of a crashed run: not running
    }
  }
  return out;
}

/**
 * The control socket meant: --socket; else, with --name, the uvtep that hosts that VTEP (its
 * socket is usually named after it: checked first); else the only uvtep running here.
 */
async function resolveSocket(t: Target): Promise<string> {
  if (t.socket !== undefined) return t.socket;
  if (t.name !== undefined) {
    const direct = controlPath(t.name);
    try {
      const info = (await controlRequest(direct, 'info', {}, 2000)) as ControlInfo;
      if (info.vteps.some((v) => v.tap === t.name)) return direct;
    } catch (e) {
      // not allowed to ask: the request says so; anything else: look through all
      if (e instanceof ControlError && (e.code === 'EACCES' || e.code === 'EPERM')) return direct;
    }
    const hit = (await liveInstances()).find((l) => l.info.vteps.some((v) => v.tap === t.name));
    if (hit === undefined) throw new OpError(EXIT_SYSTEM, `no uvtep is running with a VTEP named ${t.name} in this network namespace (${controlDir()})`);
    return hit.path;
  }
  const live: Array<{ tap: string; path: string }> = [];
  for (const s of listControlSockets()) if (await isLive(s.path)) live.push(s);
  if (live.length === 1) return live[0]!.path;
  if (live.length === 0) throw new OpError(EXIT_SYSTEM, `no uvtep is running in this network namespace (no live socket in ${controlDir()})`);
  throw new OpError(EXIT_USAGE, `several uvtep processes run here (${live.map((l) => l.tap).join(', ')}): choose one with --name <tap> or --socket <path>`);
}

async function request(t: Target, method: string, params: Record<string, unknown> = {}): Promise<unknown> {
  const path = await resolveSocket(t);
  try {
    return await controlRequest(path, method, { ...params, ...(t.name !== undefined && params.name === undefined ? { name: t.name } : {}) });
  } catch (e) {
    if (!(e instanceof ControlError)) throw e;
    if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      throw new OpError(EXIT_SYSTEM, `no uvtep is running${t.name ? ` with TAP ${t.name}` : ''} (nothing answers on ${path})`);
    }
    if (e.code === 'EACCES' || e.code === 'EPERM') throw new OpError(EXIT_SYSTEM, `permission denied on ${path}: run as root (the socket is mode 0600)`);
    if (e.code.startsWith('UVTEP_ERR_INVALID') || e.code === 'UVTEP_ERR_FAMILY_MISMATCH' || e.code === 'UVTEP_ERR_EXISTS') {
      throw new OpError(EXIT_USAGE, e.option !== undefined && method === 'vtep.add' ? `error: ${configMessage({ option: e.option, message: e.message })}` : e.message);
    }
    throw new OpError(EXIT_SYSTEM, e.message);
  }
}

async function guard(io: Out, fn: () => Promise<void>): Promise<number> {
  try {
    await fn();
    return EXIT_OK;
  } catch (e) {
    if (e instanceof OpError) {
      io.err(`uvtep: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof ConfigError) {
      io.err(`uvtep: error: ${e.message}`);
      return EXIT_USAGE;
    }
    throw e;
  }
}

/** `bridge fdb show` style lines. */
export function formatFdb(rows: Array<FdbRow & { vni?: number }>, tap: string): string {
  return rows
    .map((r) => `${r.mac} dev ${tap} dst ${r.dst} port ${r.port}${r.vni !== undefined ? ` vni ${r.vni}` : ''} self ${r.static ? 'permanent' : `dynamic age ${r.ageS}s`}${r.origin !== undefined ? ` origin ${r.origin}` : ''}`)
    .join('\n');
}

export function fdbShow(io: Out, t: Target, json: boolean): Promise<number> {
  return guard(io, async () => {
    const rows = (await request(t, 'fdb.show')) as Array<FdbRow & { vni: number }>;
    if (json) io.out(JSON.stringify(rows, null, 2));
    else {
      const s = (await request(t, 'stats')) as { name: string };
      if (rows.length) io.out(formatFdb(rows, s.name));
    }
  });
}

/**
 * `uvtep fdb add|append|replace|del <mac> [dst <ip>] [port <p>] [static|dynamic]`, the words of
 * `bridge fdb`.
 */
export function fdbChange(io: Out, t: Target, op: FdbOp, mac: string, words: string[]): Promise<number> {
  return guard(io, async () => {
    checkMac(mac, 'mac');
    const params: Record<string, unknown> = { mac };
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      if (w === 'dst' || w === 'port') {
        const v = words[++i];
        if (v === undefined) throw new OpError(EXIT_USAGE, `"${w}" needs a value`);
        if (w === 'dst') params.dst = checkIp(v, 'dst').address;
        else params.port = checkPort(/^\d+$/.test(v) ? Number(v) : v, 'port');
      } else if (w === 'static' || w === 'permanent') params.static = true;
      else if (w === 'dynamic') params.static = false;
      else throw new OpError(EXIT_USAGE, `unexpected "${w}": expected dst <ip>, port <port>, static or dynamic`);
    }
    if (op !== 'del' && params.dst === undefined) throw new OpError(EXIT_USAGE, `fdb ${op} needs "dst <ip>"`);
    const r = (await request(t, `fdb.${op}`, params)) as { changed: boolean };
    if (op === 'del' && !r.changed) throw new OpError(EXIT_SYSTEM, `no fdb entry ${mac}${params.dst ? ` dst ${String(params.dst)}` : ''}`);
  });
}

export function fdbFlush(io: Out, t: Target, dynamicOnly: boolean): Promise<number> {
  return guard(io, async () => {
    const r = (await request(t, 'fdb.flush', { dynamic: dynamicOnly })) as { removed: number };
    io.out(`flushed ${r.removed} ${dynamicOnly ? 'dynamic ' : ''}entr${r.removed === 1 ? 'y' : 'ies'}`);
  });
}

/** What the control socket's `stats` answers: the VTEP's counters and its endpoint's. */
type Stats = VtepStats & { time: number; name: string; endpoint?: EndpointStats };

function statsText(tap: string, s: Stats, rate?: { rxPps: number; txPps: number; rxBps: number; txBps: number; dropPps: number }): string {
  const mbit = (bps: number) => ((bps * 8) / 1e6).toFixed(1);
  const suffix = rate ? { rx: `   ${rate.rxPps.toFixed(0)} frames/s, ${mbit(rate.rxBps)} Mbit/s`, tx: `   ${rate.txPps.toFixed(0)} datagrams/s, ${mbit(rate.txBps)} Mbit/s`, drops: `   ${rate.dropPps.toFixed(0)}/s` } : {};
  const e = s.endpoint;
  const endpointDrops = e ? Object.entries(e.drops).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') : '';
  return [
    `${tap}:`,
    ...statsLines(s, suffix),
    ...(e ? [`  endpoint ${e.listen} (VNIs ${e.vnis.join(', ')}): ${e.rxDatagrams} datagrams received, ${e.dropsTotal} dropped before any VTEP${endpointDrops ? ` (${endpointDrops})` : ''}`] : []),
  ].join('\n');
}

export function stats(io: Out & { tty: boolean }, t: Target, o: { json: boolean; watch?: number | undefined; count?: number | undefined }): Promise<number> {
  return guard(io, async () => {
    let prev = (await request(t, 'stats')) as Stats;
    if (o.watch === undefined) {
      io.out(o.json ? JSON.stringify(prev, null, 2) : statsText(prev.name, prev));
      return;
    }
    const n = o.count ?? Infinity;
    for (let i = 0; i < n; i++) {
      await new Promise((r) => setTimeout(r, o.watch! * 1000));
      const cur = (await request(t, 'stats')) as Stats;
      const dt = (cur.time - prev.time) / 1000;
      const rate = {
        rxPps: (cur.rxPackets - prev.rxPackets) / dt,
        txPps: (cur.txPackets - prev.txPackets) / dt,
        rxBps: (cur.rxBytes - prev.rxBytes) / dt,
        txBps: (cur.txBytes - prev.txBytes) / dt,
        dropPps: (cur.dropsTotal - prev.dropsTotal) / dt,
      };
      if (o.json) io.out(JSON.stringify({ ...cur, rate }));
      else io.out((io.tty ? '\x1b[H\x1b[2J' : '') + statsText(cur.name, cur, rate));
      prev = cur;
    }
  });
}

export function list(io: Out, json: boolean): Promise<number> {
  return guard(io, async () => {
    const rows: Array<Record<string, unknown> & { tap: string; vni: number; pid: number; socket: string }> = [];
    for (const l of await liveInstances()) for (const v of l.info.vteps) rows.push({ ...v, pid: l.info.pid, socket: l.path });
    if (json) {
      io.out(JSON.stringify(rows, null, 2));
      return;
    }
    if (rows.length === 0) {
      io.out(`no uvtep running in this network namespace (${controlDir()})`);
      return;
    }
    io.out('TAP              PID      VNI       LISTEN                 REMOTES');
    for (const r of rows) {
      io.out(`${r.tap.padEnd(16)} ${String(r.pid).padEnd(8)} ${String(r.vni).padEnd(9)} ${String(r.listen ?? '').padEnd(22)} ${(r.remotes as string[] | undefined)?.join(', ') || '-'}`);
    }
  });
}

/** `uvtep vtep add ...`: a VTEP added to a running uvtep, from run options. */
export function vtepAdd(io: Out, t: Target, options: Record<string, unknown>): Promise<number> {
  return guard(io, async () => {
    const v = (await request({ socket: t.socket ?? (await resolveSocket({})) }, 'vtep.add', { options })) as { tap: string; vni: number; listen: string };
    io.out(`${v.tap} up: vni ${v.vni}, listening on ${v.listen}`);
  });
}

/** `uvtep vtep del <name>`. */
export function vtepDel(io: Out, t: Target, name: string): Promise<number> {
  return guard(io, async () => {
    await request({ name, ...(t.socket !== undefined ? { socket: t.socket } : {}) }, 'vtep.del', { name });
    io.out(`${name} removed`);
  });
}

/** A bad option: the message (without `uvtep: error: `) on stderr, exit code 2. */
export function usageError(message: string): number {
  process.stderr.write(`uvtep: error: ${message}\n(run uvtep --help for every option)\n`);
  return EXIT_USAGE;
}
