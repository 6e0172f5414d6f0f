// The datapath process (src/datapath.ts, native/datapath/main.cc) between two uvtep hosts: by
// default the flow cache forwards in it, a child of uvtep that reads the TAP and the socket; JS
// still gets every packet the cache does not cover (the first pings, ARP, learning); the
// counters add up across the two processes; it ends with uvtep and lets go of the TAP and the
// port; if it dies, the VTEP fails loudly instead of going deaf. --datapath inline keeps the
// old shape: no process, the same behaviour.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { ping, tcpTransfer, uvtepBin, type Host, type LogRecord } from '../../src/lab/testbed.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, NsFixture, quietIpv6, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const fx = new NsFixture();

interface Stats {
  rxDatagrams: number;
  rxPackets: number;
  txFrames: number;
  txPackets: number;
  dropsTotal: number;
  io: { datapath: string; flowCache: boolean; flowCacheTx: number; flowCacheRx: number; readFrames: number; recvMsgs: number };
}

const stats = async (h: Host): Promise<Stats> => JSON.parse((await h.exec([process.execPath, uvtepBin(), 'stats', '--json'])).stdout) as Stats;
const ppid = (pid: number): number => Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

async function pair(name: string, extra: string[] = []) {
  const hosts = await twoHosts(fx.newBed(name));
  await quietIpv6(hosts.h1);
  await quietIpv6(hosts.h2);
  const common = ['--vni', '1', '--name', 'vxlan1', ...extra];
  const a = fx.uvtep(hosts.h1, [...common, '--remote', hosts.u2, '--address', '10.0.0.106/24', '--mac', A_MAC]);
  const b = fx.uvtep(hosts.h2, [...common, '--remote', hosts.u1, '--address', '10.0.0.107/24', '--mac', B_MAC]);
  const upA = await a.ready();
  const upB = await b.ready();
  return { ...hosts, a, b, upA, upB };
}

describeNs('the datapath process', () => {
  it('is the default: a child of uvtep forwards pings and a TCP stream, JS still learns from the first packets, the counters add up', async () => {
    const { h1, h2, a, upA, upB } = await pair('dpon');
    for (const up of [upA, upB]) {
      expect(up.datapath).toBe('process');
      expect(typeof up.datapathPid).toBe('number');
    }
    const dpA = upA.datapathPid as number;
    // the child of the uvtep process (ip netns exec execs node in place)
    expect(ppid(dpA)).toBe(a.child.pid);
    // the first pings teach both FDBs (ARP and learning go through JS), the rest go natively
    expect((await ping(h1, '10.0.0.107', 30, 0.02)).received).toBe(30);
    const fdb = (await h1.exec([process.execPath, uvtepBin(), 'fdb', 'show', '--json'])).stdout;
    expect(fdb).toContain(B_MAC);
    const t = await tcpTransfer(h2, h1, '10.0.0.107', 5201, 64 * MB);
    expect(t.ok).toBe(true);
    const s1 = await stats(h1);
    const s2 = await stats(h2);
    for (const s of [s1, s2]) {
      expect(s.io.datapath).toBe('process');
      expect(s.io.flowCache).toBe(true);
      // every frame read from the TAP (all of them by the process) left as a datagram, once
      expect(s.txPackets).toBe(s.io.readFrames);
      expect(s.rxPackets).toBe(s.rxDatagrams);
      expect(s.dropsTotal).toBe(0);
    }
    // the stream went through the process's cache, not through JS
    expect(s1.io.flowCacheTx / s1.txPackets).toBeGreaterThan(0.8);
    expect(s2.io.flowCacheRx / s2.rxDatagrams).toBeGreaterThan(0.8);
  });

  it('ends with uvtep, and lets go of the TAP and the UDP port', async () => {
    const { h1, a, upA } = await pair('dpend');
    const dpA = upA.datapathPid as number;
    expect((await ping(h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
    const { code } = await a.stop();
    expect(code).toBe(0);
    await waitFor(() => !existsSync(`/proc/${dpA}`), 'the datapath process to exit');
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan1'])).code).not.toBe(0);
    expect(await h1.run(['ss', '-Huln', 'sport', '= :4789'])).toBe('');
    // and a new uvtep binds the same port and forwards again
    const again = fx.uvtep(h1, ['--vni', '1', '--name', 'vxlan1', '--remote', '198.51.100.2', '--address', '10.0.0.106/24', '--mac', A_MAC]);
    await again.ready();
    expect((await ping(h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
  });

  it('dying fails the VTEP with an error that names it, instead of leaving it deaf', async () => {
    const { h1, a, upA } = await pair('dpkill');
    expect((await ping(h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
    process.kill(upA.datapathPid as number, 'SIGKILL');
    const { code } = await a.exited;
    expect(code).not.toBe(0);
    const fatal = a.records.find((r: LogRecord) => r.level >= 50);
    expect(fatal?.msg ?? a.stderr).toMatch(/datapath process/);
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan1'])).code).not.toBe(0);
  });

  it('outlives its VTEPs while a shared endpoint stays open: a VTEP that joins later forwards through it', async () => {
    const hosts = await twoHosts(fx.newBed('dpep'));
    await quietIpv6(hosts.h1);
    const b = fx.uvtep(hosts.h2, ['--vni', '1', '--name', 'vxlan1', '--remote', hosts.u1, '--address', '10.0.0.107/24', '--mac', B_MAC]);
    await b.ready();
    // the library on h1: one endpoint, a VTEP on it, closed (SIGUSR2), then another
    const script = fx.tmpFile('endpoint.mjs');
    const lib = path.resolve('dist/index.js');
    writeFileSync(
      script,
      `import { createEndpoint, createVtep } from ${JSON.stringify(lib)};
const ep = createEndpoint({ port: 4789 });
const mk = async () => {
  const v = createVtep({ vni: 1, remotes: ['${hosts.u2}'], endpoint: ep, tap: { name: 'vxlan1', addresses: ['10.0.0.106/24'], mac: '${A_MAC}' } });
  v.on('error', (e) => console.log('error ' + e.message));
  await v.start();
  return v;
};
let v = await mk();
console.log('up ' + v.datapathPid);
process.on('SIGUSR2', async () => {
  await v.close();
  v = await mk();
  console.log('again ' + v.datapathPid);
});
process.on('SIGTERM', async () => { await v.close(); await ep.close(); process.exit(0); });
`,
    );
    const child = hosts.h1.spawn([process.execPath, script]);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => /up \d+/.test(out), 'the first VTEP');
      expect((await ping(hosts.h1, '10.0.0.107', 3, 0.05)).received).toBe(3);
      child.kill('SIGUSR2');
      await waitFor(() => /again \d+/.test(out), 'the second VTEP');
      expect((await ping(hosts.h1, '10.0.0.107', 5, 0.05)).received).toBe(5);
      expect(out).not.toMatch(/error/);
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('--datapath inline: no process, the same forwarding and counters', async () => {
    const { h1, h2, a, upA } = await pair('dpoff', ['--datapath', 'inline']);
    expect(upA.datapath).toBe('inline');
    expect(upA.datapathPid).toBeUndefined();
    expect(readFileSync(`/proc/${a.child.pid}/task/${a.child.pid}/children`, 'utf8').trim()).toBe('');
    expect((await ping(h1, '10.0.0.107', 20, 0.02)).received).toBe(20);
    expect((await tcpTransfer(h2, h1, '10.0.0.107', 5201, 16 * MB)).ok).toBe(true);
    const s1 = await stats(h1);
    expect(s1.io.datapath).toBe('inline');
    expect(s1.txPackets).toBe(s1.io.readFrames);
    expect(s1.io.flowCacheTx / s1.txPackets).toBeGreaterThan(0.8);
  });
});
