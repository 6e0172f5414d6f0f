/**
 * Sends a bounded list of UDP datagrams, for hostile-input and flood tests (run inside a
 * namespace). Paced: each send waits for the previous one, so nothing is lost locally.
 *
 *   node dist/lab/tools/udp-blast.js <spec.json>
 *   spec: { "to": "198.51.100.1", "port": 4789, "from"?: "198.51.100.99",
 *           "datagrams": ["hex", ...], "repeat"?: 1, "macFlood"?: { "count": n, "vni": v, "dst": "02:..." } }
 * Prints {"sent": n} when done.
 */
import dgram from 'node:dgram';
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

interface Spec {
  to: string;
  port: number;
  from?: string;
  datagrams?: string[];
  repeat?: number;
  /** Frames with random unicast source MACs (VXLAN header for `vni`, inner dst `dst`). */
  macFlood?: { count: number; vni: number; dst: string };
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Spec;
const sock = dgram.createSocket(spec.to.includes(':') ? 'udp6' : 'udp4');
const send = (b: Buffer) => new Promise<void>((res) => sock.send(b, spec.port, spec.to, () => res()));

sock.bind({ port: 0, ...(spec.from ? { address: spec.from } : {}) }, async () => {
  let sent = 0;
  const list = (spec.datagrams ?? []).map((h) => Buffer.from(h, 'hex'));
  for (let r = 0; r < (spec.repeat ?? 1); r++) {
    for (const d of list) {
      await send(d);
      sent++;
    }
  }
  if (spec.macFlood) {
    const { count, vni, dst } = spec.macFlood;
    const d = Buffer.alloc(8 + 60);
    d[0] = 0x08;
    d.writeUIntBE(vni, 4, 3);
    Buffer.from(dst.replace(/:/g, ''), 'hex').copy(d, 8);
    d.writeUInt16BE(0x88b5, 8 + 12);
    for (let i = 0; i < count; i++) {
      randomFillSync(d, 8 + 6, 6);
      d[8 + 6] = (d[8 + 6]! & 0xfe) | 0x02; // unicast, locally administered
      await send(d);
      sent++;
    }
  }
  process.stdout.write(JSON.stringify({ sent }) + '\n');
  sock.close();
});
