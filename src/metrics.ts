/**
 * Prometheus metrics over HTTP (prom-client): the Vtep's counters with labels, read at scrape
 * time (nothing is done per packet), plus the process metrics prom-client collects.
 */
import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { checkIp, checkPort } from './check.js';
import { ConfigError, ErrorCode } from './errors.js';
import { DROP_REASONS, type Vtep, type VtepStats } from './vtep.js';
import { ENDPOINT_DROPS, type Endpoint } from './endpoint.js';
import type { TransportCounters } from './transport/transport.js';
import type { EtcdStats } from './etcd.js';

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

/** What the metrics read: the VTEPs served, each maybe on a shared endpoint. */
export interface MetricsSource {
  list(): Array<{ name: string; vtep: Vtep; endpoint?: Endpoint }>;
  /** The etcd control plane's state, when the process has one (`uvtep_etcd_*`). */
  etcd?(): EtcdStats | undefined;
}

/** A registry with the metrics of one Vtep (labels `tap` and `vni`; its UDP counters `listen`). */
export function vtepRegistry(vtep: Vtep, tap: string, opts: { processMetrics?: boolean } = {}): Registry {
  return metricsRegistry({ list: () => [{ name: tap, vtep }] }, opts);
}

type Labels = Record<string, string>;

/**
 * A registry with the metrics of every VTEP of `source`, read at scrape time: per VTEP (labels
 * `tap` and `vni`) what it forwarded, dropped and learned and what its TAP did; per UDP endpoint
 * (label `listen`, shared by the VTEPs on one port) what its socket did and the datagrams no VTEP
 * could be given.
 */
export function metricsRegistry(source: MetricsSource, opts: { processMetrics?: boolean } = {}): Registry {
  const reg = new Registry();
  const perVtep = (name: string, help: string, read: (s: VtepStats, v: Vtep) => number, gauge = false) => {
    const collect = function (this: Counter | Gauge) {
      this.reset();
      for (const v of source.list()) {
        const l: Labels = { tap: v.name, vni: String(v.vtep.config.vni) };
        const n = read(v.vtep.stats, v.vtep);
        if (this instanceof Gauge) this.set(l, n);
        else this.inc(l, n);
      }
    };
    if (gauge) new Gauge({ name, help, labelNames: ['tap', 'vni'], registers: [reg], collect });
    else new Counter({ name, help, labelNames: ['tap', 'vni'], registers: [reg], collect });
  };
  /** Endpoints by listen address: a shared one once, a Vtep on its own transport by its own. */
  const endpoints = (): Array<{ listen: string; io: TransportCounters; drops: Record<string, number>; rx: number }> => {
    const seen = new Map<string, { listen: string; io: TransportCounters; drops: Record<string, number>; rx: number }>();
    for (const v of source.list()) {
      if (v.endpoint !== undefined) {
        const st = v.endpoint.stats;
        if (!seen.has(st.listen)) seen.set(st.listen, { listen: st.listen, io: st.io, drops: st.drops, rx: st.rxDatagrams });
      } else {
        const a = v.vtep.running ? v.vtep.address() : { address: '', port: 0 };
        const listen = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
        const st = v.vtep.stats;
        if (!seen.has(listen)) seen.set(listen, { listen, io: { ...st.io, gsoSends: st.txGsoSends, gsoDatagrams: st.txGsoDatagrams }, drops: {}, rx: st.rxDatagrams });
      }
    }
    return [...seen.values()];
  };
  const perEndpoint = (name: string, help: string, read: (e: ReturnType<typeof endpoints>[number]) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['listen'],
      registers: [reg],
      collect() {
        this.reset();
        for (const e of endpoints()) this.inc({ listen: e.listen }, read(e));
      },
    });
  perVtep('uvtep_rx_datagrams_total', 'Datagrams of this VTEP\'s VNI received from the underlay, valid or not', (s) => s.rxDatagrams);
  perVtep('uvtep_rx_packets_total', 'Frames decapsulated and delivered to the TAP', (s) => s.rxPackets);
  perVtep('uvtep_rx_bytes_total', 'Bytes of frames delivered to the TAP', (s) => s.rxBytes);
  perVtep('uvtep_tx_frames_total', 'Frames read from the TAP', (s) => s.txFrames);
  perVtep('uvtep_tx_packets_total', 'Datagrams sent (flood copies included)', (s) => s.txPackets);
  perVtep('uvtep_tx_bytes_total', 'Inner bytes of datagrams sent', (s) => s.txBytes);
  perVtep('uvtep_flood_copies_total', 'Datagrams sent to the flood list', (s) => s.floodCopies);
  perVtep('uvtep_proxy_replies_total', 'ARP requests and neighbour solicitations answered on the TAP instead of flooded (--proxy)', (s) => s.proxyReplies);
  perVtep('uvtep_fdb_learn_refused_total', 'New MACs not learned because the FDB was full', (s) => s.learnRefused);
  perVtep('uvtep_rx_gro_writes_total', 'TAP writes carrying several coalesced TCP segments', (s) => s.rxGroWrites);
  perVtep('uvtep_rx_gro_segments_total', 'Frames delivered inside coalesced TAP writes', (s) => s.rxGroSegments);
  perVtep('uvtep_tx_pauses_total', 'Times the TAP was paused for socket backpressure', (s) => s.txPauses);
  // what the TAP syscalls carried (the fast path's batching), as in `uvtep stats` io
  const tapIo: Array<[string, string, 'reads' | 'readFrames' | 'superFrames' | 'writes' | 'badCsum' | 'partialCsum' | 'rxSuperFrames']> = [
    ['uvtep_tap_reads_total', 'TAP read syscalls', 'reads'],
    ['uvtep_tap_read_frames_total', 'Frames the TAP reads gave, after splitting super-frames', 'readFrames'],
    ['uvtep_tap_super_frames_total', 'TCP/UDP super-frames read from the TAP and split (TSO/USO)', 'superFrames'],
    ['uvtep_tap_writes_total', 'TAP write syscalls', 'writes'],
    ['uvtep_rx_bad_csum_total', 'Received TCP segments whose checksum failed (written unmerged)', 'badCsum'],
    ['uvtep_rx_partial_csum_total', 'Received frames with a partial checksum from a kernel peer on this host', 'partialCsum'],
    ['uvtep_rx_super_frames_total', 'TCP super-frames received whole from a kernel peer on this host', 'rxSuperFrames'],
  ];
  for (const [name, help, key] of tapIo) perVtep(name, help, (s) => s.io[key]);
  const udpIo: Array<[string, string, keyof TransportCounters]> = [
    ['uvtep_udp_send_calls_total', 'UDP send syscalls (sendmmsg)', 'sendCalls'],
    ['uvtep_udp_sent_datagrams_total', 'Datagrams those sends carried', 'sentDatagrams'],
    ['uvtep_tx_gso_sends_total', 'UDP messages carrying several datagrams (UDP GSO)', 'gsoSends'],
    ['uvtep_tx_gso_datagrams_total', 'Datagrams sent in UDP GSO batches', 'gsoDatagrams'],
    ['uvtep_udp_gso_fallbacks_total', 'GSO messages a route refused, resent one datagram at a time', 'gsoFallbacks'],
    ['uvtep_udp_recv_calls_total', 'UDP receive syscalls (recvmmsg)', 'recvCalls'],
    ['uvtep_udp_recv_messages_total', 'Messages those receives returned', 'recvMsgs'],
    ['uvtep_udp_gro_messages_total', 'Received messages that held several datagrams (UDP GRO)', 'groMsgs'],
  ];
  for (const [name, help, key] of udpIo) perEndpoint(name, help, (e) => e.io[key]);
  perEndpoint('uvtep_endpoint_rx_datagrams_total', 'Datagrams the UDP endpoint received, for any VNI', (e) => e.rx);
  new Counter({
    name: 'uvtep_endpoint_drops_total',
    help: 'Datagrams the UDP endpoint could give no VTEP (no VXLAN header, a VNI nobody serves), by reason',
    labelNames: ['listen', 'reason'],
    registers: [reg],
    collect() {
      this.reset();
      for (const e of endpoints()) for (const r of ENDPOINT_DROPS) this.inc({ listen: e.listen, reason: r }, e.drops[r] ?? 0);
    },
  });
  new Counter({
    name: 'uvtep_drops_total',
    help: 'Dropped frames and datagrams of a VTEP, by reason',
    labelNames: ['tap', 'vni', 'reason'],
    registers: [reg],
    collect() {
      this.reset();
      for (const v of source.list()) {
        const d = v.vtep.stats.drops;
        for (const r of DROP_REASONS) this.inc({ tap: v.name, vni: String(v.vtep.config.vni), reason: r }, d[r]);
      }
    },
  });
  perVtep('uvtep_fdb_entries', 'FDB entries (the all-zero flood entry not counted)', (_s, v) => v.fdb.size, true);
  perVtep('uvtep_fdb_flood_destinations', 'Default destinations (flood list)', (_s, v) => v.fdb.flood.length, true);
  if (source.etcd !== undefined) {
    const etcd = source.etcd.bind(source);
    const one = (name: string, help: string, read: (e: EtcdStats) => number, gauge: boolean) => {
      const collect = function (this: Counter | Gauge) {
        this.reset();
        const e = etcd();
        if (e === undefined) return;
        if (this instanceof Gauge) this.set(read(e));
        else this.inc(read(e));
      };
      if (gauge) new Gauge({ name, help, registers: [reg], collect });
      else new Counter({ name, help, registers: [reg], collect });
    };
    one('uvtep_etcd_up', '1 while etcd answers and the lease is alive, else 0 (forwarding goes on with the last known members)', (e) => (e.up ? 1 : 0), true);
    one('uvtep_etcd_members', 'Members of the VNIs of this process, itself not counted (summed over its VTEPs)', (e) => e.members, true);
    one('uvtep_etcd_requests_total', 'Requests sent to etcd', (e) => e.requests, false);
    one('uvtep_etcd_errors_total', 'Failed etcd requests, broken watches and keepalives', (e) => e.errors, false);
    one('uvtep_etcd_leases_total', 'Leases granted (one more per recovery after a lost lease)', (e) => e.leases, false);
    one('uvtep_etcd_resyncs_total', 'Full lists of a VNI (join, lost watch, recovery)', (e) => e.resyncs, false);
  }
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
