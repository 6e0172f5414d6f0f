/**
 * Prometheus metrics over HTTP (prom-client): the Vtep's counters with labels, read at scrape
 * time (nothing is done per packet), plus the process metrics prom-client collects.
 */
import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { checkIp, checkPort } from './config.js';
import { ConfigError, ErrorCode } from './errors.js';
import { DROP_REASONS, type Vtep, type VtepIo } from './vtep.js';

export interface MetricsAddress {
  host: string;
  port: number;
}

/** `9100`, `127.0.0.1:9100`, `[::1]:9100`; a bare port binds loopback. */
export function parseMetricsAddress(v: unknown, option = 'metrics'): MetricsAddress {
  const s = String(v);
  const m = /^(?:(?:\[([^\]]+)\]|([0-9.]+)|(localhost)):)?(\d+)$/.exec(s);
  if (m) {
    const host = m[1] ?? m[2] ?? '127.0.0.1';
    const port = checkPort(Number(m[4]), option);
    if (m[1] !== undefined || m[2] !== undefined) checkIp(host, option);
    return { host, port };
  }
  throw new ConfigError(ErrorCode.InvalidOption, option, `${option}: expected [host:]port such as 9100, 127.0.0.1:9100 or [::1]:9100, got ${JSON.stringify(v)}`);
}

/** A registry with the Vtep's metrics (labels `tap` and `vni`). */
export function vtepRegistry(vtep: Vtep, tap: string, opts: { processMetrics?: boolean } = {}): Registry {
  const reg = new Registry();
  const labels = { tap, vni: String(vtep.config.vni) };
  reg.setDefaultLabels(labels);
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [reg],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counter('uvtep_rx_datagrams_total', 'Datagrams received from the underlay, valid or not', () => vtep.stats.rxDatagrams);
  counter('uvtep_rx_packets_total', 'Frames decapsulated and delivered to the TAP', () => vtep.stats.rxPackets);
  counter('uvtep_rx_bytes_total', 'Bytes of frames delivered to the TAP', () => vtep.stats.rxBytes);
  counter('uvtep_tx_frames_total', 'Frames read from the TAP', () => vtep.stats.txFrames);
  counter('uvtep_tx_packets_total', 'Datagrams sent (flood copies included)', () => vtep.stats.txPackets);
  counter('uvtep_tx_bytes_total', 'Inner bytes of datagrams sent', () => vtep.stats.txBytes);
  counter('uvtep_flood_copies_total', 'Datagrams sent to the flood list', () => vtep.stats.floodCopies);
  counter('uvtep_fdb_learn_refused_total', 'New MACs not learned because the FDB was full', () => vtep.stats.learnRefused);
  counter('uvtep_tx_gso_sends_total', 'UDP messages carrying several datagrams (UDP GSO)', () => vtep.stats.txGsoSends);
  counter('uvtep_tx_gso_datagrams_total', 'Datagrams sent in UDP GSO batches', () => vtep.stats.txGsoDatagrams);
  counter('uvtep_rx_gro_writes_total', 'TAP writes carrying several coalesced TCP segments', () => vtep.stats.rxGroWrites);
  counter('uvtep_rx_gro_segments_total', 'Frames delivered inside coalesced TAP writes', () => vtep.stats.rxGroSegments);
  counter('uvtep_tx_pauses_total', 'Times the TAP was paused for socket backpressure', () => vtep.stats.txPauses);
  // what the syscalls carried (the fast path's batching), as in `uvtep stats` io
  const io: Array<[string, string, Exclude<keyof VtepIo, 'transport'>]> = [
    ['uvtep_tap_reads_total', 'TAP read syscalls', 'reads'],
    ['uvtep_tap_read_frames_total', 'Frames the TAP reads gave, after splitting super-frames', 'readFrames'],
    ['uvtep_tap_super_frames_total', 'TCP/UDP super-frames read from the TAP and split (TSO/USO)', 'superFrames'],
    ['uvtep_tap_writes_total', 'TAP write syscalls', 'writes'],
    ['uvtep_rx_bad_csum_total', 'Received TCP segments whose checksum failed (written unmerged)', 'badCsum'],
    ['uvtep_rx_partial_csum_total', 'Received frames with a partial checksum from a kernel peer on this host', 'partialCsum'],
    ['uvtep_rx_super_frames_total', 'TCP super-frames received whole from a kernel peer on this host', 'rxSuperFrames'],
    ['uvtep_udp_send_calls_total', 'UDP send syscalls (sendmmsg)', 'sendCalls'],
    ['uvtep_udp_sent_datagrams_total', 'Datagrams those sends carried', 'sentDatagrams'],
    ['uvtep_udp_gso_fallbacks_total', 'GSO messages a route refused, resent one datagram at a time', 'gsoFallbacks'],
    ['uvtep_udp_recv_calls_total', 'UDP receive syscalls (recvmmsg)', 'recvCalls'],
    ['uvtep_udp_recv_messages_total', 'Messages those receives returned', 'recvMsgs'],
    ['uvtep_udp_gro_messages_total', 'Received messages that held several datagrams (UDP GRO)', 'groMsgs'],
  ];
  for (const [name, help, key] of io) counter(name, help, () => vtep.stats.io[key]);
  new Counter({
    name: 'uvtep_drops_total',
    help: 'Dropped frames and datagrams by reason',
    labelNames: ['reason'],
    registers: [reg],
    collect() {
      this.reset();
      const d = vtep.stats.drops;
      for (const r of DROP_REASONS) this.inc({ reason: r }, d[r]);
    },
  });
  new Gauge({
    name: 'uvtep_fdb_entries',
    help: 'FDB entries (the all-zero flood entry not counted)',
    registers: [reg],
    collect() {
      this.set(vtep.fdb.size);
    },
  });
  new Gauge({
    name: 'uvtep_fdb_flood_destinations',
    help: 'Default destinations (flood list)',
    registers: [reg],
    collect() {
      this.set(vtep.fdb.flood.length);
    },
  });
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: reg });
  return reg;
}

export class MetricsServer {
  private readonly server: http.Server;
  constructor(reg: Registry) {
    this.server = http.createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        reg
          .metrics()
          .then((body) => {
            res.writeHead(200, { 'Content-Type': reg.contentType });
            res.end(body);
          })
          .catch((e: Error) => {
            res.writeHead(500);
            res.end(e.message);
          });
        return;
      }
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('uvtep: metrics are at /metrics\n');
    });
  }
  listen(a: MetricsAddress): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(a.port, a.host, () => {
        this.server.off('error', reject);
        this.server.unref();
        const addr = this.server.address() as { address: string; port: number };
        resolve({ address: addr.address, port: addr.port });
      });
    });
  }
  /** Stops listening and ends every connection, also a client stuck halfway through a request. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
