/**
 * `uvtep fdb ...`, `uvtep stats`, `uvtep list`: clients of a running instance's control socket.
 * Each returns an exit code (0 ok, 1 system/instance error, 2 bad input); cli.ts exits.
 */
import { checkIp, checkMac, checkPort } from './config.js';
import { ConfigError } from './errors.js';
import { ControlError, controlDir, controlPath, controlRequest, isLive, listControlSockets, type ControlInfo, type FdbOp } from './control.js';
import type { FdbRow } from './fdb.js';
import type { VtepStats } from './vtep.js';

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

class OpError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** The socket of the instance meant: --socket, --name, or the only one running here. */
async function resolveSocket(t: Target): Promise<string> {
  if (t.socket !== undefined) return t.socket;
  if (t.name !== undefined) return controlPath(t.name);
  const live: Array<{ tap: string; path: string }> = [];
  for (const s of listControlSockets()) if (await isLive(s.path)) live.push(s);
  if (live.length === 1) return live[0]!.path;
  if (live.length === 0) throw new OpError(EXIT_SYSTEM, `no uvtep is running in this network namespace (no live socket in ${controlDir()})`);
  throw new OpError(EXIT_USAGE, `several uvtep instances run here (${live.map((l) => l.tap).join(', ')}): choose one with --name <tap>`);
}

async function request(t: Target, method: string, params: Record<string, unknown> = {}): Promise<unknown> {
  const path = await resolveSocket(t);
  try {
    return await controlRequest(path, method, params);
  } catch (e) {
    if (!(e instanceof ControlError)) throw e;
    if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
      throw new OpError(EXIT_SYSTEM, `no uvtep is running${t.name ? ` with TAP ${t.name}` : ''} (nothing answers on ${path})`);
    }
    if (e.code === 'EACCES' || e.code === 'EPERM') throw new OpError(EXIT_SYSTEM, `permission denied on ${path}: run as root (the socket is mode 0600)`);
    if (e.code.startsWith('UVTEP_ERR_INVALID') || e.code === 'UVTEP_ERR_FAMILY_MISMATCH') throw new OpError(EXIT_USAGE, e.message);
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
    .map((r) => `${r.mac} dev ${tap} dst ${r.dst} port ${r.port}${r.vni !== undefined ? ` vni ${r.vni}` : ''} self ${r.static ? 'permanent' : `dynamic age ${r.ageS}s`}`)
    .join('\n');
}

export function fdbShow(io: Out, t: Target, json: boolean): Promise<number> {
  return guard(io, async () => {
    const rows = (await request(t, 'fdb.show')) as Array<FdbRow & { vni: number }>;
    if (json) io.out(JSON.stringify(rows, null, 2));
    else {
      const info = (await request(t, 'info')) as ControlInfo;
      if (rows.length) io.out(formatFdb(rows, info.tap));
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

function statsText(tap: string, s: VtepStats, rate?: { rxPps: number; txPps: number; rxBps: number; txBps: number; dropPps: number }): string {
  const drops = Object.entries(s.drops)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const lines = [
    `${tap}:`,
    `  rx: ${s.rxPackets} frames, ${s.rxBytes} bytes (${s.rxDatagrams} datagrams)${rate ? `   ${rate.rxPps.toFixed(0)} frames/s, ${((rate.rxBps * 8) / 1e6).toFixed(1)} Mbit/s` : ''}`,
    `  tx: ${s.txPackets} datagrams, ${s.txBytes} bytes (${s.txFrames} frames, ${s.floodCopies} flood copies)${rate ? `   ${rate.txPps.toFixed(0)} datagrams/s, ${((rate.txBps * 8) / 1e6).toFixed(1)} Mbit/s` : ''}`,
    `  drops: ${s.dropsTotal}${drops ? ` (${drops})` : ''}${rate ? `   ${rate.dropPps.toFixed(0)}/s` : ''}`,
    `  fdb: ${s.fdbSize} entries, ${s.learnRefused} learns refused; backpressure pauses ${s.txPauses}`,
    `  offloads: ${s.txGsoDatagrams} datagrams in ${s.txGsoSends} GSO sends, ${s.rxGroSegments} frames in ${s.rxGroWrites} coalesced TAP writes`,
    ...(s.io ? [`  io (${s.io.transport}): TAP ${s.io.reads} reads -> ${s.io.readFrames} frames (${s.io.superFrames} super-frames split), ${s.io.writes} writes; UDP ${s.io.sendCalls} send calls -> ${s.io.sentDatagrams} datagrams, ${s.io.recvCalls} receive calls -> ${s.io.recvMsgs} messages (${s.io.groMsgs} GRO)`] : []),
  ];
  return lines.join('\n');
}

export function stats(io: Out & { tty: boolean }, t: Target, o: { json: boolean; watch?: number | undefined; count?: number | undefined }): Promise<number> {
  return guard(io, async () => {
    const info = (await request(t, 'info')) as ControlInfo;
    let prev = (await request(t, 'stats')) as VtepStats & { time: number };
    if (o.watch === undefined) {
      io.out(o.json ? JSON.stringify(prev, null, 2) : statsText(info.tap, prev));
      return;
    }
    const n = o.count ?? Infinity;
    for (let i = 0; i < n; i++) {
      await new Promise((r) => setTimeout(r, o.watch! * 1000));
      const cur = (await request(t, 'stats')) as VtepStats & { time: number };
      const dt = (cur.time - prev.time) / 1000;
      const rate = {
        rxPps: (cur.rxPackets - prev.rxPackets) / dt,
        txPps: (cur.txPackets - prev.txPackets) / dt,
        rxBps: (cur.rxBytes - prev.rxBytes) / dt,
        txBps: (cur.txBytes - prev.txBytes) / dt,
        dropPps: (cur.dropsTotal - prev.dropsTotal) / dt,
      };
      if (o.json) io.out(JSON.stringify({ ...cur, rate }));
      else io.out((io.tty ? '\x1b[H\x1b[2J' : '') + statsText(info.tap, cur, rate));
      prev = cur;
    }
  });
}

export function list(io: Out, json: boolean): Promise<number> {
  return guard(io, async () => {
    const rows: Array<ControlInfo & { socket: string }> = [];
    for (const s of listControlSockets()) {
      try {
        rows.push({ ...((await controlRequest(s.path, 'info', {}, 2000)) as ControlInfo), socket: s.path });
      } catch {
        // a stale socket of a crashed run: not running
      }
    }
    if (json) {
      io.out(JSON.stringify(rows, null, 2));
      return;
    }
    if (rows.length === 0) {
      io.out(`no uvtep running in this network namespace (${controlDir()})`);
      return;
    }
    io.out('TAP              PID      VNI       DSTPORT  REMOTES');
    for (const r of rows) io.out(`${r.tap.padEnd(16)} ${String(r.pid).padEnd(8)} ${String(r.vni).padEnd(9)} ${String(r.dstport).padEnd(8)} ${r.remotes.join(', ') || '-'}`);
  });
}
