// Frame builders and gVisor-style composable checkers for VXLAN datagrams.
import { expect } from 'vitest';
import { Address6 } from 'ip-address';
import { icmpv6Checksum } from '../../src/wire/nd.js';
import { ethDst, ethSrc, parseMac, writeMac } from '../../src/wire/ethernet.js';
import { checkVxlan, VXLAN_HLEN, vxlanVni, VxlanCheck } from '../../src/wire/vxlan.js';

export function mac(text: string): number {
  const k = parseMac(text);
  if (k === undefined) throw new Error(`bad mac ${text}`);
  return k;
}

/** An Ethernet frame: dst, src, ethertype, then `payload` (or `size` bytes of a counting pattern). */
export function frame(dst: string, src: string, opts: { type?: number; payload?: Buffer; size?: number; seed?: number } = {}): Buffer {
  const payload =
    opts.payload ??
    Buffer.from(Array.from({ length: opts.size ?? 46 }, (_, i) => (i + (opts.seed ?? 0)) & 0xff));
  const f = Buffer.alloc(14 + payload.length);
  writeMac(f, 0, mac(dst));
  writeMac(f, 6, mac(src));
  f.writeUInt16BE(opts.type ?? 0x88b5, 12); // IEEE local experimental ethertype
  payload.copy(f, 14);
  return f;
}

/** A VXLAN datagram (header + inner frame) with optional raw flag/reserved bytes. */
export function datagram(vni: number, inner: Buffer, opts: { flags?: number; reserved1?: number; reserved2?: number } = {}): Buffer {
  const d = Buffer.alloc(VXLAN_HLEN + inner.length);
  d[0] = opts.flags ?? 0x08;
  d.writeUIntBE(opts.reserved1 ?? 0, 1, 3);
  d.writeUIntBE(vni, 4, 3);
  d[7] = opts.reserved2 ?? 0;
  inner.copy(d, VXLAN_HLEN);
  return d;
}

export type Checker = (d: Buffer) => void;
export const vni = (v: number): Checker => (d) => expect(vxlanVni(d, 0), 'VNI').toBe(v);
export const innerDst = (m: string): Checker => (d) => expect(ethDst(d, VXLAN_HLEN), 'inner dst').toBe(mac(m));
export const innerSrc = (m: string): Checker => (d) => expect(ethSrc(d, VXLAN_HLEN), 'inner src').toBe(mac(m));
export const innerFrame = (f: Buffer): Checker => (d) => expect(d.subarray(VXLAN_HLEN).equals(f), 'inner frame bytes').toBe(true);
/** Header as the kernel sends it: I flag set, every reserved bit zero. */
export const cleanHeader: Checker = (d) => {
  expect(d[0], 'flags').toBe(0x08);
  expect([d[1], d[2], d[3], d[7]], 'reserved').toEqual([0, 0, 0, 0]);
};

export function expectVxlan(d: Buffer, ...checks: Checker[]): void {
  expect(checkVxlan(d, 0, d.length, true), 'checkVxlan strict').toBe(VxlanCheck.Ok);
  cleanHeader(d);
  for (const c of checks) c(d);
}

function ip4(text: string): number[] {
  return text.split('.').map(Number);
}

function padded6(text: string): number[] {
  const b = new Address6(text).toUnsignedByteArray();
  return [...Array(16 - b.length).fill(0), ...b];
}

/** An ARP request (who-has `target`, tell `senderIp`), broadcast, as a host sends it. */
export function arpRequest(senderMac: string, senderIp: string, target: string): Buffer {
  const f = Buffer.alloc(42);
  writeMac(f, 0, 0xffff_ffff_ffff);
  writeMac(f, 6, mac(senderMac));
  f.writeUInt16BE(0x0806, 12);
  f.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
  writeMac(f, 22, mac(senderMac));
  f.set(ip4(senderIp), 28);
  f.set(ip4(target), 38);
  return f;
}

/** An IPv6 neighbour solicitation for `target` from `senderIp`, to its solicited-node group. */
export function neighborSolicit(senderMac: string, senderIp: string, target: string): Buffer {
  const t = padded6(target);
  const f = Buffer.alloc(14 + 40 + 32);
  f.set([0x33, 0x33, 0xff, t[13]!, t[14]!, t[15]!], 0);
  writeMac(f, 6, mac(senderMac));
  f.writeUInt16BE(0x86dd, 12);
  f.set([0x60, 0, 0, 0, 0, 32, 58, 255], 14);
  f.set(padded6(senderIp), 22);
  f.set([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13]!, t[14]!, t[15]!], 38);
  f[54] = 135;
  f.set(t, 62);
  f[78] = 1; // source link-layer address option
  f[79] = 1;
  writeMac(f, 80, mac(senderMac));
  const sum = icmpv6Checksum(f, 22, 38, 54, 32);
  f.writeUInt16BE(sum, 56);
  return f;
}

/** An IPv4 packet frame (UDP, no payload checks) from `srcIp`. */
export function ipv4Frame(dst: string, src: string, srcIp: string, dstIp: string): Buffer {
  const f = Buffer.alloc(14 + 28);
  writeMac(f, 0, mac(dst));
  writeMac(f, 6, mac(src));
  f.writeUInt16BE(0x0800, 12);
  f.set([0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0], 14);
  f.set(ip4(srcIp), 26);
  f.set(ip4(dstIp), 30);
  return f;
}
