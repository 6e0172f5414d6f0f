// UdpSocket: the native UDP endpoint. It owns its fd (opened in the constructor, closed once by
// close() or the destructor), receives with recvmmsg (with UDP_GRO a message carries up to 64
// datagrams of one stride; the outer TOS / traffic class comes with each message), and sends a
// batch with sendmmsg, each run of equal-size datagrams as one message with UDP_SEGMENT.
// Socket options and their meaning are decided in TypeScript (src/transport/native.ts); this
// file does the syscalls. Data-path calls return -errno instead of throwing.
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sched.h>
#include <unistd.h>
#include <uv.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>
#include "errors.h"
#include "fd.h"
#include "datapath.h"
#include "dpproto.h"
#include "flowcache.h"
#include "poller.h"
#include "uvtep.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace uvtep {

namespace {

constexpr int kMaxRecvRounds = 8;
constexpr int kRoundWrites = 128;  // a receive round's budget (see Drain)
constexpr int kSendMsgs = 256;
constexpr int kSendIovs = 4 * kSendMsgs;  // a message per entry, or one per datagram of a train


const napi_type_tag kUdpTag = {0x7576746570554450ULL, 0x534f434b45540001ULL};

}  // namespace

class UdpSocket : public Napi::ObjectWrap<UdpSocket>, public Pollable {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "UdpSocket",
                       {InstanceMethod("bind", &UdpSocket::Bind), InstanceMethod("setOpt", &UdpSocket::SetOpt),
                        InstanceMethod("setOptBytes", &UdpSocket::SetOptBytes), InstanceMethod("localPort", &UdpSocket::LocalPort),
                        InstanceMethod("recvStart", &UdpSocket::RecvStart), InstanceMethod("recvStop", &UdpSocket::RecvStop),
                        InstanceMethod("send", &UdpSocket::Send), InstanceMethod("waitWritable", &UdpSocket::WaitWritable),
                        InstanceMethod("setFlowCache", &UdpSocket::SetFlowCache), InstanceMethod("close", &UdpSocket::Close)});
  }

  // new UdpSocket(family 4|6, stats Float64Array(10))
  explicit UdpSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UdpSocket>(info), ctx_(info.Env(), "uvtep:UdpSocket") {
    Napi::Env env = info.Env();
    ExpectArgs(info, "UdpSocket", "nb");
    family_ = info[0].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
    Napi::Float64Array st = info[1].As<Napi::Float64Array>();
    if (st.ElementLength() < kSockStatCount) throw Napi::RangeError::New(env, "UdpSocket: stats too short");
    stats_ = st.Data();
    statsRef_ = Napi::Persistent(info[1].As<Napi::Object>());
    Fd fd(socket(family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw SystemError(env, errno, family_ == AF_INET6 ? "socket(AF_INET6)" : "socket(AF_INET)");
    poll_ = NewPoll(env, fd.get(), this, "UdpSocket");
    fd_ = fd.Release();
    info.This().As<Napi::Object>().TypeTag(&kUdpTag);
  }

  ~UdpSocket() override {
    CloseHandle();
    CloseFd();
  }

  int PollFd() const override { return fd_; }

  // Receives in rounds of one recvmmsg each, as NAPI polls with a budget: a round asks for as
  // many messages as made about kRoundWrites frames for the receiving stack in the last round
  // (TAP writes where the flow cache wrote them: a TCP stream's coalesced segments count once;
  // else datagrams), and after a full round the thread yields the CPU before the next. Without
  // that, one round of GRO messages (up to 64 x 64 datagrams) went to a TAP at once, and a
  // reader of the overlay that shares the CPU found its socket buffer overrun: a burst larger
  // than the buffer is lost.
  // What the datapath process hands over (dpproto.h DpUdpEntry per message), in the shape of a
  // recvmmsg batch; answered once JS has it.
  void DrainProxy() {
    struct mmsghdr msgs[kMaxRecvMsgs];
    struct iovec iov[kMaxRecvMsgs][2];
    DpUdpEntry hdr[kMaxRecvMsgs];
    const int n = rxCap_;
    for (int i = 0; i < n; i++) {
      iov[i][0] = {&hdr[i], sizeof hdr[i]};
      iov[i][1] = {rxSlab_ + static_cast<size_t>(i) * rxMsgSize_, rxMsgSize_};
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = iov[i];
      msgs[i].msg_hdr.msg_iovlen = 2;
    }
    const int r = Retry([&] { return recvmmsg(proxyFd_, msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr); });
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
      Fail(r == 0 ? EPIPE : errno, "recvmmsg(datapath proxy)");
      return;
    }
    int out = 0;
    for (int i = 0; i < r; i++) {
      const DpUdpEntry& e = hdr[i];
      if (e.len == -2 && msgs[i].msg_len == sizeof e) {  // receiving failed in the process
        if (out > 0) CallBatch(this, onBatch_, out, ctx_);
        Fail(e.seg, "recvmmsg");
        return;
      }
      const int64_t body = int64_t(msgs[i].msg_len) - int64_t(sizeof e);
      if (body < 0 || (e.len >= 0 && e.len != body) || (e.len < 0 && body != 0)) continue;  // cannot come from the process
      rxOffs_[out] = static_cast<int32_t>(i * rxMsgSize_);
      rxLens_[out] = e.len;
      rxSegs_[out] = e.seg;
      rxTos_[out] = e.tos;
      memcpy(rxSrcs_ + out * kSrcStride, e.src, kSrcStride);
      out++;
    }
    if (out > 0) CallBatch(this, onBatch_, out, ctx_);
    pendingAck_ += static_cast<uint32_t>(r);
    if (reading_) Ack();
  }

  void Ack() { DatapathAnswer(proxyFd_, &pendingAck_); }

  void Drain() override {
    if (proxy_) {
      DrainProxy();
      return;
    }
    for (int round = 0; round < kMaxRecvRounds && reading_; round++) {
      UdpRecvRound rr;
      const int n = roundMsgs_ < rxCap_ ? roundMsgs_ : rxCap_;
      rr.Prepare(rxSlab_, rxMsgSize_, n);
      int r = Retry([&] { return recvmmsg(fd_, rr.msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr); });
      stats_[kRecvCalls]++;
      if (r < 0) {
        if (errno == EAGAIN) return;
        // per-datagram errors of an unconnected socket (ICMP with IP_RECVERR off) do not arrive here;
        // anything else is fatal for the endpoint
        if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) continue;
        Fail(errno, "recvmmsg");
        return;
      }
      int out = 0;
      int dgrams = 0;
      for (int i = 0; i < r; i++) {
        rxOffs_[out] = static_cast<int32_t>(i * rxMsgSize_);
        dgrams += rr.Parse(i, &rxLens_[out], &rxSegs_[out], &rxTos_[out], rxSrcs_ + out * kSrcStride, stats_);
        out++;
      }
      // a batch that only repeats the VTEPs' decisions goes to the TAPs here, without JS
      int frames = dgrams;
      if (out > 0 && !caches_.empty()) {
        const int writes = FlowCacheDecap(&UdpSocket::FindCache, this, rxSlab_, rxOffs_, rxLens_, rxSegs_, rxTos_, rxSrcs_, kSrcStride, out);
        if (writes >= 0) {
          frames = std::max(writes, 1);
          out = 0;
        }
      }
      if (out > 0) CallBatch(this, onBatch_, out, ctx_);
      roundMsgs_ = std::max(1, std::min(kMaxRecvMsgs, kRoundWrites * r / frames));
      if (r < n) return;  // the queue is empty
      sched_yield();
    }
  }

 private:
  // bind(addressBytes(4|16), port, scopeId) -> throws on failure (syscall 'bind')
  Napi::Value Bind(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "bind", "bnn");
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
    int port = info[1].As<Napi::Number>().Int32Value();
    struct sockaddr_storage ss;
    socklen_t len = MakeSockaddr(family_, a.Data(), a.ByteLength(), port, info[2].As<Napi::Number>().Uint32Value(), &ss);
    if (len == 0) throw Napi::RangeError::New(env, "bind: address length does not match the family");
    if (bind(fd_, reinterpret_cast<struct sockaddr*>(&ss), len) < 0) {
      int err = errno;
      throw SystemError(env, err, "bind", err == EADDRINUSE ? "the UDP port is in use" : err == EADDRNOTAVAIL ? "the address is not one of this host" : "");
    }
    return env.Undefined();
  }

  // setOpt(level, name, int) -> 0 or -errno
  Napi::Value SetOpt(const Napi::CallbackInfo& info) {
    ExpectArgs(info, "setOpt", "nnn");
    int v = info[2].As<Napi::Number>().Int32Value();
    int r = setsockopt(fd_, info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), &v, sizeof v);
    return Napi::Number::New(info.Env(), r < 0 ? -errno : 0);
  }

  // setOptBytes(level, name, bytes) -> 0 or -errno (ip_mreqn, ipv6_mreq, ...)
  Napi::Value SetOptBytes(const Napi::CallbackInfo& info) {
    ExpectArgs(info, "setOptBytes", "nnb");
    Napi::Uint8Array b = info[2].As<Napi::Uint8Array>();
    int r = setsockopt(fd_, info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), b.Data(), static_cast<socklen_t>(b.ByteLength()));
    return Napi::Number::New(info.Env(), r < 0 ? -errno : 0);
  }

  Napi::Value LocalPort(const Napi::CallbackInfo& info) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd_, reinterpret_cast<struct sockaddr*>(&ss), &len) < 0) throw SystemError(info.Env(), errno, "getsockname");
    uint16_t port = ss.ss_family == AF_INET6 ? reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port : reinterpret_cast<struct sockaddr_in*>(&ss)->sin_port;
    return Napi::Number::New(info.Env(), ntohs(port));
  }

  // recvStart(slab, msgSize, offs, lens, segs, srcs, tos, onBatch(count), onError(err))
  Napi::Value RecvStart(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "recvStart", "bnbbbbbff");
    if (poll_ == nullptr) throw Napi::Error::New(env, "UdpSocket: closed");
    Napi::Uint8Array slab = info[0].As<Napi::Uint8Array>();
    rxMsgSize_ = info[1].As<Napi::Number>().Uint32Value();
    Napi::Int32Array offs = info[2].As<Napi::Int32Array>();
    Napi::Int32Array lens = info[3].As<Napi::Int32Array>();
    Napi::Int32Array segs = info[4].As<Napi::Int32Array>();
    Napi::Uint8Array srcs = info[5].As<Napi::Uint8Array>();
    Napi::Int16Array tos = info[6].As<Napi::Int16Array>();
    if (rxMsgSize_ < 1) throw Napi::RangeError::New(env, "recvStart: msgSize must be positive");
    size_t cap = slab.ByteLength() / rxMsgSize_;
    for (size_t n : {offs.ElementLength(), lens.ElementLength(), segs.ElementLength(), tos.ElementLength(), srcs.ByteLength() / kSrcStride, static_cast<size_t>(kMaxRecvMsgs)}) cap = n < cap ? n : cap;
    if (cap == 0) throw Napi::RangeError::New(env, "recvStart: no room for one datagram");
    rxCap_ = static_cast<int>(cap);
    rxSlab_ = slab.Data();
    rxOffs_ = offs.Data();
    rxLens_ = lens.Data();
    rxSegs_ = segs.Data();
    rxSrcs_ = srcs.Data();
    rxTos_ = tos.Data();
    int k = 0;
    for (int i : {0, 2, 3, 4, 5, 6}) rxRefs_[k++] = Napi::Persistent(info[i].As<Napi::Object>());
    onBatch_ = Napi::Persistent(info[7].As<Napi::Function>());
    onError_ = Napi::Persistent(info[8].As<Napi::Function>());
    if (info.Length() > 10 && !info[9].IsUndefined() && !info[9].IsNull()) {
      // read what the datapath process hands over instead of the socket (recvStart once per mode)
      Datapath* dp = DatapathOf(env, info[9]);
      const int fd = DatapathProxyFd(dp, info[10].As<Napi::Number>().Uint32Value());
      if (fd < 0) throw Napi::Error::New(env, "recvStart: the socket is not registered with the datapath");
      if (proxyPoll_ == nullptr || fd != proxyFd_) {
        ClosePoll(&proxyPoll_);
        proxyPoll_ = NewPoll(env, fd, this, "UdpSocket");
      }
      proxyFd_ = fd;
      proxy_ = true;
      dpRef_ = Napi::Persistent(info[9].As<Napi::Object>());
    } else {
      proxy_ = false;
    }
    reading_ = true;
    if (!proxy_) PollRegister(this);
    Rearm(env);
    if (proxy_) Ack();
    return env.Undefined();
  }

  Napi::Value RecvStop(const Napi::CallbackInfo& info) {
    reading_ = false;
    PollUnregister(this);
    Rearm(info.Env());
    return info.Env().Undefined();
  }

  // waitWritable(cb): cb() once the socket can take more (after send returned -EAGAIN).
  Napi::Value WaitWritable(const Napi::CallbackInfo& info) {
    ExpectArgs(info, "waitWritable", "f");
    if (poll_ == nullptr) return info.Env().Undefined();
    onWritable_ = Napi::Persistent(info[0].As<Napi::Function>());
    wantWrite_ = true;
    Rearm(info.Env());
    return info.Env().Undefined();
  }

  void Rearm(Napi::Env env) {
    if (poll_ == nullptr) return;
    const bool viaProxy = proxy_ && proxyPoll_ != nullptr;
    if (viaProxy && reading_) {
      int r = uv_poll_start(proxyPoll_, UV_READABLE, &UdpSocket::OnProxyPoll);
      if (r != 0) throw SystemError(env, -r, "uv_poll_start");
    } else if (proxyPoll_ != nullptr) {
      uv_poll_stop(proxyPoll_);
    }
    int events = (reading_ && !viaProxy ? UV_READABLE : 0) | (wantWrite_ ? UV_WRITABLE : 0);
    if (events == 0 && !(viaProxy && reading_)) {
      uv_poll_stop(poll_);
      if (refd_) {
        refd_ = false;
        Unref();
      }
      return;
    }
    int r = events == 0 ? uv_poll_stop(poll_) : uv_poll_start(poll_, events, &UdpSocket::OnPoll);
    if (r != 0) throw SystemError(env, -r, "uv_poll_start");
    if (!refd_) {
      refd_ = true;
      Ref();
    }
  }

  // send(buf, offs, lens, segs, lasts, addrs, addrStride, ds, start, count, gso, res) -> 0 or -EAGAIN
  // Entry i: segs[i] datagrams of lens[i] bytes (the last lasts[i]) laid out back to back from
  // buf[offs[i]], to the sockaddr at addrs[i * addrStride], with DS field ds[i] and TTL / hop
  // limit ttl[i] (-1: the socket's).
  // res: [0] entries done, [1] datagrams of entry res[0] already sent, [2] errors, then
  // (entry, errno, datagrams) triples. Errors other than EAGAIN skip their entry (counted in JS).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Napi::Int32Array offs = info[1].As<Napi::Int32Array>();
    Napi::Int32Array lens = info[2].As<Napi::Int32Array>();
    Napi::Int32Array segs = info[3].As<Napi::Int32Array>();
    Napi::Int32Array lasts = info[4].As<Napi::Int32Array>();
    Napi::Uint8Array addrs = info[5].As<Napi::Uint8Array>();
    const int astride = info[6].As<Napi::Number>().Int32Value();
    Napi::Int16Array ds = info[7].As<Napi::Int16Array>();
    Napi::Int16Array ttl = info[8].As<Napi::Int16Array>();
    const int start = info[9].As<Napi::Number>().Int32Value();
    const int count = info[10].As<Napi::Number>().Int32Value();
    const bool gso = info[11].As<Napi::Boolean>().Value();
    Napi::Int32Array res = info[12].As<Napi::Int32Array>();
    const int end = start + count;
    const socklen_t alen = family_ == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (start < 0 || count < 0 || res.ElementLength() < 3 || astride < static_cast<int>(alen) ||
        static_cast<size_t>(end) > offs.ElementLength() || static_cast<size_t>(end) > lens.ElementLength() ||
        static_cast<size_t>(end) > segs.ElementLength() || static_cast<size_t>(end) > lasts.ElementLength() ||
        static_cast<size_t>(end) > ds.ElementLength() || static_cast<size_t>(end) > ttl.ElementLength() ||
        static_cast<size_t>(end) * astride > addrs.ByteLength()) {
      return Napi::Number::New(env, -EINVAL);
    }
    for (int i = start; i < end; i++) {
      if (segs[i] < 1 || lens[i] < 1 || lasts[i] < 0 || lasts[i] > lens[i] || offs[i] < 0 ||
          static_cast<size_t>(offs[i]) + static_cast<size_t>(lens[i]) * (segs[i] - 1) + lasts[i] > buf.ByteLength()) {
        return Napi::Number::New(env, -EFAULT);
      }
    }
    res[0] = start;
    res[1] = 0;
    res[2] = 0;
    const int maxErr = (static_cast<int>(res.ElementLength()) - 3) / 3;

    struct mmsghdr msgs[kSendMsgs];
    struct iovec iov[kSendIovs];
    alignas(struct cmsghdr) char ctrl[kSendMsgs][kUdpCtrlSpace];
    int mEntry[kSendMsgs], mFirst[kSendMsgs], mCount[kSendMsgs];
    bool mTrain[kSendMsgs];  // lone datagrams of consecutive entries (mCount of them, one entry each)

    int e = start;  // next entry to put into messages
    int d = 0;      // next datagram of entry e
    while (e < end) {
      int m = 0;
      int used = 0;  // iov entries
      while (m < kSendMsgs && e < end && used < kSendIovs) {
        const int len = lens[e];
        // a lone datagram joins the lone ones before it: one UDP GSO message (the last may be shorter)
        if (gso && segs[e] == 1 && m > 0 && mTrain[m - 1] && ds[e] == ds[mEntry[m - 1]] && ttl[e] == ttl[mEntry[m - 1]] &&
            memcmp(addrs.Data() + static_cast<size_t>(e) * astride, addrs.Data() + static_cast<size_t>(mEntry[m - 1]) * astride, alen) == 0 &&
            UdpJoinTrain(&msgs[m - 1], &mCount[m - 1], ctrl[m - 1], buf.Data() + offs[e], static_cast<size_t>(lasts[e]), ds[e], ttl[e])) {
          used++;
          e++;
          continue;
        }
        const int per = gso && segs[e] > 1 ? UdpGsoPerMsg(static_cast<size_t>(len)) : 1;
        int n = segs[e] - d < per ? segs[e] - d : per;
        const size_t bytes = static_cast<size_t>(len) * (n - 1) + (d + n == segs[e] ? lasts[e] : len);
        UdpBuildMsg(&msgs[m], &iov[used++], ctrl[m], buf.Data() + offs[e] + static_cast<size_t>(len) * d, bytes,
                 addrs.Data() + static_cast<size_t>(e) * astride, alen, n > 1 ? len : 0, ds[e], ttl[e]);
        mEntry[m] = e;
        mFirst[m] = d;
        mCount[m] = n;
        mTrain[m] = segs[e] == 1;
        m++;
        d += n;
        if (d == segs[e]) {
          e++;
          d = 0;
        }
      }
      int pos = 0;
      while (pos < m) {
        const int r = SendMsgs(msgs + pos, mCount + pos, static_cast<unsigned>(m - pos));
        if (r > 0) {
          pos += r;
          continue;
        }
        const int err = -r;
        if (err == EAGAIN || err == ENOBUFS) {
          res[0] = mEntry[pos];
          res[1] = mFirst[pos];
          return Napi::Number::New(env, -EAGAIN);
        }
        if (mCount[pos] > 1 && (err == EIO || err == EINVAL || err == EOPNOTSUPP)) {
          // The route refused this GSO message (no checksum offload, a segment above its MTU):
          // this message alone goes as single datagrams; GSO stays on for the rest.
          stats_[kGsoFallbacks]++;
          for (int k = 0; k < mCount[pos]; k++) {
            const int entry = mTrain[pos] ? mEntry[pos] + k : mEntry[pos];
            const int len = lens[entry];
            const int di = mTrain[pos] ? 0 : mFirst[pos] + k;
            const size_t bytes = di == segs[entry] - 1 ? static_cast<size_t>(lasts[entry]) : static_cast<size_t>(len);
            struct mmsghdr one;
            struct iovec oiov;
            alignas(struct cmsghdr) char octrl[kUdpCtrlSpace];
            UdpBuildMsg(&one, &oiov, octrl, buf.Data() + offs[entry] + static_cast<size_t>(len) * di, bytes,
                     addrs.Data() + static_cast<size_t>(entry) * astride, alen, 0, ds[entry], ttl[entry]);
            ssize_t s = Retry([&] { return sendmsg(fd_, &one.msg_hdr, 0); });
            stats_[kSendCalls]++;
            if (s >= 0) {
              Sent(1);
              continue;
            }
            if (errno == EAGAIN || errno == ENOBUFS) {
              res[0] = entry;
              res[1] = di;
              return Napi::Number::New(env, -EAGAIN);
            }
            AddError(res, maxErr, entry, errno, 1);
          }
        } else {
          AddError(res, maxErr, mEntry[pos], err, mCount[pos]);
        }
        pos++;
      }
    }
    res[0] = end;
    res[1] = 0;
    return Napi::Number::New(env, 0);
  }

  void Sent(int dgrams) { UdpCountSent(stats_, dgrams); }

  static void AddError(Napi::Int32Array& res, int maxErr, int entry, int err, int dgrams) {
    const int k = res[2];
    if (k < maxErr) {
      res[3 + 3 * k] = entry;
      res[4 + 3 * k] = err;
      res[5 + 3 * k] = dgrams;
      res[2] = k + 1;
    } else if (maxErr > 0) {
      res[5 + 3 * (maxErr - 1)] += dgrams;  // folded into the last record
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    CloseFd();
    caches_.clear();
    cacheRefs_.clear();
    return info.Env().Undefined();
  }

  // setFlowCache(vni, cache | null): the VTEP of `vni` takes its datagrams without JS when they
  // qualify (native/flowcache.h); null removes it
  Napi::Value SetFlowCache(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "setFlowCache", "n");
    const uint32_t vni = info[0].As<Napi::Number>().Uint32Value();
    FlowCache* fc = FlowCacheOf(env, info[1]);
    for (size_t i = 0; i < caches_.size(); i++) {
      if (FlowCacheVni(caches_[i]) != vni) continue;
      caches_.erase(caches_.begin() + static_cast<long>(i));
      cacheRefs_.erase(cacheRefs_.begin() + static_cast<long>(i));
      break;
    }
    if (fc != nullptr) {
      caches_.push_back(fc);
      cacheRefs_.push_back(Napi::Persistent(info[1].As<Napi::Object>()));
    }
    return env.Undefined();
  }

  static FlowCache* FindCache(void* ctx, uint32_t vni) {
    for (FlowCache* fc : static_cast<UdpSocket*>(ctx)->caches_) {
      if (FlowCacheVni(fc) == vni) return fc;
    }
    return nullptr;
  }

 public:
  int SendMsgs(struct mmsghdr* msgs, const int* dgrams, unsigned n) { return UdpSendmmsg(fd_, msgs, dgrams, n, stats_); }
  int family() const { return family_; }

 private:

  void CloseHandle() {
    reading_ = false;
    wantWrite_ = false;
    PollUnregister(this);
    ClosePoll(&poll_);
    ClosePoll(&proxyPoll_);
    proxyFd_ = -1;
    if (refd_) {
      refd_ = false;
      Unref();
    }
  }

  void CloseFd() {
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

  static void OnProxyPoll(uv_poll_t* handle, int status, int events) {
    UdpSocket* self = static_cast<UdpSocket*>(handle->data);
    if (self == nullptr) return;
    if (status < 0) {
      self->Fail(-status, "poll");
      return;
    }
    if (self->reading_) self->DrainProxy();
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    UdpSocket* self = static_cast<UdpSocket*>(handle->data);
    if (self == nullptr) return;
    if (status < 0) {
      self->Fail(-status, "poll");
      return;
    }
    if ((events & UV_WRITABLE) != 0 && self->wantWrite_) {
      self->wantWrite_ = false;
      self->Rearm(self->Env());
      Napi::Env env = self->Env();
      Napi::HandleScope scope(env);
      CallJs(env, self->onWritable_, self->Value(), {}, self->ctx_);
    }
    if ((events & UV_READABLE) != 0 && self->reading_) {
      self->Drain();
      BusyPollAfterBatch();
    }
  }

  void Fail(int err, const char* syscall) {
    reading_ = false;
    PollUnregister(this);
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      Rearm(env);
    } catch (const Napi::Error&) {
    }
    if (onError_.IsEmpty()) return;
    const char* hint = proxy_ && err == EPIPE ? "the datapath process (uvtep-datapath) ended or let go of the socket" : "";
    CallJs(env, onError_, Value(), {SystemError(env, err, syscall, hint).Value()}, ctx_);
  }

  Napi::AsyncContext ctx_;
  int family_ = AF_INET;
  int fd_ = -1;
  double* stats_ = nullptr;
  Napi::ObjectReference statsRef_;
  uv_poll_t* poll_ = nullptr;
  bool reading_ = false;
  bool wantWrite_ = false;
  bool refd_ = false;
  bool proxy_ = false;        // receiving through the datapath process (datapath.h)
  int proxyFd_ = -1;          // the socket's proxy, held by the Datapath
  uv_poll_t* proxyPoll_ = nullptr;
  uint32_t pendingAck_ = 0;
  Napi::ObjectReference dpRef_;
  uint32_t rxMsgSize_ = 0;
  int rxCap_ = 0;
  int roundMsgs_ = kMaxRecvMsgs;  // messages the next receive round asks for
  uint8_t* rxSlab_ = nullptr;
  int32_t* rxOffs_ = nullptr;
  int32_t* rxLens_ = nullptr;
  int32_t* rxSegs_ = nullptr;
  uint8_t* rxSrcs_ = nullptr;
  int16_t* rxTos_ = nullptr;
  Napi::ObjectReference rxRefs_[6];
  Napi::FunctionReference onBatch_, onError_, onWritable_;
  std::vector<FlowCache*> caches_;
  std::vector<Napi::ObjectReference> cacheRefs_;
};

void InitUdp(Napi::Env env, Napi::Object exports) {
  exports.Set("UdpSocket", UdpSocket::Define(env));
}

UdpSocket* UdpSocketOf(Napi::Env env, Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kUdpTag)) throw Napi::TypeError::New(env, "expected a UdpSocket");
  return UdpSocket::Unwrap(v.As<Napi::Object>());
}

int UdpSendMsgs(UdpSocket* s, struct mmsghdr* msgs, const int* dgrams, unsigned n) { return s->SendMsgs(msgs, dgrams, n); }

int UdpFamily(const UdpSocket* s) { return s->family(); }

int UdpSocketFd(const UdpSocket* s) { return s->PollFd(); }

}  // namespace uvtep
