// The flow cache's tables and data path, without Node: the addon's FlowCache (flowcache.cc)
// wraps one for a VTEP in the Node process, and the datapath process (datapath/main.cc) holds
// its own copy for each VTEP it forwards for. See flowcache.h for what the cache is.
#pragma once
#include <sys/socket.h>
#include <cstdint>
#include "offload.h"
#include "tunnel.h"

namespace uvtep {

constexpr int kFlowSlots = 256;  // per table, a power of two
// kTxTunnel: super-frames sent whole as tunnel GSO (tunnel.h); kRxSuper: TCP super-frames
// received whole (tunnel GSO from a VTEP on this host) and written as GSO frames; kTunnelState:
// 1 while the table may send tunnel GSO, -errno when the injector could not be made or its last
// write failed, 0 when not asked for; kTunnelHeld: in the auto mode, the TunnelHold bits that
// keep it from sending tunnel GSO now (0: none); kTunnelFull: super-frames the injector's full
// send buffer turned back (they went on through the socket, as what a full socket turns back).
enum FlowCacheStat { kTxFrames, kTxBytes, kRxDatagrams, kRxBytes, kRxLost, kRxLostBytes, kTxTunnel, kRxSuper, kTunnelState, kTunnelHeld, kTunnelFull, kFlowStatCount };

// Where a FlowTable sends datagrams: sendmmsg on the VTEP's UDP socket, counted as its sends.
class UdpSink {
 public:
  virtual ~UdpSink() = default;
  // Message k carries dgrams[k] datagrams: the messages sent, or -errno when none was.
  virtual int SendMsgs(struct mmsghdr* msgs, const int* dgrams, unsigned n) = 0;
};

// Where a FlowTable writes frames: the VTEP's TAP, one batch at a time (coalesced with gro).
class TapSink {
 public:
  virtual ~TapSink() = default;
  virtual void Begin(bool gro, uint32_t mtu) = 0;
  virtual void Add(uint8_t* p, uint32_t len) = 0;
  // Writes what is left of the batch: the batch's counts.
  virtual const GroStats& End() = 0;
};

struct FlowConfig {
  uint32_t vni = 0;
  bool hasOwn = false;
  uint64_t own = 0;  // the TAP's own MAC (never learned from the underlay)
  int maxFrame = 0;
  bool learning = true;
  bool gro = true;
  bool gso = true;
  uint32_t mtu = 0;
  int family = AF_INET;  // the socket's
};

class FlowTable {
 public:
  // stats: kFlowStatCount, seen: kFlowSlots, tapStats: the TAP writer's 8 (GroStats::AddTo).
  FlowTable(const FlowConfig& c, double* stats, double* seen, double* tapStats) : c_(c), stats_(stats), seen_(seen), tapStats_(tapStats) { Reset(); }

  void Attach(TapSink* tap, UdpSink* udp) {
    tap_ = tap;
    udp_ = udp;
  }
  // Super-frames to remotes the tunnel sink routes leave whole through it (tunnel.h); guarded
  // (the auto mode): only while nothing on the socket's way out would be skipped (Holds).
  void AttachTunnel(TunnelSink* t, bool guarded) {
    tun_ = t;
    guarded_ = guarded;
  }
  // Whether a super-frame read from the TAP might leave whole: then the reader keeps it unsplit
  // (an entry with segs < 0, Encap) if its destination `frame` (a unicast MAC) has a route. The
  // route and the holds are looked at again when a second has passed.
  bool TunnelTo(const uint8_t* frame);
  const FlowConfig& config() const { return c_; }
  bool Active() const { return enabled_ && tap_ != nullptr && udp_ != nullptr; }

  // unicast mac goes to addr (4 or 16 bytes, the socket's family):port; false: refused or full
  bool SetTx(uint64_t mac, const uint8_t* addr, size_t len, int port);
  // datagrams with inner source mac from addr need no learning: the slot, or -1
  int SetRx(uint64_t mac, const uint8_t* addr, size_t len);
  void Reset();
  void Enable(bool on) { enabled_ = on; }

  // flowcache.h's FlowCacheEncap for this table. With a tunnel sink, an entry may also be a
  // whole super-frame: segs[i] = -(its segment count), lens[i] its length, vh[i] and gs[i] its
  // vnet header and shape; it leaves whole, in order. The entries from the returned index on
  // were not sent (a whole one among them is still whole).
  int Encap(uint8_t* slab, int32_t* offs, const int32_t* lens, int32_t* segs, const int32_t* lasts, int n, const VnetHdr* vh = nullptr,
            const GsoShape* gs = nullptr);
  // Whether datagram p[0, len) from src (a kSrcStride record) qualifies: *slot its rx entry (-1: no learning).
  bool Qualifies(const uint8_t* p, int len, const uint8_t* src, int* slot) const;
  void Delivered(int slot, int len) {
    stats_[kRxDatagrams]++;
    stats_[kRxBytes] += len;
    if (len > c_.maxFrame) stats_[kRxSuper]++;
    if (slot >= 0) seen_[slot] = 1;
  }
  void Lost(double frames, double bytes) {
    stats_[kRxLost] += frames;
    stats_[kRxLostBytes] += bytes;
    stats_[kRxBytes] -= bytes;
  }
  TapSink* tap() const { return tap_; }
  void CountWrites(const GroStats& g) { g.AddTo(tapStats_); }

 private:
  struct TxEntry {
    uint64_t mac;
    bool used;
    bool tunnel;  // route holds the way through the tunnel sink
    sockaddr_storage addr;
    socklen_t alen;
    TunnelRoute route;
    uint64_t routed;  // when tunnel and route were decided (CLOCK_MONOTONIC, ms)
  };
  struct RxEntry {
    uint64_t mac;
    bool used;
    int fam;
    uint8_t addr[16];
  };
  const TxEntry* FindTx(uint64_t mac) const;
  TxEntry* FindTx(uint64_t mac) { return const_cast<TxEntry*>(static_cast<const FlowTable*>(this)->FindTx(mac)); }
  // Decides whether `to` goes through the tunnel sink, and its route.
  void Reroute(TxEntry* to);
  // Sends whole super-frame f[0, len) to `to` through the tunnel sink: 0 or -errno.
  int Whole(TxEntry* to, const VnetHdr& h, const GsoShape& g, const uint8_t* f, size_t len);
  int FindRx(uint64_t mac) const;
  void WriteVxlan(uint8_t* h) const;

  FlowConfig c_;
  double* stats_;
  double* seen_;
  double* tapStats_;
  TapSink* tap_ = nullptr;
  UdpSink* udp_ = nullptr;
  TunnelSink* tun_ = nullptr;
  bool guarded_ = false;
  bool enabled_ = false;
  TxEntry tx_[kFlowSlots];
  RxEntry rx_[kFlowSlots];
  int txUsed_ = 0;
  int rxUsed_ = 0;
};

// flowcache.h's FlowCacheDecap over FlowTables: `find(ctx, vni)` gives the VTEP's table or null.
using FlowTableFinder = FlowTable* (*)(void* ctx, uint32_t vni);
int FlowTableDecap(FlowTableFinder find, void* ctx, uint8_t* slab, const int32_t* offs, const int32_t* lens, const int32_t* segs,
                   const int16_t* tos, const uint8_t* srcs, int srcStride, int n);

}  // namespace uvtep
