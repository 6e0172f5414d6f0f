// TapReader: uv_poll readiness on the TAP fd (loop from napi_get_uv_event_loop), drain with
// read() until EAGAIN or the batch cap, one JS call per batch. Frames land in a caller-owned
// slab: frame i at slab[i * slotSize + headroom], its offset and length in two Int32Arrays.
#include <unistd.h>
#include <uv.h>
#include <cerrno>
#include "errors.h"
#include "uvtep.h"

namespace uvtep {

class TapReader : public Napi::ObjectWrap<TapReader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TapReader",
                       {InstanceMethod("start", &TapReader::Start), InstanceMethod("stop", &TapReader::Stop),
                        InstanceMethod("close", &TapReader::Close)});
  }

  // new TapReader(fd, slab, slotSize, headroom, offs, lens, onBatch(count), onError(err), vnetLen?)
  // With vnetLen > 0 each read lands vnetLen bytes before the frame, so the virtio_net_hdr sits
  // in the headroom and the frame still starts at slot + headroom.
  explicit TapReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TapReader>(info), ctx_(info.Env(), "uvtep:TapReader") {
    Napi::Env env = info.Env();
    ExpectArgs(info, "TapReader", "nbnnbbff");
    fd_ = info[0].As<Napi::Number>().Int32Value();
    Napi::Uint8Array slab = info[1].As<Napi::Uint8Array>();
    slot_ = info[2].As<Napi::Number>().Int32Value();
    headroom_ = info[3].As<Napi::Number>().Int32Value();
    Napi::Int32Array offs = info[4].As<Napi::Int32Array>();
    Napi::Int32Array lens = info[5].As<Napi::Int32Array>();
    if (slot_ <= headroom_ || headroom_ < 0) throw Napi::RangeError::New(env, "TapReader: slotSize must exceed headroom");
    size_t cap = slab.ByteLength() / static_cast<size_t>(slot_);
    if (offs.ElementLength() < cap) cap = offs.ElementLength();
    if (lens.ElementLength() < cap) cap = lens.ElementLength();
    if (cap == 0) throw Napi::RangeError::New(env, "TapReader: no room for one frame");
    cap_ = static_cast<int>(cap);
    slab_ = slab.Data();
    offs_ = offs.Data();
    lens_ = lens.Data();
    slabRef_ = Napi::Persistent(info[1].As<Napi::Object>());
    offsRef_ = Napi::Persistent(info[4].As<Napi::Object>());
    lensRef_ = Napi::Persistent(info[5].As<Napi::Object>());
    onBatch_ = Napi::Persistent(info[6].As<Napi::Function>());
    onError_ = Napi::Persistent(info[7].As<Napi::Function>());
    vnet_ = info.Length() > 8 && info[8].IsNumber() ? info[8].As<Napi::Number>().Int32Value() : 0;
    if (vnet_ < 0 || vnet_ > headroom_) throw Napi::RangeError::New(env, "TapReader: vnetLen must fit in the headroom");

    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "TapReader: no event loop");
    poll_ = new uv_poll_t;
    int r = uv_poll_init(loop, poll_, fd_);
    if (r != 0) {
      delete poll_;
      poll_ = nullptr;
      throw SystemError(env, -r, "uv_poll_init");
    }
    poll_->data = this;
  }

  ~TapReader() override { CloseHandle(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (poll_ == nullptr) throw Napi::Error::New(info.Env(), "TapReader: closed");
    if (!active_) {
      int r = uv_poll_start(poll_, UV_READABLE, &TapReader::OnPoll);
      if (r != 0) throw SystemError(info.Env(), -r, "uv_poll_start");
      active_ = true;
      Ref();  // keep the wrapper alive while the loop may call it
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPoll();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    return info.Env().Undefined();
  }

  void StopPoll() {
    if (active_ && poll_ != nullptr) {
      uv_poll_stop(poll_);
      active_ = false;
      Unref();
    }
  }

  void CloseHandle() {
    StopPoll();
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    TapReader* self = static_cast<TapReader*>(handle->data);
    if (self == nullptr) return;
    if (status < 0) {
      self->Fail(-status, "poll");
      return;
    }
    self->Drain();
  }

  void Drain() {
    int n = 0;
    while (n < cap_) {
      int32_t off = n * slot_ + headroom_;
      ssize_t r = read(fd_, slab_ + off - vnet_, static_cast<size_t>(slot_ - headroom_ + vnet_));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        int err = errno;
        if (n > 0) Deliver(n);
        Fail(err, "read");
        return;
      }
      if (r < vnet_) continue;  // cannot happen with a vnet header configured; never deliver garbage
      offs_[n] = off;
      lens_[n] = static_cast<int32_t>(r - vnet_);
      n++;
    }
    if (n > 0) Deliver(n);
  }

  void Deliver(int n) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      onBatch_.MakeCallback(Value(), {Napi::Number::New(env, n)}, ctx_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  void Fail(int err, const char* syscall) {
    StopPoll();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    const char* hint = (err == EBADFD || err == EBADF) ? "the TAP device was removed" : "";
    Napi::Error e = SystemError(env, err, syscall, hint);
    try {
      onError_.MakeCallback(Value(), {e.Value()}, ctx_);
    } catch (const Napi::Error& ex) {
      napi_fatal_exception(env, ex.Value());
    }
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
  Napi::ObjectReference slabRef_, offsRef_, lensRef_;
  Napi::FunctionReference onBatch_, onError_;
  uv_poll_t* poll_ = nullptr;
  bool active_ = false;
};

void InitReader(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TapReader::Define(env);
  exports.Set("TapReader", ctor);
}

}  // namespace uvtep
