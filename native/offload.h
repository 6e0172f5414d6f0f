// Per-byte work of the fast path, as plain functions over bytes (no N-API, no fds), so the
// reader, the writer and the tests share one implementation:
//   - Internet checksums (RFC 1071) computed over native-order words;
//   - Segment(): a TAP super-frame behind its virtio_net_hdr (TSO4/TSO6/USO) becomes MSS-sized
//     frames with complete headers and checksums, in place, at a fixed stride;
//   - Coalescer: consecutive TCP segments of one flow, from one received batch, become one
//     GSO frame written with a gather writev (kernel GRO rules, checksums verified first).
// The virtio_net_hdr from the kernel is validated, never trusted: hdr_len is recomputed from
// the headers, csum_start/csum_offset must agree with them, unknown flags and GSO types drop.
#pragma once
#include <sys/uio.h>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace uvtep {

// Ethernet (IEEE 802.3) and the ethertypes the fast path reads.
constexpr int kEthHlen = 14;
constexpr uint16_t kEthIp = 0x0800;
constexpr uint16_t kEthIpv6 = 0x86dd;
constexpr uint16_t kEthVlan = 0x8100;
constexpr uint16_t kEthQinq = 0x88a8;

inline uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
// Stores a checksum computed by CsumFold (native order, no byte swap).
inline void PutCsum(uint8_t* p, uint16_t v) { memcpy(p, &v, 2); }

constexpr int kVnetHdrLen = 10;
constexpr uint8_t kVnetNeedsCsum = 1;
constexpr uint8_t kVnetDataValid = 2;
constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpV4 = 1;
constexpr uint8_t kGsoTcpV6 = 4;
constexpr uint8_t kGsoUdpL4 = 5;
constexpr uint8_t kGsoEcn = 0x80;

// Segments per super-frame: the TAP's gso_max_segs is set to this, and more is refused.
constexpr int kMaxSegs = 64;
// Largest header run (Ethernet + 2 VLAN tags + IPv4/IPv6 with options + TCP with options).
constexpr int kMaxHdr = 160;
// Room a segmented super-frame may grow by, per segment: a VXLAN header and a header run.
constexpr int kSegGrowth = 8 + kMaxHdr;

struct VnetHdr {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t hdrLen;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};

void ReadVnet(const uint8_t* p, VnetHdr* h);
void WriteVnet(uint8_t* p, const VnetHdr& h);

// Ones'-complement sum of p[0, len) as native-order 32-bit words into a 64-bit accumulator.
// Regions summed separately must start at even offsets of the checksummed data.
uint64_t CsumAdd(const uint8_t* p, size_t len, uint64_t sum);
// Folds to 16 bits (native order; store with PutCsum, no byte swap).
uint16_t CsumFold(uint64_t sum);
// Pseudo-header sum (RFC 793 / RFC 8200 section 8.1) for an L4 segment of l4len bytes behind
// the IPv4 or IPv6 header at ip.
uint64_t Pseudo(const uint8_t* ip, bool v6, uint8_t proto, uint32_t l4len);
// Writes the header checksum of the IPv4 header at ip (ihl bytes).
void Ipv4Csum(uint8_t* ip, int ihl);

// Results of Segment(): > 0 frames; < 0 the reason it was refused.
constexpr int kSegBadVnet = -1;     // flags, GSO type or checksum fields the frame contradicts
constexpr int kSegBadHeaders = -2;  // headers that do not parse as the GSO type says
constexpr int kSegTooMany = -3;     // more than kMaxSegs segments
constexpr int kSegNoRoom = -4;      // output would not fit the slot

struct SegOut {
  int segLen;   // length of every frame but the last
  int lastLen;  // length of the last frame
};

// What CheckGso() found in a GSO frame's headers (offsets from the frame's start).
struct GsoShape {
  int l3, iphl, l4, l4hl, hdrLen;
  bool v6, tcp;
  uint32_t mss;
};
// Validates GSO frame f[0, len) against its vnet header h as Segment() does, without touching
// it: its segment count (out: its shape), or one of the kSeg* refusals.
int CheckGso(const uint8_t* f, size_t len, const VnetHdr& h, GsoShape* out);
// The bytes Segment() needs from the frame's start to split a frame of len bytes and shape g
// into segs segments (each after 8 bytes for a VXLAN header).
size_t SplitBytes(const GsoShape& g, int segs, size_t len);
// frame[0, len) is one frame read from the TAP behind vnet header h. Segments in place: frame k
// starts at frame + k * (segLen + 8) (8 bytes of headroom before each for the VXLAN header),
// and everything stays within frame[0, cap). Finishes partial checksums of non-GSO frames.
int Segment(uint8_t* frame, size_t len, size_t cap, const VnetHdr& h, SegOut* out);

// A TAP reader's stats (src/native.ts ReaderStat reads them by the same numbers; ProxyDropped
// is the datapath process's, native/datapath/main.cc).
enum ReaderStat { kStReads, kStFrames, kStSuper, kStCsum, kStBadVnet, kStBadHeaders, kStTooMany, kStNoRoom, kStProxyDropped, kReaderStatCount };

// One TAP read of r bytes at frame - vnet (room: bytes the slot has from frame on): validated,
// split in place with Segment when its virtio_net_hdr asks, and counted into stats (ReaderStat).
// Returns its frames (out: their lengths), or 0 when it was refused.
int TakeRead(uint8_t* frame, int32_t r, int vnet, size_t room, double* stats, SegOut* out);

// Writes one packet: iov[0] is the virtio_net_hdr. Returns 0 or -errno. A writer may queue the
// packet instead (WriteRing): the first `transient` pieces live on the caller's stack (headers it
// built) and are copied, the others stay valid until the batch is submitted; a later failure adds
// `frames` and `bytes` to the losses itself.
using GatherWriter = int (*)(void* ctx, struct iovec* iov, int iovcnt, int transient, double frames, double bytes);

struct GroStats {
  double writes = 0;       // write calls
  double groWrites = 0;    // writes that carried several segments
  double groSegments = 0;  // segments they carried
  double lostFrames = 0;   // frames in writes that failed
  double lostBytes = 0;
  double badCsum = 0;      // TCP segments whose checksum did not verify (written unmerged)
  double partialCsum = 0;  // TCP/UDP frames with a partial checksum from a local kernel peer
  double bigWrites = 0;    // TCP super-frames (larger than the MTU) written as GSO frames
  // Adds these to a writer-stats array (WriterStat in src/native.ts: the same order).
  void AddTo(double* st) const {
    const double v[] = {writes, groWrites, groSegments, lostFrames, lostBytes, badCsum, partialCsum, bigWrites};
    for (int i = 0; i < 8; i++) st[i] += v[i];
  }
};

// Whether a received frame larger than the TAP's MTU is a TCP super-frame a Coalescer writes as
// one GSO frame: a local kernel peer's (or uvtep's own tunnel-GSO) frame whose checksum field
// holds exactly the pseudo-header sum. Anything else that large is JS's to count.
bool TakesWhole(const uint8_t* p, uint32_t len, uint32_t mtu);
// Receive-side coalescing over one batch: TCP segments of one flow (GSO TCPV4/TCPV6); TCP and UDP
// checksums verified (or recognised as partial from a local kernel peer) and marked for the kernel. Add() each frame in order, then Flush(). Frames must
// stay valid until Flush() returns.
class Coalescer {
 public:
  // mtu: the TAP's; a TCP frame larger than it (a super-frame a local kernel peer sent as one
  // tunnel-GSO datagram) is written as a GSO frame of MSS-sized segments. 0: no such frames.
  Coalescer(GatherWriter w, void* ctx, bool merge, uint32_t mtu = 0) : write_(w), ctx_(ctx), merge_(merge), mtu_(mtu) {}
  void Add(uint8_t* p, uint32_t len);
  void Flush();
  GroStats stats;

 private:
  static constexpr int kFlows = 16;
  struct Flow {
    uint8_t* first;
    uint32_t firstLen;
    bool v6;
    int iphl;
    int doff;
    int hdrLen;
    uint32_t mss;
    uint32_t nextSeq;
    uint32_t total;
    int count;
    bool lastPsh;
    bool ended;
    bool partial;
    uint8_t* pay[kMaxSegs];
    uint32_t plen[kMaxSegs];
  };
  void Emit(Flow& f);
  void EmitBig(uint8_t* p, uint32_t len, bool v6, int iphl, int doff);
  // partialL4 > 0: written with NEEDS_CSUM at that offset (csumOff into the L4 header)
  void WriteOne(uint8_t* p, uint32_t len, bool valid, int partialL4, int csumOff);
  // Hands one packet to the writer, counting it; false when it was lost.
  bool Put(struct iovec* iov, int n, int transient, double frames, double bytes);
  void Drop(int i);
  GatherWriter write_;
  void* ctx_;
  bool merge_;
  uint32_t mtu_;
  Flow flows_[kFlows];
  int nflows_ = 0;
};

}  // namespace uvtep
