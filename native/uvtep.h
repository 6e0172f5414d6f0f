#pragma once
#include <napi.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <cstdint>
#include "offload.h"
#include "udpmsg.h"

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
// AF_INET or AF_INET6.
int UdpFamily(const UdpSocket* s);
// Its fd (-1 once closed).
int UdpSocketFd(const UdpSocket* s);
// The flow cache (native/flowcache.cc); null for null or undefined, a TypeError for anything else.
class FlowCache;
FlowCache* FlowCacheOf(Napi::Env env, Napi::Value fc);
uint32_t FlowCacheVni(const FlowCache* fc);
}  // namespace uvtep
