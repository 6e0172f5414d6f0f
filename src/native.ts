/**
 * The native addon's surface (native/*.cc), and its loader. The TAP port and link helpers take
 * a `NativeBinding` as a parameter, so tests can script the device (EAGAIN, EBADF...) without
 * one.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ErrorCode, UvtepError } from './errors.js';

export interface TapReaderHandle {
  start(): void;
  stop(): void;
  close(): void;
}

export interface NativeBinding {
  openTap(name: string, persist: boolean, vnetHdr?: boolean): { fd: number; name: string };
  setPersist(fd: number, on: boolean): void;
  /** Bytes written, or a negative errno (never throws on the data path). */
  write(fd: number, buf: Uint8Array, off: number, len: number): number;
  /** One frame behind a virtio_net_hdr (writev): bytes written, or a negative errno. */
  writeVnet(fd: number, hdr: Uint8Array, buf: Uint8Array, off: number, len: number): number;
  close(fd: number): void;
  TapReader: new (
    fd: number,
    slab: Uint8Array,
    slotSize: number,
    headroom: number,
    offs: Int32Array,
    lens: Int32Array,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
    vnetLen?: number,
  ) => TapReaderHandle;
  ifindex(name: string): number;
  getMtu(name: string): number;
  setMtu(name: string, mtu: number): void;
  getMac(name: string): Buffer;
  setMac(name: string, mac: Uint8Array): void;
  setUp(name: string, up: boolean): void;
  isUp(name: string): boolean;
  bridgePort(bridge: string, port: string, add: boolean): void;
  addAddress(name: string, family: 4 | 6, bytes: Uint8Array, prefixLen: number): void;
  /** The interface's IPv4 address (4 bytes), whatever its carrier state. */
  getIpv4(name: string): Buffer;
  /**
   * One sendmsg with UDP_SEGMENT: datagrams start..start+count-1 of (offs, lens) over `buf`, all
   * but the last `segSize` long, to `sockaddr`. Bytes sent, or a negative errno.
   */
  sendGso(fd: number, sockaddr: Uint8Array, buf: Uint8Array, offs: Int32Array, lens: Int32Array, start: number, count: number, segSize: number): number;
  setSockOptInt(fd: number, level: number, name: number, value: number): void;
  /** 0 or a negative errno; never throws. */
  setSockOptIntFast(fd: number, level: number, name: number, value: number): number;
}

let cached: NativeBinding | undefined;

/** Loads the addon built by `npm install` (node-gyp-build finds build/Release/uvtep.node). */
export function loadBinding(): NativeBinding {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  try {
    const build = require('node-gyp-build') as (dir: string) => NativeBinding;
    cached = build(root);
  } catch (e) {
    throw new UvtepError(
      ErrorCode.NoNative,
      `the native TAP addon is not built (${(e as Error).message.split('\n')[0]}); run \`npm install\` or \`npm run build:native\` (needs g++, make, python3)`,
      { cause: e },
    );
  }
  return cached;
}
