// Operating a running uvtep: control socket subcommands, metrics, source ports, TOS/DF, --config.
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { ping, sh, uvtepBin, type Host } from '../../src/lab/testbed.js';
import { udpRecords } from '../helpers/pcap.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, NsFixture, quietIpv6, twoHosts } from './setup.js';

const A_MAC = '02:00:00:00:00:0a';
const B_MAC = '02:00:00:00:00:0b';
const fx = new NsFixture();
const uvtep = (h: Host, args: string[]) => fx.uvtep(h, args);
const tmpFile = (name: string) => fx.tmpFile(name);

/** `uvtep <args>` run inside h (the namespace decides which instances it sees). */
const cli = (h: Host, ...args: string[]) => h.exec([process.execPath, uvtepBin(), ...args]);

async function pair(name: string, extraA: string[] = [], extraB: string[] = []) {
  const hosts = await twoHosts(fx.newBed(name));
  await quietIpv6(hosts.h1);
  await quietIpv6(hosts.h2);
  const a = uvtep(hosts.h1, ['--vni', '1', '--remote', hosts.u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', A_MAC, ...extraA]);
  const b = uvtep(hosts.h2, ['--vni', '1', '--remote', hosts.u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', B_MAC, ...extraB]);
  await a.ready();
  await b.ready();
  return { ...hosts, a, b };
}

/** A capture into `name`; resolves with its stop function. */
async function capture(h: Host, iface: string, filter: string, file: string): Promise<() => Promise<void>> {
  return (await fx.capture(h, iface, filter, file.split('/').pop())).stop;
}

describeNs('control socket and subcommands', () => {
  it('fdb show/append/del/flush, stats and list against a running uvtep', async () => {
    const { h1, h2, u2, a } = await pair('ctl');
    // no ARP refreshes on the overlay: a late probe or reply would re-teach an entry the test
    // has just flushed (the kernel sends them on its own schedule)
    await h1.ip('neigh', 'replace', '10.0.0.107', 'lladdr', B_MAC, 'nud', 'permanent', 'dev', 'vxlan1');
    await h2.ip('neigh', 'replace', '10.0.0.106', 'lladdr', A_MAC, 'nud', 'permanent', 'dev', 'vxlan1');
    // the socket: mode 0600, in this namespace's directory
    const sock = '/run/uvtep/netns/uvt-ctl-h1/vxlan1.sock';
    expect(existsSync(sock)).toBe(true);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);

    const show = await cli(h1, 'fdb', 'show');
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`${B_MAC} dev vxlan1 dst ${u2} port 4789 vni 1 self dynamic`);
    expect(show.stdout).toContain(`00:00:00:00:00:00 dev vxlan1 dst ${u2} port 4789 vni 1 self permanent origin config`);
    expect(show.stdout).toMatch(new RegExp(`${B_MAC} dev vxlan1 dst ${u2.replace(/\./g, '\\.')} port 4789 vni 1 self dynamic age \\d+s origin learned`));
    const json = JSON.parse((await cli(h1, 'fdb', 'show', '--json', '--name', 'vxlan1')).stdout) as Array<{ mac: string; static: boolean; ageS: number }>;
    expect(json).toContainEqual(expect.objectContaining({ mac: B_MAC, static: false, vni: 1 }));

    // append a flood destination: broadcasts now also go there
    await h2.ip('addr', 'add', '198.51.100.99/24', 'dev', 'eth0');
    expect((await cli(h1, 'fdb', 'append', '00:00:00:00:00:00', 'dst', '198.51.100.99')).code).toBe(0);
    expect((await cli(h1, 'fdb', 'show')).stdout).toContain('00:00:00:00:00:00 dev vxlan1 dst 198.51.100.99 port 4789 vni 1 self permanent origin control');
    const stop = await capture(h2, 'eth0', 'udp and dst host 198.51.100.99', tmpFile('flood.pcap'));
    await h1.exec(['ping', '-b', '-c', '3', '-i', '0.1', '-W', '1', '10.0.0.255']);
    expect((await cli(h1, 'fdb', 'del', '00:00:00:00:00:00', 'dst', '198.51.100.99')).code).toBe(0);
    const before = udpRecords(tmpFile('flood.pcap')).length;
    await h1.exec(['ping', '-b', '-c', '3', '-i', '0.1', '-W', '1', '10.0.0.255']);
    await stop();
    const toNew = udpRecords(tmpFile('flood.pcap'));
    expect(before).toBe(3); // three broadcasts while it was a flood destination
    expect(toNew).toHaveLength(3); // none after del
    expect((await cli(h1, 'fdb', 'show')).stdout).not.toContain('198.51.100.99');

    // static entries survive flush --dynamic; dynamic ones do not
    expect((await cli(h1, 'fdb', 'add', '02:00:00:00:00:99', 'dst', u2)).code).toBe(0);
    expect((await cli(h1, 'fdb', 'add', '02:00:00:00:00:99', 'dst', u2)).stderr).toMatch(/exists/);
    const flushed = await cli(h1, 'fdb', 'flush', '--dynamic');
    expect(flushed.stdout).toMatch(/flushed 1 dynamic entry/);
    const after = (await cli(h1, 'fdb', 'show')).stdout;
    expect(after).toContain('02:00:00:00:00:99');
    expect(after).not.toContain(B_MAC);

    // stats move with traffic
    const s0 = JSON.parse((await cli(h1, 'stats', '--json')).stdout) as { rxPackets: number; txPackets: number };
    expect((await ping(h1, '10.0.0.107', 5, 0.05)).received).toBe(5);
    const s1 = JSON.parse((await cli(h1, 'stats', '--json')).stdout) as { rxPackets: number; txPackets: number };
    expect(s1.rxPackets - s0.rxPackets).toBeGreaterThanOrEqual(5);
    expect(s1.txPackets - s0.txPackets).toBeGreaterThanOrEqual(5);
    const watch = await cli(h1, 'stats', '--watch', '0.2', '--count', '2');
    expect(watch.stdout.match(/frames\/s/g)).toHaveLength(2);

    const list = await cli(h1, 'list');
    expect(list.stdout).toMatch(new RegExp(`vxlan1\\s+${a.child.pid}\\s+1\\s+0\\.0\\.0\\.0:4789\\s+${u2.replace(/\./g, '\\.')}`));

    // errors: no such instance (1), malformed MAC/IP (2), not root (1)
    expect((await cli(h1, 'fdb', 'show', '--name', 'nope')).code).toBe(1);
    const badMac = await cli(h1, 'fdb', 'add', '02:00:00', 'dst', u2);
    expect(badMac.code).toBe(2);
    expect(badMac.stderr).toMatch(/expected a MAC address/);
    const badIp = await cli(h1, 'fdb', 'append', '00:00:00:00:00:00', 'dst', '1.2.3');
    expect(badIp.code).toBe(2);
    const v6 = await cli(h1, 'fdb', 'append', '00:00:00:00:00:00', 'dst', '2001:db8::1');
    expect(v6.code).toBe(2);
    expect(v6.stderr).toMatch(/IPv4/);
    const nobody = await h1.exec(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, uvtepBin(), 'fdb', 'show', '--name', 'vxlan1']);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toMatch(/permission denied/);

    // the socket goes away with the process
    await a.stop();
    expect(existsSync(sock)).toBe(false);
  });

  it('a stale socket from a crashed run is replaced', async () => {
    const bed = fx.newBed('stale');
    const { h1, u2 } = await twoHosts(bed);
    const crashed = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1']);
    await crashed.ready();
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    const sock = '/run/uvtep/netns/uvt-stale-h1/vxlan1.sock';
    expect(existsSync(sock)).toBe(true); // left behind
    const again = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1']);
    await again.ready();
    expect((await cli(h1, 'stats', '--json')).code).toBe(0);
  });
});

describeNs('Prometheus metrics', () => {
  it('the endpoint scrapes and parses, with counters labelled by vni and reason', async () => {
    const { h1 } = await pair('metrics', ['--metrics', '9464']);
    expect((await ping(h1, '10.0.0.107', 3)).received).toBe(3);
    const r = await h1.exec([process.execPath, '-e', "fetch('http://127.0.0.1:9464/metrics').then(async r => { process.stdout.write(r.headers.get('content-type') + '\\n' + await r.text()) })"]);
    expect(r.code).toBe(0);
    const [ctype, ...lines] = r.stdout.split('\n');
    expect(ctype).toMatch(/text\/plain; version=0\.0\.4/);
    const samples = new Map<string, number>();
    for (const l of lines) {
      if (!l || l.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(l);
      expect(m, `unparsable line: ${l}`).not.toBeNull();
      samples.set(m![1]!, Number(m![2]));
    }
    expect(samples.get('uvtep_rx_packets_total{tap="vxlan1",vni="1"}')).toBeGreaterThanOrEqual(3);
    expect(samples.get('uvtep_tx_packets_total{tap="vxlan1",vni="1"}')).toBeGreaterThanOrEqual(3);
    expect(samples.get('uvtep_drops_total{tap="vxlan1",vni="1",reason="UnknownVni"}')).toBe(0);
    // what the syscalls carried: the pings went through TAP reads and UDP sends/receives
    expect(samples.get('uvtep_tap_reads_total{tap="vxlan1",vni="1"}')).toBeGreaterThanOrEqual(3);
    // the UDP endpoint's, by its address (shared by every VTEP on the port)
    expect(samples.get('uvtep_udp_send_calls_total{listen="0.0.0.0:4789"}')).toBeGreaterThanOrEqual(1);
    expect(samples.get('uvtep_udp_recv_messages_total{listen="0.0.0.0:4789"}')).toBeGreaterThanOrEqual(3);
    expect(samples.get('uvtep_endpoint_drops_total{listen="0.0.0.0:4789",reason="UnknownVni"}')).toBe(0);
    expect(samples.get('uvtep_fdb_entries{tap="vxlan1",vni="1"}')).toBe(1);
    expect([...samples.keys()].some((k) => k.startsWith('process_resident_memory_bytes'))).toBe(true);
  });
});

describeNs('stopping while clients hold connections', () => {
  it('SIGTERM stops within 2 s although a control client holds its connection and a metrics client sent half a request; final counters printed', async () => {
    const { h1, a } = await pair('stop', ['--metrics', '9464']);
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);
    // both clients stay connected until they are disconnected; they report when that happens
    const holder = h1.spawn([
      process.execPath,
      '-e',
      `const net=require('net');let n=0;const done=()=>{if(++n===2){console.log('both closed');process.exit(0)}};` +
        `const c=net.connect('/run/uvtep/netns/uvt-stop-h1/vxlan1.sock',()=>console.log('control connected'));c.on('close',done);c.on('error',()=>{});` +
        `const m=net.connect(9464,'127.0.0.1',()=>{m.write('GET /metr');console.log('metrics connected')});m.on('close',done);m.on('error',()=>{});setTimeout(()=>process.exit(3),15000);`,
    ]);
    let out = '';
    holder.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => /control connected/.test(out) && /metrics connected/.test(out), 'both clients connected');
    const t0 = Date.now();
    const { final, code } = await a.stop(5000);
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(code).toBe(0);
    expect(final?.msg).toMatch(/^stopped \(SIGTERM\)/);
    await new Promise<void>((r) => (holder.exitCode !== null ? r() : holder.once('exit', () => r())));
    expect(out).toMatch(/both closed/);
  });
});

describeNs('outer source ports and IP header fields', () => {
  it('--srcport: one port per inner flow, all in the range, flows spread over several ports', async () => {
    const { h1, h2 } = await pair('srcport', ['--srcport', '50000-50999']);
    expect((await ping(h1, '10.0.0.107', 1)).received).toBe(1);
    const stop = await capture(h1, 'eth0', 'udp dst port 4789 and src host 198.51.100.1', tmpFile('sp.pcap'));
    // 24 inner UDP flows (source ports 40000..40023), 3 datagrams each
    const send = `const d=require('dgram');(async()=>{for(let f=0;f<24;f++){const s=d.createSocket('udp4');await new Promise(r=>s.bind(40000+f,'10.0.0.106',r));for(let i=0;i<3;i++){await new Promise(r=>s.send(Buffer.from('x'+f),9,'10.0.0.107',r));await new Promise(r=>setTimeout(r,2))}s.close()}})()`;
    expect((await h1.exec([process.execPath, '-e', send])).code).toBe(0);
    // uvtep may still be sending the last ones: wait until the capture holds all 72
    await waitFor(() => udpRecords(tmpFile('sp.pcap')).length >= 72, '72 datagrams captured');
    await stop();
    const byFlow = new Map<number, Set<number>>();
    for (const r of udpRecords(tmpFile('sp.pcap'))) {
      const inner = r.payload.subarray(8);
      if (inner.readUInt16BE(12) !== 0x0800 || inner[14 + 9] !== 17) continue;
      const innerSrcPort = inner.readUInt16BE(14 + (inner[14]! & 0x0f) * 4);
      if (innerSrcPort < 40000 || innerSrcPort > 40023) continue;
      if (!byFlow.has(innerSrcPort)) byFlow.set(innerSrcPort, new Set());
      byFlow.get(innerSrcPort)!.add(r.srcPort);
    }
    expect(byFlow.size).toBe(24);
    const ports = new Set<number>();
    for (const [, set] of byFlow) {
      expect(set.size).toBe(1); // the same flow always leaves from the same port
      for (const p of set) {
        expect(p).toBeGreaterThanOrEqual(50000);
        expect(p).toBeLessThanOrEqual(50999);
        ports.add(p);
      }
    }
    expect(ports.size).toBeGreaterThan(4); // 24 flows over a 16-socket pool
    void h2;
  });

  it('--tos, --tos inherit and --df set the outer IPv4 header', async () => {
    const check = async (name: string, args: string[], pingArgs: string[]) => {
      const { h1 } = await pair(name, args);
      const stop = await capture(h1, 'eth0', 'udp dst port 4789 and src host 198.51.100.1', tmpFile(`${name}.pcap`));
      await h1.exec(['ping', '-n', '-c', '3', '-i', '0.1', ...pingArgs, '10.0.0.107']);
      await stop();
      const recs = udpRecords(tmpFile(`${name}.pcap`)).filter((r) => r.payload.subarray(8).readUInt16BE(12) === 0x0800);
      expect(recs.length).toBeGreaterThan(0);
      await fx.release();
      return recs.map((r) => ({ tos: r.frame[15]!, df: (r.fragWord & 0x4000) !== 0 }));
    };
    const dflt = await check('tos0', [], []);
    expect(dflt.every((r) => r.tos === 0 && !r.df)).toBe(true); // as the kernel VTEP: DF clear
    const fixed = await check('tos1', ['--tos', '40', '--df', 'set'], []);
    expect(fixed.every((r) => r.tos === 40 && r.df)).toBe(true);
    const inherit = await check('tos2', ['--tos', 'inherit'], ['-Q', '0xb8']);
    expect(inherit.every((r) => r.tos === 0xb8)).toBe(true);
  });
});

describeNs('--config file', () => {
  it('runs from a YAML file; command-line options win; unknown keys are refused', async () => {
    const bed = fx.newBed('cfg');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    const file = tmpFile('vxlan1.yaml');
    writeFileSync(file, `vni: 1\nremote:\n  - ${u2}\nname: vxlan1\naddress: [10.0.0.106/24]\nmac: "${A_MAC}"\nmax-address: 500\ndstport: 4789\n`);
    const a = uvtep(h1, ['--config', file, '--mtu', '1400']);
    const ra = await a.ready();
    expect(ra).toMatchObject({ tap: 'vxlan1', vni: 1, mtu: 1400, remotes: [u2], mac: A_MAC });
    const b = uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mtu', '1400']);
    await b.ready();
    expect((await ping(h1, '10.0.0.107', 2)).received).toBe(2);
    const bad = tmpFile('bad.json');
    writeFileSync(bad, JSON.stringify({ vni: 1, frobnicate: true }));
    const r = await sh(process.execPath, [uvtepBin(), '--config', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option "frobnicate"/);
  });
});

describeNs('SIGHUP: the config file read again while forwarding', () => {
  it('adds and removes VTEPs, changes remotes, allow-from and the log level, reports what cannot change; a bad file changes nothing', async () => {
    const bed = fx.newBed('hup');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    await quietIpv6(h1);
    await quietIpv6(h2);
    await h2.ip('addr', 'add', '198.51.100.3/24', 'dev', 'eth0');
    const { kernelVtep } = await import('./setup.js');
    for (const vni of [10, 20, 30]) await kernelVtep(h2, { vni, remote: u1, port: 4789, address: `10.${vni}.0.2/24`, mac: `02:00:00:00:${vni}:02`, name: `vxlan${vni}` });
    const file = tmpFile('hup.yaml');
    const entry = (vni: number, extra = '') => `  - {vni: ${vni}, name: vx${vni}, address: [10.${vni}.0.1/24], mac: "02:00:00:00:${vni}:01"${extra}}`;
    writeFileSync(file, ['dstport: 4789', `remote: [${u2}]`, 'vteps:', entry(10), entry(20), ''].join('\n'));
    const a = uvtep(h1, ['--config', file]);
    await a.waitFor((r) => r.tap === 'vx20' && / up: /.test(r.msg), 'vx20 up');
    expect((await ping(h1, '10.10.0.2', 2)).received).toBe(2);
    expect((await ping(h1, '10.20.0.2', 2)).received).toBe(2);

    writeFileSync(
      file,
      ['dstport: 4789', `remote: [${u2}]`, 'log-level: debug', 'vteps:', `  - {vni: 10, name: vx10, address: [10.10.0.1/24], mac: "02:00:00:00:10:01", remote: [198.51.100.3], allow-from: [198.51.100.0/24], mtu: 1400}`, entry(30), ''].join('\n'),
    );
    // forwarding on VNI 10 goes on through the reload
    const during = ping(h1, '10.10.0.2', 40, 0.05);
    await new Promise((r) => setTimeout(r, 500));
    a.child.kill('SIGHUP');
    const rec = await a.waitFor((r) => /^SIGHUP: .* read again/.test(r.msg), 'the reload record');
    const p = await during;
    expect(p.received).toBe(p.transmitted);
    const changes = rec.changes as string[];
    expect(changes).toContain('vx20 removed');
    expect(changes).toContain('vx30 added (vni 30)');
    expect(changes).toContain('vx10: remote 198.51.100.2:4789 removed');
    expect(changes).toContain('vx10: remote 198.51.100.3:4789 added');
    expect(changes).toContain('vx10: allow-from 198.51.100.0/24 (was anyone)');
    expect(changes).toContain('log-level debug (was info)');
    expect(rec.unchanged).toEqual(['vx10: --mtu']);
    expect(rec.msg).toMatch(/cannot change while running \(restart to apply\): vx10: --mtu/);
    expect((await h1.exec(['ip', 'link', 'show', 'vx20'])).code).not.toBe(0);
    expect((await ping(h1, '10.30.0.2', 3, 0.1)).received).toBe(3);
    const fdb = (await cli(h1, 'fdb', 'show', '--name', 'vx10')).stdout;
    expect(fdb).toContain('00:00:00:00:00:00 dev vx10 dst 198.51.100.3 port 4789 vni 1');
    expect(fdb).not.toContain(`00:00:00:00:00:00 dev vx10 dst ${u2}`);
    // the new log level is in force: learning is logged at debug
    await h1.run(['ip', 'neigh', 'flush', 'dev', 'vx10']);
    await cli(h1, 'fdb', 'flush', '--name', 'vx10', '--dynamic');
    expect((await ping(h1, '10.10.0.2', 2)).received).toBe(2);
    await a.waitFor((r) => r.msg === 'learned' && r.tap === 'vx10', 'a debug record');

    // a bad file: reported, nothing changes
    writeFileSync(file, 'vteps:\n  - {vni: 16777216}\n');
    a.child.kill('SIGHUP');
    const badRec = await a.waitFor((r) => /nothing changed/.test(r.msg), 'the refused reload');
    expect(badRec.msg).toMatch(/vteps\[0\]: option --vni: expected an integer from 0 to 16777215/);
    const list = JSON.parse((await cli(h1, 'list', '--json')).stdout) as Array<{ tap: string }>;
    expect(list.map((r) => r.tap)).toEqual(['vx10', 'vx30']);
    expect(a.child.exitCode).toBeNull();
  });
});
