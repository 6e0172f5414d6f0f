// The option table is the one list of options: every option is documented in docs/cli.md, the
// derived maps agree with it, and the run options put each value where the table says.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { commanderOptions, FLAG, IDENTITY, OPTIONS, PROCESS_OPTIONS, REPEATABLE, specOf, type RunOpts } from '../../src/cli/options.js';

const doc = readFileSync(new URL('../../docs/cli.md', import.meta.url), 'utf8');

describe('the option table', () => {
  it('documents every option in docs/cli.md', () => {
    const flags = commanderOptions('all', false).map((o) => o.long!);
    expect(flags.length).toBeGreaterThan(45);
    expect(flags.filter((f) => !doc.includes(f))).toEqual([]);
  });

  it('derives the flag map, the process options and the repeatable ones', () => {
    expect(FLAG.dstPort).toBe('--dstport');
    expect(FLAG.remotes).toBe('--remote');
    expect(FLAG.addresses).toBe('--address');
    expect(FLAG.learning).toBe('--no-learning');
    expect(FLAG.strictReserved).toBe('--reserved-bits');
    expect([...REPEATABLE].sort()).toEqual(['address', 'allowFrom', 'etcd', 'remote']);
    for (const k of ['etcd', 'control', 'metrics', 'transport', 'flannel']) expect(PROCESS_OPTIONS.has(k)).toBe(true);
    expect(PROCESS_OPTIONS.has('vni')).toBe(false);
    expect(IDENTITY).toContain('vni');
    expect(IDENTITY).not.toContain('dstport');
    // --control <path> has its --no-control
    expect(commanderOptions('process', true).map((o) => o.long)).toContain('--no-control');
  });

  it('specOf puts each value where the table says', () => {
    const o = {
      vni: 7, remote: ['198.51.100.2'], dstport: 8472, ageing: 30, learning: false, maxAddress: 10, reservedBits: 'strict', tos: 'inherit', df: 'set',
      gro: false, gso: true, tso: false, sndbuf: 1 << 20, rcvbuf: 1 << 20, busyPoll: 0, name: 'vx7', mac: '02:00:00:00:00:07', address: ['10.0.0.1/24'], persist: true,
      transport: 'auto', logLevel: 'info', etcdPrefix: '/x', etcdTtl: 10, flannelPrefix: '/f', subnetFile: '/s',
    } as const satisfies Partial<RunOpts>;
    const spec = specOf(o as unknown as RunOpts);
    expect(spec.vtep).toMatchObject({ vni: 7, remotes: ['198.51.100.2'], dstPort: 8472, ageing: 30, learning: false, maxAddress: 10, reservedBits: 'strict', tos: 'inherit', df: 'set', gro: false, gso: true });
    expect(spec.tap).toEqual({ name: 'vx7', mac: '02:00:00:00:00:07', addresses: ['10.0.0.1/24'], persist: true, gro: false, tso: false, mtu: 1450 });
    expect(spec.plane).toBeUndefined();
    // a process option never reaches the VTEP's options
    expect(Object.keys(spec.vtep)).not.toContain('etcdPrefix');
    expect(Object.keys(OPTIONS).length).toBe(commanderOptions('all', false).filter((x) => !x.negate || x.long !== '--no-control').length);
  });
});
