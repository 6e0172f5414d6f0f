// UDP messages without Node: building GSO sends, counting them, and reading what recvmmsg
// returned (the source, the GRO stride, the outer TOS). The addon's UdpSocket (udp.cc) and the
// datapath process (datapath/main.cc) both use them.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace uvtep {

// stats indices of a UDP endpoint (src/native.ts SockStat reads them by the same numbers)
enum SockStat { kSendCalls, kMsgsSent, kDgramsSent, kGsoMsgs, kGsoDgrams, kGsoFallbacks, kRecvCalls, kMsgsRecv, kGroMsgs, kTruncated, kSockStatCount };
// per received message: family (4|6), 0, port (big-endian), address (16)
constexpr int kSrcStride = 20;
constexpr int kMaxRecvMsgs = 64;

// A UDP GSO message: at most this many datagrams (UDP_MAX_SEGMENTS on every kernel with
// UDP_SEGMENT) and bytes (under the 64 KiB datagram limit with headers).
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
constexpr int kGsoMaxSegs = 64;
constexpr size_t kGsoMaxBytes = 65000;
// Datagrams of `stride` bytes one UDP GSO message carries (at least 1).
inline int UdpGsoPerMsg(size_t stride) { return stride >= kGsoMaxBytes ? 1 : std::min(kGsoMaxSegs, static_cast<int>(kGsoMaxBytes / stride)); }
// Room for a message's control data: UDP_SEGMENT, DS field, TTL / hop limit.
constexpr size_t kUdpCtrlSpace = CMSG_SPACE(sizeof(uint16_t)) + 2 * CMSG_SPACE(sizeof(int));
// mm: one message of len bytes at data to addr; gsoSize > 0: a GSO message of datagrams of that
// size (UDP_SEGMENT); ds >= 0: its DS field; ttl > 0: its TTL / hop limit. ctrl: kUdpCtrlSpace.
void UdpBuildMsg(struct mmsghdr* mm, struct iovec* iov, char* ctrl, uint8_t* data, size_t len, const void* addr, socklen_t alen, int gsoSize, int ds, int ttl);
// Appends the datagram data[0, size) to the message mm of *count datagrams (a train: its iovs
// one per datagram, the next free one right after them) when the train has room and all its
// datagrams so far have its first one's size (the last may be shorter); it becomes a GSO message
// at its second datagram (ds, ttl as for UdpBuildMsg). The caller checks the destination, DS and
// TTL are the train's. false: it cannot join.
bool UdpJoinTrain(struct mmsghdr* mm, int* count, char* ctrl, uint8_t* data, size_t size, int ds, int ttl);
// A sockaddr_in / sockaddr_in6 of `family` from an address's bytes (4 or 16), a port and an IPv6
// scope id: its length, 0 when the bytes do not match the family.
socklen_t MakeSockaddr(int family, const uint8_t* addr, size_t len, int port, uint32_t scope, struct sockaddr_storage* ss);
// One message of `dgrams` datagrams sent: counted into a SockStat array.
void UdpCountSent(double* stats, int dgrams);
// sendmmsg of msgs[0, n) on fd until all went or one failed (counted into stats, SockStat):
// the number of messages sent, or -errno when none was.
int UdpSendmmsg(int fd, struct mmsghdr* msgs, const int* dgrams, unsigned n, double* stats);

// The buffers of one recvmmsg round: message i into slab + i * msgSize.
struct UdpRecvRound {
  struct mmsghdr msgs[kMaxRecvMsgs];
  struct iovec iov[kMaxRecvMsgs];
  struct sockaddr_storage names[kMaxRecvMsgs];
  alignas(struct cmsghdr) char ctrl[kMaxRecvMsgs][64];
  void Prepare(uint8_t* slab, size_t msgSize, int n);
  // Message i of the round: its length (-1: truncated), UDP GRO stride (0: one datagram), outer
  // TOS / traffic class (-1: unknown) and source record (kSrcStride bytes); counted into stats.
  // Returns the datagrams it carries.
  int Parse(int i, int32_t* len, int32_t* seg, int16_t* tos, uint8_t* src, double* stats);
};

}  // namespace uvtep
