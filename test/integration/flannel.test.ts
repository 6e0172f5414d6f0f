// Joining a flannel network: a host programmed exactly as flanneld does (the stand-in in
// src/lab/tools/flanneld-standin.ts, with the kernel VTEP) next to uvtep hosts in --flannel mode, one
// real etcd. Pods on a bridge on each host, addressed from FLANNEL_SUBNET, reach each other.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { ping, tcpTransfer, toolPath, uvtepBin, type Host, type Testbed } from '../../src/lab/testbed.js';
import { udpRecords } from '../helpers/pcap.js';
import { waitFor } from '../helpers/wait.js';
import { describeNs, ETCD_AT, etcdLab, NsFixture } from './setup.js';

const fx = new NsFixture();
const ETCD = `http://${ETCD_AT}:2379`;
const MB = 1024 * 1024;

/** A pod on bridge cni0 of host h, addressed from the host's FLANNEL_SUBNET (x.y.z.1/24 -> .2). */
async function pod(bed: Testbed, h: Host, short: string, flannelSubnet: string): Promise<{ pod: Host; ip: string }> {
  const [gw, len] = flannelSubnet.split('/') as [string, string];
  const ip = gw.replace(/\.1$/, '.2');
  await bed.bridge(h, 'cni0', [`${gw}/${len}`]);
  const p = await bed.container(h, 'cni0', short, `${ip}/${len}`, { mtu: 1450 });
  await p.ip('route', 'add', 'default', 'via', gw);
  return { pod: p, ip };
}

function subnetEnv(file: string): Record<string, string> {
  return Object.fromEntries(readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split('=') as [string, string]));
}

describeNs('joining a flannel network', () => {
  it('a uvtep host next to a flanneld host: lease, subnet file, pods ping and move verified TCP over VNI 1/8472; a third host joins; leases deleted', async () => {
    const bed = fx.newBed('fl');
    const { sw, hosts, etcd } = await etcdLab(fx, bed, ['a', 'b', 'c']);
    const [hA, hB, hC] = hosts as [Host, Host, Host];
    for (const h of hosts) await h.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');

    // host A: "flanneld" with the kernel VTEP
    const aEnv = fx.tmpFile('a.env');
    const standin = hA.spawn([process.execPath, toolPath('flanneld-standin'), '--etcd', ETCD, '--public-ip', '198.51.100.1', '--dev', 'eth0', '--subnet-file', aEnv]);
    let standinOut = '';
    standin.stdout!.on('data', (d: Buffer) => (standinOut += d.toString()));
    standin.stderr!.on('data', (d: Buffer) => (standinOut += d.toString()));
    await waitFor(() => standinOut.includes('"event":"ready"'), `the flanneld stand-in (${standinOut})`, 15_000);

    // host B: uvtep --flannel
    const bEnv = fx.tmpFile('b.env');
    let b = fx.uvtep(hB, ['--flannel', '--etcd', ETCD, '--local', '198.51.100.2', '--subnet-file', bEnv]);
    const up = await b.ready();
    expect(up.tap).toBe('flannel.1');
    const held = await b.waitFor((r) => /^flannel: flannel\.1 holds/.test(r.msg), 'the subnet lease');
    const bSubnet = held.subnet as string;
    expect(bSubnet).toMatch(/^10\.244\.\d+\.0\/24$/);
    // the lease, as flanneld writes it
    const key = `/coreos.com/network/subnets/${bSubnet.replace('/', '-')}`;
    const lease = JSON.parse(await etcd.ctl('get', '--print-value-only', key)) as Record<string, unknown>;
    const bMac = (await hB.run(['cat', '/sys/class/net/flannel.1/address'])).trim();
    expect(lease).toEqual({ PublicIP: '198.51.100.2', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: bMac } });
    // the subnet file, for flannel's CNI plugin
    const env = subnetEnv(bEnv);
    expect(env).toEqual({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: bSubnet.replace('.0/', '.1/'), FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false' });
    // the device as flanneld sets it up: <subnet>.0/32; the other host: neighbour, route, FDB
    expect(await hB.ip('-o', 'addr', 'show', 'dev', 'flannel.1')).toContain(`inet ${bSubnet.replace('/24', '/32')}`);
    const aSubnet = subnetEnv(aEnv).FLANNEL_SUBNET!.replace('.1/', '.0/');
    const aGw = aSubnet.split('/')[0]!;
    const aMac = JSON.parse(standinOut.split('\n').find((l) => l.includes('"ready"'))!).mac as string;
    await waitFor(async () => (await hB.ip('route', 'show')).includes(`${aSubnet} via ${aGw} dev flannel.1 onlink`), 'the route to A on B', 5000);
    expect(await hB.ip('neigh', 'show', 'dev', 'flannel.1')).toMatch(new RegExp(`${aGw.replace(/\./g, '\\.')} lladdr ${aMac} PERMANENT`));
    const fdbB = JSON.parse(await hB.run([process.execPath, uvtepBin(), 'fdb', 'show', '--json'])) as Array<{ mac: string; dst: string; port: number; static: boolean; origin: string }>;
    expect(fdbB).toContainEqual(expect.objectContaining({ mac: aMac, dst: '198.51.100.1', port: 8472, static: true, origin: 'etcd', vni: 1 }));
    await waitFor(() => standinOut.includes(`"subnet":"${bSubnet}"`), 'A installed B', 5000);

    // pods
    const pA = await pod(bed, hA, 'pda', subnetEnv(aEnv).FLANNEL_SUBNET!);
    const pB = await pod(bed, hB, 'pdb', env.FLANNEL_SUBNET!);
    const cap = await fx.capture(sw, 'br0', 'udp');
    expect((await ping(pA.pod, pB.ip, 3)).received).toBe(3);
    expect((await ping(pB.pod, pA.ip, 3)).received).toBe(3);
    expect((await tcpTransfer(pB.pod, pA.pod, pB.ip, 5201, 8 * MB)).ok).toBe(true);
    expect((await tcpTransfer(pA.pod, pB.pod, pA.ip, 5202, 8 * MB)).ok).toBe(true);
    await cap.stop();
    const recs = udpRecords(cap.file).filter((r) => r.payload.length >= 8 && (r.src === '198.51.100.1' || r.src === '198.51.100.2'));
    expect(recs.length).toBeGreaterThan(100);
    for (const r of recs) {
      expect(r.dstPort).toBe(8472);
      expect(r.payload.readUIntBE(4, 3)).toBe(1);
    }

    // a third host (uvtep) joins and reaches both
    const cEnv = fx.tmpFile('c.env');
    const c = fx.uvtep(hC, ['--flannel', '--etcd', ETCD, '--local', '198.51.100.3', '--subnet-file', cEnv]);
    await c.waitFor((r) => /^flannel: flannel\.1 holds/.test(r.msg), 'C leased');
    const pC = await pod(bed, hC, 'pdc', subnetEnv(cEnv).FLANNEL_SUBNET!);
    await waitFor(() => standinOut.includes(`"publicIp":"198.51.100.3"`), 'A installed C', 5000);
    expect((await ping(pC.pod, pA.ip, 3)).received).toBe(3);
    expect((await ping(pC.pod, pB.ip, 3)).received).toBe(3);

    // B stops (SIGTERM): its lease stays, as flanneld leaves it; restarted, it gets the same subnet
    await b.stop();
    expect(await etcd.ctl('get', '--keys-only', key)).toContain(key);
    b = fx.uvtep(hB, ['--flannel', '--etcd', ETCD, '--local', '198.51.100.2', '--subnet-file', bEnv]);
    const again = await b.waitFor((r) => /^flannel: flannel\.1 holds/.test(r.msg), 'B leased again');
    expect(again.subnet).toBe(bSubnet);
    await waitFor(async () => (await hB.ip('route', 'show')).includes(`${aSubnet} via ${aGw} dev flannel.1 onlink`), 'the route to A on B again', 5000);
    expect((await ping(pA.pod, pB.ip, 2)).received).toBe(2);

    // A's lease deleted: its route, neighbour and FDB entry go on B
    await etcd.ctl('del', `/coreos.com/network/subnets/${aSubnet.replace('/', '-')}`);
    await waitFor(async () => !(await hB.ip('route', 'show')).includes(aSubnet), 'the route to A gone on B', 5000);
    expect(await hB.ip('neigh', 'show', 'dev', 'flannel.1')).not.toContain(aGw + ' ');
    const fdbAfter = JSON.parse(await hB.run([process.execPath, uvtepBin(), 'fdb', 'show', '--json'])) as Array<{ mac: string }>;
    expect(fdbAfter.map((r) => r.mac)).not.toContain(aMac);

    // B's own lease deleted: it stops, as flanneld does
    await etcd.ctl('del', key);
    const { code } = await b.exited;
    expect(code).toBe(1);
    expect(b.records.find((r) => r.level === 60)?.msg).toMatch(/flannel: this host's lease .* was deleted from etcd; stopping, as flanneld does/);
  }, 150_000);
});
