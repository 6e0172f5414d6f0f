// Many VNIs on one UDP port in one uvtep process (issue: many VNIs), against a kernel host that
// has three vxlan devices on port 4789, as `ip link add vxlanN type vxlan id N dstport 4789` makes.
import { readFileSync, writeFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { ping, tcpTransfer, uvtepBin, type Host, type UvtepProcess } from '../../src/lab/testbed.js';
import { readPcapFrames } from '../helpers/pcap.js';
import { describeNs, kernelVtep, NsFixture, quietIpv6, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const fx = new NsFixture();

/** `uvtep <args>` run inside h. */
const cli = (h: Host, ...args: string[]) => h.exec([process.execPath, uvtepBin(), ...args]);
/** MACs per VNI: uvtep's TAP 02:00:00:00:<vni>:01, the kernel's device 02:00:00:00:<vni>:02. */
const macOf = (vni: number, side: 1 | 2) => `02:00:00:00:${String(vni).padStart(2, '0')}:0${side}`;
const up = (p: UvtepProcess, tap: string) => p.waitFor((r) => r.tap === tap && / up: /.test(r.msg), `${tap} up`);

/** Source MACs of the frames captured on a TAP, as text. */
function sources(file: string): Set<string> {
  return new Set(readPcapFrames(file).map((f) => [...f.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':')));
}

interface Stats {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  rxDatagrams: number;
  drops: Record<string, number>;
  endpoint: { listen: string; vnis: number[]; drops: Record<string, number> };
}

describeNs('many VNIs on one UDP port', () => {
  it('uvtep <-> kernel with vxlan10/20/30 on 4789: two VNIs from a config file, a third added at run time, one deleted; VNIs never mix', async () => {
    const { h1, h2, u1, u2 } = await twoHosts(fx.newBed('mvni'));
    await quietIpv6(h1);
    await quietIpv6(h2);
    for (const vni of [10, 20, 30]) {
      await kernelVtep(h2, { vni, remote: u1, port: 4789, address: `10.${vni}.0.2/24`, mac: macOf(vni, 2), name: `vxlan${vni}` });
    }
    const conf = fx.tmpFile('vteps.yaml');
    writeFileSync(
      conf,
      [
        'dstport: 4789',
        `remote: [${u2}]`,
        'vteps:',
        `  - {vni: 10, name: vx10, address: [10.10.0.1/24], mac: "${macOf(10, 1)}"}`,
        `  - {vni: 20, name: vx20, address: [10.20.0.1/24], mac: "${macOf(20, 1)}"}`,
        '',
      ].join('\n'),
    );
    const a = fx.uvtep(h1, ['--config', conf]);
    await up(a, 'vx10');
    await up(a, 'vx20');

    // VNI 30 is not served yet: the kernel's ARP for it is the endpoint's UnknownVni, no TAP sees it
    expect((await ping(h2, '10.30.0.1', 2, 0.2, 1)).received).toBe(0);
    const s0 = JSON.parse((await cli(h1, 'stats', '--json', '--name', 'vx10')).stdout) as Stats;
    expect(s0.endpoint.drops.UnknownVni).toBeGreaterThanOrEqual(2);
    expect(s0.endpoint.listen).toBe('0.0.0.0:4789');

    // added at run time, as ip link add does
    const add = await cli(h1, 'vtep', 'add', '--vni', '30', '--name', 'vx30', '--address', '10.30.0.1/24', '--mac', macOf(30, 1), '--remote', u2);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/vx30 up: vni 30, listening on 0\.0\.0\.0:4789/);
    await up(a, 'vx30');

    const caps = new Map<number, Awaited<ReturnType<typeof fx.capture>>>();
    for (const vni of [10, 20, 30]) caps.set(vni, await fx.capture(h1, `vx${vni}`, '', `vx${vni}.pcap`));
    for (const vni of [10, 20, 30]) {
      expect((await ping(h1, `10.${vni}.0.2`, 3, 0.1)).received, `ping VNI ${vni}`).toBe(3);
      const t = await tcpTransfer(h2, h1, `10.${vni}.0.2`, 5201, 8 * MB);
      expect(t.ok, `TCP over VNI ${vni}`).toBe(true);
      const back = await tcpTransfer(h1, h2, `10.${vni}.0.1`, 5202, 8 * MB);
      expect(back.ok, `TCP over VNI ${vni}, kernel to uvtep`).toBe(true);
    }
    for (const c of caps.values()) await c.stop();
    // each TAP carried its own VNI's stations only: uvtep's own MAC and the kernel device of that VNI
    for (const vni of [10, 20, 30]) {
      const seen = sources(caps.get(vni)!.file);
      expect(seen.size, `frames on vx${vni}`).toBeGreaterThan(0);
      for (const m of seen) expect([macOf(vni, 1), macOf(vni, 2)], `source ${m} on vx${vni}`).toContain(m);
    }
    // and the counters agree: every VTEP moved its transfer, none dropped a datagram for a wrong VNI
    for (const vni of [10, 20, 30]) {
      const r = await cli(h1, 'stats', '--json', '--name', `vx${vni}`);
      const s = JSON.parse(r.stdout) as Stats;
      expect(s.rxBytes, `vx${vni} rx bytes`).toBeGreaterThan(8 * MB);
      expect(s.drops.UnknownVni).toBe(0);
      expect(s.endpoint.vnis.sort()).toEqual([10, 20, 30]);
    }
    const fdb30 = await cli(h1, 'fdb', 'show', '--name', 'vx30');
    expect(fdb30.stdout).toContain(`${macOf(30, 2)} dev vx30 dst ${u2} port 4789 vni 30 self dynamic`);
    expect(fdb30.stdout).not.toContain(macOf(10, 2));

    // uvtep list: every VTEP, one process, one endpoint
    const list = JSON.parse((await cli(h1, 'list', '--json')).stdout) as Array<{ tap: string; vni: number; pid: number; listen: string }>;
    expect(list.map((r) => [r.tap, r.vni, r.pid, r.listen])).toEqual([
      ['vx10', 10, a.child.pid, '0.0.0.0:4789'],
      ['vx20', 20, a.child.pid, '0.0.0.0:4789'],
      ['vx30', 30, a.child.pid, '0.0.0.0:4789'],
    ]);

    // a VNI or a TAP name that exists: exit 2, and nothing of the running VTEPs changes
    const dupVni = await cli(h1, 'vtep', 'add', '--vni', '20', '--name', 'vx99', '--remote', u2);
    expect(dupVni.code).toBe(2);
    expect(dupVni.stderr).toMatch(/VNI 20 is served already on 0\.0\.0\.0:4789 \(by vx20\)/);
    const dupName = await cli(h1, 'vtep', 'add', '--vni', '40', '--name', 'vx10', '--remote', u2);
    expect(dupName.code).toBe(2);
    expect(dupName.stderr).toMatch(/vx10.*exists already/);
    const otherTtl = await cli(h1, 'vtep', 'add', '--vni', '40', '--name', 'vx40', '--remote', u2, '--ttl', '9');
    expect(otherTtl.code).toBe(2);
    expect(otherTtl.stderr).toMatch(/option --ttl: .*share its settings/);
    expect((await h1.exec(['ip', 'link', 'show', 'vx99'])).code).not.toBe(0);
    expect((await h1.exec(['ip', 'link', 'show', 'vx40'])).code).not.toBe(0);
    expect(JSON.parse((await cli(h1, 'list', '--json')).stdout)).toHaveLength(3);

    // fdb and stats need --name when a process hosts several VTEPs
    const which = await cli(h1, 'stats');
    expect(which.code).toBe(2);
    expect(which.stderr).toMatch(/several VTEPs \(vx10, vx20, vx30\).*--name/);

    // deleted at run time: its TAP goes, the others keep working
    const del = await cli(h1, 'vtep', 'del', 'vx20');
    expect(del.code, del.stderr).toBe(0);
    expect((await h1.exec(['ip', 'link', 'show', 'vx20'])).code).not.toBe(0);
    expect((await ping(h1, '10.10.0.2', 3, 0.1)).received).toBe(3);
    expect((await ping(h1, '10.30.0.2', 3, 0.1)).received).toBe(3);
    expect((await ping(h2, '10.20.0.1', 2, 0.2, 1)).received).toBe(0);
    expect((await tcpTransfer(h2, h1, '10.30.0.2', 5203, 4 * MB)).ok).toBe(true);
    expect((await cli(h1, 'vtep', 'del', 'vx20')).code).toBe(1);

    // a VTEP whose TAP is deleted under it fails alone; the process and the others keep running
    await h1.ip('link', 'del', 'vx30');
    await a.waitFor((r) => r.tap === 'vx30' && /failed/.test(r.msg), 'vx30 failed');
    expect(a.child.exitCode).toBeNull();
    expect((await ping(h1, '10.10.0.2', 3, 0.1)).received).toBe(3);
    // and nothing spins on the dead fd: the process's CPU time over 2 idle seconds (a busy loop
    // would be a whole core: 2 s)
    const cpu = () => {
      const f = readFileSync(`/proc/${a.child.pid}/stat`, 'utf8');
      const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
      return (Number(x[11]) + Number(x[12])) / 100;
    };
    const c0 = cpu();
    await new Promise((r) => setTimeout(r, 2000));
    expect(cpu() - c0).toBeLessThan(0.3);

    const f = await a.stop();
    expect(f.code).toBe(0);
    expect(a.records.filter((r) => /^stopped \(SIGTERM\)/.test(r.msg)).map((r) => r.tap)).toEqual(['vx10']);
    expect(a.records.filter((r) => /^stopped \(error\)/.test(r.msg)).map((r) => r.tap)).toEqual(['vx30']);
  });

  it('uvtep <-> uvtep with three VNIs each on one port: config file on one host, vtep add on the other', async () => {
    const { h1, h2, u1, u2 } = await twoHosts(fx.newBed('mvnu'));
    await quietIpv6(h1);
    await quietIpv6(h2);
    const conf = fx.tmpFile('a.json');
    writeFileSync(
      conf,
      JSON.stringify({ remote: [u2], vteps: [10, 20, 30].map((vni) => ({ vni, name: `vx${vni}`, address: [`10.${vni}.0.1/24`], mac: macOf(vni, 1) })) }),
    );
    const a = fx.uvtep(h1, ['--config', conf]);
    const b = fx.uvtep(h2, ['--vni', '10', '--name', 'vx10', '--remote', u1, '--address', '10.10.0.2/24', '--mac', macOf(10, 2)]);
    await up(a, 'vx30');
    await b.ready();
    for (const vni of [20, 30]) {
      const r = await cli(h2, 'vtep', 'add', '--vni', String(vni), '--name', `vx${vni}`, '--remote', u1, '--address', `10.${vni}.0.2/24`, '--mac', macOf(vni, 2));
      expect(r.code, r.stderr).toBe(0);
    }
    const caps = new Map<number, Awaited<ReturnType<typeof fx.capture>>>();
    for (const vni of [10, 20, 30]) caps.set(vni, await fx.capture(h2, `vx${vni}`, '', `b-vx${vni}.pcap`));
    for (const vni of [10, 20, 30]) {
      expect((await ping(h1, `10.${vni}.0.2`, 3, 0.1)).received, `ping VNI ${vni}`).toBe(3);
      expect((await tcpTransfer(h2, h1, `10.${vni}.0.2`, 5201, 8 * MB)).ok, `TCP over VNI ${vni}`).toBe(true);
    }
    for (const c of caps.values()) await c.stop();
    for (const vni of [10, 20, 30]) {
      const seen = sources(caps.get(vni)!.file);
      expect(seen.size).toBeGreaterThan(0);
      for (const m of seen) expect([macOf(vni, 1), macOf(vni, 2)], `source ${m} on vx${vni}`).toContain(m);
    }
    // one socket for all three on each side
    const listA = JSON.parse((await cli(h1, 'list', '--json')).stdout) as Array<{ pid: number; listen: string }>;
    expect(new Set(listA.map((r) => `${r.pid} ${r.listen}`))).toEqual(new Set([`${a.child.pid} 0.0.0.0:4789`]));
    const fb = await b.stop();
    expect(fb.code).toBe(0);
    const finals = b.records.filter((r) => /^stopped/.test(r.msg));
    expect(finals.map((r) => r.tap).sort()).toEqual(['vx10', 'vx20', 'vx30']);
    for (const r of finals) expect((r.stats as Stats).rxPackets).toBeGreaterThan(0);
  });

  it.each(['native', 'dgram'])('a multicast group per VTEP on one socket: groups joined as VTEPs are added, left as they go (%s transport)', async (transport) => {
    const { h1, h2, u1, u2 } = await twoHosts(fx.newBed(`mvng${transport[0]}`));
    await quietIpv6(h1);
    await quietIpv6(h2);
    // the kernel host: VNI 20 and 30 on their own groups, VNI 10 with a unicast remote
    await kernelVtep(h2, { vni: 10, remote: u1, port: 4789, address: '10.10.0.2/24', mac: macOf(10, 2), name: 'vxlan10' });
    for (const vni of [20, 30]) {
      await h2.ip('link', 'add', `vxlan${vni}`, 'type', 'vxlan', 'id', String(vni), 'group', `239.1.1.${vni}`, 'dev', 'eth0', 'dstport', '4789');
      await h2.ip('link', 'set', `vxlan${vni}`, 'address', macOf(vni, 2));
      await h2.ip('addr', 'add', `10.${vni}.0.2/24`, 'dev', `vxlan${vni}`);
      await h2.ip('link', 'set', `vxlan${vni}`, 'up');
    }
    // uvtep starts with VNI 10 only (unicast); the socket has no group yet
    const a = fx.uvtep(h1, ['--vni', '10', '--name', 'vx10', '--remote', u2, '--dev', 'eth0', '--address', '10.10.0.1/24', '--mac', macOf(10, 1), '--transport', transport]);
    await a.ready();
    const groups = async () => (await h1.run(['ip', 'maddr', 'show', 'dev', 'eth0'])).match(/239\.1\.1\.\d+/g) ?? [];
    expect(await groups()).toEqual([]);
    for (const vni of [20, 30]) {
      const r = await cli(h1, 'vtep', 'add', '--vni', String(vni), '--name', `vx${vni}`, '--group', `239.1.1.${vni}`, '--address', `10.${vni}.0.1/24`, '--mac', macOf(vni, 1));
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await groups()).sort()).toEqual(['239.1.1.20', '239.1.1.30']);
    // ARP through each VNI's group, then unicast; and the unicast VNI as before
    for (const vni of [10, 20, 30]) expect((await ping(h1, `10.${vni}.0.2`, 3, 0.1)).received, `VNI ${vni}`).toBe(3);
    const cap = await fx.capture(h2, 'eth0', 'udp dst port 4789 and dst host 239.1.1.30', 'g30.pcap');
    await h1.run(['ip', 'neigh', 'flush', 'dev', 'vx30']);
    expect((await ping(h1, '10.30.0.2', 2, 0.1)).received).toBe(2);
    await cap.stop();
    // the ARP request went to VNI 30's group, from the one socket every VTEP shares
    const { udpRecords } = await import('../helpers/pcap.js');
    const sent = udpRecords(cap.file);
    expect(sent.length).toBeGreaterThan(0);
    expect(new Set(sent.map((r) => r.srcPort))).toEqual(new Set([4789]));
    expect(sent.every((r) => r.payload.readUIntBE(4, 3) === 30)).toBe(true);
    // a VTEP that goes leaves its group; the other group stays
    expect((await cli(h1, 'vtep', 'del', 'vx20')).code).toBe(0);
    expect(await groups()).toEqual(['239.1.1.30']);
    expect((await ping(h1, '10.30.0.2', 2, 0.1)).received).toBe(2);
  });
});
