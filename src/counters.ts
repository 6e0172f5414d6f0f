/**
 * Every counter uvtep exports, declared once: its Prometheus name and help, how `uvtep stats`
 * and the exit summary show it, and how it is read from a snapshot. metrics.ts, the `stats`
 * client and the daemon's last record all derive from these tables; a new counter is a field
 * of `VtepStats` (or `TransportCounters`) and one row here (plus its line in docs/control.md).
 */
import type { TransportCounters } from './transport/transport.js';
import type { VtepStats } from './vtep.js';

/** The line of `uvtep stats` a counter is shown on. */
export type StatsLine = 'rx' | 'tx' | 'fdb' | 'offloads' | 'tap' | 'udp';

export interface CounterDef<S> {
  metric: string;
  help: string;
  read: (s: S) => number;
  /** A level (FDB size), not a count. */
  gauge?: true;
  line: StatsLine;
  /** What follows the number in `uvtep stats` (`12 frames`). */
  words: string;
  /** Shown in the exit summary too. */
  summary?: true;
}

/** A VTEP's counters (labels `tap` and `vni`), read from `Vtep.stats`; drops are by reason, below. */
export const VTEP_COUNTERS: ReadonlyArray<CounterDef<VtepStats>> = [
  { metric: 'uvtep_rx_packets_total', help: 'Frames decapsulated and delivered to the TAP', read: (s) => s.rxPackets, line: 'rx', words: 'frames', summary: true },
  { metric: 'uvtep_rx_bytes_total', help: 'Bytes of frames delivered to the TAP', read: (s) => s.rxBytes, line: 'rx', words: 'bytes', summary: true },
  { metric: 'uvtep_rx_datagrams_total', help: "Datagrams of this VTEP's VNI received from the underlay, valid or not", read: (s) => s.rxDatagrams, line: 'rx', words: 'datagrams' },
  { metric: 'uvtep_tx_packets_total', help: 'Datagrams sent (flood copies included)', read: (s) => s.txPackets, line: 'tx', words: 'datagrams', summary: true },
  { metric: 'uvtep_tx_bytes_total', help: 'Inner bytes of datagrams sent', read: (s) => s.txBytes, line: 'tx', words: 'bytes', summary: true },
  { metric: 'uvtep_tx_frames_total', help: 'Frames read from the TAP', read: (s) => s.txFrames, line: 'tx', words: 'frames read' },
  { metric: 'uvtep_flood_copies_total', help: 'Datagrams sent to the flood list', read: (s) => s.floodCopies, line: 'tx', words: 'flood copies', summary: true },
  { metric: 'uvtep_proxy_replies_total', help: 'ARP requests and neighbour solicitations answered on the TAP instead of flooded (--proxy)', read: (s) => s.proxyReplies, line: 'tx', words: 'ARP/ND answered locally' },
  { metric: 'uvtep_tx_pauses_total', help: 'Times the TAP was paused for socket backpressure', read: (s) => s.txPauses, line: 'tx', words: 'backpressure pauses' },
  { metric: 'uvtep_fdb_entries', help: 'FDB entries (the all-zero flood entry not counted)', read: (s) => s.fdbSize, gauge: true, line: 'fdb', words: 'entries', summary: true },
  { metric: 'uvtep_fdb_flood_destinations', help: 'Default destinations (flood list)', read: (s) => s.floodDestinations, gauge: true, line: 'fdb', words: 'flood destinations' },
  { metric: 'uvtep_fdb_learn_refused_total', help: 'New MACs not learned because the FDB was full', read: (s) => s.learnRefused, line: 'fdb', words: 'learns refused' },
  { metric: 'uvtep_rx_gro_writes_total', help: 'TAP writes carrying several coalesced TCP segments', read: (s) => s.rxGroWrites, line: 'offloads', words: 'coalesced TAP writes' },
  { metric: 'uvtep_rx_gro_segments_total', help: 'Frames delivered inside coalesced TAP writes', read: (s) => s.rxGroSegments, line: 'offloads', words: 'frames in them' },
  { metric: 'uvtep_flow_cache_tx_frames_total', help: 'Frames sent by the native flow cache without calling JS (included in tx_packets)', read: (s) => s.io.flowCacheTx, line: 'offloads', words: 'frames sent natively' },
  { metric: 'uvtep_flow_cache_rx_datagrams_total', help: 'Datagrams delivered by the native flow cache without calling JS (included in rx_datagrams)', read: (s) => s.io.flowCacheRx, line: 'offloads', words: 'datagrams received natively' },
  { metric: 'uvtep_tap_reads_total', help: 'TAP reads (with io_uring one syscall carries a batch of them)', read: (s) => s.io.reads, line: 'tap', words: 'reads' },
  { metric: 'uvtep_tap_read_frames_total', help: 'Frames the TAP reads gave, after splitting super-frames', read: (s) => s.io.readFrames, line: 'tap', words: 'frames read' },
  { metric: 'uvtep_tap_super_frames_total', help: 'TCP/UDP super-frames read from the TAP and split (TSO/USO)', read: (s) => s.io.superFrames, line: 'tap', words: 'super-frames split' },
  { metric: 'uvtep_tap_writes_total', help: 'TAP writes (frames, or coalesced runs; with io_uring one syscall carries a batch of them)', read: (s) => s.io.writes, line: 'tap', words: 'writes' },
  { metric: 'uvtep_rx_bad_csum_total', help: 'Received TCP segments whose checksum failed (written unmerged)', read: (s) => s.io.badCsum, line: 'tap', words: 'bad TCP checksums' },
  { metric: 'uvtep_rx_partial_csum_total', help: 'Received frames with a partial checksum from a kernel peer on this host', read: (s) => s.io.partialCsum, line: 'tap', words: 'partial checksums' },
  { metric: 'uvtep_rx_super_frames_total', help: 'TCP super-frames received whole from a kernel peer on this host', read: (s) => s.io.rxSuperFrames, line: 'tap', words: 'super-frames received' },
];

/** A UDP endpoint's socket counters (label `listen`), shared by the VTEPs on it. */
export const UDP_COUNTERS: ReadonlyArray<CounterDef<TransportCounters>> = [
  { metric: 'uvtep_udp_send_calls_total', help: 'UDP send syscalls (sendmmsg)', read: (t) => t.sendCalls, line: 'udp', words: 'send calls' },
  { metric: 'uvtep_udp_sent_datagrams_total', help: 'Datagrams those sends carried', read: (t) => t.sentDatagrams, line: 'udp', words: 'datagrams sent' },
  { metric: 'uvtep_tx_gso_sends_total', help: 'UDP messages carrying several datagrams (UDP GSO)', read: (t) => t.gsoSends, line: 'udp', words: 'GSO sends' },
  { metric: 'uvtep_tx_gso_datagrams_total', help: 'Datagrams sent in UDP GSO batches', read: (t) => t.gsoDatagrams, line: 'udp', words: 'datagrams in them' },
  { metric: 'uvtep_udp_gso_fallbacks_total', help: 'GSO messages a route refused, resent one datagram at a time', read: (t) => t.gsoFallbacks, line: 'udp', words: 'GSO fallbacks' },
  { metric: 'uvtep_udp_recv_calls_total', help: 'UDP receive syscalls (recvmmsg)', read: (t) => t.recvCalls, line: 'udp', words: 'receive calls' },
  { metric: 'uvtep_udp_recv_messages_total', help: 'Messages those receives returned', read: (t) => t.recvMsgs, line: 'udp', words: 'messages received' },
  { metric: 'uvtep_udp_gro_messages_total', help: 'Received messages that held several datagrams (UDP GRO)', read: (t) => t.groMsgs, line: 'udp', words: 'GRO messages' },
];

/** The socket counters of a VTEP's snapshot (its own transport's, or its endpoint's). */
export function transportCounters(s: VtepStats): TransportCounters {
  return { ...s.io, gsoSends: s.txGsoSends, gsoDatagrams: s.txGsoDatagrams };
}

function render<S>(defs: ReadonlyArray<CounterDef<S>>, s: S, line: StatsLine, onlySummary: boolean): string {
  return defs
    .filter((d) => d.line === line && (!onlySummary || d.summary === true))
    .map((d) => `${d.read(s)} ${d.words}`)
    .join(', ');
}

function drops(s: VtepStats, sep: string): string {
  const by = Object.entries(s.drops)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}${sep}${n}`)
    .join(', ');
  return `${s.dropsTotal}${by ? ` (${by})` : ''}`;
}

/** The lines of `uvtep stats` for one VTEP, each as `label: counters`; `suffix` adds rates to a line. */
export function statsLines(s: VtepStats, suffix: Partial<Record<StatsLine | 'drops', string>> = {}): string[] {
  const line = (l: StatsLine | 'drops', label: string, text: string) => `  ${label}: ${text}${suffix[l] ?? ''}`;
  return [
    line('rx', 'rx', render(VTEP_COUNTERS, s, 'rx', false)),
    line('tx', 'tx', render(VTEP_COUNTERS, s, 'tx', false)),
    line('drops', 'drops', drops(s, ' ')),
    line('fdb', 'fdb', render(VTEP_COUNTERS, s, 'fdb', false)),
    line('offloads', 'offloads', render(VTEP_COUNTERS, s, 'offloads', false)),
    line('tap', s.io.ioUring ? 'tap (io_uring)' : 'tap', render(VTEP_COUNTERS, s, 'tap', false)),
    line('udp', `udp (${s.io.transport})`, render(UDP_COUNTERS, transportCounters(s), 'udp', false)),
  ];
}

/** One line for the daemon's last record of a VTEP: what it forwarded and dropped. */
export function summaryLine(s: VtepStats): string {
  return `rx ${render(VTEP_COUNTERS, s, 'rx', true)}; tx ${render(VTEP_COUNTERS, s, 'tx', true)}; drops ${drops(s, '=')}; fdb ${render(VTEP_COUNTERS, s, 'fdb', true)}`;
}
