// See udpmsg.h.
#include "udpmsg.h"
#include <arpa/inet.h>
#include <netinet/udp.h>
#include <cerrno>
#include <cstring>
#include "fd.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace uvtep {

void UdpBuildMsg(struct mmsghdr* mm, struct iovec* iov, char* ctrl, uint8_t* data, size_t len, const void* addr, socklen_t alen, int gsoSize, int ds, int ttl) {
  iov->iov_base = data;
  iov->iov_len = len;
  struct msghdr& h = mm->msg_hdr;
  memset(&h, 0, sizeof h);
  h.msg_name = const_cast<void*>(addr);
  h.msg_namelen = alen;
  h.msg_iov = iov;
  h.msg_iovlen = 1;
  mm->msg_len = 0;
  size_t used = 0;
  if (gsoSize > 0 || ds >= 0 || ttl > 0) {
    memset(ctrl, 0, kUdpCtrlSpace);
    h.msg_control = ctrl;
    h.msg_controllen = kUdpCtrlSpace;
    struct cmsghdr* c = CMSG_FIRSTHDR(&h);
    if (gsoSize > 0) {
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t g = static_cast<uint16_t>(gsoSize);
      memcpy(CMSG_DATA(c), &g, sizeof g);
      used += CMSG_SPACE(sizeof(uint16_t));
      c = CMSG_NXTHDR(&h, c);
    }
    const bool v6 = alen == sizeof(struct sockaddr_in6);
    // an int-valued IP option as a control message (DS field, TTL / hop limit)
    const auto addInt = [&](int type4, int type6, int value) {
      if (c == nullptr) return;
      c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
      c->cmsg_type = v6 ? type6 : type4;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &value, sizeof value);
      used += CMSG_SPACE(sizeof(int));
      c = CMSG_NXTHDR(&h, c);
    };
    if (ds >= 0) addInt(IP_TOS, IPV6_TCLASS, ds);
    // ttl inherit: the inner packet's TTL / hop limit
    if (ttl > 0) addInt(IP_TTL, IPV6_HOPLIMIT, ttl);
    h.msg_controllen = used;
  }
}

bool UdpJoinTrain(struct mmsghdr* mm, int* count, char* ctrl, uint8_t* data, size_t size, int ds, int ttl) {
  struct msghdr& h = mm->msg_hdr;
  const size_t seg = h.msg_iov[0].iov_len;
  if (*count >= kGsoMaxSegs || size > seg || h.msg_iov[h.msg_iovlen - 1].iov_len != seg || seg * (*count + 1) > kGsoMaxBytes) return false;
  if (*count == 1) UdpBuildMsg(mm, h.msg_iov, ctrl, static_cast<uint8_t*>(h.msg_iov[0].iov_base), seg, h.msg_name, h.msg_namelen, static_cast<int>(seg), ds, ttl);
  h.msg_iov[h.msg_iovlen++] = {data, size};
  (*count)++;
  return true;
}

socklen_t MakeSockaddr(int family, const uint8_t* addr, size_t len, int port, uint32_t scope, struct sockaddr_storage* ss) {
  memset(ss, 0, sizeof *ss);
  if (family == AF_INET && len == 4) {
    auto* s = reinterpret_cast<struct sockaddr_in*>(ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(static_cast<uint16_t>(port));
    memcpy(&s->sin_addr, addr, 4);
    return sizeof *s;
  }
  if (family == AF_INET6 && len == 16) {
    auto* s = reinterpret_cast<struct sockaddr_in6*>(ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(static_cast<uint16_t>(port));
    s->sin6_scope_id = scope;
    memcpy(&s->sin6_addr, addr, 16);
    return sizeof *s;
  }
  return 0;
}

void UdpCountSent(double* stats, int dgrams) {
  stats[kMsgsSent]++;
  stats[kDgramsSent] += dgrams;
  if (dgrams > 1) {
    stats[kGsoMsgs]++;
    stats[kGsoDgrams] += dgrams;
  }
}

int UdpSendmmsg(int fd, struct mmsghdr* msgs, const int* dgrams, unsigned n, double* stats) {
  if (fd < 0) return -EBADF;
  unsigned done = 0;
  while (done < n) {
    int r = Retry([&] { return sendmmsg(fd, msgs + done, n - done, 0); });
    stats[kSendCalls]++;
    if (r <= 0) return done > 0 ? static_cast<int>(done) : -errno;
    for (int k = 0; k < r; k++) UdpCountSent(stats, dgrams[done + k]);
    done += static_cast<unsigned>(r);
  }
  return static_cast<int>(done);
}

void UdpRecvRound::Prepare(uint8_t* slab, size_t msgSize, int n) {
  for (int i = 0; i < n; i++) {
    iov[i].iov_base = slab + static_cast<size_t>(i) * msgSize;
    iov[i].iov_len = msgSize;
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_name = &names[i];
    msgs[i].msg_hdr.msg_namelen = sizeof names[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = ctrl[i];
    msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
  }
}

int UdpRecvRound::Parse(int i, int32_t* len, int32_t* seg, int16_t* tos, uint8_t* src, double* stats) {
  struct msghdr& h = msgs[i].msg_hdr;
  stats[kMsgsRecv]++;
  if ((h.msg_flags & MSG_TRUNC) != 0) {
    stats[kTruncated]++;
    *len = -1;  // JS counts it as TooBig
  } else {
    *len = static_cast<int32_t>(msgs[i].msg_len);
  }
  int g = 0;
  int t = -1;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      g = v;
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
      t = *reinterpret_cast<unsigned char*>(CMSG_DATA(c));
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      t = v;
    }
  }
  int dgrams = 1;
  if (g > 0 && static_cast<uint32_t>(g) < msgs[i].msg_len) {
    stats[kGroMsgs]++;
    dgrams = static_cast<int>((msgs[i].msg_len + g - 1) / g);
  }
  *seg = g;
  *tos = static_cast<int16_t>(t);
  memset(src, 0, kSrcStride);
  if (names[i].ss_family == AF_INET) {
    auto* a = reinterpret_cast<struct sockaddr_in*>(&names[i]);
    src[0] = 4;
    memcpy(src + 2, &a->sin_port, 2);
    memcpy(src + 4, &a->sin_addr, 4);
  } else if (names[i].ss_family == AF_INET6) {
    auto* a = reinterpret_cast<struct sockaddr_in6*>(&names[i]);
    src[0] = 6;
    memcpy(src + 2, &a->sin6_port, 2);
    memcpy(src + 4, &a->sin6_addr, 16);
  }
  return dgrams;
}

}  // namespace uvtep
