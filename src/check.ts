/**
 * The validators every option goes through: each throws a `ConfigError` naming the option, what
 * was given and what is accepted (config.ts resolves a VTEP's options with them; the control
 * socket, metrics and devices check their own values the same way).
 */
import { Address4, Address6 } from 'ip-address';
import { ConfigError, ErrorCode } from './errors.js';
import { isValidUnicastMac, parseMac } from './wire/ethernet.js';
import { isValidVni, VXLAN_VNI_MAX } from './wire/vxlan.js';

export interface RemoteSpec {
  address: string;
  port: number;
}

export function fail(option: string, code: (typeof ErrorCode)[keyof typeof ErrorCode], what: string): never {
  throw new ConfigError(code, option, `${option}: ${what}`);
}

export function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** An etcd key prefix: `/` then letters, digits, `. _ - /`, no empty segment. */
export function checkKeyPrefix(v: unknown, option: string): string {
  if (typeof v !== 'string' || !/^\/[A-Za-z0-9._\-/]*$/.test(v) || v.includes('//')) {
    fail(option, ErrorCode.InvalidOption, `expected a key prefix starting with / (letters, digits, . _ - /), got ${show(v)}`);
  }
  return v;
}

export function checkVni(v: unknown, option = 'vni'): number {
  if (!isValidVni(v)) fail(option, ErrorCode.InvalidVni, `expected an integer from 0 to ${VXLAN_VNI_MAX}, got ${show(v)}`);
  return v;
}

export function checkInt(v: unknown, option: string, min: number, max: number, what = 'an integer'): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(option, ErrorCode.InvalidOption, `expected ${what} from ${min} to ${max}, got ${show(v)}`);
  }
  return v;
}

export function checkPort(v: unknown, option = 'dstPort', min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 65535) {
    fail(option, ErrorCode.InvalidPort, `expected a UDP port from ${min} to 65535, got ${show(v)}`);
  }
  return v;
}

/** A canonical IP literal (no prefix, no zone) and its family, or a ConfigError. */
export function checkIp(v: unknown, option: string): { address: string; family: 4 | 6 } {
  if (typeof v === 'string' && !v.includes('/') && !v.includes('%')) {
    if (Address4.isValid(v)) return { address: new Address4(v).correctForm(), family: 4 };
    if (Address6.isValid(v)) return { address: new Address6(v).correctForm(), family: 6 };
  }
  fail(option, ErrorCode.InvalidAddress, `expected an IPv4 or IPv6 address such as 198.51.100.2 or 2001:db8::2, got ${show(v)}`);
}

/** `ip`, `ip:port` or `[ip6]:port`. */
export function checkRemote(v: unknown, option: string, defaultPort: number): RemoteSpec & { family: 4 | 6 } {
  if (typeof v === 'string') {
    const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(v);
    const v4port = /^([0-9.]+):(\d+)$/.exec(v);
    const m = bracket ?? v4port;
    if (m !== null) {
      const ip = checkIp(m[1], option);
      const port = m[2] === undefined ? defaultPort : checkPort(Number(m[2]), option);
      return { address: ip.address, port, family: ip.family };
    }
  }
  const ip = checkIp(v, option);
  return { address: ip.address, port: defaultPort, family: ip.family };
}

export function isMulticastIp(address: string, family: 4 | 6): boolean {
  return family === 4 ? new Address4(address).isMulticast() : new Address6(address).isMulticast();
}

/** A unicast MAC `aa:bb:cc:dd:ee:ff` as a key, or a ConfigError. */
export function checkMac(v: unknown, option = 'mac'): number {
  const key = typeof v === 'string' ? parseMac(v) : undefined;
  if (key === undefined) fail(option, ErrorCode.InvalidMac, `expected a MAC address like 02:00:00:00:00:0a, got ${show(v)}`);
  return key;
}

export function checkUnicastMac(v: unknown, option = 'mac'): number {
  const key = checkMac(v, option);
  if (!isValidUnicastMac(key)) {
    fail(option, ErrorCode.InvalidMac, `expected a unicast MAC (not zero, group bit clear), got ${show(v)}`);
  }
  return key;
}

export function checkBool(v: unknown, option: string): boolean {
  if (typeof v !== 'boolean') fail(option, ErrorCode.InvalidOption, `expected true or false, got ${show(v)}`);
  return v;
}
