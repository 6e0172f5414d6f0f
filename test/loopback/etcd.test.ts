// The etcd control plane with library Vteps on loopback addresses and a real etcd (Debian's
// etcd-server on a free 127.0.0.1 port, temporary data, ended by PID). Needs no privileges.
import dgram from 'node:dgram';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { createVtep, MemoryDevice, type Vtep } from '../../src/index.js';
import { EtcdAgent, EtcdConflictError, memberKey, resolveEtcdSettings, type MemberSpec } from '../../src/etcd.js';
import { describeWhen } from '../helpers/capability.js';
import { makeTls } from '../helpers/etcd-tls.js';
import { sh, uvtepBin } from '../../src/lab/testbed.js';
import { EtcdServer, etcdMissing } from '../../src/lab/etcd.js';
import { arpRequest, datagram, frame, ipv4Frame, mac } from '../helpers/frames.js';
import { waitFor } from '../helpers/wait.js';

const describeEtcd = describeWhen(await etcdMissing(), 'etcd tests');

const PREFIX = '/uvt-test';
let etcd: EtcdServer;

interface Member {
  vtep: Vtep;
  port: MemoryDevice;
  agent: EtcdAgent;
  got: Buffer[];
  at: { address: string; port: number };
}

const openMembers: Member[] = [];
afterEach(async () => {
  for (const m of openMembers.splice(0)) {
    await m.agent.close();
    await m.vtep.close();
  }
  if (etcd?.running) await etcd.ctl('del', '--prefix', PREFIX);
});

/** A library VTEP on 127.0.0.<n> (ephemeral port) that joins through its own agent. */
async function member(n: number, o: Partial<MemberSpec> & { node?: string; vni?: number; remotes?: string[]; ttlS?: number } = {}): Promise<Member> {
  const tapMac = `02:00:00:00:01:${n.toString(16).padStart(2, '0')}`;
  const port = new MemoryDevice({ mac: tapMac });
  const vtep = createVtep({ vni: o.vni ?? 7, local: `127.0.0.${n}`, listenPort: 0, frameDevice: port, ...(o.remotes ? { remotes: o.remotes } : {}) });
  await vtep.start();
  const agent = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: o.ttlS ?? 3, node: o.node ?? `node${n}` });
  const m: Member = { vtep, port, agent, got: [], at: { address: `127.0.0.${n}`, port: vtep.address().port } };
  openMembers.push(m);
  port.on('frame', (f) => m.got.push(f));
  expect(await agent.start()).toBe(true);
  await agent.join(vtep, { advertise: m.at, mac: tapMac, ...o });
  return m;
}

/** A TCP relay to etcd that a test can cut (every connection dropped, new ones refused) and restore, as a partition would. */
async function cuttableRelay(): Promise<{ url: string; cut: () => void; restore: () => void; close: () => void }> {
  const up = new URL(etcd.url);
  let open = true;
  const conns = new Set<net.Socket>();
  const server = net.createServer((c) => {
    if (!open) return c.destroy();
    const u = net.connect(Number(up.port), up.hostname);
    conns.add(c).add(u);
    c.pipe(u).pipe(c);
    const end = () => {
      c.destroy();
      u.destroy();
      conns.delete(c);
      conns.delete(u);
    };
    c.on('error', end).on('close', end);
    u.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const cut = () => {
    open = false;
    for (const c of conns) c.destroy();
  };
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut,
    restore: () => {
      open = true;
    },
    close: () => {
      cut();
      server.close();
    },
  };
}

const flood = (m: Member) => m.vtep.fdb.list().filter((r) => r.mac === '00:00:00:00:00:00').map((r) => `${r.dst}:${r.port} ${r.origin}`).sort();

describeEtcd('etcd control plane (library, loopback)', () => {
  beforeAll(async () => {
    etcd = await EtcdServer.start();
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  it('members find each other: flood lists of origin etcd, broadcast reaches all, a leaver goes at once', async () => {
    const a = await member(11);
    const b = await member(12);
    const c = await member(13);
    const all = [a, b, c];
    for (const m of all) {
      const others = all.filter((x) => x !== m).map((x) => `${x.at.address}:${x.at.port} etcd`).sort();
      await waitFor(() => JSON.stringify(flood(m)) === JSON.stringify(others), `flood list of ${m.at.address}`);
    }
    // the member keys hold what the issue says: address, port, mac, node, version
    const v = JSON.parse(await etcd.ctl('get', '--print-value-only', memberKey(PREFIX, 7, a.at))) as Record<string, unknown>;
    expect(v).toMatchObject({ address: '127.0.0.11', port: a.at.port, mac: '02:00:00:00:01:0b', node: 'node11', vni: 7, version: '0.1.0' });
    const hello = frame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:aa', { size: 60 });
    a.port.inject(hello);
    await waitFor(() => b.got.length === 1 && c.got.length === 1, 'broadcast at b and c');
    expect(b.got[0]!.equals(hello)).toBe(true);
    // c stops: its lease is revoked, and the others drop it without waiting for the TTL
    const t0 = Date.now();
    await c.agent.close();
    await waitFor(() => flood(a).length === 1 && flood(b).length === 1, 'c gone from a and b', 2000);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(a.agent.stats.members).toBe(1);
  });

  it('a crashed member (its lease not revoked) goes when its TTL runs out', async () => {
    const a = await member(21);
    // a member key bound to a 2-second lease nobody keeps alive, as a crashed process leaves it
    const lease = /lease ([0-9a-f]+) granted/.exec(await etcd.ctl('lease', 'grant', '2'))![1]!;
    await etcd.ctl('put', '--lease', lease, memberKey(PREFIX, 7, { address: '127.0.0.99', port: 4789 }), JSON.stringify({ address: '127.0.0.99', port: 4789, node: 'gone', vni: 7, version: 'x' }));
    await waitFor(() => flood(a).includes('127.0.0.99:4789 etcd'), 'the crashed member listed');
    const t0 = Date.now();
    await waitFor(() => !flood(a).some((r) => r.startsWith('127.0.0.99')), 'the crashed member gone', 8000);
    expect(Date.now() - t0).toBeLessThan(2000 + 3000);
  });

  it('a second node claiming the same address is refused; the same node takes its key over', async () => {
    const a = await member(31);
    const port = new MemoryDevice();
    const v2 = createVtep({ vni: 7, local: '127.0.0.32', listenPort: 0, frameDevice: port });
    await v2.start();
    const intruder = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: 3, node: 'other' });
    openMembers.push({ vtep: v2, port, agent: intruder, got: [], at: a.at });
    await intruder.start();
    const err = await intruder.join(v2, { advertise: a.at }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EtcdConflictError);
    expect((err as Error).message).toMatch(/127\.0\.0\.31:\d+ is the address of another VTEP of VNI 7 \(node "node31"/);
    // nothing of the refused VTEP was published
    expect(await etcd.ctl('get', '--prefix', '--keys-only', `${PREFIX}/v1/vni/7/vteps/`)).toMatch(/^\S+31:\d+\s*$/);
    // the same node name (a restart before the TTL ran out) takes the key over
    const again = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: 3, node: 'node31' });
    openMembers.push({ vtep: v2, port, agent: again, got: [], at: a.at });
    await again.start();
    await again.join(v2, { advertise: a.at });
  });

  it('the reconciler changes only its own entries: a configured remote stays when the member leaves', async () => {
    const b = await member(42);
    const a = await member(41, { remotes: [`127.0.0.42:${b.at.port}`] });
    await waitFor(() => flood(a).length === 1, 'a knows b');
    expect(flood(a)).toEqual([`127.0.0.42:${b.at.port} config`]);
    await b.agent.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(flood(a)).toEqual([`127.0.0.42:${b.at.port} config`]);
    // an entry added through the control socket (origin control) is not replaced by a MAC route
    a.vtep.fdb.add(mac('02:00:00:00:00:77'), a.vtep.fdb.remote('127.0.0.5', 4789));
    expect(a.vtep.fdb.list().find((r) => r.mac === '02:00:00:00:00:77')!.origin).toBe('control');
  });

  it('--etcd-allow: datagrams only from members', async () => {
    const a = await member(51, { allow: true });
    await member(52);
    await waitFor(() => flood(a).length === 1, 'a knows b');
    // from b's address: accepted; from 127.0.0.53 (not a member): dropped as NotAllowed
    const inner = frame('02:00:00:00:01:33', '02:00:00:00:00:bb');
    for (const src of ['127.0.0.52', '127.0.0.53']) {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, src, () => r()));
      await new Promise<void>((r) => s.send(datagram(7, inner), a.at.port, a.at.address, () => r()));
      s.close();
    }
    await waitFor(() => a.vtep.stats.drops.NotAllowed === 1 && a.got.length === 1, 'one accepted, one refused');
  });

  it('MAC routes: stations are published, peers install them static, --proxy answers ARP locally', async () => {
    const a = await member(61, { macs: true });
    const b = await member(62, { macs: true, proxy: true });
    await waitFor(() => flood(b).length === 1 && flood(a).length === 1, 'members');
    // a station behind a speaks (ARP for someone, then an IP packet)
    const X = '02:00:00:00:0a:01';
    const arp = arpRequest(X, '10.0.0.1', '10.0.0.99');
    a.port.inject(arp);
    await waitFor(() => b.vtep.fdb.list().find((r) => r.mac === X && r.origin === 'etcd'), 'route for X at b');
    const row = b.vtep.fdb.list().find((r) => r.mac === X)!;
    expect(row).toMatchObject({ dst: '127.0.0.61', port: a.at.port, static: true, origin: 'etcd' });
    const route = JSON.parse(await etcd.ctl('get', '--print-value-only', `${PREFIX}/v1/vni/7/macs/${X}`)) as { ips: string[]; node: string };
    expect(route).toMatchObject({ ips: ['10.0.0.1'], node: 'node61' });
    // a station behind b asks for 10.0.0.1: b answers on its port, nothing crosses the underlay
    const Y = '02:00:00:00:0b:01';
    const floodsBefore = b.vtep.stats.floodCopies;
    const gotAtA = a.got.length;
    const gotAtB = b.got.length; // X's broadcast ARP, flooded from a
    b.port.inject(arpRequest(Y, '10.0.0.2', '10.0.0.1'));
    await waitFor(() => b.got.length === gotAtB + 1, 'the proxied ARP reply at b');
    const reply = b.got[gotAtB]!;
    expect(reply.readUInt16BE(20)).toBe(2);
    expect(reply.subarray(6, 12).equals(Buffer.from(X.split(':').map((h) => parseInt(h, 16))))).toBe(true);
    expect(b.vtep.stats.proxyReplies).toBe(1);
    expect(b.vtep.stats.floodCopies).toBe(floodsBefore);
    // unicast to X from b is never flooded and never needs learning
    b.port.inject(ipv4Frame(X, Y, '10.0.0.2', '10.0.0.1'));
    await waitFor(() => a.got.length === gotAtA + 1, 'unicast at a');
    expect(b.vtep.stats.floodCopies).toBe(floodsBefore);
    // an unknown address is still flooded
    b.port.inject(arpRequest(Y, '10.0.0.2', '10.0.0.200'));
    await waitFor(() => b.vtep.stats.floodCopies === floodsBefore + 1, 'unknown ARP flooded');
    // a leaves: its routes go with its lease
    await a.agent.close();
    await waitFor(() => !b.vtep.fdb.list().some((r) => r.mac === X), 'route for X gone');
  });

  it('one process, several VNIs: one lease; each VNI sees only its own members', async () => {
    const a = await member(91); // VNI 7, its own agent
    // one agent hosting VNI 7 and VNI 8
    const agent = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: 3, node: 'multi' });
    expect(await agent.start()).toBe(true);
    const mk = async (vni: number, n: number) => {
      const port = new MemoryDevice();
      const vtep = createVtep({ vni, local: `127.0.0.${n}`, listenPort: 0, frameDevice: port });
      await vtep.start();
      const m: Member = { vtep, port, agent, got: [], at: { address: `127.0.0.${n}`, port: vtep.address().port } };
      openMembers.push(m);
      await agent.join(vtep, { advertise: m.at });
      return m;
    };
    const m7 = await mk(7, 92);
    const m8 = await mk(8, 93);
    await waitFor(() => flood(a).length === 1 && flood(m7).length === 1, 'VNI 7 members');
    expect(flood(a)).toEqual([`127.0.0.92:${m7.at.port} etcd`]);
    expect(flood(m8)).toEqual([]);
    expect(agent.stats.leases).toBe(1);
    const leases = (await etcd.ctl('lease', 'list')).trim().split('\n').slice(1);
    expect(leases).toHaveLength(2); // a's agent and the shared one
    // the keys of both VNIs hang on the one lease
    const ttlOut = await Promise.all(leases.map((l) => etcd.ctl('lease', 'timetolive', '--keys', l.trim())));
    const shared = ttlOut.find((t) => t.includes('vni/8/vteps'))!;
    expect(shared).toMatch(/vni\/7\/vteps\/127\.0\.0\.92/);
  });

  it('a VTEP that joins again through a new agent drops the members that left while it was away', async () => {
    const a = await member(101);
    const b = await member(102);
    await waitFor(() => flood(a).length === 1, 'a knows b');
    await a.agent.close();
    await b.agent.close(); // b leaves while a is away; a's FDB still holds b from the first agent
    expect(flood(a)).toEqual([`127.0.0.102:${b.at.port} etcd`]);
    const again = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: 3, node: 'node101' });
    openMembers.push({ ...a, agent: again });
    await again.start();
    await again.join(a.vtep, { advertise: a.at });
    expect(flood(a)).toEqual([]);
  });

  it('uvtep --flannel refuses a network config it does not support: exit 2, nothing created', async () => {
    await etcd.ctl('put', '/uvt-fl/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":true}}');
    try {
      const r = await sh(process.execPath, [uvtepBin(), '--flannel', '--flannel-prefix', '/uvt-fl', '--etcd', etcd.url, '--local', '127.0.0.1', '--no-control'], { timeoutMs: 20_000 });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/option --flannel: the network uses VXLAN GBP \(group policy\); uvtep does not support it/);
      expect(await etcd.ctl('get', '--prefix', '/uvt-fl/subnets/', '--keys-only')).toBe('');
    } finally {
      await etcd.ctl('del', '--prefix', '/uvt-fl');
    }
  });

  it('a watch cut off while etcd compacts past its revision: the VTEP lists again and reconciles (never a replay)', async () => {
    const relay = await cuttableRelay();
    const relayUrl = relay.url;
    try {
      const port = new MemoryDevice();
      const vtep = createVtep({ vni: 7, local: '127.0.0.121', listenPort: 0, frameDevice: port });
      await vtep.start();
      const agent = new EtcdAgent({ endpoints: [relayUrl], prefix: PREFIX, ttlS: 10, node: 'cut' });
      const m: Member = { vtep, port, agent, got: [], at: { address: '127.0.0.121', port: vtep.address().port } };
      openMembers.push(m);
      expect(await agent.start()).toBe(true);
      await agent.join(vtep, { advertise: m.at });
      const b = await member(122);
      await waitFor(() => flood(m).length === 1, 'the first member seen');
      const resyncs = agent.stats.resyncs;
      // cut: while the agent is away, b leaves, c arrives, and etcd compacts past all of it
      relay.cut();
      await b.agent.close();
      const cKey = memberKey(PREFIX, 7, { address: '127.0.0.123', port: 4789 });
      await etcd.ctl('put', cKey, JSON.stringify({ address: '127.0.0.123', port: 4789, node: 'c', vni: 7, version: 'x' }));
      const rev = /"revision":(\d+)/.exec(await etcd.ctl('get', cKey, '-w', 'json'))![1]!;
      await etcd.ctl('compact', rev);
      await waitFor(() => !agent.up, 'the agent notices', 10_000);
      relay.restore();
      // the events in between are compacted away: the agent lists again (b gone, c there)
      await waitFor(() => JSON.stringify(flood(m)) === JSON.stringify(['127.0.0.123:4789 etcd']), 'reconciled after the compaction', 15_000);
      expect(agent.stats.resyncs).toBeGreaterThan(resyncs);
      await waitFor(() => agent.up, 'up again', 10_000);
    } finally {
      relay.close();
    }
  }, 40_000);

  it('a claim refused after a recovery (another node took the address while this one was cut off): conflict reported, the VTEP fails closed', async () => {
    const relay = await cuttableRelay();
    try {
      const port = new MemoryDevice();
      const vtep = createVtep({ vni: 7, local: '127.0.0.131', listenPort: 0, frameDevice: port });
      await vtep.start();
      const agent = new EtcdAgent({ endpoints: [relay.url], prefix: PREFIX, ttlS: 2, node: 'first' });
      const at = { address: '127.0.0.131', port: vtep.address().port };
      openMembers.push({ vtep, port, agent, got: [], at });
      expect(await agent.start()).toBe(true);
      await agent.join(vtep, { advertise: at, allow: true });
      await member(132);
      await waitFor(() => agent.peersOf(vtep).length === 1, 'the peer seen');
      const conflicts: string[] = [];
      agent.on('conflict', (_v, e) => conflicts.push(e.message));
      // cut off longer than the TTL: etcd expires the lease and its key; another node claims the address
      relay.cut();
      const key = memberKey(PREFIX, 7, at);
      await waitFor(async () => (await etcd.ctl('get', key, '--keys-only')).trim() === '', 'the first lease expired', 10_000, 200);
      const port2 = new MemoryDevice();
      const v2 = createVtep({ vni: 7, local: '127.0.0.133', listenPort: 0, frameDevice: port2 });
      await v2.start();
      const other = new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: 5, node: 'second' });
      openMembers.push({ vtep: v2, port: port2, agent: other, got: [], at });
      await other.start();
      await other.join(v2, { advertise: at });
      relay.restore();
      await waitFor(() => conflicts.length === 1, 'the conflict reported after the recovery', 20_000, 100);
      expect(conflicts[0]).toMatch(/127\.0\.0\.131:\d+ is the address of another VTEP of VNI 7 \(node "second"/);
      expect(agent.peersOf(vtep)).toEqual([]);
      // fails closed: the last members are still the only accepted sources
      const s = dgram.createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, '127.0.0.134', () => r()));
      await new Promise<void>((r) => s.send(datagram(7, frame('02:00:00:00:01:83', '02:00:00:00:00:dd')), at.port, at.address, () => r()));
      s.close();
      await waitFor(() => vtep.stats.drops.NotAllowed === 1, 'a non-member refused');
    } finally {
      relay.close();
    }
  }, 40_000);

  it('malformed records in etcd are ignored, never installed, never fatal', async () => {
    const a = await member(71, { macs: true });
    await etcd.ctl('put', `${PREFIX}/v1/vni/7/vteps/junk`, 'not json');
    await etcd.ctl('put', `${PREFIX}/v1/vni/7/vteps/bad`, JSON.stringify({ address: 'x; rm -rf', port: 99999 }));
    await etcd.ctl('put', `${PREFIX}/v1/vni/7/macs/02:00:00:00:0c:01`, JSON.stringify({ mac: 'zz', address: '127.0.0.1', port: 1 }));
    await etcd.ctl('put', `${PREFIX}/v1/vni/7/macs/notamac`, '{}');
    const b = await member(72);
    await waitFor(() => flood(a).length === 1, 'a sees b');
    expect(flood(a)).toEqual([`127.0.0.72:${b.at.port} etcd`]);
    expect(a.vtep.fdb.size).toBe(0);
    expect(a.agent.up).toBe(true);
  });

  it('etcd away: forwarding goes on with the last state, up goes 0; back: re-listed, new members join', async () => {
    const a = await member(81, { ttlS: 2 });
    const b = await member(82, { ttlS: 2 });
    await waitFor(() => flood(a).length === 1 && flood(b).length === 1, 'a and b');
    await etcd.kill();
    await waitFor(() => !a.agent.up, 'a notices etcd is away', 10_000);
    // nothing flushed: a broadcast still reaches b
    a.port.inject(frame('ff:ff:ff:ff:ff:ff', '02:00:00:00:00:cc'));
    await waitFor(() => b.got.length === 1, 'broadcast while etcd is away');
    expect(flood(a)).toEqual([`127.0.0.82:${b.at.port} etcd`]);
    // the lease is lost (2 x TTL without keepalives) meanwhile; etcd comes back
    await new Promise((r) => setTimeout(r, 4500));
    await etcd.restart();
    await waitFor(() => a.agent.up && b.agent.up, 'up again', 15_000);
    const c = await member(83);
    await waitFor(() => flood(a).length === 2 && flood(b).length === 2, 'c seen by a and b after the outage', 10_000);
    expect(flood(c)).toHaveLength(2);
    expect(a.agent.stats.leases).toBeGreaterThanOrEqual(1);
  }, 60_000);
});

describeEtcd('etcd with TLS and with password auth', () => {
  it('TLS with a client certificate, as --etcd-cacert/--etcd-cert/--etcd-key give it; refused without', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'uvt-tls-'));
    const tls = makeTls(dir);
    const server = await EtcdServer.start({ tls });
    try {
      const settings = resolveEtcdSettings({ etcd: [server.url], etcdCacert: tls.ca, etcdCert: tls.clientCert, etcdKey: tls.clientKey, etcdTtl: 3, etcdNode: 'tls1' })!;
      const agent = new EtcdAgent(settings);
      const port = new MemoryDevice();
      const vtep = createVtep({ vni: 9, local: '127.0.0.111', listenPort: 0, frameDevice: port });
      await vtep.start();
      try {
        expect(await agent.start()).toBe(true);
        await agent.join(vtep, { advertise: { address: '127.0.0.111', port: vtep.address().port } });
        expect(await server.ctl('get', '--prefix', '/uvtep/v1/vni/9/vteps/', '--keys-only')).toMatch(/127\.0\.0\.111:\d+/);
      } finally {
        await agent.close();
      }
      // the CA alone (no client certificate): the server refuses the handshake
      const anon = new EtcdAgent({ ...resolveEtcdSettings({ etcd: [server.url], etcdCacert: tls.ca, etcdTtl: 3 })! });
      try {
        expect(await anon.start()).toBe(false);
        expect(anon.up).toBe(false);
      } finally {
        await anon.close();
        await vtep.close();
      }
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('password auth: --etcd-user with the password from UVTEP_ETCD_PASSWORD or a file; a wrong one is refused', async () => {
    const server = await EtcdServer.start();
    const dir = mkdtempSync(path.join(tmpdir(), 'uvt-auth-'));
    try {
      await server.ctl('user', 'add', 'root', '--new-user-password', 's3cret');
      await server.ctl('auth', 'enable');
      const pwFile = path.join(dir, 'pw');
      writeFileSync(pwFile, 's3cret\n');
      for (const settings of [
        resolveEtcdSettings({ etcd: [server.url], etcdUser: 'root', etcdTtl: 3 }, { UVTEP_ETCD_PASSWORD: 's3cret' })!,
        resolveEtcdSettings({ etcd: [server.url], etcdUser: 'root', etcdPasswordFile: pwFile, etcdTtl: 3 }, {})!,
      ]) {
        const agent = new EtcdAgent(settings);
        try {
          expect(await agent.start()).toBe(true);
        } finally {
          await agent.close();
        }
      }
      const wrong = new EtcdAgent(resolveEtcdSettings({ etcd: [server.url], etcdUser: 'root', etcdTtl: 3 }, { UVTEP_ETCD_PASSWORD: 'nope' })!);
      try {
        expect(await wrong.start()).toBe(false);
      } finally {
        await wrong.close();
      }
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
