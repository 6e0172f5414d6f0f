// The underlay source filter: prefix matches, no cache (a spoofed flood can evict nothing).
import { describe, expect, it } from 'vitest';
import { SourceFilter } from '../../src/allow.js';
import { checkAllowCidr } from '../../src/allow.js';
import { resolveConfig } from '../../src/config.js';

const filter = (...cidrs: string[]) => new SourceFilter(cidrs.map((c) => checkAllowCidr(c)));

describe('SourceFilter', () => {
  it.each([
    [['198.51.100.0/24'], '198.51.100.7', true],
    [['198.51.100.0/24'], '198.51.101.7', false],
    [['198.51.100.2'], '198.51.100.2', true],
    [['198.51.100.2'], '198.51.100.3', false],
    [['0.0.0.0/0'], '203.0.113.9', true],
    [['198.51.100.128/25'], '198.51.100.127', false],
    [['198.51.100.128/25'], '198.51.100.255', true],
    [['2001:db8::/32'], '2001:db8:1::5', true],
    [['2001:db8::/32'], '2001:db9::5', false],
    [['2001:db8::2'], '2001:db8::2', true],
    [['2001:db8::2'], '2001:db8::3', false],
    [['2001:db8:0:1::/64'], '2001:db8:0:1:ffff:ffff:ffff:ffff', true],
    [['2001:db8:0:1::/64'], '2001:db8:0:2::', false],
    [['::/0'], '::1', true],
    [['198.51.100.0/24'], '::ffff:198.51.100.7', true], // IPv4-mapped
    [['198.51.100.0/24'], '::ffff:198.51.101.7', false],
    [['2001:db8::/32', '198.51.100.0/24'], '198.51.100.1', true],
    [['198.51.100.0/24'], '2001:db8::1', false],
  ])('%j lets %s in: %s', (cidrs, src, want) => {
    expect(filter(...(cidrs as string[])).allowed(src as string)).toBe(want);
  });

  it.each(['', '1.2.3', '1.2.3.4.5', '256.1.1.1', 'a.b.c.d', '2001:db8:::1', '2001:db8::1::2', '12345::', ':', 'hello', '1:2:3:4:5:6:7:8:9'])('refuses the malformed %j', (src) => {
    expect(filter('0.0.0.0/0', '::/0').allowed(src)).toBe(false);
  });

  it('a flood of 100k spoofed sources keeps no state: the answer for real peers never changes', () => {
    const f = filter('198.51.100.2', '2001:db8::2');
    for (let i = 0; i < 100_000; i++) expect(f.allowed(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)).toBe(false);
    expect(f.allowed('198.51.100.2')).toBe(true);
    expect(f.allowed('2001:db8::2')).toBe(true);
    expect(Object.keys(f)).not.toContain('memo'); // nothing to fill, nothing to evict
  });
});

describe('allowFrom: peers', () => {
  it('peers means the configured remotes, each as a host prefix; CIDRs may be added', () => {
    const c = resolveConfig({ vni: 1, remotes: ['198.51.100.2', '198.51.100.3:4790'], allowFrom: ['peers', '203.0.113.0/24'] });
    expect(c.allowFrom.map((a) => a.text)).toEqual(['198.51.100.2/32', '198.51.100.3/32', '203.0.113.0/24']);
    const v6 = resolveConfig({ vni: 1, remotes: ['2001:db8::2'], allowFrom: ['peers'] });
    expect(v6.allowFrom.map((a) => a.text)).toEqual(['2001:db8::2/128']);
  });

  it('peers without remotes is refused, naming the option', () => {
    expect(() => resolveConfig({ vni: 1, allowFrom: ['peers'] })).toThrow(expect.objectContaining({ option: 'allowFrom', message: expect.stringMatching(/peers.*--remote/) }));
  });
});
