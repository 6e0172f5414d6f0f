// What a uvtep process loads: the etcd client (with gRPC), prom-client and yaml hold about 40 MB
// of resident memory together, so they are loaded by the features that use them (--etcd,
// --metrics, a YAML --config), not by every uvtep. Checked in a fresh node over the built dist/
// (npm test builds it first), by the CommonJS module cache those packages land in.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const HEAVY = /node_modules\/(etcd3|@grpc|cockatiel|prom-client|yaml)\//;

/** Runs `body` (an ES module) in a fresh node; returns the heavy packages it left in the module cache. */
function loaded(body: string): string[] {
  const script = `import { createRequire } from 'node:module';\n${body}\nconst seen = new Set(Object.keys(createRequire(import.meta.url).cache).map((k) => ${HEAVY}.exec(k)?.[1]).filter(Boolean));\nconsole.log(JSON.stringify([...seen].sort()));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as string[];
}

const dir = mkdtempSync(path.join(tmpdir(), 'uvt-footprint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('footprint', () => {
  it('the CLI and the library load none of them', () => {
    expect(loaded(`await import('./dist/cli/main.js'); await import('./dist/index.js');`)).toEqual([]);
  });

  it('each is loaded by the feature that uses it', () => {
    const yaml = path.join(dir, 'c.yaml');
    writeFileSync(yaml, 'vni: 1\n');
    expect(loaded(`const { metricsRegistry } = await import('./dist/index.js'); metricsRegistry({ list: () => [] });`)).toEqual(['prom-client']);
    expect(loaded(`const { EtcdAgent } = await import('./dist/index.js'); new EtcdAgent({ endpoints: ['http://127.0.0.1:1'] }).close();`)).toEqual(
      expect.arrayContaining(['cockatiel', 'etcd3']),
    );
    expect(loaded(`const { loadConfigFile } = await import('./dist/cli/config-file.js'); const { Command } = await import('commander'); try { loadConfigFile(${JSON.stringify(yaml)}, new Command()); } catch {}`)).toEqual(['yaml']); // parsed, then refused: no options on a bare Command
  });
});
