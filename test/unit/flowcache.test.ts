// The flow cache's TypeScript side over a recording native handle: what it installs (once per
// MAC, only the transport's family), how ages are refreshed, what clear and close do, and that
// it is only made where both the device and the transport have native sides.
import { describe, expect, it } from 'vitest';
import { FlowCache, type FlowCacheParams } from '../../src/flowcache.js';
import { FlowCacheStat, type FlowCacheHandle, type UdpSocketHandle } from '../../src/native.js';
import { MemoryDevice } from '../../src/device/memory.js';
import type { FrameDevice } from '../../src/device/device.js';
import type { Transport } from '../../src/transport/transport.js';
import { Fdb } from '../../src/fdb.js';

function rig(family: 4 | 6 = 4) {
  const calls: string[] = [];
  let params: FlowCacheParams | undefined;
  const handle: FlowCacheHandle = {
    setTx: (mac, addr, port) => (calls.push(`tx ${mac} ${Array.from(addr).join('.')} ${port}`), true),
    setRx: (mac, addr) => (calls.push(`rx ${mac} ${Array.from(addr).join('.')}`), 7),
    clear: () => void calls.push('clear'),
    enable: (on) => void calls.push(`enable ${on}`),
    close: () => void calls.push('close'),
  };
  const socket = {} as UdpSocketHandle;
  const device = {
    flowCache: (s: UdpSocketHandle, p: FlowCacheParams) => {
      expect(s).toBe(socket);
      params = p;
      return { handle, detach: () => void calls.push('detach device') };
    },
  } as unknown as FrameDevice;
  const attached: Array<[number, FlowCache | undefined]> = [];
  const transport = {
    family,
    flowSocket: () => socket,
    attachFlowCache: (vni: number, fc: FlowCache | undefined) => void attached.push([vni, fc]),
  } as unknown as Transport;
  return { calls, device, transport, attached, params: () => params! };
}

describe('FlowCache (TypeScript side)', () => {
  it('is attached to the device and the transport; installs each decision once, in the socket family', () => {
    const r = rig();
    const fc = FlowCache.open(r.device, r.transport, { vni: 42, ownMac: 10, maxFrame: 1464, learning: true, gso: true })!;
    expect(fc).toBeDefined();
    expect(r.attached).toEqual([[42, fc]]);
    expect(r.params()).toMatchObject({ vni: 42, ownMac: 10, maxFrame: 1464, learning: true, gso: true });
    const fdb = new Fdb({ dstPort: 4789 });
    fc.sawTx(0xb, fdb.remote('198.51.100.2'));
    fc.sawTx(0xb, fdb.remote('198.51.100.2')); // once
    fc.sawTx(0xc, fdb.remote('2001:db8::2')); // another family: never
    fc.sawRx(0xb, '198.51.100.2');
    fc.sawRx(0xb, '198.51.100.2');
    expect(r.calls).toEqual(['tx 11 198.51.100.2 4789', 'rx 11 198.51.100.2']);
    // after a clear, the decisions are installed again
    fc.clear();
    fc.sawTx(0xb, fdb.remote('198.51.100.2'));
    expect(r.calls.slice(2)).toEqual(['clear', 'tx 11 198.51.100.2 4789']);
  });

  it('refresh touches the MACs whose rx entries delivered, once; close detaches both sides', () => {
    const r = rig();
    const fc = FlowCache.open(r.device, r.transport, { vni: 1, ownMac: -1, maxFrame: 1464, learning: true, gso: true })!;
    const fdb = new Fdb({ dstPort: 4789 });
    fc.sawRx(0xb, '198.51.100.2');
    const touched: number[] = [];
    fc.refresh((m) => touched.push(m));
    expect(touched).toEqual([]);
    fc.seen[7] = 1; // the native side delivered a datagram through slot 7
    fc.refresh((m) => touched.push(m));
    fc.refresh((m) => touched.push(m));
    expect(touched).toEqual([0xb]);
    fc.stats[FlowCacheStat.RxDatagrams] = 5;
    fc.stats[FlowCacheStat.RxLost] = 1;
    expect(fc.counters()).toMatchObject({ rxDatagrams: 5, rxLost: 1 });
    fc.close();
    fc.close();
    expect(r.calls.filter((c) => c === 'close' || c === 'detach device')).toEqual(['detach device', 'close']);
    expect(r.attached.at(-1)).toEqual([1, undefined]);
    fc.sawTx(0xc, fdb.remote('198.51.100.3')); // closed: nothing installed
    expect(r.calls.some((c) => c.startsWith('tx 12'))).toBe(false);
  });

  it('is not made for a memory device or a transport without a native socket', () => {
    const r = rig();
    expect(FlowCache.open(new MemoryDevice(), r.transport, { vni: 1, ownMac: -1, maxFrame: 1464, learning: true, gso: true })).toBeUndefined();
    const dgramLike = { family: 4 } as unknown as Transport;
    expect(FlowCache.open(r.device, dgramLike, { vni: 1, ownMac: -1, maxFrame: 1464, learning: true, gso: true })).toBeUndefined();
  });
});
