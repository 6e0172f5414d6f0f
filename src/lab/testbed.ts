/**
 * Test hosts as network namespaces (`ip netns`), veth pairs and Linux bridges, for the demo,
 * the integration tests and the benchmarks. Everything is named with a prefix (`uvt-`),
 * removed on cleanup, and leftovers of earlier runs are removed first. Processes are ended by
 * the PIDs this module started, never by name.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const pexecFile = promisify(execFile);

export const TESTBED_PREFIX = 'uvt-';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command; never throws for a non-zero exit (the result says). */
export async function sh(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  try {
    const { stdout, stderr } = await pexecFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number | string; message: string };
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? err.message, code: typeof err.code === 'number' ? err.code : 1 };
  }
}

/** Like `sh` but throws with the command and its stderr on failure. */
export async function must(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** What a machine needs to build test hosts; a list of what is missing (empty when ready). */
export async function testbedMissing(): Promise<string[]> {
  const missing: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) missing.push('root (network namespaces and TAP devices need CAP_NET_ADMIN)');
  const { existsSync } = await import('node:fs');
  if (!existsSync('/dev/net/tun')) missing.push('/dev/net/tun');
  if ((await sh('ip', ['-V'])).code !== 0) missing.push('iproute2 (the ip command; apt-get install iproute2)');
  return missing;
}

/** Ends the processes inside namespace `name` (by PID), then deletes it. */
async function deleteNetns(name: string): Promise<void> {
  const pids = (await sh('ip', ['netns', 'pids', name])).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await sh('ip', ['netns', 'del', name]);
}

export class Host {
  readonly name: string;
  readonly bed: Testbed;
  constructor(bed: Testbed, name: string) {
    this.bed = bed;
    this.name = name;
  }
  /** Runs a command inside the namespace; never throws for a non-zero exit. */
  exec(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return sh('ip', ['netns', 'exec', this.name, ...args], opts);
  }
  /** Runs a command inside the namespace; throws on failure. */
  run(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    return must('ip', ['netns', 'exec', this.name, ...args], opts);
  }
  /** `ip <args>` in the namespace. */
  ip(...args: string[]): Promise<string> {
    return must('ip', ['-n', this.name, ...args]);
  }
  /** Starts a long-running process in the namespace; the testbed ends it on cleanup. */
  spawn(args: readonly string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    this.bed.track(child);
    return child;
  }
}

async function waitOperUp(h: Host, ifn: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!/state UP/.test(await h.ip('-o', 'link', 'show', ifn))) {
    if (Date.now() > deadline) throw new Error(`${ifn} in ${h.name} did not come up`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export class Testbed {
  readonly prefix: string;
  private readonly hosts: Host[] = [];
  private readonly children = new Set<ChildProcess>();

  /** `scope` names this bed's objects: `uvt-<scope>-<host>`. */
  constructor(scope: string) {
    this.prefix = `${TESTBED_PREFIX}${scope}-`;
  }

  /**
   * Removes namespaces and root-namespace links whose names start with this bed's prefix,
   * first ending the processes still running inside those namespaces (ours: only this bed's
   * code runs programs there), by PID.
   */
  async removeLeftovers(): Promise<void> {
    const ns = await sh('ip', ['netns', 'list']);
    for (const line of ns.stdout.split('\n')) {
      const name = line.split(' ')[0];
      if (name && name.startsWith(this.prefix)) await deleteNetns(name);
    }
    const links = await sh('ip', ['-o', 'link', 'show']);
    for (const line of links.stdout.split('\n')) {
      const m = /^\d+:\s+([^:@\s]+)/.exec(line);
      if (m && m[1]!.startsWith(this.prefix)) await sh('ip', ['link', 'del', m[1]!]);
    }
  }

  async host(short: string): Promise<Host> {
    const h = new Host(this, this.prefix + short);
    await must('ip', ['netns', 'add', h.name]);
    this.hosts.push(h);
    await h.ip('link', 'set', 'lo', 'up');
    return h;
  }

  /**
   * A veth pair between two hosts (`ifA` in a, `ifB` in b), up, with addresses (CIDR).
   * IPv6 addresses are added with nodad so they are usable at once.
   */
  async veth(a: Host, ifA: string, addrsA: string[], b: Host, ifB: string, addrsB: string[], mtu = 1500): Promise<void> {
    await must('ip', ['link', 'add', 'name', ifA, 'netns', a.name, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name, 'mtu', String(mtu)]);
    for (const [h, ifn, addrs] of [[a, ifA, addrsA], [b, ifB, addrsB]] as const) {
      for (const addr of addrs) await h.ip('addr', 'add', addr, 'dev', ifn, ...(addr.includes(':') ? ['nodad'] : []));
      await h.ip('link', 'set', ifn, 'up');
    }
    // carrier comes up asynchronously (linkwatch): wait, so tests start on a running link
    await waitOperUp(a, ifA);
    await waitOperUp(b, ifB);
  }

  /** A Linux bridge `name` in host h, up, with optional addresses. */
  async bridge(h: Host, name: string, addrs: string[] = []): Promise<void> {
    await h.ip('link', 'add', name, 'type', 'bridge');
    for (const addr of addrs) await h.ip('addr', 'add', addr, 'dev', name);
    await h.ip('link', 'set', name, 'up');
  }

  /**
   * A "container": a namespace on a veth whose other end is a port of `bridge` in `h`.
   * `mtu` should be the VTEP's (1450 on a 1500 underlay), as Docker's overlay networks set it:
   * a bridge drops frames larger than its smallest port's MTU.
   */
  async container(h: Host, bridge: string, short: string, addr: string, opts: { mac?: string; mtu?: number } = {}): Promise<Host> {
    const c = await this.host(short);
    const hostSide = `v${short}`.slice(0, 15);
    const mtu = String(opts.mtu ?? 1500);
    await must('ip', ['link', 'add', 'name', 'eth0', 'netns', c.name, 'mtu', mtu, ...(opts.mac ? ['address', opts.mac] : []), 'type', 'veth', 'peer', 'name', hostSide, 'netns', h.name, 'mtu', mtu]);
    await c.ip('addr', 'add', addr, 'dev', 'eth0');
    await c.ip('link', 'set', 'eth0', 'up');
    await h.ip('link', 'set', hostSide, 'master', bridge);
    await h.ip('link', 'set', hostSide, 'up');
    return c;
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  /** Ends every process this bed started (SIGTERM, then SIGKILL) and removes every namespace. */
  async cleanup(): Promise<void> {
    const waits: Array<Promise<void>> = [];
    for (const c of this.children) {
      if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) continue;
      waits.push(
        new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
          }, 3000);
          c.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          c.kill('SIGTERM');
        }),
      );
    }
    await Promise.all(waits);
    this.children.clear();
    for (const h of this.hosts.splice(0).reverse()) await deleteNetns(h.name);
    await this.removeLeftovers();
  }
}

/** Path of the `uvtep` executable script of this package. */
/** Node flags the `uvtep` command runs with (its shebang): see bin/uvtep.js. */
export const UVTEP_NODE_FLAGS: readonly string[] = ['--no-memory-reducer'];

export function uvtepBin(): string {
  return new URL('../../bin/uvtep.js', import.meta.url).pathname;
}

/** Path of a compiled tool in dist/lab/tools (this module runs from src/lab/ under vitest, from dist/lab/ otherwise). */
export function toolPath(name: string): string {
  return new URL(`../../dist/lab/tools/${name}.js`, import.meta.url).pathname;
}

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A `uvtep` process running in a namespace, its JSON log lines parsed. */
export class UvtepProcess {
  readonly child: ChildProcess;
  readonly records: LogRecord[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];

  /** `nodeArgs` go to node before the script (e.g. `--cpu-prof`). */
  constructor(host: Host, args: readonly string[], nodeArgs: readonly string[] = []) {
    this.child = host.spawn([process.execPath, ...UVTEP_NODE_FLAGS, ...nodeArgs, uvtepBin(), ...args]);
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.records.push(JSON.parse(line) as LogRecord);
        } catch {
          this.records.push({ level: 30, msg: line });
        }
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => {
      for (const w of this.waiters.splice(0)) w();
      resolve({ code, signal });
    }));
  }

  /** Resolves with the first record matching `pred`; rejects if the process exits first or on timeout. */
  waitFor(pred: (r: LogRecord) => boolean, what: string, timeoutMs = 10_000): Promise<LogRecord> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`uvtep: timed out waiting for ${what}; stderr: ${this.stderr.trim()}; log: ${this.records.map((r) => r.msg).join(' | ')}`)), timeoutMs);
      const check = () => {
        const r = this.records.find(pred);
        if (r) {
          clearTimeout(t);
          resolve(r);
          return;
        }
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          clearTimeout(t);
          reject(new Error(`uvtep exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}: ${this.stderr.trim()} ${this.records.map((r) => r.msg).join(' | ')}`));
          return;
        }
        this.waiters.push(check);
      };
      check();
    });
  }

  /** Waits for the startup line. */
  ready(timeoutMs = 10_000): Promise<LogRecord> {
    return this.waitFor((r) => typeof r.tap === 'string' && / up: /.test(r.msg), 'startup line', timeoutMs);
  }

  /** SIGTERM, then the final record (counters and FDB) and the exit status. */
  async stop(timeoutMs = 10_000): Promise<{ final: LogRecord | undefined; code: number | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const { code } = await this.exited;
    clearTimeout(t);
    return { final: this.records.find((r) => /^stopped/.test(r.msg)), code };
  }
}

export interface TransferResult {
  bytes: number;
  ok: boolean;
  sentSha256: string;
  receivedSha256: string;
  receivedBytes: number;
  /** Client-side seconds, connect to close. */
  seconds: number;
  mbitPerS: number;
}

/** Sends `bytes` random bytes over TCP from `client` to `server` at `address`:`port` and compares checksums. */
export async function tcpTransfer(server: Host, client: Host, address: string, port: number, bytes: number, timeoutMs = 60_000): Promise<TransferResult> {
  const srv = server.spawn([process.execPath, toolPath('tcp-transfer'), 'server', String(port)]);
  let out = '';
  const lines: string[] = [];
  const got = new Promise<Record<string, unknown>>((resolve, reject) => {
    srv.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      let i;
      while ((i = out.indexOf('\n')) >= 0) {
        lines.push(out.slice(0, i));
        out = out.slice(i + 1);
      }
      const done = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => typeof r.sha256 === 'string');
      if (done) resolve(done);
    });
    srv.once('exit', (code) => {
      const done = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => typeof r.sha256 === 'string');
      if (done) resolve(done);
      else reject(new Error(`transfer server exited (${code}) without a result`));
    });
  });
  got.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
  const deadline = Date.now() + 5000;
  while (!lines.some((l) => l.includes('listening'))) {
    if (Date.now() > deadline) throw new Error('transfer server did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  const cli = await client.exec([process.execPath, toolPath('tcp-transfer'), 'client', address, String(port), String(bytes)], { timeoutMs });
  if (cli.code !== 0) {
    srv.kill('SIGTERM');
    throw new Error(`transfer client failed: ${cli.stderr.trim()}`);
  }
  const sent = JSON.parse(cli.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string; seconds: number };
  let recv: Record<string, unknown>;
  try {
    recv = await Promise.race([got, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('transfer server result timed out')), 10_000))]);
  } finally {
    if (srv.exitCode === null) srv.kill('SIGTERM');
  }
  return {
    bytes: sent.bytes,
    ok: recv.sha256 === sent.sha256 && recv.bytes === sent.bytes,
    sentSha256: sent.sha256,
    receivedSha256: String(recv.sha256),
    receivedBytes: Number(recv.bytes),
    seconds: sent.seconds,
    mbitPerS: (sent.bytes * 8) / sent.seconds / 1e6,
  };
}

export interface PingResult {
  transmitted: number;
  received: number;
  /** avg and max RTT in ms (NaN when nothing came back). */
  avgMs: number;
  maxMs: number;
  rtts: number[];
}

/** `ping -c count` from h; parses the RTTs. */
export async function ping(h: Host, address: string, count = 3, intervalS = 0.2, waitS = 2): Promise<PingResult> {
  const r = await h.exec(['ping', '-n', '-c', String(count), '-i', String(intervalS), '-W', String(waitS), address], { timeoutMs: (count * intervalS + waitS + 5) * 1000 });
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  const tx = /(\d+) packets transmitted/.exec(r.stdout);
  return {
    transmitted: tx ? Number(tx[1]) : count,
    received: rtts.length,
    avgMs: rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length : NaN,
    maxMs: rtts.length ? Math.max(...rtts) : NaN,
    rtts,
  };
}
