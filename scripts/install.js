#!/usr/bin/env node
// `npm install`: the native addon from prebuilds/ (the published package carries them for
// linux-x64 and linux-arm64) or an earlier build; else it is compiled by node-gyp, which needs
// g++, make and python3. A missing one is named, with the Debian package to install, before
// node-gyp starts (instead of node-gyp's own failure halfway through).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
try {
  require('node-gyp-build').path(root);
  process.exit(0); // a prebuilt or already built addon
} catch {
  // none: compile
}
const tools = [
  ['g++', 'g++'],
  ['make', 'make'],
  ['python3', 'python3'],
];
const missing = tools.filter(([cmd]) => spawnSync('/bin/sh', ['-c', `command -v ${cmd}`]).status !== 0);
if (missing.length > 0) {
  process.stderr.write(
    `uvtep: no prebuilt addon for ${process.platform}-${process.arch} here, and compiling it needs ${missing.map(([c]) => c).join(', ')}.\n` +
      `Install them (Debian/Ubuntu: apt-get install ${missing.map(([, p]) => p).join(' ')}) and run npm install again,\n` +
      `or install uvtep from its npm package, which carries a prebuilt addon for linux-x64 and linux-arm64.\n`,
  );
  process.exit(1);
}
// npm runs install scripts with its own node-gyp (npm_config_node_gyp) and node-gyp-bin on PATH
const gyp = process.env.npm_config_node_gyp;
const r = gyp ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: 'inherit' }) : spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
