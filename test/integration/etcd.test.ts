// Many hosts with etcd: uvtep hosts with no --remote find each other through a real etcd (in its
// own namespace on the underlay switch), leave when killed (TTL) or stopped (at once), rejoin,
// survive an etcd outage, refuse a second claim of one address; with --etcd-macs --proxy the
// underlay carries no flooded ARP requests after the first ping.
import { writeFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { ping, uvtepBin, type Host } from '../../src/lab/testbed.js';
import { udpRecords } from '../helpers/pcap.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, ETCD_AT, etcdLab, NsFixture } from './setup.js';

const fx = new NsFixture();
const TTL = 3;

/** uvtep on host i: VNI 42, no --remote, overlay 10.0.0.i. */
function vtep(h: Host, i: number, extra: string[] = []) {
  return fx.uvtep(h, [
    '--vni', '42', '--name', 'vx42', '--address', `10.0.0.${i}/24`, '--mac', `02:00:00:00:00:0${i}`,
    '--local', `198.51.100.${i}`, '--etcd', `http://${ETCD_AT}:2379`, '--etcd-ttl', String(TTL), '--etcd-node', `host${i}`, '--etcd-prefix', '/uvt-lab',
    ...extra,
  ]);
}

/** The flood destinations of the uvtep in h, from `uvtep fdb show --json`, as `dst origin`. */
async function flood(h: Host): Promise<string[]> {
  const out = await h.run([process.execPath, uvtepBin(), 'fdb', 'show', '--json', '--name', 'vx42']);
  const rows = JSON.parse(out) as Array<{ mac: string; dst: string; origin: string }>;
  return rows.filter((r) => r.mac === '00:00:00:00:00:00').map((r) => `${r.dst} ${r.origin}`).sort();
}

async function metric(h: Host, name: string): Promise<number> {
  const js = `fetch('http://127.0.0.1:9642/metrics').then(r=>r.text()).then(t=>{const m=t.match(/^${name} (\\S+)$/m);console.log(m?m[1]:'NaN')})`;
  return Number((await h.run([process.execPath, '-e', js])).trim());
}

describeNs('many hosts with etcd', () => {
  it('three hosts assemble with no --remote; leave on kill -9 (TTL) and SIGTERM (at once); rejoin; etcd outage; a second claim refused', async () => {
    const bed = fx.newBed('etcd');
    const { hosts, etcd } = await etcdLab(fx, bed, ['h1', 'h2', 'h3', 'h4']);
    const [h1, h2, h3, h4] = hosts as [Host, Host, Host, Host];
    const a = vtep(h1, 1, ['--metrics', '9642']);
    let b = vtep(h2, 2);
    const c = vtep(h3, 3);
    for (const p of [a, b, c]) await p.ready();
    await waitFor(async () => (await flood(h1)).length === 2 && (await flood(h2)).length === 2 && (await flood(h3)).length === 2, 'every host has the two others', 10_000);
    expect(await flood(h1)).toEqual(['198.51.100.2 etcd', '198.51.100.3 etcd']);
    // all pairs ping
    for (const [h, targets] of [[h1, [2, 3]], [h2, [1, 3]], [h3, [1, 2]]] as const) {
      for (const t of targets) expect((await ping(h, `10.0.0.${t}`, 2)).received, `${h.name} -> 10.0.0.${t}`).toBe(2);
    }
    expect(await metric(h1, 'uvtep_etcd_up')).toBe(1);
    expect(await metric(h1, 'uvtep_etcd_members')).toBe(2);

    // kill -9 of h3's uvtep: gone from the others within the TTL and a few seconds
    const t0 = Date.now();
    c.child.kill('SIGKILL');
    await waitFor(async () => !(await flood(h1)).some((r) => r.startsWith('198.51.100.3')) && !(await flood(h2)).some((r) => r.startsWith('198.51.100.3')), 'h3 gone after its TTL', (TTL + 5) * 1000, 100);
    const killedGoneS = (Date.now() - t0) / 1000;
    expect(killedGoneS).toBeLessThan(TTL + 5);

    // SIGTERM of h2: its lease is revoked, gone from h1 at once
    const t1 = Date.now();
    await b.stop();
    await waitFor(async () => (await flood(h1)).length === 0, 'h2 gone at once', 3000, 50);
    expect(Date.now() - t1).toBeLessThan(3000);

    // h2 restarts and rejoins, now from a config file hosting two VNIs on one lease
    const cfg = fx.tmpFile('h2.yaml');
    writeFileSync(
      cfg,
      `etcd: ["http://${ETCD_AT}:2379"]\netcd-ttl: ${TTL}\netcd-node: host2\netcd-prefix: /uvt-lab\nlocal: 198.51.100.2\n` +
        'vteps:\n  - {vni: 42, name: vx42, address: [10.0.0.2/24], mac: "02:00:00:00:00:02"}\n  - {vni: 43, name: vx43, address: [10.43.0.2/24], etcd-allow: true}\n',
    );
    b = fx.uvtep(h2, ['--config', cfg]);
    await b.ready();
    await waitFor(async () => (await flood(h1)).includes('198.51.100.2 etcd'), 'h2 rejoined', 10_000);
    expect((await ping(h1, '10.0.0.2', 2)).received).toBe(2);
    expect(await etcd.ctl('get', '--prefix', '--keys-only', '/uvt-lab/v1/vni/43/vteps/')).toContain('/uvt-lab/v1/vni/43/vteps/198.51.100.2:4789');
    expect((await etcd.ctl('lease', 'list')).match(/^[0-9a-f]+$/gm)).toHaveLength(2); // h1's and h2's: one per process

    // etcd dies: the overlay keeps working, uvtep_etcd_up goes 0
    await etcd.kill();
    await waitFor(async () => (await metric(h1, 'uvtep_etcd_up')) === 0, 'etcd_up 0', 15_000, 200);
    expect((await ping(h1, '10.0.0.2', 3)).received).toBe(3);
    expect((await ping(h2, '10.0.0.1', 3)).received).toBe(3);
    expect(await flood(h1)).toEqual(['198.51.100.2 etcd']);
    expect(a.records.some((r) => /etcd: /.test(r.msg) && r.level === 40)).toBe(true);

    // etcd back: a new host joins and everyone reaches it
    await etcd.restart();
    await waitFor(async () => (await metric(h1, 'uvtep_etcd_up')) === 1, 'etcd_up 1', 20_000, 200);
    // h4 advertises the address of --dev (no --local)
    const d = fx.uvtep(h4, ['--vni', '42', '--name', 'vx42', '--address', '10.0.0.4/24', '--dev', 'eth0', '--etcd', `http://${ETCD_AT}:2379`, '--etcd-ttl', String(TTL), '--etcd-node', 'host4', '--etcd-prefix', '/uvt-lab']);
    await d.ready();
    await waitFor(async () => (await flood(h1)).includes('198.51.100.4 etcd') && (await flood(h2)).includes('198.51.100.4 etcd'), 'h4 seen after the outage', 15_000);
    expect((await ping(h1, '10.0.0.4', 2)).received).toBe(2);
    expect((await ping(h4, '10.0.0.2', 2)).received).toBe(2);

    // a second host claiming h1's address: refused with a clear message, exit 1
    await h3.ip('addr', 'add', '198.51.100.1/32', 'dev', 'eth0');
    const dup = fx.uvtep(h3, ['--vni', '42', '--name', 'vx42', '--local', '198.51.100.1', '--etcd', `http://${ETCD_AT}:2379`, '--etcd-node', 'intruder', '--etcd-prefix', '/uvt-lab']);
    const { code } = await dup.exited;
    expect(code).toBe(1);
    const fatal = dup.records.find((r) => r.level === 60);
    expect(fatal?.msg).toMatch(/198\.51\.100\.1:4789 is the address of another VTEP of VNI 42 \(node "host1"/);
    expect(await flood(h2)).toContain('198.51.100.1 etcd');
    expect(Math.round(killedGoneS)).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('--etcd-macs --proxy: after the first ping, no ARP request is flooded across the underlay', async () => {
    const bed = fx.newBed('etcdp');
    const { hosts, sw, etcd } = await etcdLab(fx, bed, ['h1', 'h2', 'h3']);
    const [h1, h2, h3] = hosts as [Host, Host, Host];
    const ps = [vtep(h1, 1, ['--etcd-macs', '--proxy']), vtep(h2, 2, ['--etcd-macs', '--proxy']), vtep(h3, 3, ['--etcd-macs', '--proxy'])];
    for (const p of ps) await p.ready();
    await waitFor(async () => (await flood(h1)).length === 2 && (await flood(h2)).length === 2 && (await flood(h3)).length === 2, 'members', 10_000);
    // first contact: ARP floods, every station gets published
    expect((await ping(h1, '10.0.0.2', 1)).received).toBe(1);
    expect((await ping(h1, '10.0.0.3', 1)).received).toBe(1);
    expect((await ping(h2, '10.0.0.3', 1)).received).toBe(1);
    await waitFor(async () => {
      const out = await etcd.ctl('get', '--prefix', '/uvt-lab/v1/vni/42/macs/', '--print-value-only');
      return ['10.0.0.1', '10.0.0.2', '10.0.0.3'].every((ip) => out.includes(`"${ip}"`));
    }, 'the MAC routes of the three TAPs', 5000);
    // routes are static entries of origin etcd at h1
    const rows = JSON.parse(await h1.run([process.execPath, uvtepBin(), 'fdb', 'show', '--json'])) as Array<{ mac: string; dst: string; static: boolean; origin: string }>;
    expect(rows).toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:02', dst: '198.51.100.2', static: true, origin: 'etcd' }));
    // forget every neighbour, capture the underlay, ping again: the ARP requests are answered locally
    for (const h of [h1, h2, h3]) await h.ip('neigh', 'flush', 'dev', 'vx42');
    const cap = await fx.capture(sw, 'br0', 'udp port 4789');
    expect((await ping(h1, '10.0.0.2', 2)).received).toBe(2);
    expect((await ping(h2, '10.0.0.3', 2)).received).toBe(2);
    expect((await ping(h3, '10.0.0.1', 2)).received).toBe(2);
    await cap.stop();
    const inner = udpRecords(cap.file).map((r) => r.payload.subarray(8)); // after the VXLAN header
    const arpRequests = inner.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 1);
    expect(inner.length).toBeGreaterThanOrEqual(12); // the echo requests and replies crossed
    expect(arpRequests).toHaveLength(0);
    const stats = JSON.parse(await h1.run([process.execPath, uvtepBin(), 'stats', '--json'])) as { proxyReplies: number };
    expect(stats.proxyReplies).toBeGreaterThanOrEqual(1);
  }, 90_000);
});
