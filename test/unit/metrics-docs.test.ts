// Every metric uvtep exports is documented in docs/control.md (the table users read), and every
// drop reason has its series: a new counter cannot be added without its documentation.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createVtep, MemoryDevice } from '../../src/index.js';
import { metricsRegistry } from '../../src/metrics.js';
import { DROP_REASONS, type VtepStats } from '../../src/vtep.js';
import { statsLines, summaryLine, transportCounters, UDP_COUNTERS, VTEP_COUNTERS } from '../../src/counters.js';

const doc = readFileSync(new URL('../../docs/control.md', import.meta.url), 'utf8');

describe('metrics and their documentation', () => {
  it('each exported metric name appears in docs/control.md', async () => {
    const vtep = createVtep({ vni: 9, local: '127.0.0.1', listenPort: 0, frameDevice: new MemoryDevice() });
    await vtep.start();
    try {
      const etcd = { up: true, requests: 1, errors: 0, leases: 1, resyncs: 1, events: 0, members: 2 };
      const reg = metricsRegistry({ list: () => [{ name: 'vx9', vtep }], etcd: () => etcd }, { processMetrics: false });
      const metrics = await reg.getMetricsAsJSON();
      const names = metrics.map((m) => m.name);
      expect(names.length).toBeGreaterThan(30);
      const undocumented = names.filter((n) => !doc.includes(`\`${n}`));
      expect(undocumented).toEqual([]);
      // the per-reason series carry every drop reason of the engine
      const drops = metrics.find((m) => m.name === 'uvtep_drops_total')!;
      expect(new Set(drops.values.map((v) => v.labels.reason))).toEqual(new Set(DROP_REASONS));
      expect(metrics.find((m) => m.name === 'uvtep_etcd_members')!.values[0]!.value).toBe(2);
    } finally {
      await vtep.close();
    }
  });

  it('every counter of the tables reaches uvtep stats, and the summary ones the exit summary', async () => {
    const vtep = createVtep({ vni: 9, local: '127.0.0.1', listenPort: 0, frameDevice: new MemoryDevice() });
    await vtep.start();
    const s = vtep.stats;
    await vtep.close();
    // a distinct value in every numeric field, so each counter's place in the text is its own
    let n = 1000;
    const fill = (o: Record<string, unknown>) => {
      for (const k of Object.keys(o)) if (typeof o[k] === 'number') o[k] = n++;
    };
    fill(s as unknown as Record<string, unknown>);
    fill(s.io as unknown as Record<string, unknown>);
    s.drops.TxError = 7;
    const text = statsLines(s as VtepStats).join('\n');
    for (const d of VTEP_COUNTERS) expect(text).toContain(`${d.read(s)} ${d.words}`);
    for (const d of UDP_COUNTERS) expect(text).toContain(`${d.read(transportCounters(s))} ${d.words}`);
    expect(text).toContain('TxError 7');
    const sum = summaryLine(s);
    for (const d of VTEP_COUNTERS) expect(sum.includes(`${d.read(s)} ${d.words}`)).toBe(d.summary === true);
    expect(sum).toContain('TxError=7');
  });
});
