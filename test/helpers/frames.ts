// Frame builders and gVisor-style composable checkers for VXLAN datagrams.
import { expect } from 'vitest';
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
