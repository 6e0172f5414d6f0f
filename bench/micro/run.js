#!/usr/bin/env node
// Micro benchmarks of the codec, the FDB and the full encap/decap of a 64-frame batch against a
// null transport and port (the `benchmark` package). Each result is also given as a ratio to
// two references measured in the same run: copying the frame (memcpy) and one node:dgram send
// to 127.0.0.1 (the per-datagram syscall uvtep pays today). Heap bytes allocated per frame are
// measured with --expose-gc over runs too short to trigger a scavenge.
//
//   npm run bench:micro            (needs `npm run build`)
//   node --expose-gc bench/micro/run.js --json bench/results/micro.json
import Benchmark from 'benchmark';
import dgram from 'node:dgram';
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createVtep, Endpoint, Fdb, FRAME_HEADROOM, newRxBatch, resolveConfig, TxBatch, Vtep, vxlan } from '../../dist/index.js';
import { checkAllowCidr, SourceFilter } from '../../dist/allow.js';
import { writeSection } from '../docs.js';

const BATCH = 64;
const FRAME = 1400;
const args = process.argv.slice(2);
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const quick = args.includes('--quick');

// ---- fixtures
const slotSize = FRAME_HEADROOM + 2048;
const slab = Buffer.alloc(slotSize * BATCH);
const batch = { buf: slab, offs: new Int32Array(BATCH), lens: new Int32Array(BATCH), segs: new Int32Array(BATCH), lasts: new Int32Array(BATCH), count: BATCH };
const PEER = 0x02000000000b;
for (let i = 0; i < BATCH; i++) {
  const off = i * slotSize + FRAME_HEADROOM;
  batch.offs[i] = off;
  batch.lens[i] = FRAME;
  batch.segs[i] = 1;
  batch.lasts[i] = FRAME;
  slab.writeUIntBE(PEER, off, 6);
  slab.writeUIntBE(0x02000000000a, off + 6, 6);
  slab.writeUInt16BE(0x0800, off + 12);
}
const datagramBuf = Buffer.alloc(8 + FRAME);
vxlan.emitVxlan(datagramBuf, 0, 1);
datagramBuf.writeUIntBE(0x02000000000a, 8, 6);
datagramBuf.writeUIntBE(PEER, 14, 6);

class NullTransport {
  family = 4;
  kind = 'null';
  open(h) { this.h = h; return Promise.resolve(); }
  send(_b) {}
  pending() { return 0; }
  whenDrained(cb) { cb(); }
  address() { return { address: '0.0.0.0', port: 0 }; }
  close() { return Promise.resolve(); }
}
class NullPort {
  name = 'null'; mac = 0x02000000000b;
  start(f) { this.onFrames = f; }
  pause() {} resume() {}
  lostBytes = 0;
  writeBatch() { return 0; }
  close() { return Promise.resolve(); }
}

const port = new NullPort();
const transport = new NullTransport();
const vtep = new Vtep(resolveConfig({ vni: 1, remotes: ['198.51.100.2'], maxAddress: 0 }), { device: port, transport });
await vtep.start();
vtep.fdb.add(PEER, vtep.fdb.remote('198.51.100.2'));

const fdb = new Fdb({ dstPort: 4789, maxAddress: 0 });
for (let i = 0; i < 10000; i++) fdb.learn(0x020000000000 + i * 2, '198.51.100.2');
const frameCopy = Buffer.alloc(FRAME);

const sock = dgram.createSocket('udp4');
await new Promise((r) => sock.bind(0, '127.0.0.1', r));
const sink = dgram.createSocket('udp4');
await new Promise((r) => sink.bind(0, '127.0.0.1', r));
sink.on('message', () => {});
const sinkPort = sink.address().port;
const sendTx = new TxBatch(1);
// a received batch: one datagram, and 64 in one UDP GRO message
const rxOne = newRxBatch(datagramBuf, 1);
rxOne.lens[0] = datagramBuf.length;
rxOne.srcs[0] = '198.51.100.2';
rxOne.count = 1;
const groBuf = Buffer.concat(Array.from({ length: BATCH }, () => datagramBuf));
const rxGro = newRxBatch(groBuf, 1);
rxGro.lens[0] = groBuf.length;
rxGro.segs[0] = datagramBuf.length;
rxGro.srcs[0] = '198.51.100.2';
rxGro.count = 1;
const dgramOne = datagramBuf.subarray(0, 64);

const allow = new SourceFilter(['198.51.100.0/24', '203.0.113.7', '2001:db8::/32', '2001:db8:ffff::1'].map((c) => checkAllowCidr(c)));
let spoof = 0;
const spoofed = Array.from({ length: 4096 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`);

// the same GRO message through a shared endpoint: with one VTEP on it (the batch handed over as
// it is), and with four VTEPs and the 64 datagrams spread over their VNIs (split per VTEP)
const epTransport = new NullTransport();
const endpoint = new Endpoint(epTransport);
for (const vni of [1, 2, 3, 4]) {
  const v = createVtep({ vni, remotes: ['198.51.100.2'], maxAddress: 0, frameDevice: new NullPort(), endpoint });
  await v.start();
  if (vni === 1) v.fdb.add(PEER, v.fdb.remote('198.51.100.2'));
}
const ep1Transport = new NullTransport();
const endpoint1 = new Endpoint(ep1Transport);
await createVtep({ vni: 1, remotes: ['198.51.100.2'], maxAddress: 0, frameDevice: new NullPort(), endpoint: endpoint1 }).start();
const mixedBuf = Buffer.from(groBuf);
for (let i = 0; i < BATCH; i++) mixedBuf.writeUIntBE(1 + (i & 3), i * datagramBuf.length + 4, 3);
const rxMixed = newRxBatch(mixedBuf, 1);
rxMixed.lens[0] = mixedBuf.length;
rxMixed.segs[0] = datagramBuf.length;
rxMixed.srcs[0] = '198.51.100.2';
rxMixed.count = 1;

const cases = [
  { name: 'ref: copy one 1400-byte frame', frames: 1, fn: () => slab.copy(frameCopy, 0, 8, 8 + FRAME) },
  { name: 'ref: one dgram.send to 127.0.0.1', frames: 1, fn: () => sock.send(dgramOne, sinkPort, '127.0.0.1') },
  { name: 'checkVxlan + vxlanVni', frames: 1, fn: () => vxlan.checkVxlan(datagramBuf, 0, datagramBuf.length, true) === 0 && vxlan.vxlanVni(datagramBuf, 0) },
  { name: 'emitVxlan', frames: 1, fn: () => vxlan.emitVxlan(slab, 0, 1) },
  { name: 'fdb lookup hit (10k entries)', frames: 1, fn: () => fdb.lookup(0x020000000000 + 5000) },
  { name: 'fdb lookup miss', frames: 1, fn: () => fdb.lookup(0x020000000001) },
  { name: 'fdb learn (known MAC, refresh)', frames: 1, fn: () => fdb.learn(0x020000000000 + 5000, '198.51.100.2') },
  { name: `encap batch of ${BATCH} (null transport)`, frames: BATCH, fn: () => port.onFrames(batch) },
  { name: 'allow-from hit (4 prefixes)', frames: 1, fn: () => allow.allowed('198.51.100.2') },
  { name: 'allow-from miss, a new spoofed source each time', frames: 1, fn: () => allow.allowed(spoofed[(spoof = (spoof + 1) & 4095)]) },
  { name: 'decap one datagram (null port)', frames: 1, fn: () => transport.h.onDatagrams(rxOne) },
  { name: `decap a GRO message of ${BATCH} datagrams (null port)`, frames: BATCH, fn: () => transport.h.onDatagrams(rxGro) },
  { name: `the same through an Endpoint with one VTEP`, frames: BATCH, fn: () => ep1Transport.h.onDatagrams(rxGro) },
  { name: `the same, 4 VTEPs on the Endpoint, VNIs interleaved (split)`, frames: BATCH, fn: () => epTransport.h.onDatagrams(rxMixed) },
];

function allocPerFrame(c) {
  if (typeof globalThis.gc !== 'function') return undefined;
  if (c.name.startsWith('ref: one dgram')) return undefined; // the socket queue allocates by design
  const n = Math.max(1, Math.floor(20000 / c.frames));
  for (let i = 0; i < n; i++) c.fn(); // warm
  globalThis.gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < n; i++) c.fn();
  const after = process.memoryUsage().heapUsed;
  return Math.max(0, (after - before) / (n * c.frames));
}

const results = [];
for (const c of cases) {
  await new Promise((resolve) => {
    const suite = new Benchmark.Suite();
    suite.add(c.name, c.fn, { minSamples: quick ? 5 : 20, maxTime: quick ? 0.5 : 2 });
    suite.on('cycle', (ev) => {
      const b = ev.target;
      const r = { name: c.name, opsPerSec: b.hz, framesPerSec: b.hz * c.frames, rme: b.stats.rme, nsPerFrame: 1e9 / (b.hz * c.frames), heapBytesPerFrame: allocPerFrame(c) };
      results.push(r);
      process.stderr.write(`  ${c.name}: ${(r.framesPerSec / 1e6).toFixed(2)} M frames/s ±${r.rme.toFixed(1)}%\n`);
    });
    suite.on('complete', resolve);
    suite.run();
  });
}
sock.close();
sink.close();
await vtep.close();

const memcpy = results[0];
const send = results[1];
const rows = results.map((r) => ({
  ...r,
  vsCopy: r.nsPerFrame / memcpy.nsPerFrame,
  vsSend: r.nsPerFrame / send.nsPerFrame,
}));
const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), Linux ${os.release()}, Node ${process.version}`;
let md = `| case | ns/frame ÷ memcpy of the frame | ns/frame ÷ one dgram send | heap bytes/frame |\n|---|---:|---:|---:|\n`;
for (const r of rows) {
  md += `| ${r.name} | ${r.vsCopy.toFixed(2)} | ${r.vsSend.toFixed(3)} | ${r.heapBytesPerFrame === undefined ? 'n/a' : r.heapBytesPerFrame.toFixed(1)} |\n`;
}
process.stdout.write(`\nMachine: ${machine}\n\n${md}`);
if (args.includes('--docs')) {
  writeSection(new URL('../../docs/benchmarks.md', import.meta.url).pathname, 'micro', `Run ${new Date().toISOString()} on ${machine}: \`npm run bench:micro\`.\n\n${md}`);
}
if (jsonOut) {
  mkdirSync(path.dirname(jsonOut), { recursive: true });
  writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), machine, rows }, null, 2));
}
