'use strict';
// Exercises one built addon with nothing but Node (no TypeScript, no vitest), so that the same
// script runs on this machine's node and on an arm64 node under qemu-user:
//
//   node test/package/addon-smoke.cjs path/to/addon.node
//
// It splits TCP/IPv4, TCP/IPv6 and UDP super-frames with the TAP reader's native split, checks
// every emitted frame's checksums here, merges the TCP segments back with the native coalescer,
// and sends datagrams between two native UDP endpoints over 127.0.0.1. It prints one JSON line:
// the counts and a SHA-256 of every byte the native code produced, so that two architectures'
// builds can be compared (test/package/pack.test.ts). Exits non-zero on any wrong result.
const crypto = require('node:crypto');
const addon = require(process.argv[2]);

const digest = crypto.createHash('sha256');
const fail = (msg) => {
  process.stderr.write(`addon-smoke: ${msg}\n`);
  process.exit(1);
};

function sum16(b, off, len, s = 0) {
  for (let i = 0; i + 1 < len; i += 2) s += (b[off + i] << 8) | b[off + i + 1];
  if (len & 1) s += b[off + len - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}
// The L4 checksum over the pseudo-header folds to 0xffff when the frame is right.
function l4ok(f, v6, proto) {
  const l3 = 14;
  const l4 = l3 + (v6 ? 40 : 20);
  const l4len = f.length - l4;
  const pseudo = v6 ? sum16(f, l3 + 8, 32, proto + l4len) : sum16(f, l3 + 12, 8, proto + l4len);
  return sum16(f, l4, l4len, pseudo) === 0xffff && (v6 || sum16(f, l3, 20) === 0xffff);
}

// A super-frame as a TAP with TSO/USO hands it over: the whole payload, the L4 checksum field
// holding only the pseudo-header sum, and its virtio-net header.
function superFrame(v6, udp, payloadLen, mss, seed) {
  const iphl = v6 ? 40 : 20;
  const l4hl = udp ? 8 : 32;
  const f = Buffer.alloc(14 + iphl + l4hl + payloadLen);
  f.writeUIntBE(0x02000000000b, 0, 6);
  f.writeUIntBE(0x02000000000a, 6, 6);
  f.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  const proto = udp ? 17 : 6;
  if (v6) {
    f.writeUInt32BE(0x60000000, 14);
    f.writeUInt16BE(l4hl + payloadLen, 18);
    f[20] = proto;
    f[21] = 64;
    Buffer.from('20010db8000100000000000000000001' + '20010db8000100000000000000000002', 'hex').copy(f, 22);
  } else {
    f[14] = 0x45;
    f.writeUInt16BE(20 + l4hl + payloadLen, 16);
    f.writeUInt16BE(0x1234, 18);
    f.writeUInt16BE(0x4000, 20);
    f[22] = 64;
    f[23] = proto;
    Buffer.from([10, 0, 0, 106, 10, 0, 0, 107]).copy(f, 26);
    f.writeUInt16BE(~sum16(f, 14, 20) & 0xffff, 24);
  }
  const t = 14 + iphl;
  f.writeUInt16BE(40000, t);
  f.writeUInt16BE(5201, t + 2);
  if (udp) {
    f.writeUInt16BE(8 + payloadLen, t + 4);
  } else {
    f.writeUInt32BE((0xfffff000 + seed) >>> 0, t + 4); // the sequence wraps inside the train
    f.writeUInt32BE(777, t + 8);
    f[t + 12] = 8 << 4;
    f[t + 13] = 0x18;
    f.writeUInt16BE(502, t + 14);
    Buffer.from([1, 1, 8, 10, 0, 0, 3, 232, 0, 0, 3, 231]).copy(f, t + 20);
  }
  for (let i = 0; i < payloadLen; i++) f[t + l4hl + i] = (i * 7 + seed) & 0xff;
  const l4len = l4hl + payloadLen;
  const pseudo = v6 ? sum16(f, 22, 32, proto + l4len) : sum16(f, 26, 8, proto + l4len);
  f.writeUInt16BE(pseudo, t + (udp ? 6 : 16));
  const hdr = Buffer.alloc(10);
  hdr[0] = 1; // NEEDS_CSUM
  hdr[1] = udp ? 5 : v6 ? 4 : 1; // GSO_UDP_L4, GSO_TCPV6, GSO_TCPV4
  hdr.writeUInt16LE(t + l4hl, 2);
  hdr.writeUInt16LE(mss, 4);
  hdr.writeUInt16LE(t, 6);
  hdr.writeUInt16LE(udp ? 6 : 16, 8);
  return { frame: f, hdr };
}

const HEAD = 16;
let frames = 0;
let writes = 0;
for (const [v6, udp, len, mss] of [[false, false, 30000, 1448], [true, false, 20011, 1428], [false, true, 9000, 1200], [false, false, 40000, 1000]]) {
  const { frame, hdr } = superFrame(v6, udp, len, mss, len & 0xff);
  const room = 200000;
  const slab = Buffer.alloc(HEAD + room, 0xa5);
  frame.copy(slab, HEAD);
  const [n, segLen, lastLen] = addon.segment(hdr, slab, HEAD, frame.length, room);
  if (!(n > 1)) fail(`segment returned ${n} for a ${frame.length}-byte super-frame`);
  const segs = [];
  for (let k = 0; k < n; k++) {
    const at = HEAD + k * (segLen + 8);
    const seg = Buffer.from(slab.subarray(at, at + (k === n - 1 ? lastLen : segLen)));
    if (!l4ok(seg, v6, udp ? 17 : 6)) fail(`segment ${k} of a ${v6 ? 'v6' : 'v4'} ${udp ? 'UDP' : 'TCP'} super-frame has a bad checksum`);
    digest.update(seg);
    segs.push(seg);
  }
  frames += n;
  if (udp) continue;
  const buf = Buffer.concat(segs);
  const offs = new Int32Array(n);
  const lens = new Int32Array(n);
  for (let k = 0, at = 0; k < n; at += segs[k].length, k++) [offs[k], lens[k]] = [at, segs[k].length];
  const out = Buffer.alloc(buf.length * 2 + 4096);
  const stats = new Float64Array(8);
  const used = addon.coalesce(buf, offs, lens, n, true, out, stats, 1500);
  digest.update(out.subarray(0, used));
  writes += stats[0];
}

// Two native UDP endpoints over 127.0.0.1: 40 datagrams of 1..40 x 37 bytes, in one send call.
const stats = () => new Float64Array(10);
const rx = new addon.UdpSocket(4, stats());
const tx = new addon.UdpSocket(4, stats());
const lo = Uint8Array.from([127, 0, 0, 1]);
rx.bind(lo, 0, 0);
tx.bind(lo, 0, 0);
const N = 40;
const MSG = 2048;
const slab = new Uint8Array(64 * MSG);
const [offs, lens, segs] = [new Int32Array(64), new Int32Array(64), new Int32Array(64)];
const got = [];
rx.recvStart(slab, MSG, offs, lens, segs, new Uint8Array(64 * 20), new Int16Array(64), (count) => {
  for (let i = 0; i < count; i++) got.push(Buffer.from(slab.subarray(offs[i], offs[i] + lens[i])));
  if (got.length < N) return;
  rx.close();
  tx.close();
  const want = Array.from({ length: N }, (_, i) => Buffer.alloc((i + 1) * 37, i));
  if (!got.every((d, i) => d.equals(want[i]))) fail('the datagrams received are not the ones sent');
  for (const d of got) digest.update(d);
  console.log(JSON.stringify({ arch: process.arch, frames, writes, datagrams: got.length, sha256: digest.digest('hex') }));
}, (err) => fail(err.message));
const body = Buffer.concat(Array.from({ length: N }, (_, i) => Buffer.alloc((i + 1) * 37, i)));
const so = new Int32Array(N);
const sl = new Int32Array(N);
for (let i = 0, at = 0; i < N; at += (i + 1) * 37, i++) [so[i], sl[i]] = [at, (i + 1) * 37];
const addrs = new Uint8Array(28 * N); // struct sockaddr_in per entry, 28 bytes apart
for (let i = 0; i < N; i++) {
  new DataView(addrs.buffer).setUint16(i * 28, 2, true); // AF_INET, host order
  new DataView(addrs.buffer).setUint16(i * 28 + 2, rx.localPort(), false);
  addrs.set(lo, i * 28 + 4);
}
const res = new Int32Array(3 + 3 * 4);
const rc = tx.send(body, so, sl, new Int32Array(N).fill(1), sl, addrs, 28, new Int16Array(N).fill(-1), new Int16Array(N).fill(-1), 0, N, false, res);
if (rc !== 0) fail(`send returned ${rc}`);
setTimeout(() => fail(`received ${got.length} of ${N} datagrams in 10 s`), 10000).unref();
