// `npm install` from a checkout on a machine without the C++ toolchain: scripts/install.js names
// what to install (and the prebuilt alternative) before node-gyp starts, and fails; with an
// addon already there it does nothing.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';

const repo = path.resolve(import.meta.dirname, '../..');

it('without prebuilt addon and toolchain, npm install names g++, make and python3 with the package to install', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'uvt-install-'));
  try {
    // a tree with the install script and its dependency, no build/ and no prebuilds/
    mkdirSync(path.join(tmp, 'scripts'));
    cpSync(path.join(repo, 'scripts/install.js'), path.join(tmp, 'scripts/install.js'));
    cpSync(path.join(repo, 'package.json'), path.join(tmp, 'package.json'));
    symlinkSync(path.join(repo, 'node_modules'), path.join(tmp, 'node_modules'));
    // a PATH with no compiler, make or python3 (only an empty folder)
    const bin = path.join(tmp, 'bin');
    mkdirSync(bin);
    const r = spawnSync(process.execPath, ['scripts/install.js'], { cwd: tmp, env: { PATH: bin }, encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/needs g\+\+, make, python3/);
    expect(r.stderr).toMatch(/apt-get install g\+\+ make python3/);
    expect(r.stderr).toMatch(/prebuilt addon for linux-x64/);
    // with an addon in prebuilds/, nothing is compiled and it succeeds
    mkdirSync(path.join(tmp, `prebuilds/${process.platform}-${process.arch}`), { recursive: true });
    cpSync(path.join(repo, 'build/Release/uvtep.node'), path.join(tmp, `prebuilds/${process.platform}-${process.arch}/addon.node`));
    const ok = spawnSync(process.execPath, ['scripts/install.js'], { cwd: tmp, env: { PATH: bin }, encoding: 'utf8' });
    expect(ok.stderr).toBe('');
    expect(ok.status).toBe(0);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
