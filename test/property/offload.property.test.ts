// Properties of the native split (TAP super-frames) and coalescing (TAP writes): random payloads,
// MSS, TCP options, sequence numbers near the wrap; segment then coalesce gives back the input;
// every emitted frame's checksums verify; hostile offload headers and frames never crash it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadBinding, WRITER_STATS } from '../../src/native.js';
import { coalesce, HEAD } from '../helpers/offload.js';
import { parse, records, superFrame } from '../helpers/tcp.js';

const native = loadBinding();

const superArb = fc.record({
  v6: fc.boolean(),
  udp: fc.boolean(),
  payload: fc.uint8Array({ minLength: 1, maxLength: 60000 }),
  mssRaw: fc.integer({ min: 1000, max: 9000 }),
  seq: fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0xffff0000, max: 0xffffffff })),
  optWords: fc.integer({ min: 0, max: 10 }),
  psh: fc.boolean(),
});

describe('segment then coalesce', () => {
  it('every frame verifies; the merged writes carry exactly the original payload in order', () => {
    fc.assert(
      fc.property(superArb, (o) => {
        const payload = Buffer.from(o.payload);
        const mss = Math.max(o.mssRaw, Math.ceil(payload.length / 64)); // at most 64 segments
        const options = Buffer.alloc(o.optWords * 4, 1); // NOPs
        const { frame, hdr } = superFrame({ v6: o.v6, udp: o.udp, seq: o.seq, payload, mss, options, flags: o.psh ? 0x18 : 0x10 });
        const room = frame.length + 64 * 200;
        const slab = Buffer.alloc(HEAD + room, 0xa5);
        frame.copy(slab, HEAD);
        const [n, segLen, lastLen] = native.segment(hdr, slab, HEAD, frame.length, room);
        expect(n).toBe(Math.ceil(payload.length / mss));
        const offs = new Int32Array(n!);
        const lens = new Int32Array(n!);
        const parts: Buffer[] = [];
        for (let k = 0; k < n!; k++) {
          offs[k] = HEAD + k * (segLen! + 8);
          lens[k] = k === n! - 1 ? lastLen! : segLen!;
          const p = parse(slab.subarray(offs[k]!, offs[k]! + lens[k]!));
          expect(p.ipOk && p.l4Ok).toBe(true);
          if (!o.udp) expect(p.seq).toBe((o.seq + k * mss) >>> 0);
          parts.push(Buffer.from(p.payload));
        }
        expect(Buffer.concat(parts).equals(payload)).toBe(true);
        const out = Buffer.alloc(room * 2);
        const used = native.coalesce(slab, offs, lens, n!, true, out, new Float64Array(WRITER_STATS), 0);
        const writes = records(out, used);
        expect(writes).toHaveLength(o.udp ? n! : 1); // TCP: one flow, contiguous: one write; UDP: one each
        const merged = Buffer.concat(writes.map((w) => parse(w.frame).payload));
        expect(merged.equals(payload)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});

describe('hostile input to the native offload code', () => {
  it('arbitrary offload headers on a real super-frame: a frame count or a refusal, never a crash or an overrun', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 10, maxLength: 10 }), fc.integer({ min: 0, max: 9000 }), (h, cut) => {
        const { frame } = superFrame({ seq: 1, payload: Buffer.alloc(9000, 7), mss: 1400 });
        const f = frame.subarray(0, Math.max(0, frame.length - cut));
        const room = f.length + 64 * 200;
        const slab = Buffer.alloc(HEAD + room + 64, 0xa5);
        f.copy(slab, HEAD);
        const [n] = native.segment(Buffer.from(h), slab, HEAD, f.length, room);
        expect(n! >= -4 && n! <= 64 && n !== 0).toBe(true);
        expect(slab.subarray(HEAD + room).every((x) => x === 0xa5)).toBe(true); // nothing past the slot
      }),
      { numRuns: 2000 },
    );
  });

  it('arbitrary bytes as frames, and mutated TCP segments, to the coalescer never crash it and lose nothing', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { maxLength: 40 }), (frames) => {
        // random bytes never form mergeable runs: one write per frame, each as it came
        expect(coalesce(frames).writes).toHaveLength(frames.length);
      }),
      { numRuns: 500 },
    );
  });
});
