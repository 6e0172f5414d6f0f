// The datapath process, seen from the addon (datapath.h, dpproto.h). TypeScript spawns the
// process with childFd() as its fd 3 and then registers what it forwards:
//
//   new Datapath(shmBytes)       the control socketpair and the shared memory (a memfd)
//   childFd() -> fd              the process's end, for spawn's stdio; releaseChild() closes ours
//   memory() -> ArrayBuffer      the shared memory (counters; the process writes its own arrays)
//   hello()                      hands over the memory; throws when the process does not answer
//   addTap(tap, readerStats, slotSize, headroom, batch) -> id
//   addUdp(socket, stats, msgSize) -> id
//   removeTap(tap), removeUdp(socket)   answered: the process has closed its copies
//   setBusyPoll(us), close()
//
// Registering hands the process a copy of the object's fd and one end of a proxy socketpair;
// the addon's TapReader / UdpSocket then read the other end (what the process does not forward
// itself) instead of the device.
#include "datapath.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <map>
#include "dpproto.h"
#include "errors.h"
#include "fd.h"
#include "uvtep.h"

namespace uvtep {

namespace {

const napi_type_tag kDatapathTag = {0x7576746570445041ULL, 0x5448000000000001ULL};
constexpr int kProxyBuf = 16 << 20;  // what the process may hand over before JS takes it

// sendmsg with up to two fds (SCM_RIGHTS)
bool SendWithFds(int sock, const void* msg, size_t len, const int* fds, int nfds) {
  struct iovec iov = {const_cast<void*>(msg), len};
  struct msghdr h = {};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctrl[CMSG_SPACE(2 * sizeof(int))];
  if (nfds > 0) {
    memset(ctrl, 0, sizeof ctrl);
    h.msg_control = ctrl;
    h.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  return Retry([&] { return sendmsg(sock, &h, MSG_NOSIGNAL); }) == static_cast<ssize_t>(len);
}

}  // namespace

class Datapath : public Napi::ObjectWrap<Datapath> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Datapath",
                       {InstanceMethod("childFd", &Datapath::ChildFd), InstanceMethod("releaseChild", &Datapath::ReleaseChild),
                        InstanceMethod("memory", &Datapath::Memory), InstanceMethod("hello", &Datapath::Hello),
                        InstanceMethod("addTap", &Datapath::AddTap), InstanceMethod("addUdp", &Datapath::AddUdp),
                        InstanceMethod("removeTap", &Datapath::RemoveTap), InstanceMethod("removeUdp", &Datapath::RemoveUdp),
                        InstanceMethod("setBusyPoll", &Datapath::SetBusyPoll), InstanceMethod("close", &Datapath::Close)});
  }

  explicit Datapath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Datapath>(info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "Datapath", "n");
    const double bytes = info[0].As<Napi::Number>().DoubleValue();
    if (!(bytes >= 4096 && bytes <= (64 << 20))) throw Napi::RangeError::New(env, "Datapath: shmBytes must be 4 KiB .. 64 MiB");
    shmBytes_ = static_cast<size_t>(bytes);
    Fd mem(memfd_create("uvtep-datapath", MFD_CLOEXEC));
    if (mem.get() < 0) throw SystemError(env, errno, "memfd_create");
    if (ftruncate(mem.get(), static_cast<off_t>(shmBytes_)) < 0) throw SystemError(env, errno, "ftruncate");
    void* p = mmap(nullptr, shmBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0);
    if (p == MAP_FAILED) throw SystemError(env, errno, "mmap");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
      const int err = errno;
      munmap(p, shmBytes_);
      throw SystemError(env, err, "socketpair");
    }
    // an answer that does not come within 5 s means the process is stuck
    struct timeval tv = {5, 0};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    shm_ = static_cast<uint8_t*>(p);
    memFd_ = mem.Release();
    ctl_ = sv[0];
    child_ = sv[1];
    info.This().As<Napi::Object>().TypeTag(&kDatapathTag);
  }

  ~Datapath() override { Shut(); }

  uint32_t NewId() { return ++lastId_; }
  uint32_t IdOf(const void* obj) const {
    auto it = ids_.find(obj);
    return it == ids_.end() ? 0 : it->second;
  }
  int ProxyFd(uint32_t id) const {
    auto it = proxies_.find(id);
    return it == proxies_.end() ? -1 : it->second;
  }
  int64_t Offset(const void* p, size_t bytes) const {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    if (shm_ == nullptr || b < shm_ || b + bytes > shm_ + shmBytes_) return -1;
    return b - shm_;
  }
  bool Send(const void* msg, size_t len, const int* fds = nullptr, int nfds = 0) { return ctl_ >= 0 && SendWithFds(ctl_, msg, len, fds, nfds); }
  bool Call(const void* msg, size_t len, const int* fds = nullptr, int nfds = 0) {
    if (!Send(msg, len, fds, nfds)) return false;
    DpHeader r{};
    const ssize_t n = Retry([&] { return recv(ctl_, &r, sizeof r, 0); });
    return n == static_cast<ssize_t>(sizeof r) && r.op == kDpReply && r.id == static_cast<const DpHeader*>(msg)->id;
  }

 private:
  Napi::Value ChildFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), child_); }

  Napi::Value ReleaseChild(const Napi::CallbackInfo& info) {
    if (child_ >= 0) close(child_);
    child_ = -1;
    return info.Env().Undefined();
  }

  // The shared memory as an ArrayBuffer; the mapping goes with the last reference to it.
  Napi::Value Memory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (shm_ == nullptr) throw Napi::Error::New(env, "Datapath: closed");
    if (!memory_.IsEmpty()) return memory_.Value();
    const size_t bytes = shmBytes_;
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, shm_, bytes, [bytes](Napi::Env, void* p) { munmap(p, bytes); });
    ownsMapping_ = false;
    memory_ = Napi::Persistent(ab);
    return ab;
  }

  Napi::Value Hello(const Napi::CallbackInfo& info) {
    const DpHello m{{kDpHello, NewId()}, shmBytes_};
    if (!Call(&m, sizeof m, &memFd_, 1)) throw Napi::Error::New(info.Env(), "the datapath process did not answer (is build/Release/uvtep-datapath there and runnable?)");
    return info.Env().Undefined();
  }

  // A proxy socketpair: ours (non-blocking, for the addon's reader) and the process's.
  bool NewProxy(int* ours, int* theirs) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) return false;
    const int buf = kProxyBuf;
    // root may go past net.core.wmem_max / rmem_max; else the capped size is what there is
    if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    if (setsockopt(sv[0], SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0) setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    *ours = sv[0];
    *theirs = sv[1];
    return true;
  }

  int64_t StatsOffset(Napi::Env env, Napi::Value v, size_t count, const char* what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) throw Napi::TypeError::New(env, std::string(what) + ": expected a Float64Array");
    Napi::Float64Array a = v.As<Napi::Float64Array>();
    const int64_t o = a.ElementLength() >= count ? Offset(a.Data(), count * 8) : -1;
    if (o < 0) throw Napi::RangeError::New(env, std::string(what) + ": not in the datapath's shared memory");
    return o;
  }

  // Registers obj (its fd) under a new id with a proxy; msg's id is set here.
  uint32_t Register(Napi::Env env, const void* obj, int fd, DpHeader* msg, size_t len) {
    if (fd < 0) throw Napi::Error::New(env, "Datapath: the device or socket is closed");
    if (IdOf(obj) != 0) throw Napi::Error::New(env, "Datapath: already registered");
    int ours, theirs;
    if (!NewProxy(&ours, &theirs)) throw SystemError(env, errno, "socketpair");
    msg->id = NewId();
    const int fds[2] = {fd, theirs};
    const bool ok = Call(msg, len, fds, 2);
    close(theirs);
    if (!ok) {
      close(ours);
      throw Napi::Error::New(env, "the datapath process is gone");
    }
    ids_[obj] = msg->id;
    kinds_[msg->id] = msg->op == kDpAddTap ? kDpDelTap : kDpDelUdp;
    proxies_[msg->id] = ours;
    return msg->id;
  }

  // addTap(tap, readerStats, slotSize, headroom, batch) -> id
  Napi::Value AddTap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "addTap", "xbnnn");
    Tap* tap = TapOf(env, info[0]);
    DpAddTap m{};
    m.h.op = kDpAddTap;
    m.vnet = kVnetHdrLen;
    m.readerStats = static_cast<uint64_t>(StatsOffset(env, info[1], 9, "readerStats"));
    m.slotSize = info[2].As<Napi::Number>().Int32Value();
    m.headroom = info[3].As<Napi::Number>().Int32Value();
    m.batch = info[4].As<Napi::Number>().Int32Value();
    m.ioUring = TapIoUring(tap) ? 1 : 0;
    if (m.slotSize <= m.headroom || m.headroom < kVnetHdrLen || m.batch < 1) throw Napi::RangeError::New(env, "addTap: bad slot size, headroom or batch");
    return Napi::Number::New(env, Register(env, tap, TapFd(env, info[0]), &m.h, sizeof m));
  }

  // addUdp(socket, stats, msgSize) -> id
  Napi::Value AddUdp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "addUdp", "xbn");
    UdpSocket* s = UdpSocketOf(env, info[0]);
    DpAddUdp m{};
    m.h.op = kDpAddUdp;
    m.family = UdpFamily(s);
    m.stats = static_cast<uint64_t>(StatsOffset(env, info[1], kSockStatCount + 1, "stats"));
    m.msgSize = info[2].As<Napi::Number>().Int32Value();
    if (m.msgSize < 64) throw Napi::RangeError::New(env, "addUdp: msgSize too small");
    return Napi::Number::New(env, Register(env, s, UdpSocketFd(s), &m.h, sizeof m));
  }

  void Unregister(const void* obj, DpOp op) {
    const uint32_t id = IdOf(obj);
    if (id == 0) return;
    const DpHeader m{op, id};
    Call(&m, sizeof m);  // a process already gone has let go too
    ids_.erase(obj);
    kinds_.erase(id);
    auto it = proxies_.find(id);
    if (it != proxies_.end()) {
      close(it->second);
      proxies_.erase(it);
    }
  }

  Napi::Value RemoveTap(const Napi::CallbackInfo& info) {
    Unregister(TapOf(info.Env(), info[0]), kDpDelTap);
    return info.Env().Undefined();
  }

  Napi::Value RemoveUdp(const Napi::CallbackInfo& info) {
    Unregister(UdpSocketOf(info.Env(), info[0]), kDpDelUdp);
    return info.Env().Undefined();
  }

  Napi::Value SetBusyPoll(const Napi::CallbackInfo& info) {
    ExpectArgs(info, "setBusyPoll", "n");
    const DpValue m{{kDpBusyPoll, NewId()}, info[0].As<Napi::Number>().Uint32Value()};
    Send(&m, sizeof m);
    return info.Env().Undefined();
  }

  // close(): the process sees the control socket close and exits
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shut();
    return info.Env().Undefined();
  }

  // Closes everything; objects still registered are let go of first (answered), so that their
  // devices and ports are free when this returns, not when the process gets round to exiting.
  void Shut() {
    for (const auto& e : ids_) {
      const DpHeader m{kinds_[e.second], e.second};
      Call(&m, sizeof m);
    }
    for (auto& [id, fd] : proxies_) close(fd);
    proxies_.clear();
    ids_.clear();
    kinds_.clear();
    for (int* fd : {&ctl_, &child_, &memFd_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    if (shm_ != nullptr && ownsMapping_) munmap(shm_, shmBytes_);
    shm_ = nullptr;
  }

  uint8_t* shm_ = nullptr;
  size_t shmBytes_ = 0;
  bool ownsMapping_ = true;
  int memFd_ = -1;
  int ctl_ = -1;
  int child_ = -1;
  uint32_t lastId_ = 0;
  std::map<const void*, uint32_t> ids_;
  std::map<uint32_t, int> proxies_;
  std::map<uint32_t, DpOp> kinds_;  // how each registered object is let go of
  Napi::Reference<Napi::ArrayBuffer> memory_;
};

Datapath* DatapathOf(Napi::Env env, Napi::Value v) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kDatapathTag)) throw Napi::TypeError::New(env, "expected a Datapath");
  return Datapath::Unwrap(v.As<Napi::Object>());
}
uint32_t DatapathNewId(Datapath* dp) { return dp->NewId(); }
uint32_t DatapathTapId(Datapath* dp, const Tap* tap) { return dp->IdOf(tap); }
uint32_t DatapathUdpId(Datapath* dp, const UdpSocket* s) { return dp->IdOf(s); }
int DatapathProxyFd(Datapath* dp, uint32_t id) { return dp->ProxyFd(id); }
int64_t DatapathOffset(Datapath* dp, const void* p, size_t bytes) { return dp->Offset(p, bytes); }
bool DatapathSend(Datapath* dp, const void* msg, size_t len) { return dp->Send(msg, len); }
bool DatapathCall(Datapath* dp, const void* msg, size_t len) { return dp->Call(msg, len); }

void DatapathAnswer(int proxyFd, uint32_t* pending) {
  if (*pending == 0 || proxyFd < 0) return;
  const uint32_t n = *pending;
  *pending = 0;
  Retry([&] { return send(proxyFd, &n, sizeof n, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

void InitDatapath(Napi::Env env, Napi::Object exports) { exports.Set("Datapath", Datapath::Define(env)); }

}  // namespace uvtep
