/**
 * Where the CLI's JSON log lines go when stdout is not a terminal: a destination for pino that
 * never blocks forwarding. Node writes to a pipe synchronously on Linux, so a log reader that
 * stalls (a stuck journald, a `uvtep | less` left open) would stop uvtep inside write(2), every
 * VTEP with it. Here a pipe or socket on stdout is written without blocking, through a queue of at
 * most `limit` bytes; a line that does not fit is dropped and counted, and once the reader catches
 * up one line says how many were lost. A regular file is written synchronously (it never stalls on
 * a reader). Lines may be lost; frames are not.
 */
import { fstatSync, writeSync } from 'node:fs';
import net from 'node:net';

/** Log bytes that may wait for a slow reader before lines are dropped. */
export const LOG_QUEUE_LIMIT = 1024 * 1024;

export class LogSink {
  /** Lines dropped because the reader was not reading. */
  dropped: number = 0;
  private readonly fd: number;
  private readonly limit: number;
  private readonly sock: net.Socket | undefined;
  /** Dropped since the last report. */
  private unreported: number = 0;
  /** Stopping: the final records are kept whatever the queue (close bounds the wait). */
  private final: boolean = false;

  constructor(fd = 1, limit = LOG_QUEUE_LIMIT) {
    this.fd = fd;
    this.limit = limit;
    let pipe = false;
    try {
      const st = fstatSync(fd);
      pipe = st.isFIFO() || st.isSocket();
    } catch {
      pipe = false;
    }
    // a libuv pipe handle on the fd: non-blocking writes, queued while the reader is slow
    this.sock = pipe ? new net.Socket({ fd, readable: false, writable: true }) : undefined;
    if (this.sock !== undefined) {
      this.sock.on('error', () => undefined); // the reader went away: nothing to log to
      this.sock.on('drain', () => this.report());
      this.sock.unref();
    }
  }

  /** pino's destination interface. */
  write(line: string): boolean {
    const s = this.sock;
    if (s === undefined) {
      try {
        writeSync(this.fd, line);
      } catch {
        this.count();
      }
      return true;
    }
    if (s.destroyed || (!this.final && s.writableLength + line.length > this.limit)) {
      this.count();
      return false;
    }
    s.write(line);
    return true;
  }

  /** uvtep is stopping: from now on every line is queued (the final counters must not be dropped). */
  stopping(): void {
    this.final = true;
  }

  /**
   * At exit: resolves once what is queued has been written, or after `timeoutMs` with the rest
   * discarded (a reader that never reads must not keep the process alive).
   */
  close(timeoutMs: number): Promise<void> {
    const s = this.sock;
    if (s === undefined || s.destroyed) return Promise.resolve();
    this.report();
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        s.destroy();
        resolve();
      }, timeoutMs);
      s.end(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private count(): void {
    this.dropped++;
    this.unreported++;
  }

  /** One line for the lines lost while the reader was stalled, once it reads again. */
  private report(): void {
    if (this.unreported === 0 || this.sock === undefined) return;
    const n = this.unreported;
    this.unreported = 0;
    this.sock.write(JSON.stringify({ level: 40, time: Date.now(), name: 'uvtep', dropped: n, droppedTotal: this.dropped, msg: `${n} log lines dropped: the log reader was not reading (forwarding went on)` }) + '\n');
  }
}
