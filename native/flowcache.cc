// See flowcache.h. One FlowCache per VTEP, made by TypeScript with the VTEP's Tap and UdpSocket:
//
//   new FlowCache(tap, udp, vni, ownMac, maxFrame, learning, gro, gso, mtu, stats, seen, tapStats, datapath)
//   setTx(mac, addr, port) -> bool    unicast `mac` is sent to addr:port (false: the table is full)
//   setRx(mac, addr) -> slot | -1     datagrams with inner source `mac` from `addr` need no learning
//   clear(), enable(on), close()
//
// stats (Float64Array, FlowCacheStat in src/native.ts): frames sent and their bytes, datagrams
// received and the bytes delivered, frames and bytes the TAP did not take. The TAP writes are
// counted into tapStats, the TAP's own writer stats (as if JS had written them). seen[slot]
// is set to 1 when an rx entry forwarded a datagram: TypeScript refreshes the FDB entry's age
// from it (the FDB's ageing, not this cache, decides when a station is gone).
//
// With a Datapath (datapath.h) the packets are forwarded in the datapath process: every change
// to the tables is sent there too (the process applies the same operations to its copy, so the
// slots agree), and stats, seen and tapStats are arrays in the memory the two share, written
// by the process only. Without one (null), the addon's readers call Encap and Decap here.
#include "flowcache.h"
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <optional>
#include <cerrno>
#include <cstring>
#include "errors.h"
#include "datapath.h"
#include "dpproto.h"
#include "flowtable.h"
#include "offload.h"
#include "uvtep.h"

namespace uvtep {

namespace {

const napi_type_tag kFlowCacheTag = {0x7576746570464c4fULL, 0x5743414348450001ULL};

// The Node process's TAP and socket as a FlowTable's sinks.
class NodeTapSink : public TapSink {
 public:
  explicit NodeTapSink(Tap* tap) : tap_(tap) {}
  void Begin(bool gro, uint32_t mtu) override { b_.emplace(tap_, gro, mtu); }
  void Add(uint8_t* p, uint32_t len) override { b_->Add(p, len); }
  const GroStats& End() override { return b_->End(); }

 private:
  Tap* tap_;
  std::optional<TapBatch> b_;
};

class NodeUdpSink : public UdpSink {
 public:
  explicit NodeUdpSink(UdpSocket* s) : s_(s) {}
  int SendMsgs(struct mmsghdr* msgs, const int* dgrams, unsigned n) override { return UdpSendMsgs(s_, msgs, dgrams, n); }

 private:
  UdpSocket* s_;
};

}  // namespace

class FlowCache : public Napi::ObjectWrap<FlowCache> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FlowCache",
                       {InstanceMethod("setTx", &FlowCache::SetTx), InstanceMethod("setRx", &FlowCache::SetRx),
                        InstanceMethod("clear", &FlowCache::Clear), InstanceMethod("enable", &FlowCache::Enable),
                        InstanceMethod("close", &FlowCache::Close)});
  }

  explicit FlowCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FlowCache>(info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "FlowCache", "xxnnnooonbbb");
    Tap* tap = TapOf(env, info[0]);
    UdpSocket* udp = UdpSocketOf(env, info[1]);
    tapRef_ = Napi::Persistent(info[0].As<Napi::Object>());
    udpRef_ = Napi::Persistent(info[1].As<Napi::Object>());
    FlowConfig c;
    c.vni = info[2].As<Napi::Number>().Uint32Value() & 0xffffff;
    const double own = info[3].As<Napi::Number>().DoubleValue();
    c.hasOwn = own >= 0;
    c.own = c.hasOwn ? static_cast<uint64_t>(own) : 0;
    c.maxFrame = info[4].As<Napi::Number>().Int32Value();
    c.learning = info[5].As<Napi::Boolean>().Value();
    c.gro = info[6].As<Napi::Boolean>().Value();
    c.gso = info[7].As<Napi::Boolean>().Value();
    c.mtu = info[8].As<Napi::Number>().Uint32Value();
    c.family = UdpFamily(udp);
    Napi::Float64Array st = info[9].As<Napi::Float64Array>();
    Napi::Float64Array seen = info[10].As<Napi::Float64Array>();
    Napi::Float64Array tapSt = info[11].As<Napi::Float64Array>();
    if (tapSt.ElementLength() < 8) throw Napi::RangeError::New(env, "FlowCache: tapStats too short");
    if (st.ElementLength() < kFlowStatCount || seen.ElementLength() < static_cast<size_t>(kFlowSlots)) throw Napi::RangeError::New(env, "FlowCache: stats or seen too short");
    for (int i : {9, 10, 11}) refs_[i - 9] = Napi::Persistent(info[i].As<Napi::Object>());
    table_.emplace(c, st.Data(), seen.Data(), tapSt.Data());
    dp_ = info.Length() > 12 ? DatapathOf(env, info[12]) : nullptr;
    if (dp_ != nullptr) {
      dpRef_ = Napi::Persistent(info[12].As<Napi::Object>());
      DpAddFlow m{};
      m.h = {kDpAddFlow, DatapathNewId(dp_)};
      m.tap = DatapathTapId(dp_, tap);
      m.udp = DatapathUdpId(dp_, udp);
      if (m.tap == 0 || m.udp == 0) throw Napi::Error::New(env, "FlowCache: the TAP and the socket must be registered with the datapath first");
      m.vni = c.vni;
      m.hasOwn = c.hasOwn;
      m.own = c.own;
      m.maxFrame = c.maxFrame;
      m.learning = c.learning;
      m.gro = c.gro;
      m.gso = c.gso;
      m.mtu = c.mtu;
      m.family = c.family;
      const int64_t offs[] = {DatapathOffset(dp_, st.Data(), kFlowStatCount * 8), DatapathOffset(dp_, seen.Data(), kFlowSlots * 8), DatapathOffset(dp_, tapSt.Data(), 8 * 8)};
      for (int64_t o : offs) {
        if (o < 0) throw Napi::RangeError::New(env, "FlowCache: with a datapath, stats, seen and tapStats must be in its shared memory");
      }
      m.stats = static_cast<uint64_t>(offs[0]);
      m.seen = static_cast<uint64_t>(offs[1]);
      m.tapStats = static_cast<uint64_t>(offs[2]);
      // the tunnel mode: 'on', 'auto', or anything else for off
      const std::string mode = info.Length() > 13 && info[13].IsString() ? info[13].As<Napi::String>().Utf8Value() : "";
      m.tunnel = mode == "on" ? kDpTunnelOn : mode == "auto" ? kDpTunnelAuto : kDpTunnelOff;
      id_ = m.h.id;
      Mirror(env, &m, sizeof m);
    } else {
      tapSink_.emplace(tap);
      udpSink_.emplace(udp);
      table_->Attach(&*tapSink_, &*udpSink_);
    }
    info.This().As<Napi::Object>().TypeTag(&kFlowCacheTag);
  }

  FlowTable* table() { return dp_ == nullptr && table_ ? &*table_ : nullptr; }
  uint32_t vni() const { return table_->config().vni; }

 private:
  static uint64_t MacArg(const Napi::Value& v) {
    const double d = v.As<Napi::Number>().DoubleValue();
    return d >= 0 && d < 281474976710656.0 ? static_cast<uint64_t>(d) : ~0ULL;
  }

  // a change the datapath process applies to its copy of the table
  void Mirror(Napi::Env env, const void* msg, size_t len) {
    if (dp_ != nullptr && !DatapathSend(dp_, msg, len)) throw Napi::Error::New(env, "FlowCache: the datapath process is gone");
  }

  // setTx(mac, addr(4|16 bytes), port) -> bool
  Napi::Value SetTx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "setTx", "nbn");
    if (!table_) return Napi::Boolean::New(env, false);
    const uint64_t mac = MacArg(info[0]);
    Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
    const int port = info[2].As<Napi::Number>().Int32Value();
    const bool ok = table_->SetTx(mac, a.Data(), a.ByteLength(), port);
    if (ok && dp_ != nullptr) {
      DpFlowTx m{};
      m.h = {kDpFlowTx, id_};
      m.mac = mac;
      m.len = static_cast<uint32_t>(a.ByteLength());
      m.port = port;
      memcpy(m.addr, a.Data(), m.len);
      Mirror(env, &m, sizeof m);
    }
    return Napi::Boolean::New(env, ok);
  }

  // setRx(mac, addr(4|16 bytes)) -> slot, or -1 (full, or an address of the other family)
  Napi::Value SetRx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "setRx", "nb");
    if (!table_) return Napi::Number::New(env, -1);
    const uint64_t mac = MacArg(info[0]);
    Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
    const int slot = table_->SetRx(mac, a.Data(), a.ByteLength());
    if (slot >= 0 && dp_ != nullptr) {
      DpFlowRx m{};
      m.h = {kDpFlowRx, id_};
      m.mac = mac;
      m.len = static_cast<uint32_t>(a.ByteLength());
      memcpy(m.addr, a.Data(), m.len);
      Mirror(env, &m, sizeof m);
    }
    return Napi::Number::New(env, slot);
  }

  Napi::Value Clear(const Napi::CallbackInfo& info) {
    if (table_) table_->Reset();
    const DpHeader m{kDpFlowClear, id_};
    if (table_) Mirror(info.Env(), &m, sizeof m);
    return info.Env().Undefined();
  }

  Napi::Value Enable(const Napi::CallbackInfo& info) {
    ExpectArgs(info, "enable", "o");
    const bool on = info[0].As<Napi::Boolean>().Value();
    if (!table_) return info.Env().Undefined();
    table_->Enable(on);
    const DpValue m{{kDpFlowEnable, id_}, on ? 1u : 0u};
    Mirror(info.Env(), &m, sizeof m);
    return info.Env().Undefined();
  }

  // close(): off for good; the Tap and the socket are no longer held (nor is the process's copy)
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!table_) return info.Env().Undefined();
    if (dp_ != nullptr) {
      const DpHeader m{kDpDelFlow, id_};
      DatapathCall(dp_, &m, sizeof m);  // a process already gone has let go too
    }
    table_.reset();
    tapSink_.reset();
    udpSink_.reset();
    dp_ = nullptr;
    dpRef_.Reset();
    tapRef_.Reset();
    udpRef_.Reset();
    return info.Env().Undefined();
  }

  std::optional<FlowTable> table_;
  std::optional<NodeTapSink> tapSink_;
  std::optional<NodeUdpSink> udpSink_;
  Datapath* dp_ = nullptr;
  uint32_t id_ = 0;
  Napi::ObjectReference tapRef_, udpRef_, dpRef_, refs_[3];
};

int FlowCacheEncap(FlowCache* fc, uint8_t* slab, int32_t* offs, const int32_t* lens, int32_t* segs, const int32_t* lasts, int n) {
  FlowTable* t = fc == nullptr ? nullptr : fc->table();
  return t == nullptr ? 0 : t->Encap(slab, offs, lens, segs, lasts, n);
}

namespace {
struct FinderCtx {
  FlowCacheFinder find;
  void* ctx;
};
FlowTable* FindTable(void* ctx, uint32_t vni) {
  auto* f = static_cast<FinderCtx*>(ctx);
  FlowCache* fc = f->find(f->ctx, vni);
  return fc == nullptr ? nullptr : fc->table();
}
}  // namespace

int FlowCacheDecap(FlowCacheFinder find, void* ctx, uint8_t* slab, const int32_t* offs, const int32_t* lens, const int32_t* segs,
                    const int16_t* tos, const uint8_t* srcs, int srcStride, int n) {
  FinderCtx f{find, ctx};
  return FlowTableDecap(&FindTable, &f, slab, offs, lens, segs, tos, srcs, srcStride, n);
}

FlowCache* FlowCacheOf(Napi::Env env, Napi::Value v) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kFlowCacheTag)) throw Napi::TypeError::New(env, "expected a FlowCache");
  return FlowCache::Unwrap(v.As<Napi::Object>());
}

uint32_t FlowCacheVni(const FlowCache* fc) { return fc->vni(); }

void InitFlowCache(Napi::Env env, Napi::Object exports) { exports.Set("FlowCache", FlowCache::Define(env)); }

}  // namespace uvtep
