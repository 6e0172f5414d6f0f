#pragma once
#include <napi.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <cstdint>
#include "offload.h"

namespace uvtep {
void InitTap(Napi::Env env, Napi::Object exports);
void InitReader(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitUdp(Napi::Env env, Napi::Object exports);
void InitPoller(Napi::Env env, Napi::Object exports);
void InitFlowCache(Napi::Env env, Napi::Object exports);

// The fd of a Tap object (native/tap.cc), -1 once it is closed; a TypeError for anything else.
int TapFd(Napi::Env env, Napi::Value tap);
class Tap;
Tap* TapOf(Napi::Env env, Napi::Value tap);
// Whether the Tap writes through io_uring (its reader then reads through it too).
bool TapIoUring(const Tap* tap);
// The frames of one batch written to a Tap: coalesced (offload.h), queued on the thread's
// io_uring when the Tap uses it (else one writev each), and written by End(), which returns the
// batch's counts. A null or closed Tap loses every frame.
class TapBatch {
 public:
  TapBatch(Tap* tap, bool gro, uint32_t mtu);
  void Add(uint8_t* p, uint32_t len) { c_.Add(p, len); }
  const GroStats& End();

 private:
  static int Write(void* ctx, struct iovec* iov, int iovcnt, int transient, double frames, double bytes);
  Tap* tap_;
  Coalescer c_;
};

// The native UDP endpoint (native/udp.cc).
class UdpSocket;
UdpSocket* UdpSocketOf(Napi::Env env, Napi::Value socket);
// sendmmsg on the socket, counted in its stats as the sends from JS are (message k carries
// dgrams[k] datagrams, several with UDP_SEGMENT): the number of messages sent or -errno.
int UdpSendMsgs(UdpSocket* s, struct mmsghdr* msgs, const int* dgrams, unsigned n);
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
// AF_INET or AF_INET6.
int UdpFamily(const UdpSocket* s);
// A sockaddr_in / sockaddr_in6 of `family` from an address's bytes (4 or 16), a port and an IPv6
// scope id: its length, 0 when the bytes do not match the family.
socklen_t MakeSockaddr(int family, const uint8_t* addr, size_t len, int port, uint32_t scope, struct sockaddr_storage* ss);

// The flow cache (native/flowcache.cc); null for null or undefined, a TypeError for anything else.
class FlowCache;
FlowCache* FlowCacheOf(Napi::Env env, Napi::Value fc);
uint32_t FlowCacheVni(const FlowCache* fc);
}  // namespace uvtep
