// See offload.h. Offsets follow the RFCs: IPv4 (RFC 791), IPv6 (RFC 8200), TCP (RFC 9293),
// UDP (RFC 768); the virtio_net_hdr is include/uapi/linux/virtio_net.h (native byte order, as
// tun uses it unless TUNSETVNETLE/BE says otherwise).
#include "offload.h"
#include <arpa/inet.h>
#include <cstring>

namespace uvtep {

namespace {

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kTcpFin = 0x01;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpAck = 0x10;
constexpr uint8_t kTcpCwr = 0x80;
constexpr int kTcpCsumOff = 16;
constexpr int kUdpCsumOff = 6;
constexpr uint32_t kMaxIpPayload = 65535;

inline uint32_t Be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
inline void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// A 16-bit big-endian quantity as the native-order word the checksum adds.
inline uint64_t Word(uint16_t host) { return htons(host); }

// Where L3 starts (after up to two VLAN tags) and its ethertype; 0 when it does not parse.
int L3Offset(const uint8_t* f, size_t len, uint16_t* type) {
  int off = 12;
  uint16_t t = Be16(f + off);
  for (int tags = 0; (t == kEthVlan || t == kEthQinq) && tags < 2; tags++) {
    off += 4;
    if (len < static_cast<size_t>(off) + 2) return 0;
    t = Be16(f + off);
  }
  *type = t;
  return off + 2;
}

}  // namespace

uint64_t Pseudo(const uint8_t* ip, bool v6, uint8_t proto, uint32_t l4len) {
  uint64_t s = v6 ? CsumAdd(ip + 8, 32, 0) : CsumAdd(ip + 12, 8, 0);
  s += Word(proto);
  s += Word(static_cast<uint16_t>(l4len));
  return s;
}

void Ipv4Csum(uint8_t* ip, int ihl) {
  ip[10] = 0;
  ip[11] = 0;
  PutCsum(ip + 10, static_cast<uint16_t>(~CsumFold(CsumAdd(ip, static_cast<size_t>(ihl), 0))));
}

void ReadVnet(const uint8_t* p, VnetHdr* h) {
  h->flags = p[0];
  h->gsoType = p[1];
  memcpy(&h->hdrLen, p + 2, 2);
  memcpy(&h->gsoSize, p + 4, 2);
  memcpy(&h->csumStart, p + 6, 2);
  memcpy(&h->csumOffset, p + 8, 2);
}

void WriteVnet(uint8_t* p, const VnetHdr& h) {
  p[0] = h.flags;
  p[1] = h.gsoType;
  memcpy(p + 2, &h.hdrLen, 2);
  memcpy(p + 4, &h.gsoSize, 2);
  memcpy(p + 6, &h.csumStart, 2);
  memcpy(p + 8, &h.csumOffset, 2);
}

uint64_t CsumAdd(const uint8_t* p, size_t len, uint64_t sum) {
  while (len >= 32) {
    uint32_t w[8];
    memcpy(w, p, 32);
    sum += uint64_t(w[0]) + w[1] + w[2] + w[3] + w[4] + w[5] + w[6] + w[7];
    p += 32;
    len -= 32;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    sum += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    sum += w;
    p += 2;
    len -= 2;
  }
  if (len == 1) {
    uint16_t w = 0;
    memcpy(&w, p, 1);  // the odd byte is the high-order byte of a big-endian word
    sum += w;
  }
  return sum;
}

uint16_t CsumFold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

int CheckGso(const uint8_t* f, size_t len, const VnetHdr& h, GsoShape* out) {
  if ((h.flags & ~(kVnetNeedsCsum | kVnetDataValid)) != 0) return kSegBadVnet;
  const uint8_t gso = static_cast<uint8_t>(h.gsoType & ~kGsoEcn);
  if (len < kEthHlen) return kSegBadHeaders;
  if (gso != kGsoTcpV4 && gso != kGsoTcpV6 && gso != kGsoUdpL4) return kSegBadVnet;
  if (gso == kGsoUdpL4 && (h.gsoType & kGsoEcn) != 0) return kSegBadVnet;

  // Headers, parsed from the frame itself (the kernel's hdr_len is not used).
  uint16_t type = 0;
  const int l3 = L3Offset(f, len, &type);
  if (l3 == 0) return kSegBadHeaders;
  const uint8_t* ip = f + l3;
  const bool tcp = gso != kGsoUdpL4;
  const uint8_t proto = tcp ? kProtoTcp : kProtoUdp;
  bool v6;
  int iphl;
  if (type == kEthIp && gso != kGsoTcpV6) {
    if (len < static_cast<size_t>(l3) + 20 || (ip[0] >> 4) != 4) return kSegBadHeaders;
    iphl = (ip[0] & 0x0f) * 4;
    if (iphl < 20 || len < static_cast<size_t>(l3 + iphl) || ip[9] != proto) return kSegBadHeaders;
    if ((Be16(ip + 6) & 0x3fff) != 0) return kSegBadHeaders;  // MF or an offset: a fragment
    if (Be16(ip + 2) != len - l3) return kSegBadHeaders;
    v6 = false;
  } else if (type == kEthIpv6 && gso != kGsoTcpV4) {
    if (len < static_cast<size_t>(l3) + 40 || (ip[0] >> 4) != 6 || ip[6] != proto) return kSegBadHeaders;
    if (Be16(ip + 4) != len - l3 - 40) return kSegBadHeaders;
    iphl = 40;
    v6 = true;
  } else {
    return kSegBadHeaders;
  }
  const int l4 = l3 + iphl;
  int l4hl;
  if (tcp) {
    if (len < static_cast<size_t>(l4) + 20) return kSegBadHeaders;
    l4hl = (f[l4 + 12] >> 4) * 4;
    if (l4hl < 20) return kSegBadHeaders;
  } else {
    l4hl = 8;
  }
  const int hdrLen = l4 + l4hl;
  if (len < static_cast<size_t>(hdrLen) || hdrLen > kMaxHdr) return kSegBadHeaders;
  if ((h.flags & kVnetNeedsCsum) != 0 && (h.csumStart != l4 || h.csumOffset != (tcp ? kTcpCsumOff : kUdpCsumOff))) return kSegBadVnet;
  if (h.gsoSize == 0) return kSegBadVnet;
  const uint32_t payload = static_cast<uint32_t>(len) - hdrLen;
  const uint32_t mss = h.gsoSize;
  const int segs = payload == 0 ? 1 : static_cast<int>((payload + mss - 1) / mss);
  if (segs > kMaxSegs) return kSegTooMany;
  *out = {l3, iphl, l4, l4hl, hdrLen, v6, tcp, mss};
  return segs;
}

size_t SplitBytes(const GsoShape& g, int segs, size_t len) {
  const size_t payload = len - static_cast<size_t>(g.hdrLen);
  const size_t lastPay = payload - static_cast<size_t>(segs - 1) * g.mss;
  return static_cast<size_t>(segs - 1) * (static_cast<size_t>(g.hdrLen) + g.mss + 8) + static_cast<size_t>(g.hdrLen) + lastPay;
}

int Segment(uint8_t* f, size_t len, size_t cap, const VnetHdr& h, SegOut* out) {
  if ((h.flags & ~(kVnetNeedsCsum | kVnetDataValid)) != 0) return kSegBadVnet;
  const uint8_t gso = static_cast<uint8_t>(h.gsoType & ~kGsoEcn);
  if (len < kEthHlen) return kSegBadHeaders;
  if (gso == kGsoNone) {
    if ((h.gsoType & kGsoEcn) != 0) return kSegBadVnet;
    if ((h.flags & kVnetNeedsCsum) != 0) {
      // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; sum from csum_start to the end
      const size_t cs = h.csumStart;
      const size_t at = cs + h.csumOffset;
      if (cs < kEthHlen || at + 2 > len) return kSegBadVnet;
      uint16_t c = static_cast<uint16_t>(~CsumFold(CsumAdd(f + cs, len - cs, 0)));
      if (c == 0 && h.csumOffset == kUdpCsumOff) c = 0xffff;  // UDP: 0 means "no checksum"
      PutCsum(f + at, c);
    }
    out->segLen = static_cast<int>(len);
    out->lastLen = static_cast<int>(len);
    return 1;
  }
  GsoShape g;
  const int segs = CheckGso(f, len, h, &g);
  if (segs < 0) return segs;
  const int l3 = g.l3, iphl = g.iphl, l4 = g.l4, l4hl = g.l4hl, hdrLen = g.hdrLen;
  const bool v6 = g.v6, tcp = g.tcp;
  const uint8_t proto = tcp ? kProtoTcp : kProtoUdp;
  const uint32_t mss = g.mss;
  const uint32_t payload = static_cast<uint32_t>(len) - hdrLen;
  const uint32_t lastPay = payload - (segs - 1) * mss;
  const size_t stride = static_cast<size_t>(hdrLen) + mss + 8;
  if (SplitBytes(g, segs, len) > cap) return kSegNoRoom;

  uint8_t hdr[kMaxHdr];
  memcpy(hdr, f, static_cast<size_t>(hdrLen));
  const uint16_t id0 = v6 ? 0 : Be16(hdr + l3 + 4);
  const uint32_t seq0 = tcp ? Be32(hdr + l4 + 4) : 0;
  const uint8_t flags0 = tcp ? hdr[l4 + 13] : 0;

  // Backwards, so that moving segment k never overwrites a payload not yet moved.
  for (int k = segs - 1; k >= 0; k--) {
    uint8_t* d = f + k * stride;
    const uint32_t plen = k == segs - 1 ? lastPay : mss;
    if (k > 0) {
      memmove(d + hdrLen, f + hdrLen + static_cast<size_t>(k) * mss, plen);
      memcpy(d, hdr, static_cast<size_t>(hdrLen));
    }
    uint8_t* dip = d + l3;
    uint8_t* dl4 = d + l4;
    const uint32_t l4len = static_cast<uint32_t>(l4hl) + plen;
    if (!v6) {
      PutBe16(dip + 2, static_cast<uint16_t>(iphl + l4len));
      PutBe16(dip + 4, static_cast<uint16_t>(id0 + k));
      Ipv4Csum(dip, iphl);
    } else {
      PutBe16(dip + 4, static_cast<uint16_t>(l4len));
    }
    uint64_t sum = Pseudo(dip, v6, proto, l4len);
    if (tcp) {
      PutBe32(dl4 + 4, seq0 + static_cast<uint32_t>(k) * mss);
      uint8_t fl = flags0;
      if (k != segs - 1) fl &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
      if (k != 0) fl &= static_cast<uint8_t>(~kTcpCwr);
      dl4[13] = fl;
      dl4[kTcpCsumOff] = 0;
      dl4[kTcpCsumOff + 1] = 0;
      PutCsum(dl4 + kTcpCsumOff, static_cast<uint16_t>(~CsumFold(CsumAdd(dl4, l4len, sum))));
    } else {
      PutBe16(dl4 + 4, static_cast<uint16_t>(l4len));
      dl4[kUdpCsumOff] = 0;
      dl4[kUdpCsumOff + 1] = 0;
      uint16_t c = static_cast<uint16_t>(~CsumFold(CsumAdd(dl4, l4len, sum)));
      PutCsum(dl4 + kUdpCsumOff, c == 0 ? 0xffff : c);
    }
  }
  out->segLen = segs == 1 ? static_cast<int>(len) : hdrLen + static_cast<int>(mss);
  out->lastLen = hdrLen + static_cast<int>(lastPay);
  return segs;
}

// ---- receive coalescing

namespace {

// What a frame offers for merging. ok = a TCP data segment (flags ACK, PSH on the last) without
// VLAN tags, IPv4 options, fragments or IPv6 extension headers, checksums verified (or partial
// from a local kernel peer). UDP is parsed for its checksum only.
struct Seg {
  bool l4;       // parses as TCP or UDP (the flow key is valid), whatever the rest
  bool udp;
  bool ok;       // may be merged
  bool valid;    // checksums verified
  bool partial;  // the checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL)
  bool v6;
  int iphl;
  int doff;  // L4 header length (8 for UDP)
  uint32_t payload;
  uint32_t seq;
  uint8_t flags;
};

void Parse(const uint8_t* f, uint32_t len, Seg* s) {
  s->l4 = s->udp = s->ok = s->valid = s->partial = false;
  if (len < kEthHlen + 28) return;
  const uint16_t type = Be16(f + 12);
  const uint8_t* ip = f + kEthHlen;
  uint32_t ipLen;
  uint8_t proto;
  if (type == kEthIp) {
    proto = ip[9];
    if (ip[0] != 0x45 || (proto != kProtoTcp && proto != kProtoUdp)) return;
    if ((Be16(ip + 6) & 0x3fff) != 0) return;
    ipLen = Be16(ip + 2);
    s->v6 = false;
    s->iphl = 20;
  } else if (type == kEthIpv6) {
    proto = ip[6];
    if ((ip[0] >> 4) != 6 || (proto != kProtoTcp && proto != kProtoUdp) || len < kEthHlen + 48) return;
    ipLen = 40u + Be16(ip + 4);
    s->v6 = true;
    s->iphl = 40;
  } else {
    return;
  }
  if (kEthHlen + ipLen != len) return;
  const uint8_t* t = ip + s->iphl;
  s->udp = proto == kProtoUdp;
  if (s->udp) {
    s->doff = 8;
    if (Be16(t + 4) != ipLen - static_cast<uint32_t>(s->iphl)) return;
    s->flags = 0;
    s->seq = 0;
  } else {
    if (len < kEthHlen + static_cast<uint32_t>(s->iphl) + 20) return;
    s->doff = (t[12] >> 4) * 4;
    if (s->doff < 20 || static_cast<uint32_t>(kEthHlen + s->iphl + s->doff) > len) return;
    s->flags = t[13];
    s->seq = Be32(t + 4);
  }
  s->l4 = true;
  s->payload = len - kEthHlen - s->iphl - s->doff;
  const uint32_t l4len = static_cast<uint32_t>(s->doff) + s->payload;
  if (!s->v6 && CsumFold(CsumAdd(ip, 20, 0)) != 0xffff) return;
  const int csumOff = s->udp ? kUdpCsumOff : kTcpCsumOff;
  uint16_t field;
  memcpy(&field, t + csumOff, 2);
  const uint64_t ps = Pseudo(ip, s->v6, proto, l4len);
  if (s->udp && !s->v6 && field == 0) {
    // IPv4 UDP without a checksum: nothing to verify
  } else if (CsumFold(CsumAdd(t, l4len, ps)) != 0xffff) {
    // A local kernel peer (a kernel VTEP over veth, tx checksum offload on) sends TCP and UDP with
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum and nothing else, as a NIC would
    // have finished it. It is taken as the kernel takes it from a local device: NEEDS_CSUM.
    if (field == 0 || field != CsumFold(ps)) return;
    s->partial = true;
  }
  s->valid = true;
  // UDP is written datagram by datagram, as the kernel's GRO leaves it for a socket without
  // UDP_GRO (merging it into UDP_L4 GSO writes was measured: fewer datagrams reached a busy
  // receiver, whose socket then took bursts of 64)
  s->ok = !s->udp && s->payload > 0 && (s->flags & kTcpAck) != 0 && (s->flags & ~(kTcpAck | kTcpPsh)) == 0;
}

// Same flow: protocol, addresses and ports.
bool SameFlow(const uint8_t* a, const uint8_t* b, bool v6, int iphl) {
  const uint8_t* ia = a + kEthHlen;
  const uint8_t* ib = b + kEthHlen;
  if (v6 ? (ia[6] != ib[6] || memcmp(ia + 8, ib + 8, 32) != 0) : (ia[9] != ib[9] || memcmp(ia + 12, ib + 12, 8) != 0)) return false;
  return memcmp(ia + iphl, ib + iphl, 4) == 0;
}

// Everything GRO requires to be equal besides the flow key: Ethernet header, IP fields that
// must not differ (TOS/class, TTL/hop limit, DF, flow label), ACK number, TCP options.
bool Compatible(const uint8_t* a, const uint8_t* b, bool v6, int iphl, int doff) {
  if (memcmp(a, b, kEthHlen) != 0) return false;
  const uint8_t* ia = a + kEthHlen;
  const uint8_t* ib = b + kEthHlen;
  if (!v6) {
    if (ia[1] != ib[1] || ia[8] != ib[8] || (ia[6] & 0x40) != (ib[6] & 0x40)) return false;
  } else {
    if (memcmp(ia, ib, 4) != 0 || ia[7] != ib[7]) return false;
  }
  const uint8_t* ta = ia + iphl;
  const uint8_t* tb = ib + iphl;
  if (memcmp(ta + 8, tb + 8, 4) != 0) return false;
  return memcmp(ta + 20, tb + 20, static_cast<size_t>(doff - 20)) == 0;
}

}  // namespace

void Coalescer::WriteOne(uint8_t* p, uint32_t len, bool valid, int partialL4, int csumOff) {
  uint8_t vh[kVnetHdrLen] = {0};
  if (partialL4 > 0) {
    VnetHdr h{kVnetNeedsCsum, kGsoNone, 0, 0, static_cast<uint16_t>(partialL4), static_cast<uint16_t>(csumOff)};
    WriteVnet(vh, h);
  } else if (valid) {
    vh[0] = kVnetDataValid;
  }
  struct iovec iov[2] = {{vh, kVnetHdrLen}, {p, len}};
  Put(iov, 2, 1, 1, len);  // the vnet header is ours, the frame the caller's
}

bool Coalescer::Put(struct iovec* iov, int n, int transient, double frames, double bytes) {
  stats.writes++;
  if (write_(ctx_, iov, n, transient, frames, bytes) == 0) return true;
  stats.lostFrames += frames;
  stats.lostBytes += bytes;
  return false;
}

void Coalescer::Emit(Flow& f) {
  if (f.count == 1) {
    WriteOne(f.first, f.firstLen, true, f.partial ? kEthHlen + f.iphl : 0, kTcpCsumOff);
    return;
  }
  uint8_t hdr[kMaxHdr];
  memcpy(hdr, f.first, static_cast<size_t>(f.hdrLen));
  uint8_t* ip = hdr + kEthHlen;
  uint8_t* t = ip + f.iphl;
  const uint32_t l4len = static_cast<uint32_t>(f.doff) + f.total;
  if (!f.v6) {
    PutBe16(ip + 2, static_cast<uint16_t>(f.iphl + l4len));
    Ipv4Csum(ip, f.iphl);
  } else {
    PutBe16(ip + 4, static_cast<uint16_t>(l4len));
  }
  if (f.lastPsh) t[13] |= kTcpPsh;
  // NEEDS_CSUM: the field holds the pseudo-header sum, the kernel treats the rest as verified
  PutCsum(t + kTcpCsumOff, CsumFold(Pseudo(ip, f.v6, kProtoTcp, l4len)));
  VnetHdr vh{kVnetNeedsCsum, f.v6 ? kGsoTcpV6 : kGsoTcpV4, static_cast<uint16_t>(f.hdrLen), static_cast<uint16_t>(f.mss),
             static_cast<uint16_t>(kEthHlen + f.iphl), kTcpCsumOff};
  uint8_t vb[kVnetHdrLen];
  WriteVnet(vb, vh);
  struct iovec iov[kMaxSegs + 2];
  iov[0] = {vb, kVnetHdrLen};
  iov[1] = {hdr, static_cast<size_t>(f.hdrLen)};
  for (int i = 0; i < f.count; i++) iov[i + 2] = {f.pay[i], f.plen[i]};
  if (Put(iov, f.count + 2, 2, f.count, f.count * static_cast<double>(f.hdrLen) + f.total)) {
    stats.groWrites++;
    stats.groSegments += f.count;
  }
}

bool TakesWhole(const uint8_t* p, uint32_t len, uint32_t mtu) {
  Seg s;
  Parse(p, len, &s);
  return s.l4 && !s.udp && s.partial && mtu > static_cast<uint32_t>(s.iphl + s.doff) && len > mtu + kEthHlen;
}

void Coalescer::EmitBig(uint8_t* p, uint32_t len, bool v6, int iphl, int doff) {
  const int hdrLen = kEthHlen + iphl + doff;
  uint8_t hdr[kMaxHdr];
  memcpy(hdr, p, static_cast<size_t>(hdrLen));
  uint8_t* ip = hdr + kEthHlen;
  const uint32_t l4len = len - kEthHlen - static_cast<uint32_t>(iphl);
  PutCsum(ip + iphl + kTcpCsumOff, CsumFold(Pseudo(ip, v6, kProtoTcp, l4len)));
  const uint32_t mss = mtu_ - static_cast<uint32_t>(iphl + doff);
  VnetHdr vh{kVnetNeedsCsum, v6 ? kGsoTcpV6 : kGsoTcpV4, static_cast<uint16_t>(hdrLen), static_cast<uint16_t>(mss),
             static_cast<uint16_t>(kEthHlen + iphl), kTcpCsumOff};
  uint8_t vb[kVnetHdrLen];
  WriteVnet(vb, vh);
  struct iovec iov[3] = {{vb, kVnetHdrLen}, {hdr, static_cast<size_t>(hdrLen)}, {p + hdrLen, len - static_cast<uint32_t>(hdrLen)}};
  if (Put(iov, 3, 2, 1, len)) stats.bigWrites++;
}

void Coalescer::Drop(int i) {
  for (int j = i + 1; j < nflows_; j++) flows_[j - 1] = flows_[j];
  nflows_--;
}

void Coalescer::Add(uint8_t* p, uint32_t len) {
  Seg s;
  Parse(p, len, &s);
  if (!s.l4) {
    WriteOne(p, len, false, 0, 0);
    return;
  }
  const int csumOff = s.udp ? kUdpCsumOff : kTcpCsumOff;
  if (s.partial) stats.partialCsum++;
  if (!s.valid) stats.badCsum++;
  int fi = -1;
  for (int i = 0; i < nflows_; i++) {
    if (flows_[i].v6 == s.v6 && SameFlow(flows_[i].first, p, s.v6, s.iphl)) {
      fi = i;
      break;
    }
  }
  const bool big = !s.udp && mtu_ > 0 && len > mtu_ + kEthHlen && s.valid && mtu_ > static_cast<uint32_t>(s.iphl + s.doff);
  if (fi >= 0 && big) {
    Emit(flows_[fi]);
    Drop(fi);
    fi = -1;
  }
  if (big) {
    EmitBig(p, len, s.v6, s.iphl, s.doff);
    return;
  }
  if (fi >= 0) {
    Flow& f = flows_[fi];
    const bool fits = merge_ && s.ok && !f.ended && s.seq == f.nextSeq && s.payload <= f.mss && s.doff == f.doff && f.count < kMaxSegs &&
                      static_cast<uint32_t>(f.iphl + f.doff) + f.total + s.payload <= kMaxIpPayload &&
                      Compatible(f.first, p, s.v6, s.iphl, s.doff);
    if (fits) {
      f.pay[f.count] = p + kEthHlen + s.iphl + s.doff;
      f.plen[f.count] = s.payload;
      f.count++;
      f.total += s.payload;
      f.nextSeq = s.seq + s.payload;
      f.lastPsh = (s.flags & kTcpPsh) != 0;
      f.ended = f.lastPsh || s.payload < f.mss;
      f.partial = f.partial || s.partial;
      return;
    }
    Emit(f);  // what cannot join its flow's run flushes that run first: order within a flow is kept
    Drop(fi);
  }
  if (!merge_ || !s.ok) {
    WriteOne(p, len, s.valid, s.partial ? kEthHlen + s.iphl : 0, csumOff);
    return;
  }
  if (nflows_ == kFlows) {
    Emit(flows_[0]);
    Drop(0);
  }
  Flow& f = flows_[nflows_++];
  f.first = p;
  f.firstLen = len;
  f.v6 = s.v6;
  f.iphl = s.iphl;
  f.doff = s.doff;
  f.hdrLen = kEthHlen + s.iphl + s.doff;
  f.mss = s.payload;
  f.nextSeq = s.seq + s.payload;
  f.total = s.payload;
  f.count = 1;
  f.pay[0] = p + f.hdrLen;
  f.plen[0] = s.payload;
  f.lastPsh = (s.flags & kTcpPsh) != 0;
  f.ended = f.lastPsh;
  f.partial = s.partial;
}

void Coalescer::Flush() {
  for (int i = 0; i < nflows_; i++) Emit(flows_[i]);
  nflows_ = 0;
}

int TakeRead(uint8_t* frame, int32_t r, int vnet, size_t room, double* stats, SegOut* out) {
  stats[kStReads]++;
  if (r < vnet) return 0;  // cannot happen with a vnet header configured; never deliver garbage
  const size_t len = static_cast<size_t>(r - vnet);
  int segs = 1;
  out->segLen = out->lastLen = static_cast<int>(len);
  if (vnet > 0) {
    VnetHdr h;
    ReadVnet(frame - vnet, &h);
    if ((h.flags & kVnetNeedsCsum) != 0 || h.gsoType != kGsoNone) {
      segs = Segment(frame, len, room, h, out);
      if (segs < 0) {
        stats[segs == kSegBadVnet ? kStBadVnet : segs == kSegBadHeaders ? kStBadHeaders : segs == kSegTooMany ? kStTooMany : kStNoRoom]++;
        return 0;
      }
      stats[h.gsoType != kGsoNone ? kStSuper : kStCsum]++;
    }
  }
  stats[kStFrames] += segs;
  return segs;
}

}  // namespace uvtep
