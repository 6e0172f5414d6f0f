/**
 * A throwaway etcd for tests, the demo and benchmarks: Debian's `etcd` (package etcd-server) on a
 * free loopback port, or inside a test namespace, with a temporary data directory; ended by PID,
 * its directory removed. `kill()` and `restart()` (same data, same ports) play the faults.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sh, type Host } from './testbed.js';

export interface EtcdServerOptions {
  /** Run inside this test host's namespace (default: the current one, on 127.0.0.1). */
  host?: Host;
  /** Address to listen on (default 127.0.0.1). */
  address?: string;
  /**
   * TLS for clients (https): the server's certificate and key (PEM files), and the CA whose
   * client certificates it accepts (client certificate auth on) and that etcdctl trusts.
   */
  tls?: { cert: string; key: string; ca: string; clientCert: string; clientKey: string };
}

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, address, () => {
      const a = s.address() as net.AddressInfo;
      s.close(() => resolve(a.port));
    });
  });
}

/** Whether `etcd` and `etcdctl` are installed (Debian: etcd-server, etcd-client). */
export async function etcdMissing(): Promise<string[]> {
  const out: string[] = [];
  if ((await sh('sh', ['-c', 'command -v etcd'])).code !== 0) out.push('etcd (apt-get install etcd-server)');
  if ((await sh('sh', ['-c', 'command -v etcdctl'])).code !== 0) out.push('etcdctl (apt-get install etcd-client)');
  return out;
}

export class EtcdServer {
  readonly url: string;
  readonly dataDir: string;
  private readonly opts: EtcdServerOptions;
  private readonly peerPort: number;
  private child: ChildProcess | undefined;
  log: string = '';

  private constructor(opts: EtcdServerOptions, clientPort: number, peerPort: number) {
    this.opts = opts;
    const a = opts.address ?? '127.0.0.1';
    const h = a.includes(':') ? `[${a}]` : a;
    this.peerPort = peerPort;
    this.url = `${opts.tls !== undefined ? 'https' : 'http'}://${h}:${clientPort}`;
    this.dataDir = mkdtempSync(path.join(tmpdir(), 'uvt-etcd-'));
  }

  static async start(opts: EtcdServerOptions = {}): Promise<EtcdServer> {
    const a = opts.address ?? '127.0.0.1';
    // a fresh namespace has every port free; here, ask the kernel
    const [c, p] = opts.host !== undefined ? [2379, 2380] : [await freePort(a), await freePort(a)];
    const s = new EtcdServer(opts, c, p);
    await s.launch();
    return s;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private async launch(): Promise<void> {
    const a = this.opts.address ?? '127.0.0.1';
    const h = a.includes(':') ? `[${a}]` : a;
    const peer = `http://${h}:${this.peerPort}`;
    const args = [
      'etcd',
      '--name', 'uvt-etcd',
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.url,
      '--advertise-client-urls', this.url,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `uvt-etcd=${peer}`,
      '--log-level', 'error',
      '--logger', 'zap',
      ...(this.opts.tls !== undefined ? ['--cert-file', this.opts.tls.cert, '--key-file', this.opts.tls.key, '--trusted-ca-file', this.opts.tls.ca, '--client-cert-auth'] : []),
    ];
    const cmd = this.opts.host !== undefined ? ['ip', 'netns', 'exec', this.opts.host.name, ...args] : args;
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-8192);
    });
    this.child = child;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (!this.running) throw new Error(`etcd exited while starting: ${this.log.trim()}`);
      if (await this.healthy()) return;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`etcd did not become healthy at ${this.url} within 15 s: ${this.log.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** `etcdctl endpoint health`, where the server is. */
  async healthy(): Promise<boolean> {
    return (await this.etcdctl(['--dial-timeout', '1s', '--command-timeout', '1s', 'endpoint', 'health'], 3000)).code === 0;
  }

  /** `etcdctl <args>` against this server (ETCDCTL_API 3), where the server is; its stdout. */
  async ctl(...args: string[]): Promise<string> {
    const r = await this.etcdctl(args, 10_000);
    if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** etcdctl with this server's endpoint and TLS, in its namespace when it has one. */
  private etcdctl(args: string[], timeoutMs: number): ReturnType<typeof sh> {
    const t = this.opts.tls;
    const tls = t === undefined ? [] : ['--cacert', t.ca, '--cert', t.clientCert, '--key', t.clientKey];
    const full = ['env', 'ETCDCTL_API=3', 'etcdctl', ...tls, '--endpoints', this.url, ...args];
    return this.opts.host !== undefined ? this.opts.host.exec(full, { timeoutMs }) : sh(full[0]!, full.slice(1), { timeoutMs });
  }

  /** Ends the server by PID (SIGKILL by default) and waits for it; the data stays. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (c === undefined || !this.running) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill(signal);
    });
  }

  /** Starts it again on the same ports and data (after `kill`). */
  async restart(): Promise<void> {
    if (this.running) await this.kill();
    await this.launch();
  }

  /** Ends it and removes its data. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
