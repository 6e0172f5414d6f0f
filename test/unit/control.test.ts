// The control protocol over a real Unix socket, with an in-process Vtep (no privileges).
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Command, Option } from 'commander';
import { resolveConfig } from '../../src/config.js';
import { ControlServer, controlRequest } from '../../src/control.js';
import { loadConfigFile } from '../../src/config-file.js';
import { parseMetricsAddress, vtepRegistry } from '../../src/metrics.js';
import { MemoryPort } from '../../src/port/memory.js';
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
  const vtep = new Vtep(resolveConfig({ vni: 7, remotes: ['198.51.100.2'] }), { port: new MemoryPort({ mac: '02:00:00:00:00:0a' }), transport });
  await vtep.start();
  const sock = path.join(dir, 'vx.sock');
  server = new ControlServer(vtep, { path: sock, info: () => ({ tap: 'vx', pid: process.pid, vni: 7, dstport: 4789, listen: '0.0.0.0:4789', remotes: ['198.51.100.2'], startedAt: 'now' }) });
  await server.listen();
  return { vtep, transport, sock };
}

describe('control protocol', () => {
  it('answers info, stats and fdb requests; the socket is 0600', async () => {
    const { transport, sock } = await running();
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(await controlRequest(sock, 'info')).toMatchObject({ tap: 'vx', vni: 7 });
    transport.receive(datagram(7, frame('02:00:00:00:00:0a', '02:00:00:00:00:0b')), '198.51.100.5');
    expect(await controlRequest(sock, 'stats')).toMatchObject({ rxPackets: 1, fdbSize: 1 });
    expect(await controlRequest(sock, 'fdb.show')).toContainEqual({ mac: '02:00:00:00:00:0b', dst: '198.51.100.5', port: 4789, static: false, ageS: 0, vni: 7 });
    await controlRequest(sock, 'fdb.append', { mac: '00:00:00:00:00:00', dst: '198.51.100.3', port: 8472 });
    expect(await controlRequest(sock, 'fdb.show')).toContainEqual(expect.objectContaining({ mac: '00:00:00:00:00:00', dst: '198.51.100.3', port: 8472, static: true }));
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
    expect(await controlRequest(sock, 'info')).toMatchObject({ vni: 7 });
  });

  it('refuses to start over a live instance, replaces a stale socket left by a killed process', async () => {
    const { vtep, sock } = await running();
    const second = new ControlServer(vtep, { path: sock, info: () => ({}) as never });
    await expect(second.listen()).rejects.toThrow(/another uvtep is running/);
    await server!.close();
    // a process that listened and was killed leaves its socket file behind, with nobody listening
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(r.signal).toBe('SIGKILL');
    expect(lstatSync(sock).isSocket()).toBe(true);
    server = new ControlServer(vtep, { path: sock, info: () => ({ vni: 7 }) as never });
    await server.listen();
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(await controlRequest(sock, 'info')).toEqual({ vni: 7 });
  });

  it('never deletes what is not its socket: a regular file at the path is refused and kept', async () => {
    const { vtep, sock } = await running();
    await server!.close();
    writeFileSync(sock, 'precious');
    const s = new ControlServer(vtep, { path: sock, info: () => ({}) as never });
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
    expect(text).toContain('uvtep_drops_total{reason="UnknownVni",tap="vx",vni="7"} 1');
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
