/**
 * `uvtep demo`: the seed's two experiments on this one machine, with namespaces as hosts.
 *
 *   h1 (198.51.100.1) ---- veth underlay ---- h2 (198.51.100.2)
 *   1. point to point: uvtep vxlan1 10.0.0.106/24 <-> 10.0.0.107/24, VNI 1, port 4789
 *   2. containers across hosts: in each host a bridge with a container namespace on a veth and
 *      uvtep's TAP as one more port, VNI 200; 172.18.0.2 <-> 172.18.0.3
 *
 * Prints ping RTTs, a verified TCP transfer rate and the learned FDB, then removes everything
 * it created (also when `signal` aborts: the CLI aborts it on Ctrl-C), unless --keep. It installs
 * no signal handler and never exits the process: it resolves with the exit code.
 */
import type { Writable } from 'node:stream';
import { ping, sh, tcpTransfer, Testbed, testbedMissing, UvtepProcess, type Host, type LogRecord } from './testbed.js';

export interface DemoOptions {
  keep: boolean;
  cleanupOnly: boolean;
  out: Writable;
  /** Bytes for the transfer (default 32 MiB). */
  transferBytes?: number;
  /** Aborted: stop, remove the hosts, resolve with 130. */
  signal?: AbortSignal;
}

const DEMO_SCOPE = 'demo';

function fdbTable(final: LogRecord | undefined): string {
  const rows = (final?.fdb as Array<{ mac: string; dst: string; port: number; static: boolean; ageS: number }> | undefined) ?? [];
  if (rows.length === 0) return '      (empty)\n';
  return rows.map((r) => `      ${r.mac} dst ${r.dst} port ${r.port} ${r.static ? 'static' : 'dynamic'}, age ${r.ageS}s\n`).join('');
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const say = (s: string) => o.out.write(s + '\n');
  // everything it needs, named up front with the package to install, before anything is built
  const missing = await testbedMissing();
  if ((await sh('ping', ['-V'])).code !== 0) missing.push('ping (apt-get install iputils-ping)');
  if (missing.length > 0) {
    say(`uvtep demo needs ${missing.join(', ')}; nothing was set up.`);
    return 1;
  }
  const bed = new Testbed(DEMO_SCOPE);
  await bed.removeLeftovers();
  if (o.cleanupOnly) {
    say('removed what earlier demos left behind (namespaces uvt-demo-*).');
    return 0;
  }
  let interrupted = false;
  let cleaning: Promise<void> | undefined;
  const onAbort = () => {
    if (interrupted) return;
    interrupted = true;
    say('\ninterrupted: removing the demo hosts...');
    cleaning = bed.cleanup();
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const bytes = o.transferBytes ?? 32 * 1024 * 1024;
  try {
    say('uvtep demo: two hosts (network namespaces uvt-demo-h1, uvt-demo-h2) joined by a veth underlay 198.51.100.0/24\n');
    const h1 = await bed.host('h1');
    const h2 = await bed.host('h2');
    await bed.veth(h1, 'eth0', ['198.51.100.1/24'], h2, 'eth0', ['198.51.100.2/24']);

    // ---- Experiment 1
    say('Experiment 1: point to point, VNI 1, port 4789');
    say('  h1$ uvtep --vni 1 --remote 198.51.100.2 --name vxlan1 --address 10.0.0.106/24');
    say('  h2$ uvtep --vni 1 --remote 198.51.100.1 --name vxlan1 --address 10.0.0.107/24');
    const a = new UvtepProcess(h1, ['--vni', '1', '--remote', '198.51.100.2', '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a']);
    const b = new UvtepProcess(h2, ['--vni', '1', '--remote', '198.51.100.1', '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', '02:00:00:00:00:0b']);
    say(`  h1: ${(await a.ready()).msg}`);
    say(`  h2: ${(await b.ready()).msg}`);
    await step(say, h1, '10.0.0.107', h2, bytes, 'h1 10.0.0.106', 'h2 10.0.0.107');
    const fa = await a.stop();
    const fb = await b.stop();
    say(`  h1 FDB (uvtep learned):\n${fdbTable(fa.final)}  h2 FDB:\n${fdbTable(fb.final)}`);
    say(`  h1 ${fa.final?.msg ?? '(no final report)'}`);
    say(`  h2 ${fb.final?.msg ?? '(no final report)'}\n`);

    // ---- Experiment 2
    say('Experiment 2: containers across hosts, VNI 200: a bridge per host ("docker bridge" 172.18.0.0/16),');
    say('  a container namespace on it (MTU 1450, as Docker overlay networks), and uvtep\'s TAP as one more bridge port');
    await bed.bridge(h1, 'br0');
    await bed.bridge(h2, 'br0');
    // Container MTU 1450 = the TAP's, as Docker's overlay driver sets it (a bridge drops larger frames).
    const c1 = await bed.container(h1, 'br0', 'c1', '172.18.0.2/16', { mac: '02:42:ac:12:00:02', mtu: 1450 });
    const c2 = await bed.container(h2, 'br0', 'c2', '172.18.0.3/16', { mac: '02:42:ac:12:00:03', mtu: 1450 });
    say('  h1$ uvtep --vni 200 --remote 198.51.100.2 --name vxlan200 --bridge br0');
    say('  h2$ uvtep --vni 200 --remote 198.51.100.1 --name vxlan200 --bridge br0');
    const x = new UvtepProcess(h1, ['--vni', '200', '--remote', '198.51.100.2', '--name', 'vxlan200', '--bridge', 'br0']);
    const y = new UvtepProcess(h2, ['--vni', '200', '--remote', '198.51.100.1', '--name', 'vxlan200', '--bridge', 'br0']);
    say(`  h1: ${(await x.ready()).msg}`);
    say(`  h2: ${(await y.ready()).msg}`);
    await step(say, c1, '172.18.0.3', c2, bytes, 'container c1 172.18.0.2', 'container c2 172.18.0.3');
    const fx = await x.stop();
    const fy = await y.stop();
    say(`  h1 FDB (container MACs learned behind h2):\n${fdbTable(fx.final)}  h2 FDB:\n${fdbTable(fy.final)}`);
    say(`  h1 ${fx.final?.msg ?? ''}`);
    say(`  h2 ${fy.final?.msg ?? ''}\n`);
    if (interrupted) return 130;
    say('Both experiments passed.');
    return 0;
  } catch (e) {
    if (interrupted) return 130;
    say(`demo failed: ${(e as Error).message}`);
    return 1;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    if (interrupted) {
      await cleaning;
      say('removed the demo hosts.');
    } else if (o.keep) {
      say('--keep: hosts left in place (ip netns list); remove them with: uvtep demo --cleanup');
    } else if (!interrupted) {
      await bed.cleanup();
      say('removed the demo hosts.');
    }
  }
}

async function step(say: (s: string) => void, from: Host, to: string, server: Host, bytes: number, fromName: string, toName: string): Promise<void> {
  const p = await ping(from, to, 5, 0.2);
  if (p.received === 0) throw new Error(`${fromName} cannot ping ${to}`);
  say(`  ping ${fromName} -> ${toName}: ${p.received}/${p.transmitted} replies, rtt ${p.rtts.map((r) => r.toFixed(3)).join(' ')} ms (avg ${p.avgMs.toFixed(3)})`);
  const t = await tcpTransfer(server, from, to, 5201, bytes);
  if (!t.ok) throw new Error(`transfer corrupted: sent ${t.bytes} bytes sha256 ${t.sentSha256}, received ${t.receivedBytes} sha256 ${t.receivedSha256}`);
  say(`  TCP ${(t.bytes / 1048576).toFixed(0)} MiB ${fromName} -> ${toName}: ${t.mbitPerS.toFixed(0)} Mbit/s, sha256 identical on both ends`);
}
