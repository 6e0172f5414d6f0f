// Experiment 1 and interop with the kernel VTEP, over namespaces joined by veth.
import { expect, it } from 'vitest';
import { ping, tcpTransfer, type Host } from '../../src/lab/testbed.js';
import { describeNs, kernelVtep, NsFixture, twoHosts } from './setup.js';

const MB = 1024 * 1024;
const fx = new NsFixture();
const uvtep = (h: Host, args: string[]) => fx.uvtep(h, args);

describeNs('experiment 1: uvtep <-> uvtep point to point', () => {
  it('VNI 1, port 4789: ping and a verified TCP transfer both ways', async () => {
    const bed = fx.newBed('p2p');
    const { h1, h2, u1, u2 } = await twoHosts(bed);
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a']);
    const b = uvtep(h2, ['--vni', '1', '--remote', u1, '--name', 'vxlan1', '--address', '10.0.0.107/24', '--mac', '02:00:00:00:00:0b']);
    const ra = await a.ready();
    await b.ready();
    expect(ra).toMatchObject({ tap: 'vxlan1', mtu: 1450, vni: 1, dstport: 4789, remotes: [u2] });
    expect(await h1.run(['ip', '-o', 'link', 'show', 'vxlan1'])).toMatch(/mtu 1450 .*state UNKNOWN|mtu 1450/);
    const p = await ping(h1, '10.0.0.107', 5);
    expect(p.received).toBe(5);
    const t1 = await tcpTransfer(h2, h1, '10.0.0.107', 5201, 8 * MB);
    expect(t1.ok).toBe(true);
    const t2 = await tcpTransfer(h1, h2, '10.0.0.106', 5202, 8 * MB);
    expect(t2.ok).toBe(true);
    const fa = await a.stop();
    const fb = await b.stop();
    expect(fa.code).toBe(0);
    expect(fb.code).toBe(0);
    // (packets as they crossed: a TCP super-frame sent whole as tunnel GSO is one, as the kernel VTEP counts it)
    const sa = fa.final!.stats as { rxBytes: number; txBytes: number; dropsTotal: number };
    expect(sa.txBytes).toBeGreaterThan(8 * MB);
    expect(sa.rxBytes).toBeGreaterThan(8 * MB);
    expect(sa.dropsTotal).toBe(0);
    expect(fa.final!.fdb).toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:0b', dst: u2, port: 4789, static: false }));
    // the TAP is gone after SIGTERM
    expect((await h1.exec(['ip', 'link', 'show', 'vxlan1'])).code).not.toBe(0);
  });
});

describeNs('interop: uvtep <-> kernel VTEP', () => {
  it.each([
    ['IPv4 underlay, port 4789', false, 4789],
    ['IPv4 underlay, port 8472', false, 8472],
    ['IPv6 underlay, port 4789', true, 4789],
  ])('%s: traffic in both directions', async (_name, v6, port) => {
    const bed = fx.newBed('kern');
    const { h1, h2, u1, u2 } = await twoHosts(bed, v6);
    await kernelVtep(h2, { vni: 1, remote: u1, port, address: '10.0.0.107/24', mac: '02:00:00:00:00:0b' });
    // --local: bound to the underlay address, as `ip link add ... local` would
    const a = uvtep(h1, ['--vni', '1', '--remote', u2, '--local', u1, '--dstport', String(port), '--name', 'vxlan1', '--address', '10.0.0.106/24', '--mac', '02:00:00:00:00:0a']);
    const ra = await a.ready();
    expect(ra.listen).toBe(v6 ? `[${u1}]:${port}` : `${u1}:${port}`);
    expect(ra.mtu).toBe(v6 ? 1430 : 1450);
    // the kernel picks the same MTU for its vxlan device on this underlay
    expect(await h2.ip('-o', 'link', 'show', 'vxlan1')).toContain(`mtu ${v6 ? 1430 : 1450}`);
    // uvtep -> kernel
    expect((await ping(h1, '10.0.0.107', 5)).received).toBe(5);
    // kernel -> uvtep
    expect((await ping(h2, '10.0.0.106', 5)).received).toBe(5);
    const up = await tcpTransfer(h2, h1, '10.0.0.107', 5201, 8 * MB);
    expect(up.ok).toBe(true);
    const down = await tcpTransfer(h1, h2, '10.0.0.106', 5202, 8 * MB);
    expect(down.ok).toBe(true);
    // the kernel learned uvtep's MAC behind h1
    expect(await h2.run(['bridge', 'fdb', 'show', 'dev', 'vxlan1'])).toMatch(new RegExp(`02:00:00:00:00:0a dst ${u1.replace(/\./g, '\\.')}`));
    const f = await a.stop();
    expect(f.code).toBe(0);
    expect((f.final!.stats as { dropsTotal: number }).dropsTotal).toBe(0);
    expect(f.final!.fdb).toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:0b', dst: u2, port }));
  });
});
