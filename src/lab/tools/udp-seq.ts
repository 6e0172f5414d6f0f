/**
 * A UDP stream whose every datagram is accounted for: each carries a sequence number and a
 * SHA-256 prefix of its bytes, so a datagram whose buffer was overwritten on the way shows as
 * corrupt (or as a duplicate), not as a loss TCP would repair. Used by the backpressure and soak
 * tests (run inside namespaces with `ip netns exec`).
 *
 *   node dist/lab/tools/udp-seq.js recv <port> <idleMs>            -> prints {"received","corrupt","duplicates","maxSeq"} when
 *                                                                  nothing arrived for idleMs after the first datagram (or on SIGTERM)
 *   node dist/lab/tools/udp-seq.js send <host> <port> <count> <size> [pps] -> sends count datagrams of size bytes, as fast as
 *                                                                  the socket takes them or at pps a second; prints {"sent"}
 */
import { createHash, randomFillSync } from 'node:crypto';
import dgram from 'node:dgram';

/** seq (4) | SHA-256 of the rest, first 8 bytes (8) | random payload */
const HDR = 12;

function digest(b: Buffer): Buffer {
  return createHash('sha256').update(b.subarray(HDR)).update(b.subarray(0, 4)).digest().subarray(0, 8);
}

const [mode, a, b, c, d, e] = process.argv.slice(2);

if (mode === 'recv') {
  const idleMs = Number(b ?? 2000);
  const sock = dgram.createSocket('udp4');
  const seen = new Set<number>();
  let corrupt = 0;
  let duplicates = 0;
  let maxSeq = -1;
  let timer: NodeJS.Timeout | undefined;
  const done = () => {
    process.stdout.write(JSON.stringify({ received: seen.size, corrupt, duplicates, maxSeq }) + '\n');
    process.exit(0);
  };
  sock.on('message', (m) => {
    if (m.length < HDR || !digest(m).equals(m.subarray(4, HDR))) corrupt++;
    else {
      const seq = m.readUInt32BE(0);
      if (seen.has(seq)) duplicates++;
      seen.add(seq);
      if (seq > maxSeq) maxSeq = seq;
    }
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(done, idleMs);
  });
  process.on('SIGTERM', done);
  sock.bind(Number(a), () => {
    sock.setRecvBufferSize(32 * 1024 * 1024);
    process.stdout.write(JSON.stringify({ listening: Number(a) }) + '\n');
  });
} else if (mode === 'send') {
  const count = Number(c);
  const size = Math.max(HDR + 1, Number(d ?? 1000));
  const pps = Number(e ?? 0);
  const t0 = performance.now();
  const sock = dgram.createSocket('udp4');
  let sent = 0;
  const next = (): void => {
    if (pps > 0 && sent < count) {
      // paced: the next datagram when its time has come
      const due = t0 + (sent * 1000) / pps - performance.now();
      if (due > 1) {
        setTimeout(send, due);
        return;
      }
    }
    send();
  };
  const send = (): void => {
    if (sent === count) {
      process.stdout.write(JSON.stringify({ sent }) + '\n');
      sock.close();
      return;
    }
    const m = Buffer.allocUnsafe(size);
    randomFillSync(m, HDR);
    m.writeUInt32BE(sent, 0);
    digest(m).copy(m, 4);
    sent++;
    // the next one when the kernel took this one: as fast as the socket goes, nothing lost locally
    sock.send(m, Number(b), a!, next);
  };
  next();
} else {
  process.stderr.write('usage: udp-seq recv <port> <idleMs> | send <host> <port> <count> <size>\n');
  process.exit(2);
}
