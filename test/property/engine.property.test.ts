import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { Fdb } from '../../src/fdb.js';
import { MemoryDevice } from '../../src/device/memory.js';
import { DROP_REASONS, Vtep } from '../../src/vtep.js';
import { FakeTransport } from '../helpers/fake-transport.js';

describe('FDB properties', () => {
  it('never exceeds maxAddress, whatever is learned', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 1, max: 4 })), { maxLength: 300 }),
        (max, events) => {
          const fdb = new Fdb({ dstPort: 4789, maxAddress: max });
          for (const [m, ip] of events) fdb.learn(m, `198.51.100.${ip}`);
          expect(fdb.size).toBeLessThanOrEqual(max);
        },
      ),
    );
  });
});

describe('Vtep receive properties', () => {
  it('arbitrary datagrams never throw; each is delivered or counted under exactly one reason', async () => {
    const port = new MemoryDevice({ mac: '02:00:00:00:00:0a' });
    const transport = new FakeTransport();
    const vtep = new Vtep(resolveConfig({ vni: 1, maxAddress: 16, reservedBits: 'strict' }), { device: port, transport });
    await vtep.start();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 100 }),
          // mostly-valid datagrams: valid header for VNI 0..2 followed by arbitrary bytes
          fc.tuple(fc.integer({ min: 0, max: 2 }), fc.uint8Array({ maxLength: 80 })).map(([v, rest]) => Uint8Array.from([0x08, 0, 0, 0, 0, 0, v, 0, ...rest])),
        ),
        fc.integer({ min: 1, max: 254 }),
        (bytes, ip) => {
          const before = vtep.stats;
          transport.receive(Buffer.from(bytes), `198.51.100.${ip}`);
          const after = vtep.stats;
          const delivered = after.rxPackets - before.rxPackets;
          const dropped = after.dropsTotal - before.dropsTotal;
          expect(delivered + dropped).toBe(1);
          expect(after.fdbSize).toBeLessThanOrEqual(16);
        },
      ),
      { numRuns: 3000 },
    );
    expect(Object.keys(vtep.stats.drops)).toEqual(DROP_REASONS);
    await vtep.close();
  });
});
