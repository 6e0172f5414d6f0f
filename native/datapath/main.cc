// uvtep-datapath: the datapath process. The Node process (src/datapath.ts) spawns it with a
// control socket as fd 3 and registers TAPs, UDP sockets and the VTEPs' flow tables (dpproto.h).
// It reads the TAPs and the sockets, forwards what the flow tables cover, and hands everything
// else to the Node process on each object's proxy, where the addon's readers take it as if they
// had read it themselves.
//
// Why a process of its own: a round trip through a process that maps tens of megabytes in
// 4 KB pages (Node: V8's heap, the node binary) takes a slow tail on kernels that sample page
// tables (DAMON here; docs/benchmarks.md has the measurements). This one holds about 9 MB
// resident, most of it shared libraries, and asks for its slabs in 2 MB pages. It holds no policy: TypeScript decides, as in-process.
//
// One thread, one epoll. It exits when the control socket closes (the Node process ended or
// closed it) and, through PR_SET_PDEATHSIG, when the Node process dies.
#include <signal.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <net/if.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include "../dpproto.h"
#include "../fd.h"
#include "../flowtable.h"
#include "../offload.h"
#include "../ring.h"
#include "../tunnel.h"
#include "../udpmsg.h"

namespace uvtep {
namespace {

constexpr int kCtlFd = 3;
constexpr int kMaxBatch = 64;
constexpr int kMaxRecvRounds = 8;
constexpr int kRoundWrites = 128;  // a receive round's budget, as the addon's UdpSocket
// What may wait on a proxy for JS: its send buffer (datapath.cc asks for 16 MB) less the most
// one read batch adds (64 slots of about 75 KB, and the kernel's overhead per message), so that
// a batch that starts under the budget fits. With nothing waiting, a batch is always read.
constexpr uint64_t kBatchMost = 6 << 20;
constexpr uint64_t kProxyMsgs = 1024;
// the index the process adds to SockStat (src/native.ts SockStat.ProxyDropped)
constexpr int kSockProxyDropped = kSockStatCount;

uint8_t* g_shm = nullptr;
size_t g_shmBytes = 0;
int g_busyUs = 0;

double* ShmAt(uint64_t off, size_t count) {
  if (g_shm == nullptr || off % 8 != 0 || off + count * 8 > g_shmBytes) return nullptr;
  return reinterpret_cast<double*>(g_shm + off);
}

// Slabs in 2 MB pages where the kernel offers them (transparent huge pages, madvise mode).
uint8_t* NewSlab(size_t bytes) {
  constexpr size_t kHuge = 2 << 20;
  const size_t len = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  uint8_t* base = static_cast<uint8_t*>(p);
  uint8_t* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~(kHuge - 1));
  madvise(aligned, len, MADV_HUGEPAGE);
  return aligned;
}

// A TAP's writes: a batch's writes go to the kernel in one io_uring_enter where the TAP was
// opened for it and io_uring is allowed (as the addon's Tap), else one writev each.
class FdTapSink : public TapSink {
 public:
  int fd = -1;
  bool ioUring = false;
  void Begin(bool gro, uint32_t mtu) override { c_.emplace(&FdTapSink::Write, this, gro, mtu); }
  void Add(uint8_t* p, uint32_t len) override { c_->Add(p, len); }
  const GroStats& End() override {
    c_->Flush();
    if (WriteRing* ring = Ring()) ring->Submit();
    return c_->stats;
  }

 private:
  WriteRing* Ring() const { return ioUring ? ThreadWriteRing() : nullptr; }
  static int Write(void* ctx, struct iovec* iov, int iovcnt, int transient, double frames, double bytes) {
    FdTapSink* self = static_cast<FdTapSink*>(ctx);
    if (WriteRing* ring = self->Ring()) {
      ring->Queue(self->fd, iov, iovcnt, transient, frames, bytes, &self->c_->stats);
      return 0;
    }
    return Retry([&] { return writev(self->fd, iov, iovcnt); }) < 0 ? -errno : 0;
  }
  std::optional<Coalescer> c_;
};

class FdUdpSink : public UdpSink {
 public:
  int fd = -1;
  double* stats = nullptr;
  int SendMsgs(struct mmsghdr* msgs, const int* dgrams, unsigned n) override { return UdpSendmmsg(fd, msgs, dgrams, n, stats); }
};

// What every registered object has: its fd, its proxy, and what it handed over and is not yet
// answered (the sizes, in order: answers come in order).
struct Obj {
  uint32_t id = 0;
  bool tap = false;
  int fd = -1;
  int proxy = -1;
  uint64_t handed = 0;
  uint64_t acked = 0;
  std::deque<uint32_t> sizes;
  uint64_t outBytes = 0;
  uint64_t budget = 0;  // see kBatchMost
  bool armed = false;   // fd in the epoll set

  // Whether everything handed over was answered: only then may the flow table forward what is
  // read next (nothing the process forwards overtakes what JS still holds).
  bool Settled() const { return handed == acked; }
  // Whether another read batch fits the proxy: JS keeps up, or the fd waits (as a paused reader).
  bool Room() const { return Settled() || (outBytes < budget && handed - acked < kProxyMsgs); }
};

struct TapObj : Obj {
  int vnet = 0, slot = 0, headroom = 0, batch = 0;
  uint8_t* slab = nullptr;
  int32_t offs[kMaxBatch], lens[kMaxBatch], segs[kMaxBatch], lasts[kMaxBatch];
  VnetHdr vh[kMaxBatch];  // of the entries kept whole (segs < 0) for tunnel GSO
  GsoShape gs[kMaxBatch];
  double* rstats = nullptr;
  FlowTable* flow = nullptr;  // the VTEP on this TAP
  FdTapSink sink;
  int readAhead = 2;
};

struct UdpObj : Obj {
  int family = 0;
  int msgSize = 0;
  uint8_t* slab = nullptr;
  int32_t offs[kMaxRecvMsgs], lens[kMaxRecvMsgs], segs[kMaxRecvMsgs];
  int16_t tos[kMaxRecvMsgs];
  uint8_t srcs[kMaxRecvMsgs * kSrcStride];
  std::map<uint32_t, FlowTable*> flows;  // by VNI
  FdUdpSink sink;
  std::unique_ptr<InjectorSink> tunnel;  // its way through g_injector, once a table asks for it
  int roundMsgs = kMaxRecvMsgs;
};

struct FlowObj {
  std::unique_ptr<FlowTable> table;
  TapObj* tap = nullptr;
  UdpObj* udp = nullptr;
};

int g_ep = -1;
TunnelInjector g_injector;
int g_injectorState = 0;  // 0 not tried, 1 open, -errno

// The tunnel-GSO injector (tunnel.h), made when the first flow table asks for it: 1, or -errno.
int Injector() {
  if (g_injectorState != 0) return g_injectorState;
  char name[IFNAMSIZ];
  snprintf(name, sizeof name, "uvt-gso%d", static_cast<int>(getpid()));
  const char* what = "";
  int rc = g_injector.Open(name, &what);
  if (rc == -EBUSY) {  // a process of the same pid in another pid namespace holds that name
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(name, sizeof name, "uvt-gso%08x", static_cast<unsigned>(ts.tv_nsec ^ (getpid() << 12)));
    rc = g_injector.Open(name, &what);
  }
  if (rc < 0) fprintf(stderr, "uvtep-datapath: tunnel GSO: %s failed: %s\n", what, strerror(-rc));
  g_injectorState = rc < 0 ? rc : 1;
  return g_injectorState;
}
std::map<uint32_t, std::unique_ptr<TapObj>> g_taps;
std::map<uint32_t, std::unique_ptr<UdpObj>> g_udps;
std::map<uint32_t, FlowObj> g_flows;

// epoll data: the object's id, and whether the event is for its proxy
inline uint64_t Key(const Obj& o, bool proxy) { return (uint64_t(o.id) << 2) | (o.tap ? 2 : 0) | (proxy ? 1 : 0); }

void Arm(Obj& o, bool on) {
  if (o.armed == on || o.fd < 0) return;
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = Key(o, false);
  epoll_ctl(g_ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, o.fd, &ev);
  o.armed = on;
}

void Watch(Obj& o) {
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  getsockopt(o.proxy, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
  o.budget = static_cast<uint64_t>(sndbuf) > kBatchMost ? static_cast<uint64_t>(sndbuf) - kBatchMost : 0;
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = Key(o, true);
  epoll_ctl(g_ep, EPOLL_CTL_ADD, o.proxy, &ev);
  Arm(o, true);
}

// The object stops: its fds close, and with its proxy closed the Node side's reader fails with
// EPIPE, which the Vtep reports (a fatal read error here is one for the VTEP).
void Drop(Obj& o) {
  Arm(o, false);
  if (o.proxy >= 0) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, o.proxy, nullptr);
    close(o.proxy);
  }
  if (o.fd >= 0) close(o.fd);
  o.fd = o.proxy = -1;
}

// Whether the object's fd may be read now. While a flow table forwards from it, only when
// everything handed over was answered (as in-process, where the reader stops while JS holds a
// batch, or has paused it); otherwise as far as the proxy has room, so that what only JS
// handles flows without waiting for each answer.
bool CanRead(const Obj& o);

// Hands messages to the Node side (msgs[k]: iov[2 * k], iov[2 * k + 1]); returns how many went
// (the rest were dropped: the proxy was full, which Room() keeps from happening).
int Hand(Obj& o, struct iovec* iov, int n) {
  struct mmsghdr msgs[kMaxRecvMsgs];
  for (int k = 0; k < n; k++) {
    memset(&msgs[k], 0, sizeof msgs[k]);
    msgs[k].msg_hdr.msg_iov = &iov[2 * k];
    msgs[k].msg_hdr.msg_iovlen = 2;
  }
  int done = 0;
  while (done < n) {
    const int r = Retry([&] { return sendmmsg(o.proxy, msgs + done, static_cast<unsigned>(n - done), MSG_DONTWAIT | MSG_NOSIGNAL); });
    if (r <= 0) break;
    for (int k = done; k < done + r; k++) {
      const uint32_t bytes = static_cast<uint32_t>(iov[2 * k].iov_len + iov[2 * k + 1].iov_len);
      o.sizes.push_back(bytes);
      o.outBytes += bytes;
    }
    done += r;
  }
  o.handed += static_cast<uint64_t>(done);
  Arm(o, CanRead(o));
  return done;
}

bool CanRead(const Obj& o) {
  bool active = false;
  if (o.tap) {
    const FlowTable* f = static_cast<const TapObj&>(o).flow;
    active = f != nullptr && f->Active();
  } else {
    for (const auto& v : static_cast<const UdpObj&>(o).flows) active = active || v.second->Active();
  }
  return active ? o.Settled() : o.Room();
}

// A fatal error on the object's fd: told to the Node side (whose reader fails with it, as it
// would have reading the fd itself), then the object stops.
void Fail(Obj& o, int err) {
  if (o.tap) {
    DpTapEntry e = {0, 0, -err, 0};
    Retry([&] { return send(o.proxy, &e, sizeof e, MSG_DONTWAIT | MSG_NOSIGNAL); });
  } else {
    DpUdpEntry e = {};
    e.len = -2;
    e.seg = err;
    Retry([&] { return send(o.proxy, &e, sizeof e, MSG_DONTWAIT | MSG_NOSIGNAL); });
  }
  Drop(o);
}

// A TCP super-frame the flow table may send whole (tunnel GSO): kept unsplit in entry n with
// segs = -(its segments), counted as the reader counts it. Only one that a later split (the
// entry goes to JS after all: SplitLate) is sure to fit.
bool TakeWhole(TapObj& t, uint8_t* frame, int32_t r, int n) {
  if (t.vnet == 0 || t.flow == nullptr || r - t.vnet < kEthHlen + 40) return false;
  VnetHdr h;
  ReadVnet(frame - t.vnet, &h);
  const uint8_t type = static_cast<uint8_t>(h.gsoType & ~kGsoEcn);
  const size_t len = static_cast<size_t>(r - t.vnet);
  // the outer length fields: IPv4's total length, IPv6's payload length (UDP, VXLAN, the frame);
  // the table last: a lone frame (a ping) never waits for a route lookup
  if ((type != kGsoTcpV4 && type != kGsoTcpV6) || (h.flags & kVnetNeedsCsum) == 0 || len + kTunnelOuter - kEthHlen > 65535 || !t.flow->TunnelTo(frame)) return false;
  GsoShape g;
  const int k = CheckGso(frame, len, h, &g);
  if (k < 2 || SplitBytes(g, k, len) > static_cast<size_t>(t.slot - t.headroom)) return false;
  t.rstats[kStReads]++;
  t.rstats[kStSuper]++;
  t.rstats[kStFrames] += k;
  t.offs[n] = static_cast<int32_t>(frame - t.slab);
  t.lens[n] = static_cast<int32_t>(len);
  t.segs[n] = -k;
  t.lasts[n] = 0;
  t.vh[n] = h;
  t.gs[n] = g;
  return true;
}

// A whole entry that goes to JS after all: split as the reader splits (TakeWhole counted it).
bool SplitLate(TapObj& t, int i) {
  SegOut out;
  const int k = Segment(t.slab + t.offs[i], static_cast<size_t>(t.lens[i]), static_cast<size_t>(t.slot - t.headroom), t.vh[i], &out);
  if (k != -t.segs[i]) return false;
  t.lens[i] = out.segLen;
  t.segs[i] = k;
  t.lasts[i] = out.lastLen;
  return true;
}

// One read of r bytes at frame - vnet into entry n, as the addon's TapReader takes it.
bool Take(TapObj& t, uint8_t* frame, int32_t r, int n) {
  if (TakeWhole(t, frame, r, n)) return true;
  SegOut out;
  const int segs = TakeRead(frame, r, t.vnet, static_cast<size_t>(t.slot - t.headroom), t.rstats, &out);
  if (segs == 0) return false;
  t.offs[n] = static_cast<int32_t>(frame - t.slab);
  t.lens[n] = out.segLen;
  t.segs[n] = segs;
  t.lasts[n] = out.lastLen;
  return true;
}

void DrainTap(TapObj& t) {
  if (!CanRead(t)) return;
  int n = 0;
  const size_t room = static_cast<size_t>(t.slot - t.headroom);
  TapReadBatch batch(t.sink.ioUring ? ThreadReadRing() : nullptr, t.fd, t.slab, static_cast<size_t>(t.slot), static_cast<size_t>(t.headroom - t.vnet), room + t.vnet, t.batch);
  const int more = batch.Run(&t.readAhead, [&](int slot, int32_t r) {
    if (Take(t, t.slab + static_cast<size_t>(slot) * t.slot + t.headroom, r, n)) n++;
  });
  if (more < 0) {
    Fail(t, -more);  // what was read before the error is lost with the device
    return;
  }
  int sent = 0;
  if (n > 0 && t.flow != nullptr && t.Settled()) sent = t.flow->Encap(t.slab, t.offs, t.lens, t.segs, t.lasts, n, t.vh, t.gs);
  if (sent < n) {
    DpTapEntry e[kMaxBatch];
    struct iovec iov[2 * kMaxBatch];
    int at[kMaxBatch];
    int m = 0;
    for (int i = sent; i < n; i++) {
      if (t.segs[i] < 0 && !SplitLate(t, i)) {  // cannot happen: TakeWhole made sure it fits
        t.rstats[kStNoRoom]++;
        continue;
      }
      e[m] = {t.lens[i], t.segs[i], t.lasts[i], 0};
      iov[2 * m] = {&e[m], sizeof e[m]};
      iov[2 * m + 1] = {t.slab + t.offs[i], static_cast<size_t>(t.lens[i] + 8) * (t.segs[i] - 1) + t.lasts[i]};
      at[m++] = i;
    }
    const int went = m > 0 ? Hand(t, iov, m) : 0;
    for (int k = went; k < m; k++) t.rstats[kStProxyDropped] += t.segs[at[k]];
  }
  if (more > 0) sched_yield();
}

FlowTable* FindFlow(void* ctx, uint32_t vni) {
  auto& flows = static_cast<UdpObj*>(ctx)->flows;
  auto it = flows.find(vni);
  return it == flows.end() ? nullptr : it->second;
}

void DrainUdp(UdpObj& u) {
  double* st = u.sink.stats;
  for (int round = 0; round < kMaxRecvRounds && CanRead(u); round++) {
    UdpRecvRound rr;
    const int n = u.roundMsgs;
    rr.Prepare(u.slab, static_cast<size_t>(u.msgSize), n);
    const int r = Retry([&] { return recvmmsg(u.fd, rr.msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr); });
    st[kRecvCalls]++;
    if (r < 0) {
      if (errno == EAGAIN) return;
      if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) continue;
      Fail(u, errno);
      return;
    }
    int dgrams = 0;
    for (int i = 0; i < r; i++) {
      u.offs[i] = i * u.msgSize;
      dgrams += rr.Parse(i, &u.lens[i], &u.segs[i], &u.tos[i], u.srcs + i * kSrcStride, st);
    }
    int frames = dgrams;
    const int writes = u.flows.empty() || !u.Settled() ? -1 : FlowTableDecap(&FindFlow, &u, u.slab, u.offs, u.lens, u.segs, u.tos, u.srcs, kSrcStride, r);
    if (writes >= 0) {
      frames = std::max(writes, 1);
    } else {
      DpUdpEntry e[kMaxRecvMsgs];
      struct iovec iov[2 * kMaxRecvMsgs];
      for (int i = 0; i < r; i++) {
        e[i] = {};
        memcpy(e[i].src, u.srcs + i * kSrcStride, kSrcStride);
        e[i].tos = u.tos[i];
        e[i].seg = u.segs[i];
        e[i].len = u.lens[i];
        iov[2 * i] = {&e[i], sizeof e[i]};
        iov[2 * i + 1] = {u.slab + u.offs[i], static_cast<size_t>(std::max(0, u.lens[i]))};
      }
      st[kSockProxyDropped] += r - Hand(u, iov, r);
    }
    u.roundMsgs = std::max(1, std::min(kMaxRecvMsgs, kRoundWrites * r / std::max(frames, 1)));
    if (r < n) return;
    sched_yield();
  }
}

void ReadAcks(Obj& o) {
  for (;;) {
    uint32_t n = 0;
    const ssize_t r = Retry([&] { return recv(o.proxy, &n, sizeof n, MSG_DONTWAIT); });
    if (r == static_cast<ssize_t>(sizeof n)) {
      for (uint32_t k = 0; k < n && !o.sizes.empty(); k++) {
        o.outBytes -= o.sizes.front();
        o.sizes.pop_front();
      }
      o.acked += n;
      continue;
    }
    if (r == 0) Drop(o);  // the Node side closed it
    break;
  }
  if (o.fd >= 0) Arm(o, CanRead(o));
}

void Reply(uint32_t id) {
  const DpHeader r{kDpReply, id};
  Retry([&] { return send(kCtlFd, &r, sizeof r, MSG_NOSIGNAL); });
}

void DelFlow(uint32_t id) {
  auto it = g_flows.find(id);
  if (it == g_flows.end()) return;
  FlowObj& f = it->second;
  if (f.tap != nullptr && f.tap->flow == f.table.get()) f.tap->flow = nullptr;
  if (f.udp != nullptr) {
    auto v = f.udp->flows.find(f.table->config().vni);
    if (v != f.udp->flows.end() && v->second == f.table.get()) f.udp->flows.erase(v);
  }
  g_flows.erase(it);
}

template <typename T>
T* Find(std::map<uint32_t, std::unique_ptr<T>>& m, uint32_t id) {
  auto it = m.find(id);
  return it == m.end() ? nullptr : it->second.get();
}

// One control message; false when the control socket closed.
bool Control() {
  union {
    DpHeader h;
    DpHello hello;
    DpAddTap tap;
    DpAddUdp udp;
    DpAddFlow flow;
    DpFlowTx tx;
    DpFlowRx rx;
    DpValue value;
  } m;
  struct iovec iov = {&m, sizeof m};
  struct msghdr h = {};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctrl[CMSG_SPACE(2 * sizeof(int))];
  h.msg_control = ctrl;
  h.msg_controllen = sizeof ctrl;
  const ssize_t r = Retry([&] { return recvmsg(kCtlFd, &h, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); });
  if (r < 0 && errno == EAGAIN) return true;
  if (r <= 0) return false;
  int fds[2] = {-1, -1};
  int nfds = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      nfds = std::min<int>(2, (c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
    }
  }
  const auto closeFds = [&] {
    for (int i = 0; i < nfds; i++) close(fds[i]);
  };
  if (static_cast<size_t>(r) < sizeof(DpHeader)) {
    closeFds();
    return true;
  }
  const uint32_t id = m.h.id;
  switch (m.h.op) {
    case kDpHello: {
      if (nfds != 1 || static_cast<size_t>(r) < sizeof m.hello) break;
      void* p = mmap(nullptr, m.hello.shmBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
      close(fds[0]);
      nfds = 0;
      if (p == MAP_FAILED) return false;
      g_shm = static_cast<uint8_t*>(p);
      g_shmBytes = m.hello.shmBytes;
      Reply(id);
      return true;
    }
    case kDpAddTap: {
      double* rs = ShmAt(m.tap.readerStats, kStProxyDropped + 1);
      if (nfds != 2 || rs == nullptr || m.tap.batch < 1 || m.tap.slotSize <= m.tap.headroom || m.tap.headroom < m.tap.vnet) break;
      auto t = std::make_unique<TapObj>();
      t->id = id;
      t->tap = true;
      t->fd = fds[0];
      t->proxy = fds[1];
      t->vnet = m.tap.vnet;
      t->slot = m.tap.slotSize;
      t->headroom = m.tap.headroom;
      t->batch = std::min(m.tap.batch, kMaxBatch);
      t->slab = NewSlab(static_cast<size_t>(t->slot) * t->batch);
      if (t->slab == nullptr) break;
      t->rstats = rs;
      t->sink.fd = t->fd;
      t->sink.ioUring = m.tap.ioUring != 0;
      Watch(*t);
      g_taps[id] = std::move(t);
      Reply(id);
      return true;
    }
    case kDpAddUdp: {
      double* st = ShmAt(m.udp.stats, kSockProxyDropped + 1);
      if (nfds != 2 || st == nullptr || m.udp.msgSize < 64) break;
      auto u = std::make_unique<UdpObj>();
      u->id = id;
      u->fd = fds[0];
      u->proxy = fds[1];
      u->family = m.udp.family;
      u->msgSize = m.udp.msgSize;
      u->slab = NewSlab(static_cast<size_t>(u->msgSize) * kMaxRecvMsgs);
      if (u->slab == nullptr) break;
      u->sink.fd = u->fd;
      u->sink.stats = st;
      Watch(*u);
      g_udps[id] = std::move(u);
      Reply(id);
      return true;
    }
    case kDpAddFlow: {
      TapObj* t = Find(g_taps, m.flow.tap);
      UdpObj* u = Find(g_udps, m.flow.udp);
      double* st = ShmAt(m.flow.stats, kFlowStatCount);
      double* seen = ShmAt(m.flow.seen, kFlowSlots);
      double* ts = ShmAt(m.flow.tapStats, 8);
      if (t == nullptr || u == nullptr || st == nullptr || seen == nullptr || ts == nullptr) {
        fprintf(stderr, "uvtep-datapath: a flow table for unknown objects or outside the shared memory\n");
        return true;
      }
      FlowConfig c;
      c.vni = m.flow.vni;
      c.hasOwn = m.flow.hasOwn != 0;
      c.own = m.flow.own;
      c.maxFrame = m.flow.maxFrame;
      c.learning = m.flow.learning != 0;
      c.gro = m.flow.gro != 0;
      c.gso = m.flow.gso != 0;
      c.mtu = m.flow.mtu;
      c.family = m.flow.family;
      FlowObj f;
      f.table = std::make_unique<FlowTable>(c, st, seen, ts);
      f.table->Attach(&t->sink, &u->sink);
      if (m.flow.tunnel != 0) {
        const int state = Injector();
        st[kTunnelState] = state;
        if (state > 0) {
          if (!u->tunnel) u->tunnel = std::make_unique<InjectorSink>(&g_injector, u->fd);
          f.table->AttachTunnel(u->tunnel.get(), m.flow.tunnel == kDpTunnelAuto);
        }
      }
      f.tap = t;
      f.udp = u;
      t->flow = f.table.get();
      u->flows[c.vni] = f.table.get();
      g_flows[id] = std::move(f);
      return true;
    }
    case kDpFlowTx:
    case kDpFlowRx:
    case kDpFlowClear:
    case kDpFlowEnable: {
      auto it = g_flows.find(id);
      if (it == g_flows.end()) return true;
      FlowTable& t = *it->second.table;
      if (m.h.op == kDpFlowTx) t.SetTx(m.tx.mac, m.tx.addr, std::min<uint32_t>(m.tx.len, 16), m.tx.port);
      if (m.h.op == kDpFlowRx) t.SetRx(m.rx.mac, m.rx.addr, std::min<uint32_t>(m.rx.len, 16));
      if (m.h.op == kDpFlowClear) t.Reset();
      if (m.h.op == kDpFlowEnable) t.Enable(m.value.value != 0);
      return true;
    }
    case kDpDelFlow:
      DelFlow(id);
      Reply(id);
      return true;
    case kDpDelTap:
    case kDpDelUdp: {
      for (auto it = g_flows.begin(); it != g_flows.end();) {
        const bool uses = m.h.op == kDpDelTap ? it->second.tap != nullptr && it->second.tap->id == id : it->second.udp != nullptr && it->second.udp->id == id;
        auto next = std::next(it);
        if (uses) DelFlow(it->first);
        it = next;
      }
      if (m.h.op == kDpDelTap) {
        if (TapObj* t = Find(g_taps, id)) Drop(*t);
        g_taps.erase(id);
      } else {
        if (UdpObj* u = Find(g_udps, id)) Drop(*u);
        g_udps.erase(id);
      }
      Reply(id);
      return true;
    }
    case kDpBusyPoll:
      g_busyUs = static_cast<int>(std::min<uint32_t>(m.value.value, 1000000));
      return true;
    default:
      break;
  }
  closeFds();
  fprintf(stderr, "uvtep-datapath: refused control message %u\n", m.h.op);
  return true;
}

// One epoll event; false when the control socket closed.
bool Handle(const struct epoll_event& ev) {
  if (ev.data.u64 == 0) return Control();
  const uint32_t id = static_cast<uint32_t>(ev.data.u64 >> 2);
  const bool proxy = (ev.data.u64 & 1) != 0;
  Obj* o = (ev.data.u64 & 2) != 0 ? static_cast<Obj*>(Find(g_taps, id)) : static_cast<Obj*>(Find(g_udps, id));
  if (o == nullptr || o->fd < 0) return true;
  if (proxy) {
    ReadAcks(*o);
  } else if (o->tap) {
    DrainTap(*static_cast<TapObj*>(o));
  } else {
    DrainUdp(*static_cast<UdpObj*>(o));
  }
  return true;
}

int64_t NowUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

int Run() {
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) return 1;
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // the control socket
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, kCtlFd, &ev) < 0) {
    fprintf(stderr, "uvtep-datapath: fd 3 is not the control socket (started by hand? it is started by uvtep)\n");
    return 2;
  }
  struct epoll_event evs[32];
  for (;;) {
    int n = epoll_wait(g_ep, evs, 32, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;
    // --busy-poll: after a batch, look again without sleeping for up to that long
    const int64_t until = g_busyUs > 0 ? NowUs() + g_busyUs : 0;
    for (;;) {
      for (int i = 0; i < n; i++) {
        if (!Handle(evs[i])) return 0;
      }
      if (until == 0 || NowUs() >= until) break;
      n = epoll_wait(g_ep, evs, 32, 0);
      if (n < 0) n = 0;
    }
  }
}

}  // namespace
}  // namespace uvtep

int main() {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() == 1) return 0;  // the Node process is already gone
  signal(SIGPIPE, SIG_IGN);
  return uvtep::Run();
}
