#pragma once
#include <napi.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <cstdint>

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
// A Coalescer's writer into a Tap (ctx: a TapSink): queued on the Tap's io_uring when it has one,
// else one writev each; TapSubmit() writes what is queued. A null or closed Tap loses every frame.
struct GroStats;
struct TapSink {
  Tap* tap;
  GroStats* st;
};
int TapSinkWrite(void* ctx, struct iovec* iov, int iovcnt, double frames, double bytes);
void TapSubmit(Tap* tap);

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
