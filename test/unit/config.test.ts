import { describe, expect, it } from 'vitest';
import { resolveConfig, type VtepOptions } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

describe('resolveConfig defaults', () => {
  it('matches ip link add type vxlan defaults where uvtep follows them', () => {
    const c = resolveConfig({ vni: 1, remotes: ['172.31.0.107'] });
    expect(c).toMatchObject({
      vni: 1,
      family: 4,
      remotes: [{ address: '172.31.0.107', port: 4789 }],
      local: '0.0.0.0',
      dstPort: 4789,
      listenPort: 4789,
      ageingS: 300,
      learning: true,
      strictReserved: false,
      underlayMtu: 1500,
      tapMtu: 1450,
      maxFrame: 1464,
    });
  });

  it('IPv6 underlay: TAP MTU 1430, canonical addresses, ports in brackets', () => {
    const c = resolveConfig({ vni: 7, remotes: ['2001:DB8::0:2', '[2001:db8::3]:4790'], dstPort: 8472 });
    expect(c.family).toBe(6);
    expect(c.local).toBe('::');
    expect(c.tapMtu).toBe(1430);
    expect(c.maxFrame).toBe(1444);
    expect(c.remotes).toEqual([
      { address: '2001:db8::2', port: 8472 },
      { address: '2001:db8::3', port: 4790 },
    ]);
  });

  it('deduplicates remotes', () => {
    expect(resolveConfig({ vni: 1, remotes: ['198.51.100.2', '198.51.100.2:4789'] }).remotes).toHaveLength(1);
  });

  it('tunnel GSO: auto by default, true and false as on and off; auto goes along with inline and no flow cache (it is then off)', () => {
    expect(resolveConfig({ vni: 1 }).tunnelGso).toBe('auto');
    expect(resolveConfig({ vni: 1, tunnelGso: true }).tunnelGso).toBe('on');
    expect(resolveConfig({ vni: 1, tunnelGso: false }).tunnelGso).toBe('off');
    expect(resolveConfig({ vni: 1, tunnelGso: 'off' }).tunnelGso).toBe('off');
    expect(resolveConfig({ vni: 1, datapath: 'inline' }).tunnelGso).toBe('auto');
    expect(resolveConfig({ vni: 1, flowCache: false, tunnelGso: 'auto' }).tunnelGso).toBe('auto');
  });
});

describe('resolveConfig errors name the option and what is accepted', () => {
  const cases: Array<[string, VtepOptions, string, string, RegExp]> = [
    ['VNI too big', { vni: 16777216 }, 'vni', 'UVTEP_ERR_INVALID_VNI', /0 to 16777215.*16777216/],
    ['VNI negative', { vni: -1 }, 'vni', 'UVTEP_ERR_INVALID_VNI', /0 to 16777215/],
    ['VNI missing', {} as VtepOptions, 'vni', 'UVTEP_ERR_INVALID_VNI', /undefined/],
    ['remote short', { vni: 1, remotes: ['1.2.3'] }, 'remote', 'UVTEP_ERR_INVALID_ADDRESS', /IPv4 or IPv6.*"1\.2\.3"/],
    ['remote hostname', { vni: 1, remotes: ['example.org'] }, 'remote', 'UVTEP_ERR_INVALID_ADDRESS', /example\.org/],
    ['remote multicast', { vni: 1, remotes: ['239.1.1.1'] }, 'remote', 'UVTEP_ERR_INVALID_ADDRESS', /multicast/],
    ['remote port 0', { vni: 1, remotes: ['198.51.100.2:0'] }, 'remote', 'UVTEP_ERR_INVALID_PORT', /1 to 65535/],
    ['group unicast', { vni: 1, group: '198.51.100.2' }, 'group', 'UVTEP_ERR_INVALID_ADDRESS', /multicast/],
    ['mixed families', { vni: 1, remotes: ['198.51.100.2', '2001:db8::2'] }, 'remote', 'UVTEP_ERR_FAMILY_MISMATCH', /all be IPv4 or all IPv6/],
    ['local multicast', { vni: 1, local: 'ff02::1' }, 'local', 'UVTEP_ERR_INVALID_ADDRESS', /unicast/],
    ['dstport 0', { vni: 1, dstPort: 0 }, 'dstPort', 'UVTEP_ERR_INVALID_PORT', /1 to 65535/],
    ['dstport 70000', { vni: 1, dstPort: 70000 }, 'dstPort', 'UVTEP_ERR_INVALID_PORT', /70000/],
    ['ttl 256', { vni: 1, ttl: 256 }, 'ttl', 'UVTEP_ERR_INVALID_OPTION', /0 to 255/],
    ['ageing -1', { vni: 1, ageing: -1 }, 'ageing', 'UVTEP_ERR_INVALID_OPTION', /seconds/],
    ['reservedBits', { vni: 1, reservedBits: 'loose' as never }, 'reservedBits', 'UVTEP_ERR_INVALID_OPTION', /"ignore" or "strict"/],
    ['mac multicast', { vni: 1, mac: '01:00:5e:00:00:01' }, 'mac', 'UVTEP_ERR_INVALID_MAC', /unicast/],
    ['mac malformed', { vni: 1, mac: '02:00' }, 'mac', 'UVTEP_ERR_INVALID_MAC', /02:00:00:00:00:0a/],
    ['underlay mtu', { vni: 1, underlayMtu: 100 }, 'underlayMtu', 'UVTEP_ERR_INVALID_OPTION', /138 to 65535/],
    ['allowFrom malformed', { vni: 1, allowFrom: ['198.51.100.0/33'] }, 'allowFrom', 'UVTEP_ERR_INVALID_ADDRESS', /address or CIDR/],
    ['learning not boolean', { vni: 1, learning: 'no' as never }, 'learning', 'UVTEP_ERR_INVALID_OPTION', /true or false/],
    ['datapath unknown', { vni: 1, datapath: 'kernel' as never }, 'datapath', 'UVTEP_ERR_INVALID_OPTION', /"process" or "inline", got "kernel"/],
    ['tunnelGso on inline', { vni: 1, tunnelGso: 'on', datapath: 'inline' }, 'tunnelGso', 'UVTEP_ERR_INVALID_OPTION', /datapath process: not with datapath "inline"/],
    ['tunnelGso without the cache', { vni: 1, tunnelGso: true, flowCache: false }, 'tunnelGso', 'UVTEP_ERR_INVALID_OPTION', /flow cache: not with flowCache false/],
    ['tunnelGso not a mode', { vni: 1, tunnelGso: 'yes' as never }, 'tunnelGso', 'UVTEP_ERR_INVALID_OPTION', /expected "auto", "on", "off" or a boolean, got "yes"/],
  ];
  it.each(cases)('%s', (_n, opts, option, code, msg) => {
    let err: unknown;
    try {
      resolveConfig(opts);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ option, code, name: 'ConfigError' });
    expect((err as Error).message).toMatch(msg);
    expect((err as Error).message.startsWith(option + ':')).toBe(true);
  });
});
