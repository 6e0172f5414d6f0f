/**
 * A TCP transfer whose bytes are verified: the client sends `bytes` random bytes and reports
 * their SHA-256, the server reports the SHA-256 and count of what arrived. Used by the demo and
 * the namespace tests (run inside namespaces with `ip netns exec`).
 *
 *   node dist/lab/tools/tcp-transfer.js server <port>              -> prints {"bytes","sha256","seconds"} per connection, exits after one
 *   node dist/lab/tools/tcp-transfer.js client <host> <port> <bytes> -> prints {"bytes","sha256","seconds"}
 */
import { createHash, randomFillSync } from 'node:crypto';
import net from 'node:net';

const [mode, a, b, c] = process.argv.slice(2);

if (mode === 'server') {
  const server = net.createServer((sock) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let start = 0;
    sock.on('data', (d) => {
      if (start === 0) start = performance.now();
      bytes += d.length;
      hash.update(d);
    });
    sock.on('end', () => {
      const seconds = (performance.now() - start) / 1000;
      process.stdout.write(JSON.stringify({ bytes, sha256: hash.digest('hex'), seconds }) + '\n');
      sock.end();
      server.close();
    });
  });
  server.listen(Number(a), '::', () => process.stdout.write(JSON.stringify({ listening: Number(a) }) + '\n'));
} else if (mode === 'client') {
  const total = Number(c);
  const chunk = Buffer.alloc(64 * 1024);
  const hash = createHash('sha256');
  let sent = 0;
  const start = performance.now();
  const sock = net.connect({ host: a, port: Number(b) }, () => {
    const pump = (): void => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        randomFillSync(chunk, 0, n);
        const piece = Buffer.from(chunk.subarray(0, n));
        hash.update(piece);
        sent += n;
        if (!sock.write(piece)) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.on('close', () => {
    const seconds = (performance.now() - start) / 1000;
    process.stdout.write(JSON.stringify({ bytes: sent, sha256: hash.digest('hex'), seconds }) + '\n');
  });
  sock.on('error', (e) => {
    process.stderr.write(`transfer: ${e.message}\n`);
    process.exit(1);
  });
  sock.resume();
} else {
  process.stderr.write('usage: tcp-transfer server <port> | client <host> <port> <bytes>\n');
  process.exit(2);
}
