// The control protocol over a real Unix socket, with an in-process Vtep (no privileges).
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Command, Option } from 'commander';
import { resolveConfig } from '../../src/config.js';
import { ControlServer, controlRequest, singleVtep, type ControlTarget, type ControlVtep } from '../../src/control.js';
import { loadConfigFile } from '../../src/cli/config-file.js';
import { parseMetricsAddress, vtepRegistry } from '../../src/metrics.js';
import { MemoryDevice } from '../../src/device/memory.js';
import { Vtep } from '../../src/vtep.js';
import { datagram, frame } from '../helpers/frames.js';
import { FakeTransport } from '../helpers/fake-transport.js';

let dir: string;
let server: ControlServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

async function running() {
  dir = mkdtempSync(path.join(tmpdir(), 'uvt-ctl-'));
  const transport = new FakeTransport();
  const vtep = new Vtep(resolveConfig({ vni: 7, remotes: ['198.51.100.2'] }), { device: new MemoryDevice({ mac: '02:00:00:00:00:0a' }), transport });
  await vtep.start();
  const sock = path.join(dir, 'vx.sock');
  server = new ControlServer(singleVtep(vtep, 'vx'), { path: sock });
  await server.listen();
  return { vtep, transport, sock };
}

describe('control protocol', () => {
  it('answers info, stats and fdb requests; the socket is 0600', async () => {
    const { transport, sock } = await running();
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(await controlRequest(sock, 'info')).toMatchObject({ pid: process.pid, control: sock, vteps: [{ tap: 'vx', vni: 7 }] });
    transport.receive(datagram(7, frame('02:00:00:00:00:0a', '02:00:00:00:00:0b')), '198.51.100.5');
    expect(await controlRequest(sock, 'stats')).toMatchObject({ rxPackets: 1, fdbSize: 1 });
    expect(await controlRequest(sock, 'fdb.show')).toContainEqual({ mac: '02:00:00:00:00:0b', dst: '198.51.100.5', port: 4789, static: false, ageS: 0, vni: 7, origin: 'learned' });
    expect(await controlRequest(sock, 'fdb.show')).toContainEqual(expect.objectContaining({ mac: '00:00:00:00:00:00', dst: '198.51.100.2', origin: 'config' }));
    await controlRequest(sock, 'fdb.append', { mac: '00:00:00:00:00:00', dst: '198.51.100.3', port: 8472 });
    expect(await controlRequest(sock, 'fdb.show')).toContainEqual(expect.objectContaining({ mac: '00:00:00:00:00:00', dst: '198.51.100.3', port: 8472, static: true, origin: 'control' }));
    expect(await controlRequest(sock, 'fdb.flush', { dynamic: true })).toEqual({ removed: 1 });
    expect(await controlRequest(sock, 'fdb.del', { mac: '00:00:00:00:00:00', dst: '198.51.100.3', port: 8472 })).toEqual({ changed: true });
  });

  it('bad requests get error codes, and the connection and server survive', async () => {
    const { sock } = await running();
    await expect(controlRequest(sock, 'fdb.add', { mac: 'nope', dst: '198.51.100.3' })).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_MAC' });
    await expect(controlRequest(sock, 'fdb.add', { mac: '02:00:00:00:00:01' })).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_ADDRESS' });
    await expect(controlRequest(sock, 'fdb.add', { mac: '02:00:00:00:00:01', dst: '2001:db8::1' })).rejects.toMatchObject({ code: 'UVTEP_ERR_FAMILY_MISMATCH' });
    await expect(controlRequest(sock, 'reboot')).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_OPTION' });
    const net = await import('node:net');
    const raw = await new Promise<string>((resolve) => {
      const c = net.connect(sock, () => c.write('{not json\n'));
      c.on('data', (d) => {
        resolve(d.toString());
        c.end();
      });
    });
    expect(JSON.parse(raw)).toMatchObject({ ok: false, error: { code: 'UVTEP_ERR_REQUEST' } });
    expect(await controlRequest(sock, 'info')).toMatchObject({ vteps: [{ vni: 7 }] });
  });

  it('refuses to start over a live instance, replaces a stale socket left by a killed process', async () => {
    const { vtep, sock } = await running();
    const second = new ControlServer(singleVtep(vtep, 'vx'), { path: sock });
    await expect(second.listen()).rejects.toThrow(/another uvtep is running/);
    await server!.close();
    // a process that listened and was killed leaves its socket file behind, with nobody listening
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(r.signal).toBe('SIGKILL');
    expect(lstatSync(sock).isSocket()).toBe(true);
    server = new ControlServer(singleVtep(vtep, 'vx'), { path: sock });
    await server.listen();
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(await controlRequest(sock, 'info')).toMatchObject({ vteps: [{ tap: 'vx', vni: 7 }] });
  });

  it('never deletes what is not its socket: a regular file at the path is refused and kept', async () => {
    const { vtep, sock } = await running();
    await server!.close();
    writeFileSync(sock, 'precious');
    const s = new ControlServer(singleVtep(vtep, 'vx'), { path: sock });
    await expect(s.listen()).rejects.toThrow(/is not a socket/);
    expect(readFileSync(sock, 'utf8')).toBe('precious');
    rmSync(sock);
  });

  it('close ends connections a client holds open, at once', async () => {
    const { sock } = await running();
    const c = net.connect(sock);
    await new Promise<void>((r) => c.once('connect', () => r()));
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    const t0 = Date.now();
    await server!.close();
    await closed;
    expect(Date.now() - t0).toBeLessThan(1000);
    server = undefined;
  });
});

/** A target of several VTEPs that adds and removes like an uvtep process (in memory). */
async function several() {
  dir = mkdtempSync(path.join(tmpdir(), 'uvt-ctl-'));
  const vteps = new Map<string, ControlVtep>();
  const make = async (name: string, vni: number) => {
    const vtep = new Vtep(resolveConfig({ vni, remotes: ['198.51.100.2'] }), { device: new MemoryDevice(), transport: new FakeTransport() });
    await vtep.start();
    const v = { name, vtep };
    vteps.set(name, v);
    return v;
  };
  await make('vx10', 10);
  await make('vx20', 20);
  const target: ControlTarget = {
    list: () => [...vteps.values()],
    pick: (n) => {
      if (n === undefined) throw Object.assign(new Error('several: choose with --name'), { code: 'UVTEP_ERR_INVALID_OPTION' });
      const v = vteps.get(n);
      if (v === undefined) throw Object.assign(new Error(`no VTEP ${n}`), { code: 'UVTEP_ERR_INVALID_OPTION' });
      return v;
    },
    info: (v) => ({ tap: v.name, vni: v.vtep.config.vni }),
    add: async (o) => {
      if ([...vteps.values()].some((v) => v.vtep.config.vni === o.vni)) throw Object.assign(new Error('vni: exists'), { code: 'UVTEP_ERR_EXISTS' });
      return make(String(o.name), Number(o.vni));
    },
    remove: async (n) => {
      await vteps.get(n)!.vtep.close();
      vteps.delete(n);
    },
  };
  const sock = path.join(dir, 'multi.sock');
  server = new ControlServer(target, { path: sock });
  await server.listen();
  return { sock, vteps };
}

describe('control protocol, several VTEPs', () => {
  it('requests pick the VTEP by name; without one, several VTEPs are an error that names the choice', async () => {
    const { sock, vteps } = await several();
    expect(await controlRequest(sock, 'stats', { name: 'vx20' })).toMatchObject({ name: 'vx20', rxPackets: 0 });
    await controlRequest(sock, 'fdb.add', { name: 'vx20', mac: '02:00:00:00:00:01', dst: '198.51.100.9' });
    expect(vteps.get('vx20')!.vtep.fdb.size).toBe(1);
    expect(vteps.get('vx10')!.vtep.fdb.size).toBe(0);
    expect(await controlRequest(sock, 'fdb.show', { name: 'vx20' })).toContainEqual(expect.objectContaining({ mac: '02:00:00:00:00:01', vni: 20 }));
    await expect(controlRequest(sock, 'stats')).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_OPTION', message: /choose with --name/ });
    expect(await controlRequest(sock, 'vtep.list')).toEqual([{ tap: 'vx10', vni: 10 }, { tap: 'vx20', vni: 20 }]);
  });

  it('vtep.add and vtep.del change the set; a VNI that exists is refused and nothing changes', async () => {
    const { sock, vteps } = await several();
    expect(await controlRequest(sock, 'vtep.add', { options: { vni: 30, name: 'vx30' } })).toEqual({ tap: 'vx30', vni: 30 });
    await expect(controlRequest(sock, 'vtep.add', { options: { vni: 20, name: 'vx99' } })).rejects.toMatchObject({ code: 'UVTEP_ERR_EXISTS' });
    await expect(controlRequest(sock, 'vtep.add', { options: 'vni 5' })).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_OPTION' });
    expect([...vteps.keys()]).toEqual(['vx10', 'vx20', 'vx30']);
    expect(await controlRequest(sock, 'vtep.del', { name: 'vx10' })).toEqual({ removed: 'vx10' });
    expect([...vteps.keys()]).toEqual(['vx20', 'vx30']);
    await expect(controlRequest(sock, 'vtep.del', {})).rejects.toMatchObject({ code: 'UVTEP_ERR_INVALID_OPTION' });
  });

  it('a client cannot queue without bound: past 256 waiting requests its connection is ended', async () => {
    const { sock } = await several();
    const c = net.connect(sock);
    await new Promise<void>((r) => c.once('connect', () => r()));
    let answers = '';
    c.on('data', (d) => (answers += d.toString()));
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.write(Array.from({ length: 5000 }, (_, i) => JSON.stringify({ id: i, method: 'vtep.list' })).join('\n') + '\n');
    await closed;
    const lines = answers.trim().split('\n');
    expect(lines.length).toBeLessThan(5000);
    expect(answers).toMatch(/more than 256 requests waiting/);
    // the server still answers others
    expect(await controlRequest(sock, 'vtep.list')).toHaveLength(2);
  });
});

describe('metrics', () => {
  it.each([
    ['9100', { host: '127.0.0.1', port: 9100 }],
    ['0.0.0.0:9100', { host: '0.0.0.0', port: 9100 }],
    ['[::1]:9464', { host: '::1', port: 9464 }],
    ['localhost:9000', { host: '127.0.0.1', port: 9000 }],
  ])('address %s', (text, want) => expect(parseMetricsAddress(text)).toEqual(want));

  it.each(['', 'host:port', '9100:', '1.2.3:80', '70000'])('rejects %j', (text) => {
    expect(() => parseMetricsAddress(text)).toThrow(/metrics/);
  });

  it('exposes the counters at scrape time', async () => {
    const { vtep, transport } = await running();
    transport.receive(datagram(7, frame('02:00:00:00:00:0a', '02:00:00:00:00:0b')));
    transport.receive(datagram(8, frame('02:00:00:00:00:0a', '02:00:00:00:00:0b')));
    const text = await vtepRegistry(vtep, 'vx', { processMetrics: false }).metrics();
    expect(text).toContain('uvtep_rx_packets_total{tap="vx",vni="7"} 1');
    expect(text).toContain('uvtep_drops_total{tap="vx",vni="7",reason="UnknownVni"} 1');
    expect(text).toContain('# TYPE uvtep_rx_packets_total counter');
    expect(text).toContain('# TYPE uvtep_udp_recv_calls_total counter');
  });
});

describe('--config files', () => {
  const cmd = () => new Command('t').option('--vni <n>').option('--remote <ip>').option('--max-address <n>').option('--name <n>').option('--no-learning').option('--config <f>');
  it('YAML and JSON, kebab- or camelCase keys; the command line wins', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'uvt-cfg-'));
    const y = path.join(dir, 'a.yaml');
    writeFileSync(y, 'vni: 5\nremote: 198.51.100.2\nmax-address: 10\nname: vx5\nlearning: false\n');
    const c = cmd();
    c.parse(['--name', 'fromcli'], { from: 'user' });
    loadConfigFile(y, c);
    expect(c.opts()).toEqual({ vni: 5, remote: ['198.51.100.2'], maxAddress: 10, name: 'fromcli', learning: false });
    const j = path.join(dir, 'b.json');
    writeFileSync(j, JSON.stringify({ maxAddress: 3 }));
    const c2 = cmd();
    c2.parse([], { from: 'user' });
    loadConfigFile(j, c2);
    expect(c2.opts().maxAddress).toBe(3);
  });

  it('values go through the option parsers and choices, as on the command line', () => {
    dir = mkdtempSync(path.join(tmpdir(), 'uvt-cfg-'));
    const f = path.join(dir, 'p.yaml');
    const c = new Command('t').option('--vni <n>', '', (v: string) => (/^\d+$/.test(v) ? Number(v) : v)).option('--remote <ip>', '', (v: string, p: string[] = []) => [...p, v]);
    c.addOption(new Option('--log-level <l>').choices(['info', 'debug']));
    writeFileSync(f, 'vni: "5"\nremote: [198.51.100.2, 198.51.100.3]\nlog-level: debug\n');
    c.parse([], { from: 'user' });
    loadConfigFile(f, c);
    expect(c.opts()).toEqual({ vni: 5, remote: ['198.51.100.2', '198.51.100.3'], logLevel: 'debug' });
    writeFileSync(f, 'log-level: loud\n');
    const d = new Command('t').addOption(new Option('--log-level <l>').choices(['info', 'debug']));
    expect(() => loadConfigFile(f, d)).toThrow(expect.objectContaining({ option: 'logLevel', message: expect.stringMatching(/expected one of info, debug, got "loud"/) }));
    writeFileSync(f, 'learning: maybe\n');
    expect(() => loadConfigFile(f, cmd())).toThrow(/learning: expected true or false/);
  });

  it.each([
    ['unknown key', 'bogus: 1\n', /unknown option "bogus"/],
    ['not an object', '- 1\n- 2\n', /must hold an object/],
    ['invalid YAML', 'vni: [1\n', /not valid YAML/],
  ])('%s', (_n, text, msg) => {
    dir = mkdtempSync(path.join(tmpdir(), 'uvt-cfg-'));
    const f = path.join(dir, 'c.yaml');
    writeFileSync(f, text);
    expect(() => loadConfigFile(f, cmd())).toThrow(msg);
  });
});
