// Tunnel GSO toward the underlay (opt-in: --tunnel-gso). A TCP super-frame read from the TAP
// leaves whole, as the kernel's own VTEP sends it: one VXLAN-in-UDP packet of up to 64 KB
// carrying its offload metadata (SKB_GSO_UDP_TUNNEL), instead of a UDP GSO message of
// MSS-sized datagrams. A kernel VTEP on the same host then takes it whole (no cutting apart and
// merging again), and a NIC with UDP tunnel segmentation cuts it in hardware; anything else
// segments it in the kernel's software GSO, with every checksum finished.
//
// A UDP socket cannot send such a packet. The injector is a TAP of its own (no addresses,
// IPv6 off) written with a virtio_net_hdr_v1_hash_tunnel header (Linux 6.17 and later), and a
// BPF program on its tcx ingress hook (Linux 6.6) that hands each packet to the underlay device
// with bpf_redirect_neigh: the kernel routes it and fills in the Ethernet header from its
// neighbour table. The packet skips the host's netfilter OUTPUT and POSTROUTING hooks (the
// datagrams of the UDP socket do not): docs/design.md says what that means.
#pragma once
#include <sys/socket.h>
#include <cstddef>
#include <cstdint>
#include "offload.h"

namespace uvtep {

// Where and how a super-frame to one remote leaves: the underlay device and the outer headers.
struct TunnelRoute {
  int oif = 0;
  bool v6 = false;
  uint8_t src[16] = {};  // 4 bytes for IPv4
  uint8_t dst[16] = {};
  uint16_t sport = 0;  // network order
  uint16_t dport = 0;  // network order
  uint8_t ttl = 64;  // hop limit for IPv6
  uint8_t tos = 0;   // traffic class for IPv6
  bool df = true;    // IPv4 only
};

// What on the socket's way out the injector's packets would skip, so that tunnel GSO in its
// default mode (auto) holds back while any of it is there (docs/design.md):
// kHoldNetfilter: a hook on OUTPUT or POSTROUTING for the family (an nftables base chain of
// the ip, ip6 or inet family, or an iptables-legacy table); kHoldXfrm: an outbound IPsec
// policy; kHoldCgroupBpf: a cgroup BPF program of the process's on inet egress, UDP sendmsg or
// socket creation (which may set the socket's mark); kHoldUnknown: one of these could not be read.
enum TunnelHold { kHoldNetfilter = 1, kHoldXfrm = 2, kHoldCgroupBpf = 4, kHoldUnknown = 16 };

// Where a FlowTable sends super-frames whole.
class TunnelSink {
 public:
  virtual ~TunnelSink() = default;
  // The way to remote `to` as the socket would send to it now; false: not this way (a local or
  // multicast remote, no route): the socket sends it.
  virtual bool Route(const sockaddr_storage& to, TunnelRoute* r) = 0;
  // Writes super-frame f[0, len) (its vnet header h, shape g) inside VXLAN with this VNI: 0 or -errno.
  virtual int Send(const TunnelRoute& r, uint32_t vni, const VnetHdr& h, const GsoShape& g, const uint8_t* f, size_t len) = 0;
  // What on the socket's way out to the family's remotes the sink's packets would skip: TunnelHold bits, 0 for nothing.
  virtual int Holds(int family) = 0;
};

// The injector's TAP and BPF program: one per process, gone with it (the TAP is not
// persistent; the tcx link closes with its fd).
class TunnelInjector {
 public:
  TunnelInjector() = default;
  TunnelInjector(const TunnelInjector&) = delete;
  TunnelInjector& operator=(const TunnelInjector&) = delete;
  ~TunnelInjector();
  // Creates it as device `name`: 0, or -errno with *what naming the step that failed.
  int Open(const char* name, const char** what);
  bool ready() const { return tap_ >= 0; }
  int fd() const { return tap_; }
  // The underlay route to dst (4 or 16 bytes as v6; oif: the socket's bound device, 0 for any;
  // src: its bound address, or all zeros; the UDP ports in network order): false when there is
  // none or it is not a unicast one.
  bool Lookup(bool v6, const uint8_t* dst, int oif, const uint8_t* src, uint16_t sport, uint16_t dport, TunnelRoute* r);
  // TunnelHold bits for the family's way out: looked at the first time, then every second by a
  // thread of its own (never on the forwarding thread after the first time).
  int Holds(bool v6);
  // Its send buffer at least `bytes` (a socket's SO_SNDBUF): the super-frames written and not yet
  // sent by the underlay device count against it, as the socket's datagrams do against its own,
  // and a write past it fails with EAGAIN.
  void AtLeast(int bytes);

 private:
  int sndbuf_ = 0;
  int tap_ = -1;
  int prog_ = -1;
  int link_ = -1;
  int nl_ = -1;
  uint32_t seq_ = 0;
};

// One UDP socket's way through the injector: its bound address and port, TTL, TOS and DF.
class InjectorSink : public TunnelSink {
 public:
  // Gives the injector at least the socket's send buffer.
  InjectorSink(TunnelInjector* inj, int sock);
  bool Route(const sockaddr_storage& to, TunnelRoute* r) override;
  int Send(const TunnelRoute& r, uint32_t vni, const VnetHdr& h, const GsoShape& g, const uint8_t* f, size_t len) override;
  int Holds(int family) override;

 private:
  TunnelInjector* inj_;
  int sock_;
  uint16_t id_ = 0;
};

// Outer headers of a tunnel-GSO packet: Ethernet, IPv4 or IPv6, UDP, VXLAN.
constexpr int kTunnelOuter = 14 + 20 + 8 + 8;
constexpr int kTunnelOuter6 = 14 + 40 + 8 + 8;

}  // namespace uvtep
