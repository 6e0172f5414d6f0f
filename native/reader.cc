// TapReader: uv_poll readiness on the TAP fd (loop from napi_get_uv_event_loop), drain until
// EAGAIN or the batch cap, one JS call per batch. When the Tap writes through io_uring, the reads
// go through a Ring too: several reads per io_uring_enter, as many as the last batch suggests
// (EAGAIN ends the batch); else one read() each. Frames land in a caller-owned slab, slot i at
// slab[i * slotSize], the frame at slot + headroom.
//
// With a virtio_net_hdr (IFF_VNET_HDR + TUNSETOFFLOAD) each read lands 10 bytes before the frame
// and may be a TCP/UDP super-frame of up to 64 KB: Segment() splits it in place into frames at a
// fixed stride (entry i: segs[i] frames, each lens[i] bytes but the last lasts[i], frame k at
// offs[i] + k * (lens[i] + 8)) with complete checksums, or finishes a partial checksum.
// Refused super-frames are counted in stats (never delivered).
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>
#include <algorithm>
#include <cerrno>
#include "errors.h"
#include "fd.h"
#include "datapath.h"
#include "dpproto.h"
#include "flowcache.h"
#include "offload.h"
#include "poller.h"
#include "ring.h"
#include "uvtep.h"

namespace uvtep {


class TapReader : public Napi::ObjectWrap<TapReader>, public Pollable {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TapReader",
                       {InstanceMethod("start", &TapReader::Start), InstanceMethod("stop", &TapReader::Stop),
                        InstanceMethod("setFlowCache", &TapReader::SetFlowCache), InstanceMethod("close", &TapReader::Close)});
  }

  // new TapReader(tap, slab, slotSize, headroom, offs, lens, segs, lasts, stats, onBatch(count), onError(err), vnet[, datapath, id]):
  // reads the fd of `tap` (a Tap object, kept alive by the reader; JS closes the reader first).
  // With a datapath: reads what the datapath process hands over on the TAP's proxy (id) instead,
  // entries it already split and counted (dpproto.h), and answers each batch.
  explicit TapReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TapReader>(info), ctx_(info.Env(), "uvtep:TapReader") {
    Napi::Env env = info.Env();
    ExpectArgs(info, "TapReader", "xbnnbbbbbffo");
    fd_ = TapFd(env, info[0]);
    if (fd_ < 0) throw SystemError(env, EBADF, "TapReader", "the TAP is closed");
    ring_ = TapIoUring(TapOf(env, info[0])) ? ThreadReadRing() : nullptr;
    if (info.Length() > 13 && !info[12].IsUndefined() && !info[12].IsNull()) {
      Datapath* dp = DatapathOf(env, info[12]);
      fd_ = DatapathProxyFd(dp, info[13].As<Napi::Number>().Uint32Value());
      if (fd_ < 0) throw Napi::Error::New(env, "TapReader: the TAP is not registered with the datapath");
      proxy_ = true;
      ring_ = nullptr;
      dpRef_ = Napi::Persistent(info[12].As<Napi::Object>());
    }
    Napi::Uint8Array slab = info[1].As<Napi::Uint8Array>();
    slot_ = info[2].As<Napi::Number>().Int32Value();
    headroom_ = info[3].As<Napi::Number>().Int32Value();
    Napi::Int32Array offs = info[4].As<Napi::Int32Array>();
    Napi::Int32Array lens = info[5].As<Napi::Int32Array>();
    Napi::Int32Array segs = info[6].As<Napi::Int32Array>();
    Napi::Int32Array lasts = info[7].As<Napi::Int32Array>();
    Napi::Float64Array stats = info[8].As<Napi::Float64Array>();
    vnet_ = info[11].As<Napi::Boolean>().Value() ? kVnetHdrLen : 0;
    if (slot_ <= headroom_ || headroom_ < vnet_ || headroom_ < 8) throw Napi::RangeError::New(env, "TapReader: slotSize must exceed headroom, headroom must hold the vnet and VXLAN headers");
    if (stats.ElementLength() < kStProxyDropped) throw Napi::RangeError::New(env, "TapReader: stats too short");
    size_t cap = slab.ByteLength() / static_cast<size_t>(slot_);
    for (size_t n : {offs.ElementLength(), lens.ElementLength(), segs.ElementLength(), lasts.ElementLength()}) cap = n < cap ? n : cap;
    if (cap == 0) throw Napi::RangeError::New(env, "TapReader: no room for one frame");
    cap_ = static_cast<int>(cap);
    slab_ = slab.Data();
    offs_ = offs.Data();
    lens_ = lens.Data();
    segs_ = segs.Data();
    lasts_ = lasts.Data();
    stats_ = stats.Data();
    int k = 0;
    for (int i : {0, 1, 4, 5, 6, 7, 8}) refs_[k++] = Napi::Persistent(info[i].As<Napi::Object>());
    onBatch_ = Napi::Persistent(info[9].As<Napi::Function>());
    onError_ = Napi::Persistent(info[10].As<Napi::Function>());
    poll_ = NewPoll(env, fd_, this, "TapReader");
  }

  ~TapReader() override { CloseHandle(); }

  int PollFd() const override { return fd_; }

  // The datapath process's entries (dpproto.h DpTapEntry), each into a slot as Take would
  // leave it; the batch is answered once JS has it and the reader still runs (else on start).
  void DrainProxy() {
    int n = 0;
    while (n < cap_) {
      DpTapEntry e;
      uint8_t* frame = slab_ + static_cast<size_t>(n) * slot_ + headroom_;
      struct iovec iov[2] = {{&e, sizeof e}, {frame, static_cast<size_t>(slot_ - headroom_)}};
      const ssize_t r = Retry([&] { return readv(fd_, iov, 2); });
      if (r < 0 && errno == EAGAIN) break;
      if (r <= 0) {
        if (n > 0) CallBatch(this, onBatch_, n, ctx_);
        Fail(r == 0 ? EPIPE : errno, "read(datapath proxy)");
        return;
      }
      if (r == static_cast<ssize_t>(sizeof e) && e.segs == 0 && e.last < 0) {  // the TAP failed in the process
        if (n > 0) CallBatch(this, onBatch_, n, ctx_);
        Fail(-e.last, "read");
        return;
      }
      const int64_t stride = int64_t(e.len) + 8;
      if (r < static_cast<ssize_t>(sizeof e) || e.segs < 1 || e.len < 1 || e.last < 1 || e.last > e.len ||
          stride * (e.segs - 1) + e.last != r - static_cast<ssize_t>(sizeof e)) {
        continue;  // cannot come from the process; never deliver garbage
      }
      offs_[n] = static_cast<int32_t>(frame - slab_);
      lens_[n] = e.len;
      segs_[n] = e.segs;
      lasts_[n] = e.last;
      n++;
    }
    if (n == 0) return;
    CallBatch(this, onBatch_, n, ctx_);
    pendingAck_ += static_cast<uint32_t>(n);
    if (active_) Ack();
  }

  void Ack() { DatapathAnswer(fd_, &pendingAck_); }

  void Drain() override {
    if (proxy_) {
      DrainProxy();
      return;
    }
    int n = 0;
    const size_t room = static_cast<size_t>(slot_ - headroom_);
    TapReadBatch batch(ReadRing(), fd_, slab_, static_cast<size_t>(slot_), static_cast<size_t>(headroom_ - vnet_), room + vnet_, cap_);
    const int more = batch.Run(&readAhead_, [&](int slot, int32_t r) {
      if (Take(slab_ + static_cast<size_t>(slot) * slot_ + headroom_, r, room, n)) n++;
    });
    if (more < 0) {
      if (n > 0) CallBatch(this, onBatch_, n, ctx_);
      Fail(-more, "read");
      return;
    }
    if (n > 0 && fc_ != nullptr) {
      // a batch that only repeats the VTEP's decisions leaves here, without JS (flowcache.h)
      const int sent = FlowCacheEncap(fc_, slab_, offs_, lens_, segs_, lasts_, n);
      if (sent > 0) {
        for (int i = sent; i < n; i++) {
          offs_[i - sent] = offs_[i];
          lens_[i - sent] = lens_[i];
          segs_[i - sent] = segs_[i];
          lasts_[i - sent] = lasts_[i];
        }
        n -= sent;
      }
    }
    if (n > 0) CallBatch(this, onBatch_, n, ctx_);
    // the batch filled every slot and the TAP has more: give the CPU to whoever waits for it
    // before the next (the UDP endpoint's receive rounds do the same, udp.cc)
    if (more > 0) sched_yield();
  }

 private:
  // The thread's read ring while it is open (a failed ring closes: read() from then on).
  Ring* ReadRing() const { return ring_ != nullptr && ring_->open() ? ring_ : nullptr; }

  // One read of r bytes at frame - vnet: validated and split into entry n; false when refused.
  bool Take(uint8_t* frame, int32_t r, size_t room, int n) {
    SegOut out;
    const int segs = TakeRead(frame, r, vnet_, room, stats_, &out);
    if (segs == 0) return false;
    offs_[n] = static_cast<int32_t>(frame - slab_);
    lens_[n] = out.segLen;
    segs_[n] = segs;
    lasts_[n] = out.lastLen;
    return true;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (poll_ == nullptr) throw Napi::Error::New(info.Env(), "TapReader: closed");
    if (!active_) {
      int r = uv_poll_start(poll_, UV_READABLE, &TapReader::OnPoll);
      if (r != 0) throw SystemError(info.Env(), -r, "uv_poll_start");
      active_ = true;
      if (!proxy_) PollRegister(this);
      Ref();  // keep the wrapper alive while the loop may call it
    }
    if (proxy_) Ack();
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPoll();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    fc_ = nullptr;
    fcRef_.Reset();
    return info.Env().Undefined();
  }

  // setFlowCache(cache | null): batches that qualify are sent without JS (native/flowcache.h)
  Napi::Value SetFlowCache(const Napi::CallbackInfo& info) {
    fc_ = FlowCacheOf(info.Env(), info[0]);
    if (fc_ != nullptr) fcRef_ = Napi::Persistent(info[0].As<Napi::Object>());
    else fcRef_.Reset();
    return info.Env().Undefined();
  }

  void StopPoll() {
    if (active_ && poll_ != nullptr) {
      uv_poll_stop(poll_);
      active_ = false;
      if (!proxy_) PollUnregister(this);
      Unref();
    }
  }

  void CloseHandle() {
    StopPoll();
    ClosePoll(&poll_);
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    TapReader* self = static_cast<TapReader*>(handle->data);
    if (self == nullptr) return;
    if (status < 0) {
      self->Fail(-status, "poll");
      return;
    }
    self->Drain();
    BusyPollAfterBatch();
  }

  void Fail(int err, const char* syscall) {
    StopPoll();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    const char* hint = (err == EBADFD || err == EBADF) ? "the TAP device was removed" : proxy_ ? "the datapath process (uvtep-datapath) ended or let go of the TAP" : "";
    CallJs(env, onError_, Value(), {SystemError(env, err, syscall, hint).Value()}, ctx_);
  }

  Napi::AsyncContext ctx_;
  int fd_ = -1;
  int slot_ = 0;
  int headroom_ = 0;
  int cap_ = 0;
  int vnet_ = 0;
  uint8_t* slab_ = nullptr;
  int32_t* offs_ = nullptr;
  int32_t* lens_ = nullptr;
  int32_t* segs_ = nullptr;
  int32_t* lasts_ = nullptr;
  double* stats_ = nullptr;
  Napi::ObjectReference refs_[7];
  Napi::FunctionReference onBatch_, onError_;
  FlowCache* fc_ = nullptr;
  Napi::ObjectReference fcRef_;
  uv_poll_t* poll_ = nullptr;
  bool active_ = false;
  Ring* ring_ = nullptr;  // the thread's (ThreadReadRing)
  bool proxy_ = false;    // reading the datapath process's proxy
  uint32_t pendingAck_ = 0;
  Napi::ObjectReference dpRef_;
  int readAhead_ = 2;
};

void InitReader(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TapReader::Define(env);
  exports.Set("TapReader", ctor);
}

}  // namespace uvtep
