import { describe, expect, it, vi } from 'vitest';
import { Fdb, FDB_AGE_DEFAULT_S, LearnResult, FDB_MAX_DEFAULT } from '../../src/fdb.js';
import { MAC_ZERO } from '../../src/wire/ethernet.js';
import { UvtepError } from '../../src/errors.js';
import { mac } from '../helpers/frames.js';

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const A = mac('02:00:00:00:00:0a');
const B = mac('02:00:00:00:00:0b');

describe('Fdb learning (vxlan_snoop)', () => {
  it('learns source MAC -> outer source IP at the configured destination port', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    const learned = vi.fn();
    fdb.on('learned', learned);
    expect(fdb.learn(A, '198.51.100.2')).toBe(LearnResult.Learned);
    const e = fdb.lookup(A)!;
    expect(e.remotes).toEqual([{ address: '198.51.100.2', port: 4789, family: 4, key: '198.51.100.2|4789', vni: -1 }]);
    expect(e.isStatic).toBe(false);
    expect(learned).toHaveBeenCalledWith(A, e.remotes[0]);
    expect(fdb.learn(A, '198.51.100.2')).toBe(LearnResult.Known);
    expect(fdb.size).toBe(1);
  });

  it('migrates a dynamic entry to a new remote', () => {
    const fdb = new Fdb({ dstPort: 8472 });
    const migrated = vi.fn();
    fdb.on('migrated', migrated);
    fdb.learn(A, '198.51.100.2');
    expect(fdb.learn(A, '198.51.100.3')).toBe(LearnResult.Migrated);
    expect(fdb.lookup(A)!.remotes[0]!.address).toBe('198.51.100.3');
    expect(migrated).toHaveBeenCalledTimes(1);
    expect(migrated.mock.calls[0]![1].address).toBe('198.51.100.2');
    expect(migrated.mock.calls[0]![2].port).toBe(8472);
  });

  it('never migrates a static entry and reports the conflict', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    fdb.add(A, fdb.remote('198.51.100.2'));
    expect(fdb.learn(A, '198.51.100.66')).toBe(LearnResult.StaticConflict);
    expect(fdb.lookup(A)!.remotes[0]!.address).toBe('198.51.100.2');
    expect(fdb.learn(A, '198.51.100.2')).toBe(LearnResult.Known);
  });

  it.each([
    ['zero', 0],
    ['broadcast', 0xffffffffffff],
    ['IPv4 multicast', mac('01:00:5e:00:00:01')],
    ['IPv6 multicast', mac('33:33:00:00:00:01')],
  ])('never learns a %s source MAC', (_n, m) => {
    const fdb = new Fdb({ dstPort: 4789 });
    expect(fdb.learn(m, '198.51.100.2')).toBe(LearnResult.Invalid);
    expect(fdb.size).toBe(0);
  });

  it('interns remotes: one object per address and port', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    fdb.learn(A, '198.51.100.2');
    fdb.learn(B, '198.51.100.2');
    expect(fdb.lookup(A)!.remotes[0]).toBe(fdb.lookup(B)!.remotes[0]);
    expect(fdb.remote('2001:db8::2', 4790).family).toBe(6);
  });
});

describe('Fdb ageing', () => {
  it('ages dynamic entries after 300 s by default, keeps static ones', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now });
    expect(fdb.ageingMs).toBe(FDB_AGE_DEFAULT_S * 1000);
    const aged = vi.fn();
    fdb.on('aged', aged);
    fdb.learn(A, '198.51.100.2');
    fdb.add(B, fdb.remote('198.51.100.3'));
    c.advance(299_999);
    expect(fdb.sweep()).toBe(0);
    c.advance(1);
    expect(fdb.sweep()).toBe(1);
    expect(fdb.lookup(A)).toBeUndefined();
    expect(fdb.lookup(B)).toBeDefined();
    expect(aged).toHaveBeenCalledWith(A, expect.objectContaining({ address: '198.51.100.2' }));
  });

  it('traffic refreshes a learned entry', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now, ageingMs: 10_000 });
    fdb.learn(A, '198.51.100.2');
    c.advance(9_000);
    fdb.learn(A, '198.51.100.2');
    c.advance(9_000);
    expect(fdb.sweep()).toBe(0);
    c.advance(1_000);
    expect(fdb.sweep()).toBe(1);
  });

  it('ageing 0 never ages', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now, ageingMs: 0 });
    fdb.learn(A, '198.51.100.2');
    c.advance(1e9);
    expect(fdb.sweep()).toBe(0);
  });

  it('the sweep timer runs on its interval and never keeps the process alive', () => {
    vi.useFakeTimers();
    try {
      let t = 0;
      const fdb = new Fdb({ dstPort: 4789, clock: () => t, ageingMs: 1000, sweepIntervalMs: 100 });
      fdb.learn(A, '198.51.100.2');
      fdb.startAgeing();
      t = 1000;
      vi.advanceTimersByTime(100);
      expect(fdb.lookup(A)).toBeUndefined();
      fdb.stopAgeing();
    } finally {
      vi.useRealTimers();
    }
    const fdb = new Fdb({ dstPort: 4789 });
    fdb.startAgeing();
    const timer = (fdb as unknown as { timer: NodeJS.Timeout }).timer;
    expect(timer.hasRef()).toBe(false);
    fdb.stopAgeing();
  });
});

describe('Fdb maxAddress', () => {
  it('defaults to a finite cap', () => {
    expect(new Fdb({ dstPort: 4789 }).maxAddress).toBe(FDB_MAX_DEFAULT);
    expect(FDB_MAX_DEFAULT).toBeGreaterThan(0);
  });

  it('refuses new MACs when full, counts them, keeps known ones working', () => {
    const fdb = new Fdb({ dstPort: 4789, maxAddress: 3 });
    fdb.append(MAC_ZERO, fdb.remote('198.51.100.9')); // the flood entry does not count
    for (let i = 1; i <= 3; i++) expect(fdb.learn(i * 2 ** 41, '198.51.100.2')).toBe(LearnResult.Learned);
    expect(fdb.learn(4 * 2 ** 41, '198.51.100.2')).toBe(LearnResult.Full);
    expect(fdb.learn(5 * 2 ** 41, '198.51.100.2')).toBe(LearnResult.Full);
    expect(fdb.learnRefused).toBe(2);
    expect(fdb.size).toBe(3);
    expect(fdb.learn(2 ** 41, '198.51.100.2')).toBe(LearnResult.Known);
    expect(fdb.learn(2 ** 41, '198.51.100.7')).toBe(LearnResult.Migrated);
    expect(() => fdb.add(6 * 2 ** 41, fdb.remote('198.51.100.3'))).toThrow(expect.objectContaining({ code: 'UVTEP_ERR_FDB_FULL' }));
  });

  it('0 is unlimited', () => {
    const fdb = new Fdb({ dstPort: 4789, maxAddress: 0 });
    for (let i = 1; i <= 50_000; i++) fdb.learn(i * 2 ** 41 + i, '198.51.100.2');
    expect(fdb.size).toBe(50_000);
  });
});

describe('Fdb flood list and bridge-fdb API', () => {
  it('all-zero entries are the flood list; several allowed; append is idempotent', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    const r1 = fdb.remote('198.51.100.2');
    const r2 = fdb.remote('198.51.100.3', 4790);
    fdb.append(MAC_ZERO, r1);
    fdb.append(MAC_ZERO, r2);
    fdb.append(MAC_ZERO, r1);
    expect(fdb.flood).toEqual([r1, r2]);
    expect(fdb.size).toBe(0);
    expect(fdb.delete(MAC_ZERO, r1)).toBe(true);
    expect(fdb.flood).toEqual([r2]);
    expect(fdb.delete(MAC_ZERO, r2)).toBe(true);
    expect(fdb.flood).toEqual([]);
    expect(fdb.delete(MAC_ZERO)).toBe(false);
  });

  it('add fails on an existing MAC; replace overwrites; delete removes', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    const r1 = fdb.remote('198.51.100.2');
    const r2 = fdb.remote('198.51.100.3');
    fdb.add(A, r1);
    expect(() => fdb.add(A, r2)).toThrow(UvtepError);
    expect(() => fdb.add(A, r2)).toThrow(expect.objectContaining({ code: 'UVTEP_ERR_FDB_EXISTS' }));
    fdb.replace(A, r2, { static: false });
    expect(fdb.lookup(A)!.remotes).toEqual([r2]);
    expect(fdb.lookup(A)!.isStatic).toBe(false);
    expect(fdb.delete(A)).toBe(true);
    expect(fdb.delete(A)).toBe(false);
  });

  it('flush removes dynamic entries by default, static ones on request, never the default destinations (as the kernel)', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    fdb.learn(A, '198.51.100.2');
    fdb.add(B, fdb.remote('198.51.100.3'));
    const dflt = fdb.remote('198.51.100.4');
    fdb.append(MAC_ZERO, dflt);
    expect(fdb.flush()).toBe(1);
    expect(fdb.lookup(B)).toBeDefined();
    expect(fdb.flood.length).toBe(1);
    expect(fdb.flush({ dynamicOnly: false })).toBe(1);
    expect(fdb.lookup(B)).toBeUndefined();
    expect(fdb.flood).toEqual([dflt]); // broadcast keeps flowing to --remote
    expect(fdb.remote('198.51.100.4')).toBe(dflt); // still the same interned remote
  });
});

describe('Fdb remote table under spoofing', () => {
  it('a MAC moved by 100k spoofed sources leaves a bounded table of remotes, freed with the entry', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    const flood = fdb.remote('198.51.100.9');
    fdb.append(MAC_ZERO, flood);
    for (let i = 0; i < 100_000; i++) fdb.learn(A, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(fdb.remoteCount).toBeLessThanOrEqual(2 * fdb.size + 1024 + 1);
    expect(fdb.lookup(A)!.remotes[0]!.address).toBe('10.1.134.159'); // the last one
    fdb.delete(A);
    expect(fdb.remoteCount).toBe(1); // only the flood destination is left
    expect(fdb.flood).toEqual([flood]);
  });

  it('100k spoofed sources against a full table intern nothing lasting; ageing frees what entries used', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, maxAddress: 100, clock: c.now });
    for (let i = 0; i < 100_000; i++) fdb.learn(0x020000000000 + 2 * i, `2001:db8::${(i + 1).toString(16)}`);
    expect(fdb.size).toBe(100);
    expect(fdb.remoteCount).toBeLessThanOrEqual(2 * 100 + 1024 + 1);
    c.advance(FDB_AGE_DEFAULT_S * 1000 + 1);
    expect(fdb.sweep()).toBe(100);
    expect(fdb.remoteCount).toBe(0);
    fdb.learn(A, '198.51.100.2');
    fdb.flush();
    expect(fdb.remoteCount).toBe(0);
  });
});

describe('Fdb listing', () => {
  it('list prints one row per destination, like bridge fdb show', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now });
    fdb.learn(A, '2001:db8::2');
    fdb.append(MAC_ZERO, fdb.remote('2001:db8::3'), { origin: 'config' });
    fdb.append(MAC_ZERO, fdb.remote('2001:db8::4', 8472));
    c.advance(12_500);
    expect(fdb.list()).toEqual([
      { mac: '02:00:00:00:00:0a', dst: '2001:db8::2', port: 4789, static: false, ageS: 12, origin: 'learned' },
      { mac: '00:00:00:00:00:00', dst: '2001:db8::3', port: 4789, static: true, ageS: 12, origin: 'config' },
      { mac: '00:00:00:00:00:00', dst: '2001:db8::4', port: 8472, static: true, ageS: 12, origin: 'control' },
    ]);
  });

  it('each destination keeps its origin through append, delete, replace and migration', () => {
    const fdb = new Fdb({ dstPort: 4789 });
    fdb.append(MAC_ZERO, fdb.remote('198.51.100.2'), { origin: 'config' });
    fdb.append(MAC_ZERO, fdb.remote('198.51.100.3'), { origin: 'etcd' });
    fdb.append(MAC_ZERO, fdb.remote('198.51.100.4'));
    fdb.append(MAC_ZERO, fdb.remote('198.51.100.2'), { origin: 'control' }); // already there: keeps its origin
    fdb.delete(MAC_ZERO, fdb.remote('198.51.100.3'));
    expect(fdb.list().map((r) => [r.dst, r.origin])).toEqual([
      ['198.51.100.2', 'config'],
      ['198.51.100.4', 'control'],
    ]);
    fdb.learn(B, '198.51.100.9');
    fdb.replace(B, fdb.remote('198.51.100.8'), { static: false, origin: 'etcd' });
    expect(fdb.list().find((r) => r.mac === '02:00:00:00:00:0b')).toMatchObject({ dst: '198.51.100.8', origin: 'etcd' });
    fdb.flush();
    fdb.learn(B, '198.51.100.9');
    fdb.learn(B, '198.51.100.7'); // migrates: learned again
    expect(fdb.list().find((r) => r.mac === '02:00:00:00:00:0b')).toMatchObject({ dst: '198.51.100.7', origin: 'learned' });
  });
});

describe('Fdb hooks for a cache of its lookups (the flow cache)', () => {
  it('onChange after every change that redirects or removes an entry; never for a new entry or a refresh', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now, ageingMs: 1000 });
    const changes = vi.fn();
    fdb.onChange = changes;
    const n = () => changes.mock.calls.length;
    fdb.learn(A, '198.51.100.2');
    expect(fdb.learn(A, '198.51.100.2')).toBe(LearnResult.Known);
    fdb.add(B, fdb.remote('198.51.100.3'));
    expect(n()).toBe(0);
    expect(fdb.learn(A, '198.51.100.4')).toBe(LearnResult.Migrated);
    expect(n()).toBe(1);
    fdb.append(B, fdb.remote('198.51.100.5'));
    expect(n()).toBe(2);
    fdb.replace(B, fdb.remote('198.51.100.6'));
    expect(n()).toBe(3);
    fdb.delete(B);
    expect(n()).toBe(4);
    expect(fdb.delete(B)).toBe(false); // nothing there: no change
    expect(n()).toBe(4);
    expect(fdb.flush()).toBe(1); // A
    expect(n()).toBe(5);
    expect(fdb.flush()).toBe(0);
    expect(n()).toBe(5);
    fdb.learn(A, '198.51.100.2');
    c.advance(2000);
    expect(fdb.sweep()).toBe(1);
    expect(n()).toBe(6);
  });

  it('beforeAgeRead runs before a sweep and a listing, and touch restarts a dynamic entry\'s age', () => {
    const c = clock();
    const fdb = new Fdb({ dstPort: 4789, clock: c.now, ageingMs: 1000 });
    fdb.learn(A, '198.51.100.2');
    fdb.add(B, fdb.remote('198.51.100.3'), { static: true });
    // what a cache reports as used since the last read: A
    fdb.beforeAgeRead = () => fdb.touch(A);
    c.advance(5000);
    expect(fdb.list().find((r) => r.mac === '02:00:00:00:00:0a')!.ageS).toBe(0);
    c.advance(5000);
    expect(fdb.sweep()).toBe(0); // touched first: A stays
    expect(fdb.lookup(A)).toBeDefined();
    fdb.beforeAgeRead = undefined;
    c.advance(5000);
    expect(fdb.sweep()).toBe(1);
    expect(fdb.lookup(A)).toBeUndefined();
    fdb.touch(B); // static: never ages, touch changes nothing
    expect(fdb.lookup(B)!.isStatic).toBe(true);
  });
});
