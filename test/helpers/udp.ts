// UDP helpers of the namespace tests: a node receiver and sender script pair, and the kernel's
// UDP counters.
import type { Host } from '../../src/lab/testbed.js';

/**
 * Starts the node script `receiver` in `rx`, runs `sender` in `tx` once the receiver had time to
 * bind, and resolves with the JSON line the receiver printed when it exited.
 */
export async function udpExchange(rx: Host, receiver: string, tx: Host, sender: string): Promise<unknown> {
  const recv = rx.spawn([process.execPath, '-e', receiver]);
  let out = '';
  recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((r) => setTimeout(r, 300));
  await tx.run([process.execPath, '-e', sender]);
  await new Promise<void>((r) => (recv.exitCode !== null ? r() : recv.once('exit', () => r())));
  return JSON.parse(out.trim());
}

/** The `Udp:` counters of /proc/net/snmp in `h` (InCsumErrors, SndbufErrors, RcvbufErrors...). */
export async function udpSnmp(h: Host): Promise<Record<string, number>> {
  const [names, values] = (await h.run(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  const k = names!.split(/\s+/).slice(1);
  const v = values!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(k.map((x, i) => [x, v[i]!]));
}
