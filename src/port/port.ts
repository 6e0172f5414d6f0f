/**
 * FramePort: where Ethernet frames come from and go to (a TAP device, or memory).
 * Batches cross the boundary: one `onFrames` call per readiness event, many frames each.
 */

/** Writable bytes every port guarantees before each frame, so the VXLAN header goes in place. */
export const FRAME_HEADROOM = 8;

/**
 * A batch of frames in caller-owned memory. Frame i is `buf[offs[i], offs[i] + lens[i])` and
 * `buf[offs[i] - FRAME_HEADROOM, offs[i])` is writable. The memory is the port's: it stays valid
 * until the next `onFrames` call, and the port never delivers another batch while paused, so a
 * consumer that still needs the memory (a queued send) pauses the port until it is done.
 */
export interface FrameBatch {
  buf: Buffer;
  offs: Int32Array;
  lens: Int32Array;
  count: number;
}

export type FramesHandler = (batch: FrameBatch) => void;
/** A fatal port error (device removed, fd closed): the port is unusable afterwards. */
export type PortErrorHandler = (err: Error) => void;

export interface FramePort {
  /** Interface name, for messages ("uvtep0", "memory"). */
  readonly name: string;
  /** The port's own MAC (the TAP's), as a 48-bit key: frames arriving with it as source are loops. */
  readonly mac: number | undefined;
  /** Starts delivering frames. Called once. */
  start(onFrames: FramesHandler, onError: PortErrorHandler): void;
  /** Stops delivering batches until `resume()`; frames wait in the device queue meanwhile. */
  pause(): void;
  resume(): void;
  /**
   * Hands one frame to the host side. Returns false when the port cannot take it now (the
   * caller counts a drop). May keep a reference to `buf` until the end of the current event-loop
   * turn (to coalesce frames), never longer: callers pass memory that is not reused before then.
   */
  write(buf: Buffer, off: number, len: number): boolean;
  /** Receive coalescing counters, and frames lost in writes after `write` accepted them. */
  counters?(): { groWrites: number; groSegments: number; writeErrors: number };
  close(): Promise<void>;
}

/** Allocates the parallel arrays of a batch of up to `cap` frames over `buf`. */
export function newFrameBatch(buf: Buffer, cap: number): FrameBatch {
  return { buf, offs: new Int32Array(cap), lens: new Int32Array(cap), count: 0 };
}
