// Packaging as a user installs it: `npm pack` (prepack: the TypeScript build and a prebuilt addon
// for this platform, prebuildify --napi), then the tarball installed into a clean folder. The
// addon must load from prebuilds/ without compiling (no build/ directory appears), `npx uvtep
// --help` must work and the library must import. The pack runs in a copy of the tree, so the
// addon the other tests load is never rebuilt under them. (The prebuild is named addon.node:
// node-gyp-build reads a file name starting with "uv" as a libuv version tag, so uvtep.node,
// prebuildify's default, would never be selected.)
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '../..');

it('npm pack, installed in a clean folder: the prebuilt addon loads without compiling, npx uvtep --help, import("uvtep")', async () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'uvt-pack-'));
  try {
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
    await run('npm', ['pack', '--pack-destination', out], { cwd: src, maxBuffer: 64 * 1024 * 1024, timeout: 240_000 });
    const tgz = readdirSync(out).find((f) => f.endsWith('.tgz'))!;
    const { stdout: listing } = await run('tar', ['-tzf', path.join(out, tgz)]);
    expect(listing).toMatch(/^package\/prebuilds\/linux-x64\/addon\.node$/m);
    expect(listing).toMatch(/^package\/dist\/index\.js$/m);
    expect(listing).not.toMatch(/^package\/build\//m);

    const app = path.join(tmp, 'app');
    mkdirSync(app);
    await run('npm', ['init', '-y'], { cwd: app });
    await run('npm', ['install', '--no-audit', '--no-fund', path.join(out, tgz)], { cwd: app, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });
    // the prebuilt addon was used: nothing was compiled
    expect(existsSync(path.join(app, 'node_modules/uvtep/build'))).toBe(false);
    const help = await run('npx', ['--no-install', 'uvtep', '--help'], { cwd: app });
    expect(help.stdout).toMatch(/Usage: uvtep \[options\]/);
    const lib = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('uvtep'); console.log(typeof m.createVtep, m.nativeTransportAvailable())"], { cwd: app });
    expect(lib.stdout.trim()).toBe('function true');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}, 600_000);
