// See flowtable.h and flowcache.h.
#include "flowtable.h"
#include <netinet/in.h>
#include <sys/uio.h>
#include <time.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include "udpmsg.h"

namespace uvtep {

namespace {

constexpr int kMaxUsed = kFlowSlots / 2;  // open addressing stays short
constexpr int kVxlanHlen = 8;
constexpr int kMaxBatch = 64;
constexpr int kMaxMsgs = 2 * kMaxBatch;  // a super-frame of 64 segments may need two messages

inline uint64_t MacAt(const uint8_t* p) {
  return (uint64_t(p[0]) << 40) | (uint64_t(p[1]) << 32) | (uint64_t(p[2]) << 24) | (uint64_t(p[3]) << 16) | (uint64_t(p[4]) << 8) | p[5];
}

inline int SlotOf(uint64_t mac) { return static_cast<int>((mac * 0x9e3779b97f4a7c15ULL) >> 56) & (kFlowSlots - 1); }

// The ECN bits of an untagged IPv4/IPv6 frame are zero (other ethertypes have none): the outer
// header then needs no per-packet DS field (RFC 6040 encapsulation copies a non-zero ECN).
bool NoInnerEcn(const uint8_t* f, int len) {
  const uint16_t type = Be16(f + 12);
  if (type == kEthIp) return len >= kEthHlen + 20 && (f[15] & 3) == 0;
  if (type == kEthIpv6) return len >= kEthHlen + 40 && ((f[15] >> 4) & 3) == 0;
  return type != kEthVlan && type != kEthQinq;  // tagged: JS looks past the tags
}

// the slot for `mac` in table t (its own, or the first free one), -1 when full
template <typename E>
int Place(E* t, int used, uint64_t mac) {
  for (int i = SlotOf(mac), k = 0; k < kFlowSlots; i = (i + 1) & (kFlowSlots - 1), k++) {
    if (t[i].used && t[i].mac == mac) return i;
    if (!t[i].used) return used >= kMaxUsed ? -1 : i;
  }
  return -1;
}

}  // namespace

// The VXLAN header (I flag, this VTEP's VNI) at h[0, 8).
void FlowTable::WriteVxlan(uint8_t* h) const {
  h[0] = 0x08;
  h[1] = h[2] = h[3] = 0;
  h[4] = static_cast<uint8_t>(c_.vni >> 16);
  h[5] = static_cast<uint8_t>(c_.vni >> 8);
  h[6] = static_cast<uint8_t>(c_.vni);
  h[7] = 0;
}

void FlowTable::Reset() {
  for (auto& e : tx_) e.used = false;
  for (auto& e : rx_) e.used = false;
  txUsed_ = rxUsed_ = 0;
}

const FlowTable::TxEntry* FlowTable::FindTx(uint64_t mac) const {
  for (int i = SlotOf(mac), k = 0; k < kFlowSlots; i = (i + 1) & (kFlowSlots - 1), k++) {
    if (!tx_[i].used) return nullptr;
    if (tx_[i].mac == mac) return &tx_[i];
  }
  return nullptr;
}

int FlowTable::FindRx(uint64_t mac) const {
  for (int i = SlotOf(mac), k = 0; k < kFlowSlots; i = (i + 1) & (kFlowSlots - 1), k++) {
    if (!rx_[i].used) return -1;
    if (rx_[i].mac == mac) return i;
  }
  return -1;
}

bool FlowTable::SetTx(uint64_t mac, const uint8_t* addr, size_t len, int port) {
  if (mac >= (1ULL << 48) || port < 1 || port > 65535) return false;
  sockaddr_storage ss;
  const socklen_t alen = MakeSockaddr(c_.family, addr, len, port, 0, &ss);
  if (alen == 0) return false;
  const int i = Place(tx_, txUsed_, mac);
  if (i < 0) return false;
  if (!tx_[i].used) txUsed_++;
  tx_[i].used = true;
  tx_[i].mac = mac;
  tx_[i].addr = ss;
  tx_[i].alen = alen;
  tx_[i].tunnel = false;
  if (tun_ != nullptr) Reroute(&tx_[i]);
  return true;
}

namespace {
uint64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}
}  // namespace

void FlowTable::Reroute(TxEntry* to) {
  to->routed = NowMs();
  const int held = guarded_ ? tun_->Holds(c_.family) : 0;
  stats_[kTunnelHeld] = held;
  to->tunnel = held == 0 && tun_->Route(to->addr, &to->route);
}

bool FlowTable::TunnelTo(const uint8_t* frame) {
  if (!Active() || tun_ == nullptr || (frame[0] & 1) != 0) return false;
  TxEntry* e = FindTx(MacAt(frame));
  if (e == nullptr) return false;
  // addresses, routes, socket options and the host's rules change under an entry
  if (NowMs() - e->routed >= 1000) Reroute(e);
  return e->tunnel;
}

int FlowTable::SetRx(uint64_t mac, const uint8_t* addr, size_t len) {
  const size_t want = c_.family == AF_INET ? 4 : 16;
  if (mac >= (1ULL << 48) || len != want) return -1;
  const int i = Place(rx_, rxUsed_, mac);
  if (i < 0) return -1;
  if (!rx_[i].used) rxUsed_++;
  rx_[i].used = true;
  rx_[i].mac = mac;
  rx_[i].fam = c_.family;
  memset(rx_[i].addr, 0, sizeof rx_[i].addr);
  memcpy(rx_[i].addr, addr, want);
  seen_[i] = 0;
  return i;
}

int FlowTable::Encap(uint8_t* slab, int32_t* offs, const int32_t* lens, int32_t* segs, const int32_t* lasts, int n, const VnetHdr* vh,
                     const GsoShape* gs) {
  if (!Active() || n > kMaxBatch) return 0;
  TxEntry* to[kMaxBatch];
  for (int i = 0; i < n; i++) {
    const uint8_t* f = slab + offs[i];
    const int len = lens[i];
    if (segs[i] < 0) {  // whole: its route was there when it was read
      if (tun_ == nullptr || vh == nullptr || gs == nullptr || len < kEthHlen || (f[0] & 1) != 0 || !NoInnerEcn(f, len)) return 0;
      to[i] = FindTx(MacAt(f));
      if (to[i] == nullptr || !to[i]->tunnel) return 0;
      continue;
    }
    // a split super-frame leaves as GSO messages only: without GSO, JS sends it datagram by datagram
    if (segs[i] < 1 || (segs[i] > 1 && !c_.gso) || len < kEthHlen || len > c_.maxFrame || lasts[i] < kEthHlen || lasts[i] > len ||
        (f[0] & 1) != 0 || !NoInnerEcn(f, len)) {
      return 0;
    }
    to[i] = FindTx(MacAt(f));
    if (to[i] == nullptr) return 0;
  }
  // A super-frame is one message per 64 datagrams or 65,000 bytes (UDP_SEGMENT); a run of
  // single frames of one size to one destination (the last may be shorter) is joined into one,
  // a train the stack carries as one packet (with gso). The VXLAN header goes into the headroom
  // before every frame (FRAME_HEADROOM, and the 8 bytes the split leaves between segments).
  struct mmsghdr msgs[kMaxMsgs];
  struct iovec iov[kMaxMsgs];  // one per message, and one per frame a train joins
  alignas(struct cmsghdr) char ctrl[kMaxMsgs][kUdpCtrlSpace];
  int counts[kMaxMsgs];
  int mEntry[kMaxMsgs];   // the (first) entry of message m
  int mFirst[kMaxMsgs];   // its first datagram within that entry
  double mBytes[kMaxMsgs];  // the inner frames' bytes it carries
  int e = 0;
  int d = 0;  // datagrams of entry e already in messages
  while (e < n) {
    if (segs[e] < 0) {  // whole, after everything before it
      const int k = -segs[e];
      const int rc = Whole(to[e], vh[e], gs[e], slab + offs[e], static_cast<size_t>(lens[e]));
      if (rc < 0) return e;
      stats_[kTxFrames] += k;
      stats_[kTxBytes] += static_cast<double>(lens[e]) + static_cast<double>(gs[e].hdrLen) * (k - 1);
      stats_[kTxTunnel]++;
      e++;
      continue;
    }
    int m = 0;
    int used = 0;  // iovs, never fewer than messages
    while (e < n && used < kMaxMsgs && segs[e] > 0) {
      const size_t stride = static_cast<size_t>(lens[e]) + kVxlanHlen;
      uint8_t* h = slab + offs[e] - kVxlanHlen + stride * d;
      if (segs[e] == 1) {
        WriteVxlan(h);
        const size_t len = static_cast<size_t>(lasts[e]) + kVxlanHlen;
        if (m > 0 && c_.gso && segs[mEntry[m - 1]] == 1 && to[e] == to[mEntry[m - 1]] &&
            UdpJoinTrain(&msgs[m - 1], &counts[m - 1], ctrl[m - 1], h, len, -1, -1)) {
          mBytes[m - 1] += lasts[e];
        } else {
          UdpBuildMsg(&msgs[m], &iov[used], ctrl[m], h, len, &to[e]->addr, to[e]->alen, 0, -1, -1);
          counts[m] = 1;
          mEntry[m] = e;
          mFirst[m] = 0;
          mBytes[m++] = lasts[e];
        }
        used++;
        e++;
        continue;
      }
      const int k = std::min(UdpGsoPerMsg(stride), segs[e] - d);
      const bool end = d + k == segs[e];
      for (int c = 0; c < k; c++) WriteVxlan(h + stride * c);
      const size_t bytes = stride * (k - 1) + (end ? static_cast<size_t>(lasts[e]) + kVxlanHlen : stride);
      UdpBuildMsg(&msgs[m], &iov[used++], ctrl[m], h, bytes, &to[e]->addr, to[e]->alen, k > 1 ? static_cast<int>(stride) : 0, -1, -1);
      counts[m] = k;
      mEntry[m] = e;
      mFirst[m] = d;
      mBytes[m++] = static_cast<double>(bytes) - kVxlanHlen * k;
      d = end ? 0 : d + k;
      if (end) e++;
    }
    // JS sends what is left again and handles the error (backpressure, reports)
    const int ok = std::max(0, udp_->SendMsgs(msgs, counts, static_cast<unsigned>(m)));
    for (int k = 0; k < ok; k++) {
      stats_[kTxFrames] += counts[k];
      stats_[kTxBytes] += mBytes[k];
    }
    if (ok < m) {
      const int rest = mEntry[ok];
      if (mFirst[ok] > 0) {  // the rest of a super-frame: its unsent segments are an entry of their own
        offs[rest] += static_cast<int32_t>((static_cast<size_t>(lens[rest]) + kVxlanHlen) * mFirst[ok]);
        segs[rest] -= mFirst[ok];
      }
      return rest;
    }
  }
  return n;
}

int FlowTable::Whole(TxEntry* to, const VnetHdr& h, const GsoShape& g, const uint8_t* f, size_t len) {
  // its route was decided when the reader kept it whole (TunnelTo)
  const int rc = tun_->Send(to->route, c_.vni, h, g, f, len);
  if (rc == -EAGAIN || rc == -ENOBUFS) {  // backpressure, not a failure: JS sends this one through the socket
    stats_[kTunnelFull]++;
    return rc;
  }
  // a failed write (the injector removed, the kernel out of memory): this entry leaves through
  // the socket until it is rerouted, and the table's state says why until a write succeeds again
  if (rc < 0) to->tunnel = false;
  stats_[kTunnelState] = rc < 0 ? rc : 1;
  return rc;
}

// Whether datagram p[0, len) from src (udp.cc's 20-byte record) qualifies; *inner set to the frame.
bool FlowTable::Qualifies(const uint8_t* p, int len, const uint8_t* src, int* slot) const {
  if (!Active() || len < kVxlanHlen + kEthHlen) return false;
  const uint8_t* f = p + kVxlanHlen;
  // larger than a frame: only a TCP super-frame sent whole (tunnel GSO), which the TAP takes as a GSO frame
  if (len - kVxlanHlen > c_.maxFrame && !TakesWhole(f, static_cast<uint32_t>(len - kVxlanHlen), c_.mtu)) return false;
  const uint64_t smac = MacAt(f + 6);
  if ((f[6] & 1) != 0 || smac == 0 || (c_.hasOwn && smac == c_.own)) return false;
  *slot = -1;
  if (!c_.learning) return true;
  const int s = FindRx(smac);
  if (s < 0) return false;
  const RxEntry& e = rx_[s];
  const int fam = src[0] == 4 ? AF_INET : src[0] == 6 ? AF_INET6 : -1;
  if (fam != e.fam || memcmp(src + 4, e.addr, fam == AF_INET ? 4 : 16) != 0) return false;
  *slot = s;
  return true;
}

int FlowTableDecap(FlowTableFinder find, void* ctx, uint8_t* slab, const int32_t* offs, const int32_t* lens, const int32_t* segs,
                    const int16_t* tos, const uint8_t* srcs, int srcStride, int n) {
  if (n > kMaxBatch) return -1;
  // a GRO message (segs[i] < lens[i]) is a train of datagrams of segs[i] bytes, the last shorter
  const auto stride = [&](int i) { return segs[i] > 0 && segs[i] < lens[i] ? segs[i] : lens[i]; };
  FlowTable* to[kMaxBatch];
  int slots[kMaxBatch * kGsoMaxSegs];
  int nd = 0;
  for (int i = 0; i < n; i++) {
    if (tos[i] > 0 && (tos[i] & 3) != 0) return -1;  // an ECN mark: JS applies it (RFC 6040)
    if (lens[i] < kVxlanHlen) return -1;  // empty or truncated: JS counts it
    to[i] = nullptr;
    const int step = stride(i);
    for (int at = 0; at < lens[i]; at += step) {
      const int len = std::min(step, lens[i] - at);
      const uint8_t* p = slab + offs[i] + at;
      if (len < kVxlanHlen || nd == kMaxBatch * kGsoMaxSegs) return -1;  // a truncated last datagram
      // I flag alone, every reserved bit clear (both reserved-bits policies accept it)
      if (p[0] != 0x08 || p[1] != 0 || p[2] != 0 || p[3] != 0 || p[7] != 0) return -1;
      const uint32_t vni = (uint32_t(p[4]) << 16) | (uint32_t(p[5]) << 8) | p[6];
      FlowTable* fc = find(ctx, vni);
      if (fc == nullptr || (to[i] != nullptr && fc != to[i]) || !fc->Qualifies(p, len, srcs + i * srcStride, &slots[nd++])) return -1;
      to[i] = fc;
    }
  }
  // one coalescing pass per run of messages for the same VTEP, in order
  int i = 0;
  int d = 0;
  int writes = 0;
  while (i < n) {
    FlowTable* fc = to[i];
    TapSink* b = fc->tap();
    b->Begin(fc->config().gro, fc->config().mtu);
    int j = i;
    for (; j < n && to[j] == fc; j++) {
      const int step = stride(j);
      for (int at = 0; at < lens[j]; at += step) {
        uint8_t* f = slab + offs[j] + at + kVxlanHlen;
        const int flen = std::min(step, lens[j] - at) - kVxlanHlen;
        fc->Delivered(slots[d++], flen);
        b->Add(f, static_cast<uint32_t>(flen));
      }
    }
    const GroStats& s = b->End();
    fc->CountWrites(s);
    writes += static_cast<int>(s.writes);
    if (s.lostFrames > 0) fc->Lost(s.lostFrames, s.lostBytes);
    i = j;
  }
  return writes;
}

}  // namespace uvtep
