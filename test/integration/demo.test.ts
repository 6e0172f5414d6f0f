// The README's first command: `uvtep demo` runs both seed experiments and leaves nothing behind.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { sh, uvtepBin } from '../../src/lab/testbed.js';
import { describeNs } from './setup.js';

describeNs('uvtep demo', () => {
  it('runs both experiments, prints RTTs, transfer rates and the FDB, removes its hosts', async () => {
    const r = await sh(process.execPath, [uvtepBin(), 'demo'], { timeoutMs: 120_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Experiment 1: point to point, VNI 1, port 4789/);
    expect(r.stdout).toMatch(/ping h1 10\.0\.0\.106 -> h2 10\.0\.0\.107: 5\/5 replies, rtt [\d. ]+ ms/);
    expect(r.stdout).toMatch(/TCP 32 MiB h1 10\.0\.0\.106 -> h2 10\.0\.0\.107: \d+ Mbit\/s, sha256 identical on both ends/);
    expect(r.stdout).toMatch(/02:00:00:00:00:0b dst 198\.51\.100\.2 port 4789 dynamic/);
    expect(r.stdout).toMatch(/ping container c1 172\.18\.0\.2 -> container c2 172\.18\.0\.3: 5\/5 replies/);
    expect(r.stdout).toMatch(/02:42:ac:12:00:03 dst 198\.51\.100\.2 port 4789 dynamic/);
    expect(r.stdout).toMatch(/Both experiments passed\.\nremoved the demo hosts\./);
    expect((await sh('ip', ['netns', 'list'])).stdout).not.toMatch(/uvt-demo-/);
  }, 150_000);

  it('a machine without ping: the demo says what to install before it builds anything', async () => {
    // a PATH with iproute2's ip and nothing else
    const dir = mkdtempSync(path.join(tmpdir(), 'uvt-path-'));
    try {
      const ip = (await sh('sh', ['-c', 'command -v ip'])).stdout.trim();
      symlinkSync(ip, path.join(dir, 'ip'));
      const r = spawnSync(process.execPath, [uvtepBin(), 'demo'], { env: { ...process.env, PATH: dir }, encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(/uvtep demo needs ping \(apt-get install iputils-ping\); nothing was set up\./);
      expect((await sh('ip', ['netns', 'list'])).stdout).not.toMatch(/uvt-demo-/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Ctrl-C during the demo: the hosts are removed and the exit code is 130', async () => {
    const child = spawn(process.execPath, [uvtepBin(), 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const deadline = Date.now() + 60_000;
    while (!/h2: .* up: /.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(out).toMatch(/h2: .* up: /);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(out).toMatch(/interrupted: removing the demo hosts\.\.\.\n[\s\S]*removed the demo hosts\./);
    expect(out).not.toMatch(/demo failed/);
    expect((await sh('ip', ['netns', 'list'])).stdout).not.toMatch(/uvt-demo-/);
  }, 90_000);

  it('--keep leaves the hosts, --cleanup removes them', async () => {
    const r = await sh(process.execPath, [uvtepBin(), 'demo', '--keep'], { timeoutMs: 120_000 });
    expect(r.code).toBe(0);
    expect((await sh('ip', ['netns', 'list'])).stdout).toMatch(/uvt-demo-h1/);
    const c = await sh(process.execPath, [uvtepBin(), 'demo', '--cleanup']);
    expect(c.code).toBe(0);
    expect((await sh('ip', ['netns', 'list'])).stdout).not.toMatch(/uvt-demo-/);
  }, 150_000);
});
