// Packaging as a user installs it: `npm pack` (prepack: the TypeScript build and the prebuilt
// addons, scripts/prebuild.sh: linux-arm64 cross-compiled, then linux-x64), then the tarball
// installed into a clean folder. The addon must load from prebuilds/ without compiling (no build/
// directory appears), `npx uvtep --help` must work, and the library must import and require. The
// arm64 addon runs on Debian's arm64 Node under qemu-user (test/package/arm64-node.sh) and must
// compute byte for byte what the x64 one does (test/package/addon-smoke.cjs). The pack runs in a
// copy of the tree, so the addon the other tests load is never rebuilt under them. (The prebuild is named
// addon.node: node-gyp-build reads a file name starting with "uv" as a libuv version tag, so
// uvtep.node, prebuildify's default, would never be selected.)
import { execFile, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWhen } from '../helpers/capability.js';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '../..');
const missing = ['aarch64-linux-gnu-g++', 'qemu-aarch64', 'apt-get'].filter((c) => spawnSync('/bin/sh', ['-c', `command -v ${c}`]).status !== 0);
const tmp = mkdtempSync(path.join(tmpdir(), 'uvt-pack-'));
const app = path.join(tmp, 'app');
let listing = '';

beforeAll(async () => {
  // a copy of what git tracks, with the dependencies linked
  const src = path.join(tmp, 'src');
  const { stdout: files } = await run('git', ['ls-files', '-z'], { cwd: repo, maxBuffer: 16 * 1024 * 1024 });
  for (const f of files.split('\0').filter((x) => x.length > 0 && existsSync(path.join(repo, x)))) {
    mkdirSync(path.dirname(path.join(src, f)), { recursive: true });
    cpSync(path.join(repo, f), path.join(src, f));
  }
  symlinkSync(path.join(repo, 'node_modules'), path.join(src, 'node_modules'));
  const out = path.join(tmp, 'out');
  mkdirSync(out);
  await run('npm', ['pack', '--pack-destination', out], { cwd: src, maxBuffer: 64 * 1024 * 1024, timeout: 300_000 });
  const tgz = readdirSync(out).find((f) => f.endsWith('.tgz'))!;
  listing = (await run('tar', ['-tzf', path.join(out, tgz)])).stdout;
  mkdirSync(app);
  await run('npm', ['init', '-y'], { cwd: app });
  await run('npm', ['install', '--no-audit', '--no-fund', path.join(out, tgz)], { cwd: app, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });
}, 600_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('npm pack, installed in a clean folder: the prebuilt addon loads without compiling, npx uvtep --help, import("uvtep")', async () => {
  expect(listing).toMatch(/^package\/prebuilds\/linux-x64\/addon\.node$/m);
  expect(listing).toMatch(/^package\/prebuilds\/linux-x64\/uvtep-datapath$/m);
  expect(listing).toMatch(/^package\/dist\/index\.js$/m);
  expect(listing).not.toMatch(/^package\/build\//m);
  // the prebuilt addon was used: nothing was compiled
  expect(existsSync(path.join(app, 'node_modules/uvtep/build'))).toBe(false);
  const help = await run('npx', ['--no-install', 'uvtep', '--help'], { cwd: app });
  expect(help.stdout).toMatch(/Usage: uvtep \[options\]/);
  const lib = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('uvtep'); console.log(typeof m.createVtep, m.nativeTransportAvailable(), m.datapathDefault())"], { cwd: app });
  // the prebuilt datapath process is found and is the default
  expect(lib.stdout.trim()).toBe('function true process');
  // and from CommonJS (require of an ES module: Node 20.19 and later)
  const cjs = await run(process.execPath, ['-e', "console.log(typeof require('uvtep').createVtep)"], { cwd: app });
  expect(cjs.stdout.trim()).toBe('function');
}, 60_000);

describeWhen(missing, 'the arm64 prebuild tests')('the linux-arm64 prebuild', () => {
  it('is in the package and computes byte for byte what the linux-x64 one does, on an arm64 Node under qemu-user', async () => {
    expect(listing).toMatch(/^package\/prebuilds\/linux-arm64\/addon\.node$/m);
    expect(listing).toMatch(/^package\/prebuilds\/linux-arm64\/uvtep-datapath$/m);
    const prebuilds = path.join(app, 'node_modules/uvtep/prebuilds');
    const smoke = path.join(repo, 'test/package/addon-smoke.cjs');
    const x64 = await run(process.execPath, [smoke, path.join(prebuilds, 'linux-x64/addon.node')]);
    const node = path.join(tmp, 'arm64-node');
    await run('bash', [path.join(repo, 'test/package/arm64-node.sh'), node], { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    const arm64 = await run('qemu-aarch64', ['-L', path.join(node, 'root'), path.join(node, 'root/usr/bin/node'), smoke, path.join(prebuilds, 'linux-arm64/addon.node')], { timeout: 120_000 });
    const [a, b] = [JSON.parse(x64.stdout), JSON.parse(arm64.stdout)];
    expect([a.arch, b.arch]).toEqual(['x64', 'arm64']);
    expect(a.frames).toBeGreaterThan(50);
    expect(a.datagrams).toBe(40);
    expect({ ...b, arch: 'x64' }).toEqual(a);
  }, 480_000);
});
