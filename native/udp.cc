// UDP generic segmentation offload on send (UDP_SEGMENT, Linux >= 4.18): a run of equal-size
// datagrams to one destination leaves in one sendmsg(); the kernel (or the NIC) cuts it into
// datagrams of gso_size bytes. The segments are gathered straight from the caller's slab.
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <cerrno>
#include <cstring>
#include "errors.h"
#include "uvtep.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace uvtep {

static const int kMaxSegments = 64;

// sendGso(fd, sockaddr, buf, offs, lens, start, count, segSize) -> bytes sent, or -errno.
// Datagram k (start <= k < start + count) is buf[offs[k], offs[k] + lens[k]); all but the last
// are segSize bytes long. Never throws on the data path.
static Napi::Value SendGso(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array addr = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array buf = info[2].As<Napi::Uint8Array>();
  Napi::Int32Array offs = info[3].As<Napi::Int32Array>();
  Napi::Int32Array lens = info[4].As<Napi::Int32Array>();
  int start = info[5].As<Napi::Number>().Int32Value();
  int count = info[6].As<Napi::Number>().Int32Value();
  int seg = info[7].As<Napi::Number>().Int32Value();
  if (count < 1 || count > kMaxSegments || start < 0 || static_cast<size_t>(start + count) > offs.ElementLength() ||
      static_cast<size_t>(start + count) > lens.ElementLength() || seg < 1) {
    return Napi::Number::New(env, -EINVAL);
  }
  struct iovec iov[kMaxSegments];
  const size_t blen = buf.ByteLength();
  for (int i = 0; i < count; i++) {
    int32_t o = offs[start + i];
    int32_t l = lens[start + i];
    if (o < 0 || l < 0 || static_cast<size_t>(o) + static_cast<size_t>(l) > blen) return Napi::Number::New(env, -EFAULT);
    iov[i].iov_base = buf.Data() + o;
    iov[i].iov_len = static_cast<size_t>(l);
  }
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctrl;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = addr.Data();
  msg.msg_namelen = static_cast<socklen_t>(addr.ByteLength());
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(count);
  if (count > 1) {
    memset(&ctrl, 0, sizeof ctrl);
    msg.msg_control = ctrl.buf;
    msg.msg_controllen = sizeof ctrl.buf;
    struct cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = static_cast<uint16_t>(seg);
    memcpy(CMSG_DATA(cm), &gso, sizeof gso);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, 0);
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -errno : static_cast<double>(n));
}

void InitUdp(Napi::Env env, Napi::Object exports) {
  exports.Set("sendGso", Napi::Function::New(env, SendGso, "sendGso"));
}

}  // namespace uvtep
