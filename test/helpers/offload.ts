// Drives the native split and coalescer (native/offload.cc via the addon's test entry points).
import { loadBinding, WRITER_STATS } from '../../src/native.js';
import { records } from './tcp.js';

const native = loadBinding();
/** Headroom before a TAP slot's frame, as the reader lays it out. */
export const HEAD = 16;

/** Runs the reader's split on a copy of `frame` in a slot; returns the frames it laid out. */
export function split(frame: Buffer, hdr: Buffer, room = 200_000): { rc: number; frames: Buffer[] } {
  const slab = Buffer.alloc(HEAD + room, 0xa5);
  frame.copy(slab, HEAD);
  const [rc, segLen, lastLen] = native.segment(hdr, slab, HEAD, frame.length, room);
  if (rc! <= 0) return { rc: rc!, frames: [] };
  const frames: Buffer[] = [];
  for (let k = 0; k < rc!; k++) {
    const at = HEAD + k * (segLen! + 8);
    frames.push(Buffer.from(slab.subarray(at, at + (k === rc! - 1 ? lastLen! : segLen!))));
  }
  return { rc: rc!, frames };
}

/** What the TAP writer would write for `frames` (one received batch), with its counters. */
export function coalesce(frames: readonly Uint8Array[], gro = true, mtu = 1500) {
  const buf = Buffer.concat(frames);
  const offs = new Int32Array(frames.length);
  const lens = new Int32Array(frames.length);
  let at = 0;
  frames.forEach((f, i) => {
    offs[i] = at;
    lens[i] = f.length;
    at += f.length;
  });
  const out = Buffer.alloc(buf.length * 2 + 4096);
  const stats = new Float64Array(WRITER_STATS);
  const used = native.coalesce(buf, offs, lens, frames.length, gro, out, stats, mtu);
  return { writes: records(out, used), stats };
}
