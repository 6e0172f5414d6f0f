/**
 * Prometheus metrics over HTTP (prom-client): the Vtep's counters with labels, read at scrape
 * time (nothing is done per packet), plus the process metrics prom-client collects.
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type { Counter, Gauge, Registry } from 'prom-client';
import { checkIp, checkPort } from './check.js';
import { ConfigError, ErrorCode } from './errors.js';
import { DROP_REASONS, type Vtep, type VtepStats } from './vtep.js';
import { ENDPOINT_DROPS, type Endpoint } from './endpoint.js';
import type { TransportCounters } from './transport/transport.js';
import type { EtcdStats } from './etcd.js';
import { transportCounters, UDP_COUNTERS, VTEP_COUNTERS } from './counters.js';

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
  // prom-client is loaded with the first registry, not by every uvtep (memory: docs/benchmarks.md)
  const { collectDefaultMetrics, Counter, Gauge, Registry } = createRequire(import.meta.url)('prom-client') as typeof import('prom-client');
  const reg = new Registry();
  const perVtep = (name: string, help: string, read: (s: VtepStats) => number, gauge = false) => {
    const collect = function (this: Counter | Gauge) {
      this.reset();
      for (const v of source.list()) {
        const l: Labels = { tap: v.name, vni: String(v.vtep.config.vni) };
        const n = read(v.vtep.stats);
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
        if (!seen.has(listen)) seen.set(listen, { listen, io: transportCounters(st), drops: {}, rx: st.rxDatagrams });
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
  for (const d of VTEP_COUNTERS) perVtep(d.metric, d.help, d.read, d.gauge === true);
  for (const d of UDP_COUNTERS) perEndpoint(d.metric, d.help, (e) => d.read(e.io));
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
