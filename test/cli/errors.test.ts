// Every bad option: exit 2 and a message naming the option and what it accepts. These run
// before any device or socket is touched, so they need no privileges.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { sh, uvtepBin } from '../../src/lab/testbed.js';

const run = (...args: string[]) => sh(process.execPath, [uvtepBin(), ...args], { timeoutMs: 15_000 });

/** `fn` with the path of a temporary config file holding `text` (removed after). */
async function withConfig<T>(text: string, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'uvt-cfg-'));
  try {
    const f = path.join(dir, 'bad.yaml');
    writeFileSync(f, text);
    return await fn(f);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('uvtep CLI errors', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['VNI too big', ['--vni', '16777216'], /option --vni: expected an integer from 0 to 16777215, got 16777216/],
    ['VNI not a number', ['--vni', 'one'], /option --vni: expected an integer from 0 to 16777215, got "one"/],
    ['VNI missing', ['--remote', '198.51.100.2'], /option --vni: required/],
    ['remote malformed', ['--vni', '1', '--remote', '1.2.3'], /option --remote: expected an IPv4 or IPv6 address .* got "1\.2\.3"/],
    ['remote multicast', ['--vni', '1', '--remote', '239.1.1.1'], /option --remote: expected a unicast address/],
    ['group unicast', ['--vni', '1', '--group', '198.51.100.2', '--dev', 'lo'], /option --group: expected a multicast address \(224\.0\.0\.0\/4 or ff00::\/8\)/],
    ['group without dev', ['--vni', '1', '--group', '239.1.1.1'], /option --group: needs --dev/],
    ['mtu too small', ['--vni', '1', '--mtu', '40'], /option --mtu: expected an integer from 68 to 65465, got 40/],
    ['dstport out of range', ['--vni', '1', '--dstport', '65536'], /option --dstport: expected a UDP port from 1 to 65535, got 65536/],
    ['ttl out of range', ['--vni', '1', '--ttl', '300'], /option --ttl: expected "inherit" or an integer from 0 to 255, got 300/],
    ['mac malformed', ['--vni', '1', '--mac', '02:00:00:00:00'], /option --mac: expected a MAC address like 02:00:00:00:00:0a/],
    ['mac multicast', ['--vni', '1', '--mac', '01:00:00:00:00:01'], /option --mac: expected a unicast MAC/],
    ['address without prefix', ['--vni', '1', '--address', '10.0.0.1'], /option --address: expected an address with prefix length/],
    ['reserved bits policy', ['--vni', '1', '--reserved-bits', 'lenient'], /option --reserved-bits: expected "ignore" or "strict", got "lenient"/],
    ['mixed families', ['--vni', '1', '--remote', '198.51.100.2', '--remote', '2001:db8::2'], /all be IPv4 or all IPv6/],
    ['ageing negative', ['--vni', '1', '--ageing', '-5'], /option --ageing: expected whole seconds/],
    ['max-address text', ['--vni', '1', '--max-address', 'lots'], /option --max-address: expected a count \(0 = unlimited\)/],
    ['name too long', ['--vni', '1', '--name', 'a-very-long-interface-name'], /option --name: expected an interface name of at most 15 characters/],
    ['unknown option', ['--vni', '1', '--frobnicate'], /unknown option '--frobnicate'/],
    ['log level', ['--vni', '1', '--log-level', 'loud'], /Allowed choices are fatal, error, warn, info, debug, trace, silent/],
    ['transport', ['--vni', '1', '--transport', 'raw'], /option --transport: expected native or dgram, got "raw"/],
    ['tunnel-gso', ['--vni', '1', '--tunnel-gso', 'yes'], /option '--tunnel-gso <mode>' argument 'yes' is invalid\. Allowed choices are auto, on, off/],
    ['busy-poll', ['--vni', '1', '--busy-poll', '5ms'], /option --busy-poll: expected microseconds from 0 to 1000000, got "5ms"/],
    ['etcd URL malformed', ['--vni', '1', '--local', '198.51.100.1', '--etcd', '198.51.100.10:2379'], /option --etcd: expected a client URL such as http:\/\/198\.51\.100\.10:2379 .*got "198\.51\.100\.10:2379"/],
    ['etcd without an address to advertise', ['--vni', '1', '--etcd', 'http://198.51.100.10:2379'], /option --local: VNI 1: with --etcd, give --local <this host's underlay address>/],
    ['etcd-allow without etcd', ['--vni', '1', '--etcd-allow'], /option --etcd-allow: needs --etcd <url>/],
    ['proxy without etcd-macs', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'http://198.51.100.10:2379', '--proxy'], /option --proxy: answers from the MAC routes of --etcd-macs/],
    ['etcd-ttl too short', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'http://198.51.100.10:2379', '--etcd-ttl', '1'], /option --etcd-ttl: expected whole seconds from 2 to 86400, got 1/],
    ['etcd-user with a password', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'http://198.51.100.10:2379', '--etcd-user', 'root:secret'], /option --etcd-user: expected a user name; the password never goes on the command line/],
    ['etcd-user without a password', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'http://198.51.100.10:2379', '--etcd-user', 'root'], /option --etcd-user: needs a password: in the environment variable UVTEP_ETCD_PASSWORD/],
    ['etcd https without a CA', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'https://198.51.100.10:2379'], /option --etcd-cacert: https endpoints need the CA/],
    ['etcd-cert without etcd-key', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'https://198.51.100.10:2379', '--etcd-cacert', '/dev/null', '--etcd-cert', '/dev/null'], /option --etcd-key: a client certificate needs both --etcd-cert and --etcd-key/],
    ['etcd-cacert unreadable', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'https://198.51.100.10:2379', '--etcd-cacert', '/nonexistent/ca.pem'], /option --etcd-cacert: cannot read \/nonexistent\/ca\.pem/],
    ['etcd-prefix relative', ['--vni', '1', '--local', '198.51.100.1', '--etcd', 'http://198.51.100.10:2379', '--etcd-prefix', 'uvtep'], /option --etcd-prefix: expected a key prefix starting with \//],
    ['flannel without etcd', ['--flannel', '--local', '198.51.100.1'], /option --flannel: needs --etcd <url>/],
    ['flannel with a VNI', ['--flannel', '--etcd', 'http://198.51.100.10:2379', '--local', '198.51.100.1', '--vni', '5'], /option --vni: not with --flannel: the VNI and port come from the network config/],
    ['flannel with a remote', ['--flannel', '--etcd', 'http://198.51.100.10:2379', '--local', '198.51.100.1', '--remote', '198.51.100.2'], /option --remote: not with --flannel: the members come from the subnet leases/],
    ['flannel without a PublicIP', ['--flannel', '--etcd', 'http://198.51.100.10:2379'], /option --local: with --flannel, give --local <this host's underlay address>/],
    ['flannel over IPv6', ['--flannel', '--etcd', 'http://198.51.100.10:2379', '--local', '2001:db8::1'], /option --local: flannel's PublicIP is IPv4/],
    ['tos with the dgram fallback', ['--vni', '1', '--transport', 'dgram', '--tos', '16', '--no-control'], /option --tos: the outer TOS needs the native transport/],
  ];
  it.each(cases)('%s: exit 2 with the option and what it accepts', async (_n, args, msg) => {
    const r = await run(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).toBe('');
  });

  it.each([
    ['log-level: loud\n', /option --log-level: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/],
    ['vni: 1\nbusy-poll: soon\n', /option --busy-poll: expected microseconds from 0 to 1000000, got "soon"/],
    ['vni: 1\nlearning: maybe\n', /option --no-learning: expected true or false in .*bad.yaml, got "maybe"/],
    ['vni: 1\ntransport: raw\n', /option --transport: expected native or dgram, got "raw"/],
  ])('a bad value in --config gets the same message as on the command line, and exit 2: %j', async (text, msg) => {
    const r = await withConfig(text, (f) => run('--config', f));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
  });

  it.each([
    ['vteps:\n  - {vni: 10, name: a}\n  - {vni: 10, name: b}\n', /vteps\[1\]: option --vni: VNI 10 is in the list twice/],
    ['vteps:\n  - {vni: 10, name: a}\n  - {vni: 20, name: a}\n', /vteps\[1\]: option --name: "a" is the name of another VTEP/],
    ['vteps:\n  - {vni: 10}\n  - {vni: 20, ttl: 9}\n', /vteps\[1\]: option --ttl: 9 differs from 0 .*share its settings/],
    ['vteps:\n  - {vni: 10}\n  - {vni: 16777216}\n', /vteps\[1\]: option --vni: expected an integer from 0 to 16777215/],
    ['vteps:\n  - {vni: 10, metrics: 9100}\n', /"metrics" in vteps\[0\] of .*an option of the whole process/],
    ['vteps:\n  - {vni: 10, colour: red}\n', /unknown option "colour" in vteps\[0\]/],
    ['vteps:\n  - {vni: 10, etcd: "http://198.51.100.10:2379"}\n', /"etcd" in vteps\[0\] of .*an option of the whole process/],
    ['etcd: ["http://198.51.100.10:2379"]\nlocal: 198.51.100.1\nvteps:\n  - {vni: 10, proxy: true}\n', /vteps\[0\]: option --proxy: answers from the MAC routes of --etcd-macs/],
    ['vteps: {vni: 10}\n', /vteps in .* must be a list of objects/],
  ])('a bad vteps: list in --config: exit 2 naming the entry and the option, nothing created: %j', async (text, msg) => {
    const r = await withConfig(text, (f) => run('--config', f));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(msg);
  });

  it('--vni on the command line with a vteps: list is refused', async () => {
    const r = await withConfig('vteps:\n  - {vni: 10}\n', (f) => run('--config', f, '--vni', '3'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/option --vni: .* has a vteps: list; add VTEPs to it, or at run time with uvtep vtep add/);
  });

  it('vtep add: --vni is required; with no uvtep running, exit 1', async () => {
    const r = await run('vtep', 'add', '--name', 'vx1');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/option --vni <n> is required/);
    const none = await run('vtep', 'add', '--vni', '5', '--control', '/nonexistent/uvt.sock');
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no uvtep is running/);
  });

  it('--help documents every option with its default and exits 0', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    for (const opt of ['--vni', '--remote', '--group', '--local', '--dev', '--dstport', '--ttl', '--ageing', '--no-learning', '--max-address', '--reserved-bits', '--name', '--mtu', '--mac', '--address', '--bridge', '--persist', '--log-level', '--transport', '--no-tso', '--no-gro', '--no-gso', '--busy-poll']) {
      expect(r.stdout).toContain(opt);
    }
    expect(r.stdout).toMatch(/default: 4789/);
    expect(r.stdout).toMatch(/default: 300/);
    expect(r.stdout).toMatch(/1450 on 1500/);
    expect(r.stdout).toMatch(/demo/);
  });
});
