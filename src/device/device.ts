/**
 * FrameDevice: where Ethernet frames come from and go to (a TAP device, or memory).
 * Batches cross the boundary in both directions: one `onFrames` call per readiness event, and
 * one `writeBatch` call per received batch of datagrams.
 */

import type { FlowCacheHandle, UdpSocketHandle } from '../native.js';
import type { DatapathProcess } from '../datapath.js';
import type { FlowCacheParams } from '../flowcache.js';

/** Writable bytes every device guarantees before each frame, so the VXLAN header goes in place. */
export const FRAME_HEADROOM = 8;

/**
 * A batch of frames in caller-owned memory, as entries. Entry i holds `segs[i]` frames laid out
 * back to back at a fixed stride (a TAP super-frame split into MSS-sized frames, or one frame):
 * frame k of entry i is `buf[o, o + len)` with `o = offs[i] + k * (lens[i] + FRAME_HEADROOM)` and
 * `len = lens[i]` except for the last frame, which is `lasts[i]` long. The FRAME_HEADROOM bytes
 * before every frame are writable, so frame k's datagram (VXLAN header + frame) ends where frame
 * k+1's begins: an entry is one run of equal-size datagrams for a GSO send.
 *
 * The memory is the device's: it stays valid until the next `onFrames` call, and the device never
 * delivers another batch while paused, so a consumer that still needs the memory (a queued send)
 * pauses the device until it is done.
 */
export interface FrameBatch {
  buf: Buffer;
  offs: Int32Array;
  lens: Int32Array;
  segs: Int32Array;
  lasts: Int32Array;
  count: number;
}

export type FramesHandler = (batch: FrameBatch) => void;
/** A fatal device error (device removed, fd closed): the device is unusable afterwards. */
export type DeviceErrorHandler = (err: Error) => void;

/** Counters a device keeps about its own work (offloads, syscalls). */
export interface DeviceCounters {
  /** Read syscalls, and frames they produced (after splitting super-frames). */
  reads: number;
  readFrames: number;
  /** TCP/UDP super-frames split, and frames whose partial checksum was completed. */
  superFrames: number;
  csumCompleted: number;
  /** Reads refused: an offload header the frame contradicts, or that cannot be handled. */
  offloadInvalid: number;
  /** Frames the datapath process read and could not hand to JS (src/datapath.ts; 0 inline). */
  datapathDropped?: number;
  /** Write syscalls; those that carried several coalesced TCP segments, and how many. */
  writes: number;
  groWrites: number;
  groSegments: number;
  /** Received TCP segments whose checksum did not verify (written unmerged; the kernel drops them). */
  badCsum: number;
  /**
   * Received TCP/UDP frames whose checksum field held only the pseudo-header sum (CHECKSUM_PARTIAL
   * from a kernel peer on the same host, over veth): written with NEEDS_CSUM, as the kernel takes them.
   */
  partialCsum: number;
}

export interface FrameDevice {
  /** Interface name, for messages ("uvtep0", "memory"). */
  readonly name: string;
  /** The device's own MAC (the TAP's), as a 48-bit key: frames arriving with it as source are loops. */
  readonly mac: number | undefined;
  /** Starts delivering frames. Called once. */
  start(onFrames: FramesHandler, onError: DeviceErrorHandler): void;
  /** Stops delivering batches until `resume()`; frames wait in the device queue meanwhile. */
  pause(): void;
  resume(): void;
  /**
   * Hands frames i < count (`buf[offs[i], offs[i] + lens[i])`) to the host side, in order, before
   * returning (nothing is kept). Returns how many were lost (the device could not take them);
   * `lostBytes` then says their bytes.
   */
  writeBatch(buf: Buffer, offs: Int32Array, lens: Int32Array, count: number): number;
  /** Bytes of the frames the last `writeBatch` lost. */
  readonly lostBytes: number;
  counters?(): DeviceCounters;
  /** A TAP whose reads and writes go to the kernel in batches through io_uring. */
  readonly ioUring?: boolean;
  /**
   * The native flow cache over this device and the UDP endpoint `socket` (src/flowcache.ts),
   * attached to the device's reader; `detach` unhooks it. Undefined when the device has no
   * native reader (memory) or is not reading.
   */
  flowCache?(socket: UdpSocketHandle, p: FlowCacheParams, datapath?: DatapathProcess): { handle: FlowCacheHandle; detach: () => void } | undefined;
  /**
   * From now on the datapath process (src/datapath.ts) reads the device, and the device's
   * reader takes what the process hands over; false when it cannot (not reading, no native
   * side, another process already).
   */
  useDatapath?(datapath: DatapathProcess): boolean;
  close(): Promise<void>;
}

/** Allocates the parallel arrays of a batch of up to `cap` entries over `buf`. */
export function newFrameBatch(buf: Buffer, cap: number): FrameBatch {
  return { buf, offs: new Int32Array(cap), lens: new Int32Array(cap), segs: new Int32Array(cap).fill(1), lasts: new Int32Array(cap), count: 0 };
}
