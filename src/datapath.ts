/**
 * The datapath process (native/datapath/main.cc): one small native process per uvtep process
 * that reads the TAPs and the UDP socket of every VTEP whose flow cache is on, forwards what the
 * cache covers, and hands JS the rest (through the addon's readers, in the shape they always
 * deliver). TypeScript keeps every decision: the FDB, learning, policy, and which entries the
 * cache holds; the process holds a copy of the caches and applies them.
 *
 * Why: a round trip through Node's own event loop costs a slow tail on kernels that sample page
 * tables (docs/benchmarks.md, "Round trips and page-table entries"): Node maps tens of
 * megabytes in 4 KB pages, the process about 9 MB resident, most of it shared libraries.
 *
 * Lifecycle: spawned on first use, shared by every VTEP of this process, and closed when the
 * last one lets go; it exits by itself when this process ends. If it dies, every VTEP using it
 * fails with a read error on its proxy (EPIPE), as it would for a removed TAP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DatapathMode } from './config.js';
import { loadBinding, type NativeBinding, type NativeDatapath } from './native.js';

/** Shared memory for counters: 8 bytes each; a VTEP takes about 300, a socket 11. */
const SHM_BYTES = 4 << 20;

/** The executable, built with the addon (binding.gyp target uvtep-datapath). */
export function datapathExecutable(): string | undefined {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const candidates = [path.join(root, 'build', 'Release', 'uvtep-datapath'), path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'uvtep-datapath')];
  return candidates.find((p) => existsSync(p));
}

/** What `datapath` means when it is not given: 'process' where the executable is built (Linux). */
export function datapathDefault(): DatapathMode {
  return process.platform === 'linux' && datapathExecutable() !== undefined ? 'process' : 'inline';
}

let shared: DatapathProcess | undefined;
let busyPollUs = 0;

/** --busy-poll for the datapath process (it polls its fds after a batch, as the addon does in-process). */
export function setDatapathBusyPoll(us: number): void {
  busyPollUs = us;
  shared?.handle.setBusyPoll(us);
}

export class DatapathProcess {
  readonly handle: NativeDatapath;
  readonly pid: number;
  private readonly memory: ArrayBuffer;
  private used: number = 0;
  private users: number = 0;
  private closed: boolean = false;
  /** How it ended, when it ended by itself. */
  exit: string | undefined;
  /** The last of what it wrote to stderr (it writes only when something failed). */
  stderr: string = '';

  /** The process every VTEP of this process shares (spawned now if there is none). Throws when it cannot start. */
  static acquire(native: NativeBinding = loadBinding()): DatapathProcess {
    if (shared === undefined || shared.closed || shared.exit !== undefined) shared = new DatapathProcess(native);
    shared.users++;
    return shared;
  }

  private constructor(native: NativeBinding) {
    const exe = datapathExecutable();
    if (exe === undefined) throw new Error('the datapath process is not built (build/Release/uvtep-datapath); run `npm run build:native`');
    const h = new native.Datapath(SHM_BYTES);
    let child: ChildProcess;
    try {
      // not this process's stdout/stderr: libuv makes a child's stdio blocking, and the file
      // description is shared, so this process's non-blocking log writes would block with it
      child = spawn(exe, [], { stdio: ['ignore', 'ignore', 'pipe', h.childFd()] });
    } catch (e) {
      h.close();
      throw e;
    }
    h.releaseChild();
    child.unref();
    const err = child.stderr!;
    err.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4096);
    });
    (err as unknown as { unref(): void }).unref();
    child.on('error', (e) => {
      this.exit = e.message;
    });
    child.on('exit', (code, signal) => {
      if (!this.closed) this.exit = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
    });
    try {
      h.hello();
    } catch (e) {
      h.close();
      if (child.exitCode === null) child.kill();
      throw e;
    }
    this.handle = h;
    this.pid = child.pid ?? -1;
    this.memory = h.memory();
    if (busyPollUs > 0) h.setBusyPoll(busyPollUs);
  }

  /** n counters in the shared memory, zeroed; never reused while this process lives. */
  alloc(n: number): Float64Array {
    if (this.used + n * 8 > this.memory.byteLength) throw new Error(`the datapath process's counter memory is full (${this.memory.byteLength} bytes)`);
    const a = new Float64Array(this.memory, this.used, n);
    this.used += n * 8;
    return a;
  }

  /** Whether n more counters fit. */
  room(n: number): boolean {
    return this.used + n * 8 <= this.memory.byteLength;
  }

  /** One more user (a device or a socket handed over): the process stays while any is left. */
  retain(): void {
    this.users++;
  }

  /** A user lets go; the last one closes the process (it exits when its control socket closes). */
  release(): void {
    if (--this.users > 0 || this.closed) return;
    this.closed = true;
    this.handle.close();
    if (shared === this) shared = undefined;
  }
}
