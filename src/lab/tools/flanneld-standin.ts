/**
 * A stand-in for flanneld (etcd v3 mode, vxlan backend), for the flannel namespace tests: flanneld
 * is not packaged here. It does what flanneld does, with the kernel VTEP:
 *
 * - waits for `<prefix>/config`;
 * - leases a random free subnet (a create-if-absent transaction, a 24-hour etcd lease kept alive);
 * - creates `flannel.<VNI>` (no learning, the config's port, MTU of the device - 50) with the
 *   address `<subnet>.0/32`;
 * - for every other lease: `ip neigh replace <s>.0 lladdr <VtepMAC> nud permanent`,
 *   `bridge fdb replace <VtepMAC> dst <PublicIP> self permanent`,
 *   `ip route replace <s>/<len> via <s>.0 onlink`, all removed when the lease goes;
 * - writes the subnet file.
 *
 * Usage: node flanneld-standin.js --etcd URL --public-ip IP --dev eth0 [--prefix P] [--subnet-file F]
 * Prints one JSON line per event (`{"event":"ready","subnet":...}`, `added`, `removed`).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Etcd3, type IKeyValue } from 'etcd3';

const arg = (name: string, dflt?: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i < 0 ? dflt : process.argv[i + 1];
  if (v === undefined) throw new Error(`--${name} is required`);
  return v;
};
const etcdUrl = arg('etcd');
const prefix = arg('prefix', '/coreos.com/network');
const publicIp = arg('public-ip');
const dev = arg('dev');
const subnetFile = arg('subnet-file', '/run/flannel/subnet.env');
const say = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const ip4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
const num = (s: string) => s.split('.').reduce((a, p) => a * 256 + Number(p), 0);

const client = new Etcd3({ hosts: etcdUrl });
let text: string | null = null;
while ((text = await client.get(`${prefix}/config`).string()) === null) await new Promise((r) => setTimeout(r, 500));
const cfg = JSON.parse(text) as { Network: string; SubnetLen?: number; Backend: { VNI?: number; Port?: number } };
const [netAddr, netLenText] = cfg.Network.split('/') as [string, string];
const netLen = Number(netLenText);
const subnetLen = cfg.SubnetLen ?? 24;
const vni = cfg.Backend.VNI ?? 1;
const port = cfg.Backend.Port || 8472;
const size = 2 ** (32 - subnetLen);
const network = num(netAddr);
const count = 2 ** (subnetLen - netLen);

// the device, with a random locally administered MAC
const mac = [0x02, ...randomBytes(5)].map((b) => b.toString(16).padStart(2, '0')).join(':');
const name = `flannel.${vni}`;
const mtu = Number(sh('cat', `/sys/class/net/${dev}/mtu`).trim()) - 50;
sh('ip', 'link', 'add', name, 'address', mac, 'mtu', String(mtu), 'type', 'vxlan', 'id', String(vni), 'local', publicIp, 'dev', dev, 'dstport', String(port), 'nolearning');

// the lease
const lease = client.lease(24 * 3600);
const value = JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: vni, VtepMAC: mac } });
let subnet = 0;
for (;;) {
  subnet = network + (1 + randomInt(count - 1)) * size;
  const key = `${prefix}/subnets/${ip4(subnet)}-${subnetLen}`;
  const r = await client.if(key, 'Create', '==', 0).then(lease.put(key).value(value)).commit();
  if (r.succeeded) break;
}
sh('ip', 'addr', 'add', `${ip4(subnet)}/32`, 'dev', name);
sh('ip', 'link', 'set', name, 'up');
writeFileSync(subnetFile, `FLANNEL_NETWORK=${cfg.Network}\nFLANNEL_SUBNET=${ip4(subnet + 1)}/${subnetLen}\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=false\n`);

const installed = new Map<string, { s: string; len: string; mac: string; pub: string }>();
const put = (kv: IKeyValue) => {
  const key = kv.key.toString();
  const m = /subnets\/([\d.]+)-(\d+)$/.exec(key);
  if (m === null) return;
  const v = JSON.parse(kv.value.toString()) as { PublicIP: string; BackendData: { VtepMAC: string } };
  if (v.PublicIP === publicIp) return;
  const [, s, len] = m as unknown as [string, string, string];
  sh('ip', 'neigh', 'replace', s, 'lladdr', v.BackendData.VtepMAC, 'dev', name, 'nud', 'permanent');
  sh('bridge', 'fdb', 'replace', v.BackendData.VtepMAC, 'dev', name, 'dst', v.PublicIP, 'self', 'permanent');
  sh('ip', 'route', 'replace', `${s}/${len}`, 'via', s, 'dev', name, 'onlink');
  installed.set(key, { s, len, mac: v.BackendData.VtepMAC, pub: v.PublicIP });
  say({ event: 'added', subnet: `${s}/${len}`, publicIp: v.PublicIP });
};
const del = (kv: IKeyValue) => {
  const i = installed.get(kv.key.toString());
  if (i === undefined) return;
  installed.delete(kv.key.toString());
  sh('ip', 'route', 'del', `${i.s}/${i.len}`, 'via', i.s, 'dev', name, 'onlink');
  sh('ip', 'neigh', 'del', i.s, 'dev', name);
  sh('bridge', 'fdb', 'del', i.mac, 'dev', name, 'dst', i.pub, 'self');
  say({ event: 'removed', subnet: `${i.s}/${i.len}` });
};
const all = await client.getAll().prefix(`${prefix}/subnets/`).exec();
for (const kv of all.kvs) put(kv);
const w = await client.watch().prefix(`${prefix}/subnets/`).startRevision(String(BigInt(all.header.revision) + 1n)).create();
w.on('put', put);
w.on('delete', del);
say({ event: 'ready', subnet: `${ip4(subnet)}/${subnetLen}`, mac, device: name });
process.on('SIGTERM', () => {
  // as flanneld: the lease stays (a restart reuses it); the device stays too
  lease.release();
  client.close();
  process.exit(0);
});
