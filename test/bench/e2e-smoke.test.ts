// The e2e benchmark harness in smoke mode (1 s per measurement, 1 repetition), so it cannot rot.
// Asserts that every case produced numbers, not what the numbers are.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { sh } from '../../src/lab/testbed.js';
import { describeNs } from '../integration/setup.js';

describeNs('e2e benchmark, smoke mode', () => {
  it('runs every case and reports numbers for each', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'uvt-bench-'));
    try {
      const r = await sh(process.execPath, [path.resolve('bench/e2e/run.js'), '--smoke', '--out', out], { timeoutMs: 400_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/\[13\/13\] socat with the same ballast in 2 MB pages, repetition 1\/1/);
      const j = JSON.parse(readFileSync(path.join(out, 'e2e-smoke.json'), 'utf8')) as { median: Record<string, Record<string, number>> };
      expect(Object.keys(j.median)).toEqual(['bare', 'kernel', 'uvtep', 'uvtep-kernel', 'uvtep-kernel-off', 'uvtep-off', 'uvtep-dgram', 'uvtep-busy', 'uvtep-nofc', 'uvtep-inline', 'socat', 'socat-ballast', 'socat-ballast-huge']);
      for (const [name, m] of Object.entries(j.median)) {
        for (const k of ['tcp1', 'tcp1rev', 'tcp4', 'udpPps', 'udpArrived', 'rttAvg', 'rttP50', 'rttP99', 'rttIdle', 'machineBusy', 'coreSecPerGB']) {
          expect(Number.isFinite(m[k]) && m[k]! > 0, `${name}.${k} = ${m[k]}`).toBe(true);
        }
        if (name.startsWith('uvtep') || name.startsWith('socat')) {
          expect(m.cpuPct! > 0 && m.rssMb! > 0, `${name} cpu/rss`).toBe(true);
          // run time during idle pings less as long without: a difference of two measurements
          expect(Number.isFinite(m.cpuPerPing), `${name}.cpuPerPing = ${m.cpuPerPing}`).toBe(true);
        }
        if (name.startsWith('uvtep')) {
          for (const k of ['dgPerSend', 'dgPerRecv', 'framesPerRead', 'framesPerWrite']) expect(m[k]! >= 1, `${name}.${k} = ${m[k]}`).toBe(true);
          // the rows with the datapath process's flow cache sent super-frames whole by default
          // (tunnel GSO auto: nothing in the bench's namespaces holds it back); no other row did
          if (name === 'uvtep' || name === 'uvtep-kernel' || name === 'uvtep-busy') expect(m.tunnelSends, `${name}.tunnelSends`).toBeGreaterThan(0);
          else expect(m.tunnelSends, `${name}.tunnelSends`).toBe(0);
        }
      }
      // the ballast row holds the resident size of uvtep's Node process (the inline case's; the same socat otherwise)
      const node = j.median['uvtep-inline']!.rssMb!;
      expect(j.median['socat-ballast']!.rssMb! - j.median.socat!.rssMb!).toBeGreaterThan(0.5 * node);
      expect(j.median['socat-ballast-huge']!.rssMb! - j.median.socat!.rssMb!).toBeGreaterThan(0.5 * node);
      // ... and that row's ballast is in 2 MB pages, the other's is not
      expect(j.median['socat-ballast-huge']!.hugeMb!).toBeGreaterThan(0.5 * node);
      expect(j.median['socat-ballast']!.hugeMb!).toBeLessThan(0.1 * node);
      for (const name of Object.keys(j.median)) expect(Number.isFinite(j.median[name]!.rttOver1ms), `${name}.rttOver1ms`).toBe(true);
      // the machine facts the RTT rows depend on
      const machine = (j as unknown as { machine: { thp: string; damon: string } }).machine;
      expect(machine.thp).toMatch(/^(always|madvise)$/);
      expect(machine.damon).toMatch(/^(on \(.+\)|off|absent)$/);
      // many VNIs on one port: the kernel's and uvtep's aggregate, and their ratio
      const v = (j as unknown as { manyVnis: { vnis: number; median: { kernel: number; uvtep: number }; ratio: number } }).manyVnis;
      expect(v.vnis).toBe(4);
      expect(v.median.kernel > 0 && v.median.uvtep > 0 && Number.isFinite(v.ratio), JSON.stringify(v)).toBe(true);
      expect(r.stdout).toMatch(/Many VNIs on one port/);
      expect(r.stdout).toMatch(/Ratio to the kernel VTEP measured in the same run/);
      expect(r.stdout).toMatch(/core-seconds per GB, ratio to the kernel/);
      expect(r.stdout).toMatch(/64-byte UDP handed to h2/);
      expect(readFileSync(path.join(out, 'e2e-smoke.svg'), 'utf8')).toMatch(/^<svg/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 430_000);
});
