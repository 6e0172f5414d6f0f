// TapDevice over a scripted native binding: no device needed.
import { describe, expect, it, vi } from 'vitest';
import { ReaderStat, WriterStat, type NativeBinding, type NativeTap, type TapReaderHandle } from '../../src/native.js';
import { TAP_MAX_SEGS, TapDevice, tapGsoMaxSegs } from '../../src/device/tap.js';
import { FRAME_HEADROOM, type FrameBatch } from '../../src/device/device.js';

interface Script {
  binding: NativeBinding;
  calls: string[];
  reader?: { onBatch: (n: number) => void; onError: (e: Error) => void; slab: Uint8Array; slot: number; offs: Int32Array; lens: Int32Array; segs: Int32Array; lasts: Int32Array; stats: Float64Array };
  writes: number[];
}

function scripted(opts: { openError?: Error; mtuError?: Error; lost?: number; offloads?: number } = {}): Script {
  const s: Script = { calls: [], writes: [], binding: undefined as unknown as NativeBinding };
  let mac = Buffer.from('020000000099', 'hex');
  let mtu = 1500;
  s.binding = {
    Tap: class implements NativeTap {
      readonly name: string;
      readonly offloads: number;
      readonly ioUring: boolean;
      constructor(name: string, persist: boolean, vnet: boolean, offloads: number, ioUring: boolean) {
        s.calls.push(`open ${name} ${persist}${vnet ? '' : ' plain'}${offloads ? ' offloads' : ''}${ioUring ? '' : ' no-io-uring'}`);
        this.ioUring = ioUring;
        if (opts.openError) throw opts.openError;
        this.name = name || 'uvtep0';
        this.offloads = opts.offloads ?? offloads;
      }
      writeFrames(_gro: boolean, _b: Uint8Array, _o: Int32Array, lens: Int32Array, count: number, stats: Float64Array): number {
        for (let i = 0; i < count; i++) s.writes.push(lens[i]!);
        const lost = Math.min(opts.lost ?? 0, count);
        stats[WriterStat.Writes]! += count;
        stats[WriterStat.LostFrames]! += lost;
        for (let i = 0; i < lost; i++) stats[WriterStat.LostBytes]! += lens[i]!;
        return lost;
      }
      close(): void {
        s.calls.push(`close ${this.name}`);
      }
    },
    setGsoMaxSegs: (_n, segs) => void s.calls.push(`gso_max_segs ${segs}`),
    coalesce: () => 0,
    segment: () => [1, 0, 0],
    setBusyPoll: () => undefined,
    UdpSocket: class {} as unknown as NativeBinding['UdpSocket'],
    FlowCache: class {} as unknown as NativeBinding['FlowCache'],
    Datapath: class {} as unknown as NativeBinding['Datapath'],
    TapReader: class implements TapReaderHandle {
      constructor(_tap: NativeTap, slab: Uint8Array, slot: number, _h: number, offs: Int32Array, lens: Int32Array, segs: Int32Array, lasts: Int32Array, stats: Float64Array, onBatch: (n: number) => void, onError: (e: Error) => void) {
        s.reader = { onBatch, onError, slab, slot, offs, lens, segs, lasts, stats };
      }
      start() {
        s.calls.push('start');
      }
      stop() {
        s.calls.push('stop');
      }
      setFlowCache() {}
      close() {
        s.calls.push('reader-close');
      }
    },
    ifindex: () => 7,
    getMtu: () => mtu,
    setMtu: (_n, m) => {
      if (opts.mtuError) throw opts.mtuError;
      s.calls.push(`mtu ${m}`);
      mtu = m;
    },
    getMac: () => mac,
    setMac: (_n, m) => {
      mac = Buffer.from(m);
      s.calls.push('mac');
    },
    setUp: (_n, up) => void s.calls.push(`up ${up}`),
    isUp: () => true,
    bridgePort: (br, p, add) => void s.calls.push(`bridge ${br} ${p} ${add}`),
    addAddress: (_n, fam, bytes, len) => void s.calls.push(`addr ${fam} ${Buffer.from(bytes).toString('hex')}/${len}`),
    getIpv4: () => Buffer.from([198, 51, 100, 1]),
    setNeigh: () => undefined,
    setRoute: () => undefined,
  };
  return s;
}

describe('TapDevice', () => {
  it('opens, applies link settings in order, and reports them', () => {
    const s = scripted();
    const p = new TapDevice({ name: 'vxlan1', mtu: 1450, mac: '02:00:00:00:00:0a', addresses: ['10.0.0.106/24', '2001:db8:1::1/64'], bridge: 'br0', native: s.binding });
    expect(s.calls).toEqual(['open vxlan1 false offloads', 'mtu 1450', 'gso_max_segs 44', 'mac', 'addr 4 0a00006a/24', 'addr 6 20010db8000100000000000000000001/64', 'bridge br0 vxlan1 true', 'up true']);
    expect(p.name).toBe('vxlan1');
    expect(p.mtu).toBe(1450);
    expect(p.mac).toBe(0x02000000000a);
  });

  it('validates options before opening anything', () => {
    const s = scripted();
    expect(() => new TapDevice({ mtu: 40, native: s.binding })).toThrow(expect.objectContaining({ option: 'mtu' }));
    expect(() => new TapDevice({ addresses: ['10.0.0.1'], native: s.binding })).toThrow(expect.objectContaining({ option: 'address' }));
    expect(() => new TapDevice({ name: 'way-too-long-name', native: s.binding })).toThrow(expect.objectContaining({ option: 'name' }));
    expect(s.calls).toEqual([]);
  });

  it('closes the fd when a link setting fails (no device left behind)', () => {
    const err = Object.assign(new Error('ioctl(SIOCSIFMTU) failed: EINVAL'), { code: 'EINVAL', errno: -22, syscall: 'ioctl(SIOCSIFMTU)' });
    const s = scripted({ mtuError: err });
    expect(() => new TapDevice({ mtu: 9000, native: s.binding })).toThrow(err);
    expect(s.calls).toEqual(['open  false offloads', 'close uvtep0']);
  });

  it('system errors from open pass through with code, errno and syscall', () => {
    const err = Object.assign(new Error('ioctl(TUNSETIFF) failed: EBUSY'), { code: 'EBUSY', errno: -16, syscall: 'ioctl(TUNSETIFF)' });
    const s = scripted({ openError: err });
    expect(() => new TapDevice({ name: 'x', native: s.binding })).toThrow(expect.objectContaining({ code: 'EBUSY', syscall: 'ioctl(TUNSETIFF)' }));
  });

  it('hands batches over with headroom, pauses and resumes the reader, reports fatal errors', () => {
    const s = scripted();
    const p = new TapDevice({ native: s.binding });
    const batches: number[] = [];
    const errors: Error[] = [];
    p.start((b: FrameBatch) => {
      batches.push(b.count);
      expect(b.offs[0]! - FRAME_HEADROOM).toBeGreaterThanOrEqual(0);
    }, (e) => errors.push(e));
    const r = s.reader!;
    expect(r.slot).toBeGreaterThanOrEqual(FRAME_HEADROOM + 65535);
    r.offs[0] = FRAME_HEADROOM;
    r.lens[0] = 60;
    r.segs[0] = 1;
    r.lasts[0] = 60;
    r.offs[1] = r.slot + FRAME_HEADROOM;
    r.lens[1] = 1464;
    r.segs[1] = 1;
    r.lasts[1] = 1464;
    r.onBatch(2);
    expect(batches).toEqual([2]);
    p.pause();
    p.pause();
    p.resume();
    expect(s.calls.filter((c) => c === 'start' || c === 'stop')).toEqual(['start', 'stop', 'start']);
    r.onError(Object.assign(new Error('read failed: EBADFD'), { code: 'EBADFD' }));
    expect(errors).toHaveLength(1);
  });

  it('writeBatch reports lost frames and their bytes once, never throws', () => {
    const s = scripted({ lost: 1 });
    const p = new TapDevice({ native: s.binding });
    const buf = Buffer.alloc(200);
    expect(p.writeBatch(buf, Int32Array.of(0, 100), Int32Array.of(64, 80), 2)).toBe(1);
    expect(p.lostBytes).toBe(64);
    expect(s.writes).toEqual([64, 80]);
    const ok = scripted();
    const q = new TapDevice({ native: ok.binding });
    expect(q.writeBatch(buf, Int32Array.of(0), Int32Array.of(64), 1)).toBe(0);
    expect(q.lostBytes).toBe(0);
  });

  it('offloads: asks for checksum, TSO and USO, caps gso_max_segs; --no-tso asks for none', () => {
    const s = scripted();
    const p = new TapDevice({ native: s.binding });
    expect(p.offloads).toBeGreaterThan(0);
    // MTU 1500: 42 segments of up to 1526 bytes with their VXLAN headers fill one 65,000-byte GSO send
    expect(s.calls.slice(0, 2)).toEqual(['open  false offloads', 'gso_max_segs 42']);
    const plain = scripted();
    const q = new TapDevice({ native: plain.binding, tso: false });
    expect(q.offloads).toBe(0);
    expect(plain.calls[0]).toBe('open  false');
    expect(plain.calls.filter((c) => c.startsWith('gso_max_segs'))).toEqual([]);
  });

  it('gso_max_segs: one super-frame fits one UDP GSO send at any MTU, at most 64 segments', () => {
    for (const mtu of [68, 576, 1280, 1450, 1500, 9000, 65_000]) {
      const segs = tapGsoMaxSegs(mtu);
      expect(segs).toBeGreaterThanOrEqual(1);
      expect(segs).toBeLessThanOrEqual(TAP_MAX_SEGS);
      // the largest frame (MTU + Ethernet header + a VLAN tag) with its VXLAN header
      if (segs > 1) expect(segs * (mtu + 14 + 4 + 8)).toBeLessThanOrEqual(65_000);
      if (segs < TAP_MAX_SEGS) expect((segs + 1) * (mtu + 14 + 4 + 8)).toBeGreaterThan(65_000);
    }
    expect(tapGsoMaxSegs(1450)).toBe(44);
    expect(tapGsoMaxSegs(576)).toBe(TAP_MAX_SEGS);
  });

  it('io_uring: asked for by default and reported; ioUring: false asks for one writev per frame', () => {
    const s = scripted();
    expect(new TapDevice({ native: s.binding }).ioUring).toBe(true);
    const w = scripted();
    expect(new TapDevice({ native: w.binding, ioUring: false }).ioUring).toBe(false);
    expect(w.calls[0]).toBe('open  false offloads no-io-uring');
  });

  it('counters come from the native reader and writer stats', () => {
    const s = scripted();
    const p = new TapDevice({ native: s.binding });
    p.start(vi.fn(), vi.fn());
    const st = s.reader!.stats;
    st[ReaderStat.Reads] = 3;
    st[ReaderStat.Frames] = 50;
    st[ReaderStat.SuperFrames] = 1;
    st[ReaderStat.BadVnet] = 2;
    st[ReaderStat.TooManySegs] = 1;
    expect(p.counters()).toMatchObject({ reads: 3, readFrames: 50, superFrames: 1, offloadInvalid: 3 });
  });

  it('link helpers: detach from a bridge, ifindex, up state', () => {
    const s = scripted();
    const p = new TapDevice({ name: 'vx', bridge: 'br0', native: s.binding });
    p.link.detach('br0');
    expect(s.calls).toContain('bridge br0 vx false');
    expect(p.link.ifindex).toBe(7);
    expect(p.link.up).toBe(true);
    p.link.up = false;
    expect(s.calls.at(-1)).toBe('up false');
  });

  it('close releases the reader and the fd once', async () => {
    const s = scripted();
    const p = new TapDevice({ native: s.binding });
    p.start(vi.fn(), vi.fn());
    await p.close();
    await p.close();
    expect(s.calls.filter((c) => c === 'reader-close' || c === 'close vxlan1' || c === 'close uvtep0')).toEqual(['reader-close', 'close uvtep0']);
  });
});
