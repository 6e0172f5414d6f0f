#!/usr/bin/env node
// End-to-end benchmark: the same two namespace hosts (veth underlay, MTU 1500) for every case,
// built and torn down by this script (prefix uvt-bench-), cases run one after another in the
// same run, in rounds (every case once per round), each repeated and reported as the median, and as a ratio to the kernel VTEP.
//
//   npm run bench                         full run (3 repetitions, 5 s per measurement)
//   node bench/e2e/run.js --smoke --out DIR   1 s, 1 repetition (the test suite runs this)
//   options: --reps N  --seconds S  --pings N  --cases a,b,...  --out DIR  --no-docs  --profile
//            --vnis N (tenant networks of the many-VNIs measurement, default 4; 0 skips it)
//            --idle-pings N (pings 0.2 s apart for the idle-spell RTT and CPU per ping, default 25)
//   --profile: V8 CPU profiles of uvtep <-> uvtep under a stream, and with perf installed a
//   `perf record -g` of the sending uvtep against a kernel VTEP, sorted by call chain.
//   --perf-only: only that perf pass (its section of docs/benchmarks.md), no cases.
//
// Cases: bare veth (ceiling), kernel <-> kernel (reference), uvtep <-> uvtep (native endpoint,
// the default, tunnel GSO where nothing holds it back), uvtep <-> kernel, both again with
// --tunnel-gso off (super-frames as UDP GSO messages), uvtep <-> uvtep over the node:dgram fallback, uvtep <-> uvtep
// with --busy-poll 50, uvtep <-> uvtep with --no-flow-cache (every packet through JS). Optional peer when installed: socat TAP-over-UDP (a userspace L2 tunnel
// without VXLAN headers), and with cc the same socat holding a ballast of uvtep's peak RSS (what
// a process's resident size costs its round trips here), and that ballast in transparent huge
// pages where the kernel offers them (as many bytes, far fewer page-table entries).
// Measures: iperf3 TCP 1 stream (h1 -> h2 and reverse), TCP 4 streams, 64-byte UDP packets/s
// delivered and loss, ping RTT avg/p50/p99 and the share over 1 ms (pings 10 ms apart) and after idle spells (0.2 s apart,
// with the userspace peer's CPU per ping: the run time of all its threads from /proc/PID/task/*/schedstat,
// less what the same time without pings cost it: timers); whole-machine CPU during the 1-stream TCP test (busy %
// from /proc/stat, and core-seconds per GB carried); for the userspace processes, CPU (% of one
// core) and peak RSS; for uvtep, how much each syscall carried (from its counters).
// Many VNIs: N tenant networks (VNI 10, 11, ...) on port 4789 between the same two hosts, one TCP
// stream each at the same time; the kernel with N vxlan devices per host, uvtep with one process
// per host hosting N VTEPs (a vteps: config file). Aggregate rate, as a ratio to the kernel.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sh, Testbed, testbedMissing, UvtepProcess } from '../../dist/lab/testbed.js';
import { writeSection } from '../docs.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const flag = (n) => argv.includes(n);
const opt = (n, d) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : d);
const smoke = flag('--smoke');
const reps = Number(opt('--reps', smoke ? 1 : 3));
const seconds = Number(opt('--seconds', smoke ? 1 : 5));
const pings = Number(opt('--pings', smoke ? 20 : 300));
const outDir = path.resolve(opt('--out', path.join(root, 'bench/results')));
const writeDocs = !smoke && !flag('--no-docs') && !argv.includes('--out');
const profile = flag('--profile');
const perfOnly = flag('--perf-only');
const nVnis = perfOnly ? 0 : Number(opt('--vnis', 4));
const idlePings = Number(opt('--idle-pings', smoke ? 5 : 25));
const log = (s) => process.stderr.write(s + '\n');
const hasSocat = (await sh('socat', ['-V'])).code === 0;
// socat again with uvtep's resident size (a ballast preloaded into it): what a process's size costs its round trips here
let ballastSo;
if (hasSocat) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'uvt-ballast-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const r = await sh('cc', ['-O2', '-shared', '-fPIC', '-o', path.join(dir, 'ballast.so'), path.join(root, 'bench/e2e/ballast.c')]);
  if (r.code === 0) ballastSo = path.join(dir, 'ballast.so');
  else log(`bench: cannot build the ballast (cc: ${r.stderr.trim()}): the socat-ballast row is skipped`);
}
// the huge-page ballast means something only where transparent huge pages can be asked for
const thp = (() => {
  try {
    return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'absent';
  }
})();
const hugeBallast = ballastSo !== undefined && (thp === 'always' || thp === 'madvise');
if (ballastSo && !hugeBallast) log(`bench: transparent huge pages are ${thp}: the socat-ballast-huge row is skipped`);
const ALL = ['bare', 'kernel', 'uvtep', 'uvtep-kernel', 'uvtep-kernel-off', 'uvtep-off', 'uvtep-dgram', 'uvtep-busy', 'uvtep-nofc', 'uvtep-inline', ...(hasSocat ? ['socat'] : []), ...(ballastSo ? ['socat-ballast'] : []), ...(hugeBallast ? ['socat-ballast-huge'] : [])];
const caseNames = perfOnly ? [] : opt('--cases', ALL.join(',')).split(',');
if (caseNames.some((c) => c.startsWith('socat-ballast')) && !ballastSo) {
  log('bench: socat-ballast needs socat and cc (apt-get install socat gcc)');
  process.exit(1);
}
if (caseNames.includes('socat-ballast-huge') && !hugeBallast) {
  log(`bench: socat-ballast-huge needs transparent huge pages (always or madvise; here: ${thp})`);
  process.exit(1);
}
if (!hasSocat) log('bench: socat is not installed (apt-get install socat): the userspace TAP-over-UDP peer is skipped');

const CASES = {
  bare: { label: 'bare veth (no tunnel)', kind: 'ceiling' },
  kernel: { label: 'kernel VTEP <-> kernel VTEP', kind: 'reference' },
  uvtep: { label: 'uvtep <-> uvtep', kind: 'uvtep' },
  'uvtep-kernel': { label: 'uvtep (h1) <-> kernel VTEP (h2)', kind: 'uvtep' },
  'uvtep-kernel-off': { label: 'uvtep --tunnel-gso off (h1) <-> kernel VTEP (h2)', kind: 'uvtep' },
  'uvtep-off': { label: 'uvtep <-> uvtep, --tunnel-gso off', kind: 'uvtep' },
  'uvtep-dgram': { label: 'uvtep <-> uvtep, --transport dgram (fallback)', kind: 'uvtep' },
  'uvtep-busy': { label: 'uvtep <-> uvtep, --busy-poll 50', kind: 'uvtep' },
  'uvtep-nofc': { label: 'uvtep <-> uvtep, --no-flow-cache (every packet through JS)', kind: 'uvtep' },
  'uvtep-inline': { label: 'uvtep <-> uvtep, --datapath inline (the flow cache in the Node process)', kind: 'uvtep' },
  socat: { label: 'socat TAP-over-UDP (userspace peer, no VXLAN)', kind: 'peer' },
  'socat-ballast': { label: "socat with uvtep's resident size (the same socat, holding a ballast)", kind: 'peer' },
  'socat-ballast-huge': { label: 'socat with the same ballast in 2 MB pages', kind: 'peer' },
};


// ---- requirements
const missing = await testbedMissing();
if ((await sh('iperf3', ['--version'])).code !== 0) missing.push('iperf3 (apt-get install iperf3)');
if ((await sh('ping', ['-V'])).code !== 0) missing.push('ping (apt-get install iputils-ping)');
if ((await sh('ethtool', ['--version'])).code !== 0) missing.push('ethtool (apt-get install ethtool)');
if (missing.length) {
  log(`bench: missing ${missing.join(', ')}`);
  process.exit(1);
}

const bed = new Testbed('bench');
let stopping = false;
process.on('SIGINT', () => {
  if (stopping) process.exit(130);
  stopping = true;
  log('\ninterrupted: removing the benchmark hosts...');
  bed.cleanup().then(() => process.exit(130));
});

// ---- measurements
const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

async function iperf(h1, h2, target, args) {
  const srv = h2.spawn(['iperf3', '-s', '-1', '-B', target, '-p', '5201']);
  await new Promise((r) => setTimeout(r, 300));
  const r = await h1.exec(['iperf3', '-c', target, '-p', '5201', '-t', String(seconds), '-J', ...args], { timeoutMs: (seconds + 20) * 1000 });
  if (srv.exitCode === null) srv.kill('SIGTERM');
  let j;
  try {
    j = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 ${args.join(' ')}: ${r.stderr || r.stdout}`);
  }
  if (j.error) throw new Error(`iperf3 ${args.join(' ')}: ${j.error}`);
  return j;
}

async function tcp(h1, h2, target, extra = []) {
  const j = await iperf(h1, h2, target, extra);
  return j.end.sum_received.bits_per_second / 1e9;
}

/** Packets h's stack received from `dev` so far (its rx_packets). */
async function rxPackets(h, dev) {
  return Number((await h.exec(['cat', `/sys/class/net/${dev}/statistics/rx_packets`])).stdout.trim());
}

/**
 * iperf3 64-byte UDP, unlimited rate: what the server received, and what the tunnel handed to
 * h2's stack (the rx_packets of its overlay device: the tunnel's own delivery, before the
 * receiving socket, whose full buffer may drop them).
 */
async function udpSmall(h1, h2, target, dev) {
  const a0 = await rxPackets(h2, dev);
  const j = await iperf(h1, h2, target, ['-u', '-b', '0', '-l', '64']);
  const a1 = await rxPackets(h2, dev);
  const s = j.end.sum;
  const delivered = s.packets - s.lost_packets;
  const arrived = a1 - a0;
  return { pps: delivered / s.seconds, loss: s.lost_percent, arrivedPps: arrived / s.seconds, afterPct: arrived > 0 ? Math.max(0, (1 - delivered / arrived) * 100) : NaN };
}

async function rtt(h1, target) {
  const r = await h1.exec(['ping', '-n', '-c', String(pings), '-i', '0.01', '-W', '1', target], { timeoutMs: (pings * 0.05 + 10) * 1000 });
  const xs = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (!xs.length) return { avg: NaN, p50: NaN, p99: NaN, over1ms: NaN };
  const q = (p) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))];
  return { avg: xs.reduce((a, b) => a + b, 0) / xs.length, p50: q(0.5), p99: q(0.99), over1ms: (xs.filter((x) => x > 1).length / xs.length) * 100 };
}

/** The datapath process of a uvtep (its startup line says), if it has one. */
function datapathPids(p) {
  const up = p.records.find((r) => typeof r.datapathPid === 'number');
  return up ? [up.datapathPid] : [];
}

/** The processes' time on a CPU so far, all their threads (V8's, libuv's), µs (/proc/PID/task/TID/schedstat, nanoseconds). */
function runTimeUs(pids) {
  try {
    return pids.reduce((sum, pid) => sum + readdirSync(`/proc/${pid}/task`).reduce((us, tid) => us + Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1000, 0), 0);
  } catch {
    return NaN;
  }
}

/**
 * Pings after idle spells (0.2 s apart): the average RTT, and the CPU per ping of the busier
 * userspace peer (its run time during the pings less its run time over as long without pings).
 */
async function idleRtt(h1, target, pids) {
  const spell = idlePings * 0.2 * 1000;
  const t0 = pids.map(runTimeUs);
  await new Promise((r) => setTimeout(r, spell));
  const t1 = pids.map(runTimeUs);
  const r = await h1.exec(['ping', '-n', '-c', String(idlePings), '-i', '0.2', '-W', '1', target], { timeoutMs: (idlePings * 0.3 + 10) * 1000 });
  const t2 = pids.map(runTimeUs);
  const xs = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  const cpu = pids.length ? Math.max(...pids.map((_, i) => (t2[i] - t1[i] - (t1[i] - t0[i])) / idlePings)) : NaN;
  return { avg: xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN, cpuUs: cpu };
}

/** CPU seconds, peak RSS and 2 MB-page memory of a group of processes (summed). */
function procStat(pids) {
  const one = (pid) => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / 100; // utime + stime, clock ticks (USER_HZ 100)
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    // resident memory mapped in 2 MB pages (the huge-page ballast's, checked)
    const huge = /AnonHugePages:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return { cpu, rssMb: hwm ? Number(hwm[1]) / 1024 : NaN, hugeMb: huge ? Number(huge[1]) / 1024 : NaN };
  };
  try {
    return pids.map(one).reduce((a, b) => ({ cpu: a.cpu + b.cpu, rssMb: a.rssMb + b.rssMb, hugeMb: a.hugeMb + b.hugeMb }));
  } catch {
    return { cpu: NaN, rssMb: NaN, hugeMb: NaN };
  }
}

async function kernelVtep(h, remote, address, mac, txOff) {
  await h.ip('link', 'add', 'vxlan1', 'type', 'vxlan', 'id', '1', 'remote', remote, 'dstport', '4789', 'dev', 'eth0');
  await h.ip('link', 'set', 'vxlan1', 'address', mac);
  await h.ip('addr', 'add', address, 'dev', 'vxlan1');
  await h.ip('link', 'set', 'vxlan1', 'up');
  if (txOff) await h.run(['ethtool', '-K', 'eth0', 'tx', 'off']);
}

let profileDir;
let profiling = false;
function uvtep(h, remote, address, mac, extra = []) {
  const nodeArgs = profiling ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  return new UvtepProcess(h, ['--vni', '1', '--remote', remote, '--name', 'vxlan1', '--address', address, '--mac', mac, ...extra], nodeArgs);
}

/**
 * The kernel's own memory monitor, if it runs: DAMON samples pages' accessed bits at its sampling
 * interval (and, with a pageout scheme, reclaims what it finds cold). The likely cause of a
 * round-trip tail that grows with the 4 KB pages a process maps (docs/benchmarks.md, "Round trips
 * and page-table entries").
 */
function damonFacts() {
  const base = '/sys/kernel/mm/damon/admin/kdamonds';
  const read = (p) => readFileSync(path.join(base, p), 'utf8').trim();
  try {
    const on = [];
    for (let k = 0; k < Number(read('nr_kdamonds')); k++) {
      if (read(`${k}/state`) !== 'on') continue;
      for (let c = 0; c < Number(read(`${k}/contexts/nr_contexts`)); c++) {
        const ctx = `${k}/contexts/${c}`;
        const actions = [];
        for (let i = 0; i < Number(read(`${ctx}/schemes/nr_schemes`)); i++) actions.push(read(`${ctx}/schemes/${i}/action`));
        on.push(`${read(`${ctx}/operations`)}, a sample every ${Number(read(`${ctx}/monitoring_attrs/intervals/sample_us`)) / 1000} ms${actions.length ? `, schemes: ${actions.join(', ')}` : ''}`);
      }
    }
    return on.length ? `on (${on.join('; ')})` : 'off';
  } catch {
    return 'absent';
  }
}

/** Whole-machine CPU counters (jiffies): busy and total, from the first line of /proc/stat. */
function machineCpu() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** The ballast for socat-ballast, MB: uvtep's median peak RSS so far in this run (90 before any uvtep case). */
function ballastMb() {
  // the Node process's own size: the inline case's, where the Node process forwards
  const xs = [...(results['uvtep-inline']?.rssMb ?? results.uvtep?.rssMb ?? [])].sort((a, b) => a - b);
  return Math.round(xs.length ? xs[Math.floor(xs.length / 2)] : 90);
}

/** Builds the hosts and the case's tunnel; returns the target address and the uvtep processes. */
async function setup(name) {
  await bed.removeLeftovers();
  const h1 = await bed.host('h1');
  const h2 = await bed.host('h2');
  await bed.veth(h1, 'eth0', ['198.51.100.1/24'], h2, 'eth0', ['198.51.100.2/24']);
  const procs = [];
  const peers = [];
  const A = ['10.0.0.106/24', '02:00:00:00:00:0a'];
  const B = ['10.0.0.107/24', '02:00:00:00:00:0b'];
  if (name === 'bare') return { h1, h2, target: '198.51.100.2', procs, peers };
  if (name === 'kernel') {
    await kernelVtep(h1, '198.51.100.2', ...A, false);
    await kernelVtep(h2, '198.51.100.1', ...B, false);
  } else if (name === 'uvtep' || name === 'uvtep-dgram' || name === 'uvtep-busy' || name === 'uvtep-nofc' || name === 'uvtep-inline' || name === 'uvtep-off') {
    const extra = { 'uvtep-dgram': ['--transport', 'dgram'], 'uvtep-busy': ['--busy-poll', '50'], 'uvtep-nofc': ['--no-flow-cache'], 'uvtep-inline': ['--datapath', 'inline'], 'uvtep-off': ['--tunnel-gso', 'off'] }[name] ?? [];
    procs.push(uvtep(h1, '198.51.100.2', ...A, extra), uvtep(h2, '198.51.100.1', ...B, extra));
  } else if (name === 'uvtep-kernel' || name === 'uvtep-kernel-off') {
    procs.push(uvtep(h1, '198.51.100.2', ...A, name === 'uvtep-kernel-off' ? ['--tunnel-gso', 'off'] : []));
    await kernelVtep(h2, '198.51.100.1', ...B, false); // kernel defaults: tx checksum offload on (see docs/scenarios.md)
  } else if (name.startsWith('socat')) {
    // the classic userspace L2 tunnel: one Ethernet frame per UDP datagram, no VXLAN header;
    // socat-ballast: the same, holding as much resident memory as uvtep did in this run;
    // socat-ballast-huge: that memory in transparent huge pages (far fewer page-table entries)
    const env = name === 'socat' ? [] : ['env', `LD_PRELOAD=${ballastSo}`, `UVT_BALLAST_MB=${ballastMb()}`, `UVT_BALLAST_HUGE=${name === 'socat-ballast-huge' ? 1 : 0}`];
    for (const [h, local, remote, addr] of [[h1, '198.51.100.1', '198.51.100.2', A[0]], [h2, '198.51.100.2', '198.51.100.1', B[0]]]) {
      const p = h.spawn([...env, 'socat', `UDP-DATAGRAM:${remote}:5555,bind=${local}:5555`, `TUN:${addr},tun-type=tap,tun-name=tap0,iff-up`]);
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      peers.push(p);
      const deadline = Date.now() + 5000;
      while ((await h.exec(['ip', 'link', 'show', 'tap0'])).code !== 0) {
        if (Date.now() > deadline || p.exitCode !== null) throw new Error(`socat did not create tap0 (exit ${p.exitCode}): ${err.trim()}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await h.ip('link', 'set', 'tap0', 'mtu', '1450'); // frames must fit a 1500-byte underlay unfragmented
    }
  } else throw new Error(`unknown case ${name}`);
  for (const p of procs) await p.ready();
  // ARP and first-packet learning before measuring
  const warm = await h1.exec(['ping', '-c', '3', '-i', '0.1', '-W', '1', '10.0.0.107']);
  if (!/ 0% packet loss|[1-9] received/.test(warm.stdout)) throw new Error(`${name}: overlay not reachable: ${warm.stdout}`);
  return { h1, h2, target: '10.0.0.107', procs, peers };
}

/** N tenant networks between h1 and h2 on port 4789: kernel vxlan devices, or one uvtep per host. */
async function setupVnis(kind, n) {
  await bed.removeLeftovers();
  const h1 = await bed.host('h1');
  const h2 = await bed.host('h2');
  await bed.veth(h1, 'eth0', ['198.51.100.1/24'], h2, 'eth0', ['198.51.100.2/24']);
  const vnis = Array.from({ length: n }, (_, i) => 10 + i);
  const procs = [];
  const sides = [[h1, '198.51.100.2', 1], [h2, '198.51.100.1', 2]];
  if (kind === 'kernel') {
    for (const [h, remote, side] of sides) {
      for (const vni of vnis) {
        const dev = `vxlan${vni}`;
        await h.ip('link', 'add', dev, 'type', 'vxlan', 'id', String(vni), 'remote', remote, 'dstport', '4789', 'dev', 'eth0');
        await h.ip('link', 'set', dev, 'address', `02:00:00:00:${vni}:0${side}`);
        await h.ip('addr', 'add', `10.${vni}.0.${side}/24`, 'dev', dev);
        await h.ip('link', 'set', dev, 'up');
      }
    }
  } else {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'uvt-bench-'));
    try {
      for (const [h, remote, side] of sides) {
        const file = path.join(dir, `h${side}.json`);
        writeFileSync(file, JSON.stringify({ remote: [remote], vteps: vnis.map((vni) => ({ vni, name: `vx${vni}`, address: [`10.${vni}.0.${side}/24`], mac: `02:00:00:00:${vni}:0${side}` })) }));
        const p = new UvtepProcess(h, ['--config', file]);
        procs.push(p);
        for (const vni of vnis) await p.waitFor((r) => r.tap === `vx${vni}` && / up: /.test(r.msg), `vx${vni} up`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  for (const vni of vnis) {
    const warm = await h1.exec(['ping', '-c', '3', '-i', '0.1', '-W', '1', `10.${vni}.0.2`]);
    if (!/[1-9] received/.test(warm.stdout)) throw new Error(`${kind}, VNI ${vni}: overlay not reachable: ${warm.stdout}`);
  }
  return { h1, h2, vnis, procs };
}

/** One TCP stream per VNI at the same time (h1 -> h2); the sum of what arrived, Gbit/s. */
async function vniStreams(h1, h2, vnis) {
  const servers = vnis.map((vni, i) => h2.spawn(['iperf3', '-s', '-1', '-B', `10.${vni}.0.2`, '-p', String(5301 + i)]));
  await new Promise((r) => setTimeout(r, 400));
  const runs = await Promise.all(vnis.map((vni, i) => h1.exec(['iperf3', '-c', `10.${vni}.0.2`, '-p', String(5301 + i), '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 })));
  for (const s of servers) if (s.exitCode === null) s.kill('SIGTERM');
  return runs.reduce((sum, r, i) => {
    const j = JSON.parse(r.stdout);
    if (j.error) throw new Error(`iperf3 over VNI ${vnis[i]}: ${j.error}`);
    return sum + j.end.sum_received.bits_per_second / 1e9;
  }, 0);
}

const metrics = ['tcp1', 'tcp1rev', 'tcp4', 'udpPps', 'udpLoss', 'udpArrived', 'udpAfter', 'rttAvg', 'rttP50', 'rttP99', 'rttOver1ms', 'rttIdle', 'cpuPerPing', 'cpuPct', 'rssMb', 'hugeMb', 'machineBusy', 'coreSecPerGB', 'dgPerSend', 'dgPerRecv', 'framesPerRead', 'framesPerWrite', 'tunnelSends'];
const results = {};
/** Aggregate Gbit/s of the many-VNIs measurement, per repetition. */
const manyVnis = { kernel: [], uvtep: [] };
const perRep = 4 * seconds + pings * 0.012 + idlePings * 0.4 + 4;
const totalSteps = caseNames.length * reps;
let step = 0;
const t0 = Date.now();
if (profile) {
  profileDir = path.join(outDir, 'profile');
  mkdirSync(profileDir, { recursive: true });
}
try {
  // Rounds: every case once per round, then the next round, so that each case's median (and the
  // kernel reference's) spans the whole run and a slow spell of the shared machine falls on every
  // case alike instead of on whichever case it ran beside.
  for (const name of caseNames) results[name] = Object.fromEntries(metrics.map((m) => [m, []]));
  for (let rep = 1; rep <= reps; rep++) {
    for (const name of caseNames) {
      step++;
      const left = Math.max(0, Math.round((totalSteps - step + 1) * perRep));
      log(`[${step}/${totalSteps}] ${CASES[name].label}, repetition ${rep}/${reps} (about ${left} s left)`);
      const { h1, h2, target, procs, peers } = await setup(name);
      // a uvtep and its datapath process (src/datapath.ts) count as one peer: CPU and RSS summed
      const pids = [...procs.map((p) => [p.child.pid, ...datapathPids(p)]), ...peers.map((p) => [p.pid])];
      const before = pids.map(procStat);
      const tStart = Date.now();
      const r = results[name];
      const c0 = machineCpu();
      r.tcp1.push(await tcp(h1, h2, target));
      const c1 = machineCpu();
      // whole machine during the stream: both hosts' kernels, the tunnel processes, iperf3
      const busy = (c1.busy - c0.busy) / (c1.total - c0.total);
      r.machineBusy.push(busy * 100);
      r.coreSecPerGB.push((busy * os.cpus().length * 8) / r.tcp1.at(-1));
      r.tcp1rev.push(await tcp(h1, h2, target, ['-R']));
      r.tcp4.push(await tcp(h1, h2, target, ['-P', '4']));
      const u = await udpSmall(h1, h2, target, name === 'bare' ? 'eth0' : name.startsWith('socat') ? 'tap0' : 'vxlan1');
      r.udpPps.push(u.pps);
      r.udpLoss.push(u.loss);
      r.udpArrived.push(u.arrivedPps);
      r.udpAfter.push(u.afterPct);
      const p = await rtt(h1, target);
      r.rttAvg.push(p.avg);
      r.rttP50.push(p.p50);
      r.rttP99.push(p.p99);
      r.rttOver1ms.push(p.over1ms);
      const idle = await idleRtt(h1, target, pids);
      r.rttIdle.push(idle.avg);
      r.cpuPerPing.push(idle.cpuUs);
      const wall = (Date.now() - tStart) / 1000;
      if (pids.length) {
        const after = pids.map(procStat);
        // the busier of the uvtep processes (h1's in uvtep-kernel)
        const cpu = Math.max(...after.map((a, i) => a.cpu - before[i].cpu));
        r.cpuPct.push((cpu / wall) * 100);
        r.rssMb.push(Math.max(...after.map((a) => a.rssMb)));
        r.hugeMb.push(Math.min(...after.map((a) => a.hugeMb)));
      }
      const finals = [];
      for (const pr of procs) finals.push((await pr.stop()).final);
      const io = finals.map((f) => f?.stats?.io).filter(Boolean);
      if (io.length) {
        const sum = (k) => io.reduce((a, x) => a + (x[k] ?? 0), 0);
        r.dgPerSend.push(sum('sentDatagrams') / sum('sendCalls'));
        r.dgPerRecv.push(finals.reduce((a, f) => a + (f?.stats?.rxDatagrams ?? 0), 0) / sum('recvCalls'));
        r.framesPerRead.push(sum('readFrames') / sum('reads'));
        r.framesPerWrite.push(finals.reduce((a, f) => a + (f?.stats?.rxPackets ?? 0), 0) / sum('writes'));
        r.tunnelSends.push(sum('txTunnelSuperFrames'));
      }
      await bed.cleanup();
      log(`    tcp ${r.tcp1.at(-1).toFixed(2)} / rev ${r.tcp1rev.at(-1).toFixed(2)} / x4 ${r.tcp4.at(-1).toFixed(2)} Gbit/s, udp64 ${(u.pps / 1000).toFixed(0)} kpps (loss ${u.loss.toFixed(1)}%), rtt ${p.avg.toFixed(3)} ms`);
    }
  }
  if (nVnis > 0) {
    for (let rep = 1; rep <= reps; rep++) {
      for (const kind of ['kernel', 'uvtep']) {
        log(`[many VNIs] ${nVnis} VNIs on port 4789, one TCP stream each, ${kind === 'kernel' ? 'kernel VTEPs' : 'one uvtep process per host'}, repetition ${rep}/${reps}`);
        const { h1, h2, vnis, procs } = await setupVnis(kind, nVnis);
        const gbit = await vniStreams(h1, h2, vnis);
        manyVnis[kind].push(gbit);
        for (const pr of procs) await pr.stop();
        await bed.cleanup();
        log(`    aggregate ${gbit.toFixed(2)} Gbit/s`);
      }
    }
  }
} finally {
  await bed.cleanup();
}

// ---- report
const med = {};
for (const [name, r] of Object.entries(results)) med[name] = Object.fromEntries(metrics.map((m) => [m, median(r[m])]));
const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? '?', kernel: os.release(), node: process.version, thp, damon: damonFacts() };
const date = new Date().toISOString();
const command = `node bench/e2e/run.js ${argv.join(' ')}`.trim();
mkdirSync(outDir, { recursive: true });
const vniMed = { kernel: median(manyVnis.kernel), uvtep: median(manyVnis.uvtep) };
const json = { date, command, machine, seconds, reps, pings, cases: CASES, results, median: med, manyVnis: { vnis: nVnis, runs: manyVnis, median: vniMed, ratio: vniMed.uvtep / vniMed.kernel } };
const jsonFile = path.join(outDir, smoke ? 'e2e-smoke.json' : 'e2e.json');
if (!perfOnly) writeFileSync(jsonFile, JSON.stringify(json, null, 2));

const ref = med.kernel;
const ratio = (v, r, invert = false) => (Number.isFinite(v) && Number.isFinite(r) && r !== 0 ? (invert ? r / v : v / r) : NaN);
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
let table = '| case | TCP 1 stream | TCP 1 stream, reverse | TCP 4 streams | 64-byte UDP delivered | RTT avg | RTT p99 | RTT after idle spells |\n|---|---:|---:|---:|---:|---:|---:|---:|\n';
for (const name of caseNames) {
  const m = med[name];
  const cell = (k, inv) => (ref ? `${f(ratio(m[k], ref[k], inv))}×` : 'n/a');
  table += `| ${CASES[name].label} | ${cell('tcp1')} | ${cell('tcp1rev')} | ${cell('tcp4')} | ${cell('udpPps')} | ${cell('rttAvg', true)} | ${cell('rttP99', true)} | ${cell('rttIdle', true)} |\n`;
}
let raw = '| case | TCP 1 (Gbit/s) | reverse | TCP 4 | UDP 64 B (kpps, loss %) | RTT avg / p50 / p99 (ms), over 1 ms (%) | RTT after idle spells (ms) | userspace CPU per idle ping (µs) | machine busy during TCP 1 (%) | core-seconds per GB | userspace CPU (% of a core) | userspace peak RSS (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n';
for (const name of caseNames) {
  const m = med[name];
  raw += `| ${CASES[name].label} | ${f(m.tcp1)} | ${f(m.tcp1rev)} | ${f(m.tcp4)} | ${f(m.udpPps / 1000, 0)} (${f(m.udpLoss, 1)}) | ${f(m.rttAvg, 3)} / ${f(m.rttP50, 3)} / ${f(m.rttP99, 3)}, ${f(m.rttOver1ms, 1)} | ${f(m.rttIdle, 3)} | ${f(m.cpuPerPing, 0)} | ${f(m.machineBusy, 0)} | ${f(m.coreSecPerGB, 2)} | ${f(m.cpuPct, 0)} | ${f(m.rssMb, 0)} |\n`;
}
let udp = '| case | 64-byte UDP handed to h2 (kpps) | ratio to the kernel | of those, lost before iperf3 read them (%) |\n|---|---:|---:|---:|\n';
for (const name of caseNames) {
  const m = med[name];
  udp += `| ${CASES[name].label} | ${f(m.udpArrived / 1000, 0)} | ${ref ? `${f(ratio(m.udpArrived, ref.udpArrived))}×` : 'n/a'} | ${f(m.udpAfter, 1)} |\n`;
}
let cpu = '| case | core-seconds per GB, ratio to the kernel (lower is better) |\n|---|---:|\n';
for (const name of caseNames) cpu += `| ${CASES[name].label} | ${ref ? `${f(med[name].coreSecPerGB / ref.coreSecPerGB)}×` : 'n/a'} |\n`;
let batching = '| case | datagrams per send syscall | datagrams per receive syscall | frames per TAP read | frames per TAP write | super-frames sent whole (tunnel GSO) |\n|---|---:|---:|---:|---:|---:|\n';
for (const name of caseNames) {
  const m = med[name];
  if (CASES[name].kind === 'uvtep') batching += `| ${CASES[name].label} | ${f(m.dgPerSend, 1)} | ${f(m.dgPerRecv, 1)} | ${f(m.framesPerRead, 1)} | ${f(m.framesPerWrite, 1)} | ${f(m.tunnelSends, 0)} |\n`;
}
const svg = chart(caseNames, med);
writeFileSync(path.join(outDir, smoke ? 'e2e-smoke.svg' : 'e2e.svg'), svg);
const md = `Run ${date} on ${machine.cores} cores (${machine.cpu}), Linux ${machine.kernel}, Node ${machine.node}, transparent huge pages ${machine.thp}, DAMON ${machine.damon}; ` +
  `${reps} repetition(s) per case in rounds (every case once per round), median shown, ${seconds} s per iperf3 measurement, ${pings} pings 10 ms apart, ${idlePings} pings 0.2 s apart (idle spells). Command: \`${command}\`.\n\n` +
  `**Ratio to the kernel VTEP measured in the same run** (higher is better; for RTT, kernel RTT ÷ case RTT):\n\n${table}\n` +
  `Medians behind the ratios (this machine is shared and noisy; compare within a run only):\n\n${raw}\n` +
  `64-byte UDP, where it was lost: the frames the tunnel handed to h2's stack (rx_packets of its overlay device, so the tunnel's own delivery), and the share of them lost after that, before iperf3 read them (its socket's receive buffer full: UDP RcvbufErrors):\n\n${udp}\n` +
  `Machine CPU per byte during the 1-stream TCP test (whole machine, both hosts, from /proc/stat), as a ratio to the kernel VTEP's:\n\n${cpu}\n` +
  `What each syscall carried in uvtep (counters over the whole repetition, both processes):\n\n${batching}\n` +
  (nVnis > 0
    ? `**Many VNIs on one port**: ${nVnis} tenant networks (VNI 10-${9 + nVnis}) on UDP 4789 between the same two hosts, one TCP stream each at the same time, aggregate rate ` +
      `(kernel: ${nVnis} vxlan devices per host; uvtep: one process per host hosting ${nVnis} VTEPs on one socket):\n\n` +
      `| case | aggregate, ratio to the kernel | aggregate (Gbit/s) |\n|---|---:|---:|\n| kernel VTEPs | 1.00× | ${f(vniMed.kernel)} |\n| uvtep, one process | ${f(vniMed.uvtep / vniMed.kernel)}× | ${f(vniMed.uvtep)} |\n\n`
    : '') +
  `![throughput and RTT per case](bench-e2e.svg)\n`;
process.stdout.write('\n' + md);
if (writeDocs && !perfOnly) {
  writeFileSync(path.join(root, 'docs/bench-e2e.svg'), svg);
  writeSection(path.join(root, 'docs/benchmarks.md'), 'e2e', md);
}
if (perfOnly) {
  await perfPass();
} else if (profile) {
  // A dedicated pass: uvtep <-> uvtep under a TCP stream h1 -> h2, each Node process profiled
  // (--datapath inline: with the datapath process, the stream does not run JavaScript at all).
  log(`profiling uvtep <-> uvtep --datapath inline under TCP load (${seconds * 2} s)...`);
  profiling = true;
  const { h1, h2, target, procs } = await setup('uvtep-inline');
  const [sender, receiver] = procs.map((p) => p.child.pid);
  const gbit = await tcp(h1, h2, target, ['-t', String(seconds * 2)]);
  for (const pr of procs) await pr.stop();
  await bed.cleanup();
  let prof = `V8 profile of uvtep <-> uvtep with \`--datapath inline\` (the flow cache in the Node process) under one TCP stream h1 -> h2 (${f(gbit)} Gbit/s while profiled), ${date}.\n\n`;
  prof += `**h1, encapsulating the data stream** (TAP read -> encap -> send; it also decapsulates the ACKs):\n\n${summariseProfile(profileDir, sender)}\n`;
  prof += `**h2, decapsulating the data stream** (recv -> decap -> TAP write; it also encapsulates the ACKs):\n\n${summariseProfile(profileDir, receiver)}\n`;
  writeFileSync(path.join(outDir, 'profile.md'), prof);
  process.stdout.write('\n' + prof);
  if (writeDocs) writeSection(path.join(root, 'docs/benchmarks.md'), 'profile', prof);
  await perfPass();
}

/**
 * Where a sending uvtep's CPU goes, kernel included (V8's profile cannot see past a native call):
 * `perf record -g` on h1's uvtep while it sends one TCP stream to a kernel VTEP, each sample
 * put in the first category its call chain matches. Needs perf (Debian: linux-perf); skipped
 * with a line saying so without it.
 */
async function perfPass() {
  if ((await sh('perf', ['--version'])).code !== 0) {
    log('bench: perf is missing (apt-get install linux-perf): no kernel profile of the sending uvtep');
    return;
  }
  log(`perf: uvtep (h1) -> kernel VTEP (h2) under TCP load (${seconds * 2} s)...`);
  profiling = false;
  const { h1, h2, target, procs } = await setup('uvtep-kernel');
  const data = path.join(outDir, 'perf-h1.data');
  // uvtep and its datapath process (which does the forwarding by default)
  const rec = sh('perf', ['record', '-g', '-F', '999', '-p', [procs[0].child.pid, ...datapathPids(procs[0])].join(','), '-o', data, '--', 'sleep', String(Math.max(1, seconds * 2 - 2))], { timeoutMs: seconds * 4000 + 30_000 });
  const gbit = await tcp(h1, h2, target, ['-t', String(seconds * 2)]);
  await rec;
  for (const pr of procs) await pr.stop();
  await bed.cleanup();
  const script = await sh('perf', ['script', '-i', data, '-F', 'ip,sym'], { timeoutMs: 120_000 });
  rmSync(data, { force: true });
  // first match wins; a chain is read from the sampled function down to main
  const kinds = [
    ['the receiving kernel VTEP, run inside uvtep\'s send (veth delivers in the sender\'s softirq)', /net_rx_action[\s\S]*udp_sendmsg/],
    ['UDP send: uvtep\'s own socket and IP output', /udp_sendmsg/],
    ['TAP read (copy of super-frames to uvtep)', /tun_do_read|tun_chr_read_iter/],
    // tunnel GSO: the injector's write runs its tcx program, the redirect to the underlay veth and,
    // when the write's softirqs run, the receiving kernel VTEP
    ['tunnel GSO: the receiving kernel VTEP, run inside the injector\'s write (veth delivers in the sender\'s softirq)', /net_rx_action[\s\S]*tun_get_user/],
    ['tunnel GSO: the injector\'s write, its BPF program and the redirect to the underlay', /skb_do_redirect|bpf_redirect_neigh|tcx_run|veth_xmit/],
    ['TAP write (the ACKs; h1\'s TCP takes them inside the write)', /tun_get_user/],
    ['UDP receive (recvmmsg, the ACKs)', /udp_recvmsg|__sys_recvmmsg/],
    ['split and checksums (native)', /uvtep::Segment|uvtep::CsumAdd/],
    ['waiting and waking (epoll, scheduler)', /schedule|epoll_wait|epoll_pwait|ep_poll|do_epoll/],
    ['the rest of uvtep (JavaScript, batches, io_uring submission)', /uvtep::|Builtins_|v8::/],
  ];
  const count = new Map(kinds.map(([k]) => [k, 0]));
  let other = 0;
  let total = 0;
  const self = new Map();
  for (const chunk of script.stdout.split('\n\n')) {
    const frames = chunk.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(1).join(' ')).filter(Boolean);
    if (frames.length === 0) continue;
    total++;
    self.set(frames[0], (self.get(frames[0]) ?? 0) + 1);
    const chain = frames.join('\n');
    const hit = kinds.find(([, re]) => re.test(chain));
    if (hit) count.set(hit[0], count.get(hit[0]) + 1);
    else other++;
  }
  if (total === 0) {
    log(`bench: perf recorded no samples (${script.stderr.trim().split('\n')[0] ?? ''})`);
    return;
  }
  const pct = (n) => `${((n / total) * 100).toFixed(1)}%`;
  let out = `Kernel and native profile of the sending uvtep (h1: the Node process and its datapath process) under one TCP stream to a kernel VTEP (${f(gbit)} Gbit/s while recorded; \`perf record -g\`, ${total} samples), ${date}.\n\n`;
  out += `| where (by call chain) | share of h1's samples |\n|---|---:|\n`;
  for (const [k, n] of count) out += `| ${k} | ${pct(n)} |\n`;
  out += `| other | ${pct(other)} |\n\n`;
  out += `| function (self) | share |\n|---|---:|\n`;
  for (const [k, n] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12)) out += `| \`${k}\` | ${pct(n)} |\n`;
  writeFileSync(path.join(outDir, 'perf.md'), out);
  process.stdout.write('\n' + out);
  if (writeDocs) writeSection(path.join(root, 'docs/benchmarks.md'), 'perf', out);
}

function chart(names, m) {
  const W = 760, H = 320, pad = 50, gap = 30;
  const panels = [
    { key: 'tcp1', title: 'TCP 1 stream, Gbit/s (higher better)' },
    { key: 'udpPps', title: '64 B UDP, kpps (higher better)', scale: 1 / 1000 },
    { key: 'rttAvg', title: 'ping RTT ms (lower better)' },
  ];
  const pw = (W - pad - gap * (panels.length - 1) - 20) / panels.length;
  const colors = { bare: '#9e9e9e', kernel: '#1565c0', uvtep: '#ef6c00', 'uvtep-kernel': '#2e7d32', 'uvtep-kernel-off': '#66bb6a', 'uvtep-off': '#bf360c', 'uvtep-dgram': '#ffb74d', 'uvtep-busy': '#d84315', 'uvtep-nofc': '#a1887f', 'uvtep-inline': '#ffa726', socat: '#8e24aa' };
  let s = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n`;
  panels.forEach((p, i) => {
    const x0 = pad + i * (pw + gap);
    const vals = names.map((n) => (m[n][p.key] ?? NaN) * (p.scale ?? 1));
    const max = Math.max(...vals.filter(Number.isFinite), 1e-9) * 1.15;
    const y = (v) => H - 60 - (v / max) * (H - 110);
    s += `<text x="${x0}" y="20" font-weight="bold">${p.title}</text>\n`;
    s += `<line x1="${x0}" y1="${H - 60}" x2="${x0 + pw}" y2="${H - 60}" stroke="#333"/>\n`;
    const bw = pw / names.length - 8;
    names.forEach((n, j) => {
      const v = vals[j];
      if (!Number.isFinite(v)) return;
      const bx = x0 + j * (pw / names.length) + 4;
      s += `<rect x="${bx}" y="${y(v)}" width="${bw}" height="${H - 60 - y(v)}" fill="${colors[n] ?? '#555'}"/>\n`;
      s += `<text x="${bx + bw / 2}" y="${y(v) - 4}" text-anchor="middle">${v >= 100 ? v.toFixed(0) : v.toFixed(2)}</text>\n`;
      s += `<text x="${bx + bw / 2}" y="${H - 45}" text-anchor="middle" font-size="9">${n}</text>\n`;
    });
    const k = vals[names.indexOf('kernel')];
    if (Number.isFinite(k)) s += `<line x1="${x0}" y1="${y(k)}" x2="${x0 + pw}" y2="${y(k)}" stroke="#1565c0" stroke-dasharray="4 3"/>\n`;
  });
  s += `<text x="${pad}" y="${H - 15}" font-size="10">dashed: kernel VTEP (reference). Medians; same run, same hosts.</text>\n</svg>\n`;
  return s;
}

/** Self time per function in the .cpuprofile of process `pid`, grouped so the table reads as a cost map. */
function summariseProfile(dir, pid) {
  const file = readdirSync(dir).find((x) => x.endsWith('.cpuprofile') && x.includes(`.${pid}.`));
  if (!file) return '(no profile written)\n';
  const prof = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const n = byId.get(prof.samples[i]);
    const cf = n.callFrame;
    const where = cf.url ? path.basename(cf.url) + (cf.lineNumber >= 0 ? ':' + (cf.lineNumber + 1) : '') : 'native';
    const key = `${cf.functionName || '(anonymous)'} (${where})`;
    const us = prof.timeDeltas[i] ?? 0;
    self.set(key, (self.get(key) ?? 0) + us);
    total += us;
  }
  const idle = [...self.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20);
  let out = `| function (self time) | share of samples |\n|---|---:|\n`;
  for (const [k, us] of top) out += `| \`${k}\` | ${((us / total) * 100).toFixed(1)}% |\n`;
  out += `\nBusy (not idle): ${(((total - idle) / total) * 100).toFixed(0)}% of ${(total / 1e6).toFixed(1)} s.\n`;
  return out;
}
