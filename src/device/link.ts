/**
 * Link settings of an interface (the TAP), via the native addon: what `ip link set`,
 * `ip addr add` and `brctl addif` do.
 */
import { Address4, Address6 } from 'ip-address';
import { ConfigError, ErrorCode } from '../errors.js';
import { loadBinding, type NativeBinding } from '../native.js';
import { macAt, writeMac } from '../wire/ethernet.js';

/** An interface address in CIDR form, parsed. */
export interface CidrAddress {
  family: 4 | 6;
  address: string;
  prefixLen: number;
  bytes: Uint8Array;
}

/** Parses `10.0.0.106/24` or `2001:db8::1/64` (the prefix length is required, as `ip addr` assumes /32 otherwise). */
export function parseCidr(text: unknown, option = 'address'): CidrAddress {
  if (typeof text === 'string' && /\/\d{1,3}$/.test(text)) {
    if (Address4.isValid(text)) {
      const a = new Address4(text);
      return { family: 4, address: a.correctForm(), prefixLen: a.subnetMask, bytes: Uint8Array.from(a.toArray()) };
    }
    if (Address6.isValid(text) && !text.includes('%')) {
      const a = new Address6(text);
      const arr = a.toByteArray().map((b) => b & 0xff);
      const bytes = new Uint8Array(16);
      bytes.set(arr.slice(-16), 16 - Math.min(16, arr.length));
      return { family: 6, address: a.correctForm(), prefixLen: a.subnetMask, bytes };
    }
  }
  throw new ConfigError(ErrorCode.InvalidAddress, option, `${option}: expected an address with prefix length such as 10.0.0.106/24 or 2001:db8::1/64, got ${JSON.stringify(text)}`);
}

export class Link {
  readonly name: string;
  private readonly native: NativeBinding;
  constructor(name: string, native: NativeBinding = loadBinding()) {
    this.name = name;
    this.native = native;
  }
  get ifindex(): number {
    return this.native.ifindex(this.name);
  }
  get mtu(): number {
    return this.native.getMtu(this.name);
  }
  set mtu(mtu: number) {
    this.native.setMtu(this.name, mtu);
  }
  /** The MAC as a 48-bit key. */
  get mac(): number {
    return macAt(this.native.getMac(this.name), 0);
  }
  set mac(key: number) {
    const b = Buffer.alloc(6);
    writeMac(b, 0, key);
    this.native.setMac(this.name, b);
  }
  get up(): boolean {
    return this.native.isUp(this.name);
  }
  set up(on: boolean) {
    this.native.setUp(this.name, on);
  }
  addAddress(cidr: CidrAddress): void {
    this.native.addAddress(this.name, cidr.family, cidr.bytes, cidr.prefixLen);
  }
  /** `brctl addif <bridge> <this>`. */
  attach(bridge: string): void {
    this.native.bridgePort(bridge, this.name, true);
  }
  /** `brctl delif <bridge> <this>`. */
  detach(bridge: string): void {
    this.native.bridgePort(bridge, this.name, false);
  }
}
