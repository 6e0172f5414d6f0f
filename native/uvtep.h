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
int TapFdOf(const Tap* tap);
// A Coalescer's writer: writev to the fd at *ctx (an int); 0 or -errno.
int WritevFd(void* ctx, struct iovec* iov, int iovcnt);

// The native UDP endpoint (native/udp.cc).
class UdpSocket;
UdpSocket* UdpSocketOf(Napi::Env env, Napi::Value socket);
// sendmmsg on the socket, counted in its stats as the sends from JS are: the number sent or -errno.
int UdpSendMsgs(UdpSocket* s, struct mmsghdr* msgs, unsigned n);
// AF_INET or AF_INET6.
int UdpFamily(const UdpSocket* s);

// The flow cache (native/flowcache.cc); null for null or undefined, a TypeError for anything else.
class FlowCache;
FlowCache* FlowCacheOf(Napi::Env env, Napi::Value fc);
uint32_t FlowCacheVni(const FlowCache* fc);
}  // namespace uvtep
