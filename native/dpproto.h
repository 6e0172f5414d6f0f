// The protocol between the addon (datapath.cc, in the Node process) and the datapath process
// (datapath/main.cc). Both ends are on this machine, built from this tree: plain structs.
//
// Control: a SOCK_SEQPACKET socketpair, one message per operation, fds with SCM_RIGHTS. The
// addon registers TAPs and UDP sockets (a dup of each fd, and one end of a proxy socketpair per
// object), VTEPs' flow tables and their changes; the process answers kDpReply to kDpHello and
// the kDpDel* operations, so that the addon knows the process has let go of an fd.
//
// Proxies: what the flow tables do not take, the process hands to the Node process on the
// object's proxy, one message per entry (DpTapEntry / DpUdpEntry, then the bytes). The Node side
// reads them in the shape its readers deliver, and answers each batch it has handed to JS with
// a uint32 count of the entries. The process reads that object's fd again only when every entry
// it handed over was answered: nothing it forwards itself overtakes what JS still holds.
//
// Counters live in a shared memory file (memfd) both map: each object's arrays at byte offsets
// the addon chose; the process is the only writer of the arrays it was given.
#pragma once
#include <cstdint>

namespace uvtep {

enum DpOp : uint32_t {
  kDpHello = 1,
  kDpAddTap,
  kDpAddUdp,
  kDpAddFlow,
  kDpFlowTx,
  kDpFlowRx,
  kDpFlowClear,
  kDpFlowEnable,
  kDpDelFlow,
  kDpDelTap,
  kDpDelUdp,
  kDpBusyPoll,
  kDpReply = 100,
};

// DpAddFlow's tunnel: tunnel GSO always (--tunnel-gso on), or only while nothing on the
// socket's way out would be skipped (auto; tunnel.h's TunnelHold).
enum DpTunnel : uint32_t { kDpTunnelOff = 0, kDpTunnelOn = 1, kDpTunnelAuto = 2 };

struct DpHeader {
  uint32_t op;
  uint32_t id;
};

struct DpHello {  // fds: the shared memory
  DpHeader h;
  uint64_t shmBytes;
};

struct DpAddTap {  // fds: the TAP, the proxy
  DpHeader h;
  int32_t vnet;      // virtio_net_hdr bytes before each read (0 or 10)
  int32_t slotSize;  // as the addon's TapReader (a read, split in place, fits one slot)
  int32_t headroom;
  int32_t batch;     // reads per batch at most
  int32_t ioUring;   // write through the thread's io_uring (as the addon's Tap does), where allowed
  int32_t pad;
  uint64_t readerStats;  // ReaderStat[9]: the process does all the reading
};

struct DpAddUdp {  // fds: the socket, the proxy
  DpHeader h;
  int32_t family;   // AF_INET / AF_INET6
  int32_t msgSize;  // receive slot per message
  uint64_t stats;   // SockStat[11]: the process's receives and sends
};

struct DpAddFlow {
  DpHeader h;
  uint32_t tap;
  uint32_t udp;
  uint32_t vni;
  uint32_t hasOwn;
  uint64_t own;
  int32_t maxFrame;
  uint32_t learning;
  uint32_t gro;
  uint32_t gso;
  uint32_t mtu;
  int32_t family;
  uint64_t stats;     // FlowCacheStat[6]
  uint64_t seen;      // [256]
  uint64_t tapStats;  // WriterStat[8]
  uint32_t tunnel;    // send TCP super-frames whole as tunnel GSO (tunnel.h): kDpTunnelOn, kDpTunnelAuto, or 0; the result in stats[kTunnelState]
  uint32_t pad;
};

struct DpFlowTx {
  DpHeader h;
  uint64_t mac;
  uint32_t len;
  int32_t port;
  uint8_t addr[16];
};

struct DpFlowRx {
  DpHeader h;
  uint64_t mac;
  uint32_t len;
  uint8_t addr[16];
};

struct DpValue {  // kDpFlowEnable (on), kDpBusyPoll (microseconds)
  DpHeader h;
  uint32_t value;
};

// On a TAP's proxy: segs frames at a stride of len + 8 bytes, the last `last` bytes (as the
// reader's entries), already split and counted. segs 0: reading the TAP failed with errno -last
// (the process has let go of it).
struct DpTapEntry {
  int32_t len;
  int32_t segs;
  int32_t last;
  int32_t pad;
};

// On a UDP socket's proxy: one received message (len -1: truncated, no bytes follow; len -2:
// receiving failed with errno seg, and the process has let go of the socket).
struct DpUdpEntry {
  uint8_t src[20];  // kSrcStride
  int16_t tos;
  int16_t pad;
  int32_t seg;
  int32_t len;
};

}  // namespace uvtep
