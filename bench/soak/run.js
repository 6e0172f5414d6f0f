#!/usr/bin/env node
// Soak: uvtep under hours-like mixed load, bounded in time, on namespace hosts it builds and
// removes (prefix uvt-soak-). Not part of the test suite; `npm run soak -- --minutes 10`.
//
//   h2 (uvtep) ---veth 198.51.100.0/24--- h1 (uvtep, the one watched) ---veth 203.0.113.0/24--- h3 (kernel VTEP)
//   overlay 10.0.0.2                      10.0.0.1                                            10.0.0.3
//
// For the whole run, at once:
//   - TCP: verified transfers (SHA-256) h2 -> h1 and h3 -> h1 in turn, back to back;
//   - UDP: a paced stream h2 -> h1 of datagrams with sequence numbers and digests, in rounds;
//     every datagram must arrive intact (a lost or corrupt valid datagram fails the run);
//   - FDB churn: static entries added, replaced and deleted through h1's control socket;
//   - hostile background: malformed datagrams, a wrong VNI and spoofed source MACs to h1:4789.
// Every few seconds: RSS and CPU of both uvtep processes and h1's counters. Fails on a crash, a
// lost UDP datagram, or memory still growing in the last quarter of the run (its median RSS more
// than 15% and 8 MB above the second quarter's).
//
//   options: --minutes N (default 10)  --sample S (seconds, default 5)  --out DIR  --docs (write docs/reliability.md)
import { mkdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { writeSection } from '../docs.js';
import { tcpTransfer, Testbed, testbedMissing, toolPath, uvtepBin, UvtepProcess } from '../../dist/lab/testbed.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const opt = (n, d) => (argv.includes(n) ? argv[argv.indexOf(n) + 1] : d);
const minutes = Number(opt('--minutes', 10));
const sampleS = Number(opt('--sample', 5));
const outDir = path.resolve(opt('--out', path.join(root, 'bench/results')));
const writeDocs = argv.includes('--docs');
const log = (s) => process.stderr.write(s + '\n');

const missing = await testbedMissing();
if (missing.length) {
  log(`soak: missing ${missing.join(', ')}`);
  process.exit(1);
}

const bed = new Testbed('soak');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'uvt-soak-'));
let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  log('\ninterrupted: stopping the load and removing the hosts...');
});

const failures = [];
const samples = [];
const udpRounds = [];
const tcpRuns = [];
let churnOps = 0;
let hostileSent = 0;
const t0 = Date.now();
const deadline = t0 + minutes * 60_000;
const running = () => Date.now() < deadline && !interrupted && failures.length === 0;
let finished = false;

function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(f[11]) + Number(f[12])) / 100;
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
  return { cpu, rss };
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

try {
  await bed.removeLeftovers();
  const h1 = await bed.host('h1');
  const h2 = await bed.host('h2');
  const h3 = await bed.host('h3');
  await bed.veth(h1, 'eth0', ['198.51.100.1/24'], h2, 'eth0', ['198.51.100.2/24']);
  await bed.veth(h1, 'eth1', ['203.0.113.1/24'], h3, 'eth0', ['203.0.113.3/24']);
  for (const h of [h1, h2, h3]) {
    await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
    await h.run(['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
  const a = new UvtepProcess(h1, ['--vni', '1', '--remote', '198.51.100.2', '--remote', '203.0.113.3', '--name', 'vxlan1', '--address', '10.0.0.1/24', '--mac', '02:00:00:00:00:01', '--max-address', '4096', '--ageing', '20']);
  const b = new UvtepProcess(h2, ['--vni', '1', '--remote', '198.51.100.1', '--name', 'vxlan1', '--address', '10.0.0.2/24', '--mac', '02:00:00:00:00:02']);
  await a.ready();
  await b.ready();
  await h3.ip('link', 'add', 'vxlan1', 'type', 'vxlan', 'id', '1', 'remote', '203.0.113.1', 'dstport', '4789', 'dev', 'eth0');
  await h3.ip('link', 'set', 'vxlan1', 'address', '02:00:00:00:00:03');
  await h3.ip('addr', 'add', '10.0.0.3/24', 'dev', 'vxlan1');
  await h3.ip('link', 'set', 'vxlan1', 'up');
  for (const t of ['10.0.0.2', '10.0.0.3']) {
    const r = await h1.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', t]);
    if (!/[1-9] received/.test(r.stdout)) throw new Error(`overlay to ${t} not reachable: ${r.stdout}`);
  }
  const cli = (...args) => h1.exec([process.execPath, uvtepBin(), ...args]);
  log(`soak: ${minutes} min; sampling every ${sampleS} s`);

  const watch = (p, name) =>
    p.exited.then(({ code, signal }) => {
      if (!finished) failures.push(`${name} exited (${code ?? signal}) during the run: ${p.stderr.trim().slice(-500)}`);
    });
  watch(a, 'uvtep h1');
  watch(b, 'uvtep h2');

  const tcpLoop = (async () => {
    let port = 5300;
    while (running()) {
      for (const from of [h2, h3]) {
        if (!running()) break;
        try {
          const r = await tcpTransfer(h1, from, '10.0.0.1', port++, 64 * 1024 * 1024, 120_000);
          tcpRuns.push({ from: from === h2 ? 'uvtep' : 'kernel', ok: r.ok, mbit: r.mbitPerS });
          if (!r.ok) failures.push(`TCP transfer from ${from === h2 ? 'h2 (uvtep)' : 'h3 (kernel)'}: bytes differ`);
        } catch (e) {
          if (running()) failures.push(`TCP transfer: ${e.message}`);
        }
        if (port > 5900) port = 5300;
      }
    }
  })();

  const udpLoop = (async () => {
    let round = 0;
    while (running()) {
      const port = String(6000 + (round++ % 100));
      const recv = h1.spawn([process.execPath, toolPath('udp-seq'), 'recv', port, '3000']);
      let out = '';
      recv.stdout.on('data', (d) => (out += d));
      const until = Date.now() + 5000;
      while (!/listening/.test(out) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      const n = 20_000;
      await h2.exec([process.execPath, toolPath('udp-seq'), 'send', '10.0.0.1', port, String(n), '700', '2000'], { timeoutMs: 60_000 });
      await new Promise((r) => (recv.exitCode !== null ? r() : recv.once('exit', r)));
      const got = JSON.parse(out.trim().split('\n').pop());
      udpRounds.push({ sent: n, ...got });
      if (got.received !== n || got.corrupt || got.duplicates) failures.push(`UDP round ${round}: ${n} sent, ${got.received} received intact, ${got.corrupt} corrupt, ${got.duplicates} duplicated`);
    }
  })();

  const churnLoop = (async () => {
    while (running()) {
      const mac = `02:aa:${randomBytes(4).toString('hex').match(/../g).join(':')}`;
      for (const args of [['fdb', 'add', mac, 'dst', '198.51.100.2'], ['fdb', 'replace', mac, 'dst', '203.0.113.3'], ['fdb', 'append', mac, 'dst', '198.51.100.2'], ['fdb', 'del', mac]]) {
        const r = await cli(...args);
        churnOps++;
        if (r.code !== 0 && running()) failures.push(`uvtep ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();

  const hostileLoop = (async () => {
    const vxlan = (vni, inner, flags = 0x08) => {
      const d = Buffer.alloc(8 + inner.length);
      d[0] = flags;
      d.writeUIntBE(vni, 4, 3);
      inner.copy(d, 8);
      return d.toString('hex');
    };
    while (running()) {
      const junk = [
        ...Array.from({ length: 50 }, () => randomBytes(1 + Math.floor(Math.random() * 300)).toString('hex')),
        ...Array.from({ length: 50 }, () => vxlan(2 + Math.floor(Math.random() * 1000), randomBytes(60))),
        ...Array.from({ length: 50 }, () => vxlan(1, randomBytes(60), 0)),
        ...Array.from({ length: 50 }, () => vxlan(1, randomBytes(6))),
      ];
      const file = path.join(tmp, 'junk.json');
      writeFileSync(file, JSON.stringify({ to: '198.51.100.1', port: 4789, datagrams: junk, macFlood: { count: 100, vni: 1, dst: '02:00:00:00:00:01' } }));
      try {
        const r = JSON.parse(await h2.run([process.execPath, toolPath('udp-blast'), file], { timeoutMs: 60_000 }));
        hostileSent += r.sent;
      } catch (e) {
        if (running()) failures.push(`hostile sender: ${e.message}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();

  const pids = [a.child.pid, b.child.pid];
  let prev = pids.map(procStat);
  let prevT = Date.now();
  while (running()) {
    await new Promise((r) => setTimeout(r, sampleS * 1000));
    if (!running()) break;
    let now;
    try {
      now = pids.map(procStat);
    } catch {
      break; // a process is gone: its watcher reports it
    }
    const dt = (Date.now() - prevT) / 1000;
    const st = JSON.parse((await cli('stats', '--json')).stdout || '{}');
    samples.push({
      t: Math.round((Date.now() - t0) / 1000),
      rssH1: now[0].rss,
      rssH2: now[1].rss,
      cpuH1: ((now[0].cpu - prev[0].cpu) / dt) * 100,
      cpuH2: ((now[1].cpu - prev[1].cpu) / dt) * 100,
      rxPackets: st.rxPackets,
      txPackets: st.txPackets,
      drops: st.dropsTotal,
      endpointDrops: st.endpoint?.dropsTotal,
      fdb: st.fdbSize,
    });
    prev = now;
    prevT = Date.now();
    const s = samples.at(-1);
    log(`  ${s.t}s  rss ${s.rssH1.toFixed(0)}/${s.rssH2.toFixed(0)} MB  cpu ${s.cpuH1.toFixed(0)}/${s.cpuH2.toFixed(0)}%  rx ${s.rxPackets}  drops ${s.drops}+${s.endpointDrops}  fdb ${s.fdb}  tcp ${tcpRuns.length}  udp rounds ${udpRounds.length}`);
  }
  await Promise.allSettled([tcpLoop, udpLoop, churnLoop, hostileLoop]);
  finished = true;
  for (const p of [a, b]) await p.stop();
} catch (e) {
  failures.push(`setup: ${e.message}`);
} finally {
  finished = true;
  await bed.cleanup();
  rmSync(tmp, { recursive: true, force: true });
}

// memory: the last quarter against the second (after warm-up)
const q = Math.floor(samples.length / 4);
let memory = 'too short to judge';
if (q >= 2) {
  for (const k of ['rssH1', 'rssH2']) {
    const second = median(samples.slice(q, 2 * q).map((s) => s[k]));
    const last = median(samples.slice(3 * q).map((s) => s[k]));
    const grew = last - second;
    if (grew > 8 && grew / second > 0.15) failures.push(`${k === 'rssH1' ? 'h1' : 'h2'} memory still growing: median RSS ${second.toFixed(1)} MB in the second quarter, ${last.toFixed(1)} MB in the last`);
  }
  memory = `median RSS h1 ${median(samples.slice(q, 2 * q).map((s) => s.rssH1)).toFixed(1)} -> ${median(samples.slice(3 * q).map((s) => s.rssH1)).toFixed(1)} MB, h2 ${median(samples.slice(q, 2 * q).map((s) => s.rssH2)).toFixed(1)} -> ${median(samples.slice(3 * q).map((s) => s.rssH2)).toFixed(1)} MB (second quarter -> last quarter)`;
}
const elapsed = (Date.now() - t0) / 60_000;
const udpSent = udpRounds.reduce((n, r) => n + r.sent, 0);
const udpGot = udpRounds.reduce((n, r) => n + r.received, 0);
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const rows = samples.filter((_, i) => i % Math.max(1, Math.floor(samples.length / 10)) === 0 || i === samples.length - 1);
let md = `Soak run ${new Date().toISOString()}, ${f(elapsed)} min on ${os.cpus().length} cores, Linux ${os.release()}, Node ${process.version}: ` +
  `${failures.length === 0 ? '**passed**' : '**FAILED**'}.\n\n` +
  `| what | result |\n|---|---|\n` +
  `| TCP transfers (64 MB, SHA-256 verified; from uvtep h2 and kernel h3 in turn) | ${tcpRuns.filter((r) => r.ok).length} of ${tcpRuns.length} identical |\n` +
  `| UDP stream (2,000 datagrams/s in rounds of 20,000, sequence numbers and digests) | ${udpGot} of ${udpSent} delivered intact, in ${udpRounds.length} rounds |\n` +
  `| FDB changes through the control socket | ${churnOps} |\n` +
  `| hostile datagrams (malformed, wrong VNI, I flag clear, truncated inner frame, spoofed source MACs) | ${hostileSent} |\n` +
  `| memory | ${memory} |\n` +
  `| failures | ${failures.length ? failures.join('; ') : 'none'} |\n\n` +
  `Samples (every ${sampleS} s, a tenth shown):\n\n| t (s) | RSS h1 / h2 (MB) | CPU h1 / h2 (% of a core) | h1 rx frames | h1 drops (VTEP + endpoint) | h1 FDB |\n|---:|---:|---:|---:|---:|---:|\n`;
for (const s of rows) md += `| ${s.t} | ${f(s.rssH1)} / ${f(s.rssH2)} | ${f(s.cpuH1, 0)} / ${f(s.cpuH2, 0)} | ${s.rxPackets} | ${s.drops} + ${s.endpointDrops} | ${s.fdb} |\n`;
process.stdout.write(md);
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'soak.json'), JSON.stringify({ minutes: elapsed, failures, samples, udpRounds, tcpRuns, churnOps, hostileSent }, null, 2));
if (writeDocs) writeSection(path.join(root, 'docs/reliability.md'), 'soak', md);
process.exit(failures.length === 0 ? 0 : 1);
