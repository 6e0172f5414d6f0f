// TAP device: a Tap object opens /dev/net/tun non-blocking with TUNSETIFF (IFF_TAP | IFF_NO_PI,
// IFF_VNET_HDR and TUNSETOFFLOAD for the fast path), owns the fd, writes batches of frames
// (coalescing TCP segments into GSO frames) and closes it once. Every error path closes the fd it
// opened; the fd number never reaches JS.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include "errors.h"
#include "fd.h"
#include "offload.h"
#include "ring.h"
#include "uvtep.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

namespace uvtep {

// A TAP device that owns its fd: `new Tap(name, persist, vnetHdr, offloads, ioUring)` opens it
// (name "" lets the kernel pick uvtep%d). With vnetHdr every read and write carries a 10-byte
// virtio_net_hdr, and `offloads` (TUN_F_* bits) is offered with TUNSETOFFLOAD; the USO bits are
// dropped on kernels without them (before 6.2). With ioUring the frames of a batch are written
// with one io_uring_enter where the kernel allows it (the thread's WriteRing), else one writev
// each. `name`, `offloads` (what the kernel accepted) and `ioUring` (whether the ring is in use)
// are properties. The fd never reaches JS: `writeFrames` writes through it, `close()` closes it
// once (a non-persistent device goes with it), and after that a write is EBADF, never another fd.
static const napi_type_tag kTapTag = {0x7576746570544150ULL, 0x6f776e7366640001ULL};

class Tap : public Napi::ObjectWrap<Tap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Tap",
                       {InstanceAccessor("name", &Tap::Name, nullptr), InstanceAccessor("offloads", &Tap::Offloads, nullptr),
                        InstanceAccessor("ioUring", &Tap::IoUring, nullptr),
                        InstanceMethod("writeFrames", &Tap::WriteFrames), InstanceMethod("close", &Tap::Close)});
  }

  explicit Tap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tap>(info) {
    Napi::Env env = info.Env();
    ExpectArgs(info, "Tap", "soono");
    std::string name = info[0].As<Napi::String>().Utf8Value();
    bool persist = info[1].As<Napi::Boolean>().Value();
    bool vnet = info[2].As<Napi::Boolean>().Value();
    unsigned offloads = info[3].As<Napi::Number>().Uint32Value();
    if (name.size() >= IFNAMSIZ) throw Napi::RangeError::New(env, "Tap: name too long");
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      const char* hint = err == ENOENT ? "/dev/net/tun does not exist (load the tun module, or give the container the device)"
                       : (err == EACCES || err == EPERM) ? "no permission to open /dev/net/tun (run as root or with CAP_NET_ADMIN)"
                       : "";
      throw SystemError(env, err, "open(/dev/net/tun)", hint);
    }
    Fd guard(fd);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name.empty() ? "uvtep%d" : name.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      const char* hint = err == EPERM ? "creating a TAP device needs root or CAP_NET_ADMIN"
                       : err == EBUSY ? "the interface name is in use by another device or process"
                       : err == EINVAL ? "the name is in use by a device that is not a TAP, or is invalid"
                       : "";
      throw SystemError(env, err, "ioctl(TUNSETIFF)", hint);
    }
    if (persist && ioctl(fd, TUNSETPERSIST, 1) < 0) throw SystemError(env, errno, "ioctl(TUNSETPERSIST)");
    unsigned accepted = 0;
    if (vnet && offloads != 0) {
      accepted = offloads;
      if (ioctl(fd, TUNSETOFFLOAD, accepted) < 0 && errno == EINVAL) {
        accepted &= ~static_cast<unsigned>(TUN_F_USO4 | TUN_F_USO6);
        if (ioctl(fd, TUNSETOFFLOAD, accepted) < 0) accepted = 0;
      }
    }
    uring_ = info[4].As<Napi::Boolean>().Value() && ThreadWriteRing() != nullptr;
    fd_ = guard.Release();
    name_ = ifr.ifr_name;
    offloads_ = accepted;
    info.This().As<Napi::Object>().TypeTag(&kTapTag);
  }

  ~Tap() override {
    if (fd_ >= 0) close(fd_);
  }

  int fd() const { return fd_; }

  // One packet of a TapBatch.
  int Write(struct iovec* iov, int n, int transient, double frames, double bytes, GroStats* st) {
    if (fd_ < 0) return -EBADF;
    if (WriteRing* ring = uring_ ? ThreadWriteRing() : nullptr) {
      ring->Queue(fd_, iov, n, transient, frames, bytes, st);
      return 0;
    }
    ssize_t r = Retry([&] { return writev(fd_, iov, n); });
    return r < 0 ? -errno : 0;
  }

  void Submit() {
    if (WriteRing* ring = uring_ ? ThreadWriteRing() : nullptr) ring->Submit();
  }

  bool ioUring() const { return uring_ && ThreadWriteRing() != nullptr; }

 private:
  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
  Napi::Value Offloads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), offloads_); }
  Napi::Value IoUring(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), ioUring()); }

  // close(): idempotent; the device is removed unless it was opened persistent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (fd_ >= 0) {
      int fd = fd_;
      fd_ = -1;
      if (close(fd) < 0 && errno != EINTR) throw SystemError(info.Env(), errno, "close");
    }
    return info.Env().Undefined();
  }

  Napi::Value WriteFrames(const Napi::CallbackInfo& info);

  int fd_ = -1;
  std::string name_;
  unsigned offloads_ = 0;
  bool uring_ = false;
};

TapBatch::TapBatch(Tap* tap, bool gro, uint32_t mtu) : tap_(tap), c_(&TapBatch::Write, this, gro, mtu) {}

int TapBatch::Write(void* ctx, struct iovec* iov, int iovcnt, int transient, double frames, double bytes) {
  TapBatch* b = static_cast<TapBatch*>(ctx);
  return b->tap_ == nullptr ? -EBADF : b->tap_->Write(iov, iovcnt, transient, frames, bytes, &b->c_.stats);
}

const GroStats& TapBatch::End() {
  c_.Flush();
  if (tap_ != nullptr) tap_->Submit();
  return c_.stats;
}

bool TapIoUring(const Tap* tap) { return tap->ioUring(); }

namespace {

// Appends each packet as [u32 length][bytes] to a buffer: the coalescer's output, for tests.
struct Recorder {
  uint8_t* out;
  size_t cap;
  size_t used;
};

int RecordPacket(void* ctx, struct iovec* iov, int iovcnt, int, double, double) {
  Recorder* r = static_cast<Recorder*>(ctx);
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
  if (r->used + 4 + len > r->cap) return -ENOSPC;
  uint32_t l32 = static_cast<uint32_t>(len);
  memcpy(r->out + r->used, &l32, 4);
  r->used += 4;
  for (int i = 0; i < iovcnt; i++) {
    memcpy(r->out + r->used, iov[i].iov_base, iov[i].iov_len);
    r->used += iov[i].iov_len;
  }
  return 0;
}

bool FramesArgs(const Napi::CallbackInfo& info, int at, Napi::Uint8Array* buf, Napi::Int32Array* offs, Napi::Int32Array* lens, int* count) {
  *buf = info[at].As<Napi::Uint8Array>();
  *offs = info[at + 1].As<Napi::Int32Array>();
  *lens = info[at + 2].As<Napi::Int32Array>();
  *count = info[at + 3].As<Napi::Number>().Int32Value();
  if (*count < 0 || static_cast<size_t>(*count) > offs->ElementLength() || static_cast<size_t>(*count) > lens->ElementLength()) return false;
  for (int i = 0; i < *count; i++) {
    int32_t o = (*offs)[i], l = (*lens)[i];
    if (o < 0 || l < 0 || static_cast<size_t>(o) + static_cast<size_t>(l) > buf->ByteLength()) return false;
  }
  return true;
}

}  // namespace

// tap.writeFrames(gro, buf, offs, lens, count, stats, mtu) -> frames lost (write errors).
// Frames i < count are buf[offs[i], offs[i] + lens[i]), each written behind a virtio_net_hdr (the
// TAP is opened with IFF_VNET_HDR): consecutive TCP segments of one flow are merged (gro) and
// written with one gather writev each; a TCP frame larger than mtu (a local kernel peer's tunnel
// GSO) as a GSO frame; everything else as it is. stats (Float64Array(8)) accumulates: writes,
// merged writes, merged segments, lost frames, lost bytes, TCP checksum failures, partial
// checksums passed on, super-frames written as GSO frames. Never throws on the data path; after
// close() every frame is lost (EBADF).
Napi::Value Tap::WriteFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool gro = info[0].As<Napi::Boolean>().Value();
  Napi::Uint8Array buf;
  Napi::Int32Array offs, lens;
  int count;
  if (!FramesArgs(info, 1, &buf, &offs, &lens, &count)) return Napi::Number::New(env, -EFAULT);
  Napi::Float64Array st = info[5].As<Napi::Float64Array>();
  if (st.ElementLength() < 8) return Napi::Number::New(env, -EINVAL);
  TapBatch b(this, gro, info[6].As<Napi::Number>().Uint32Value());
  for (int i = 0; i < count; i++) b.Add(buf.Data() + offs[i], static_cast<uint32_t>(lens[i]));
  const GroStats& s = b.End();
  s.AddTo(st.Data());
  return Napi::Number::New(env, s.lostFrames);
}
// coalesce(buf, offs, lens, count, gro, out, stats, mtu) -> bytes used in out: what writeFrames would
// write, recorded as [u32 LE length][virtio_net_hdr + packet] each (tests compare it byte for byte).
static Napi::Value Coalesce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "coalesce", "bbbnobbn");
  Napi::Uint8Array buf;
  Napi::Int32Array offs, lens;
  int count;
  if (!FramesArgs(info, 0, &buf, &offs, &lens, &count)) throw Napi::RangeError::New(env, "coalesce: frames outside the buffer");
  bool gro = info[4].As<Napi::Boolean>().Value();
  Napi::Uint8Array out = info[5].As<Napi::Uint8Array>();
  Napi::Float64Array st = info[6].As<Napi::Float64Array>();
  if (st.ElementLength() < 8) throw Napi::RangeError::New(env, "coalesce: stats too short");
  Recorder r{out.Data(), out.ByteLength(), 0};
  Coalescer c(RecordPacket, &r, gro, info[7].As<Napi::Number>().Uint32Value());
  for (int i = 0; i < count; i++) c.Add(buf.Data() + offs[i], static_cast<uint32_t>(lens[i]));
  c.Flush();
  c.stats.AddTo(st.Data());
  return Napi::Number::New(env, static_cast<double>(r.used));
}

// segment(vnetHdr, buf, off, len, cap) -> [segs, segLen, lastLen], or [negative reason]: what the
// TAP reader does to one read, on caller memory (tests, fuzzing).
static Napi::Value SegmentFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "segment", "bbnnn");
  Napi::Uint8Array hdr = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  int64_t off = info[2].As<Napi::Number>().Int64Value();
  int64_t len = info[3].As<Napi::Number>().Int64Value();
  int64_t cap = info[4].As<Napi::Number>().Int64Value();
  if (hdr.ByteLength() < static_cast<size_t>(kVnetHdrLen)) throw Napi::RangeError::New(env, "segment: vnet header too short");
  if (off < 8 || len < 0 || cap < len || static_cast<size_t>(off + cap) > buf.ByteLength()) throw Napi::RangeError::New(env, "segment: outside the buffer");
  VnetHdr h;
  ReadVnet(hdr.Data(), &h);
  SegOut o{0, 0};
  int r = Segment(buf.Data() + off, static_cast<size_t>(len), static_cast<size_t>(cap), h, &o);
  Napi::Array a = Napi::Array::New(env);
  a.Set(0u, Napi::Number::New(env, r));
  if (r > 0) {
    a.Set(1u, Napi::Number::New(env, o.segLen));
    a.Set(2u, Napi::Number::New(env, o.lastLen));
  }
  return a;
}

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("Tap", Tap::Define(env));
  exports.Set("coalesce", Napi::Function::New(env, Coalesce, "coalesce"));
  exports.Set("segment", Napi::Function::New(env, SegmentFrame, "segment"));
}

Tap* TapOf(Napi::Env env, Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTapTag)) throw Napi::TypeError::New(env, "expected a Tap");
  return Tap::Unwrap(v.As<Napi::Object>());
}

int TapFd(Napi::Env env, Napi::Value v) { return TapOf(env, v)->fd(); }

}  // namespace uvtep
