// TAP device: open /dev/net/tun non-blocking with TUNSETIFF (IFF_TAP | IFF_NO_PI), write one
// frame per write(), close. Every error path closes the fd it opened.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include "errors.h"
#include "uvtep.h"

namespace uvtep {

// openTap(name: string, persist: boolean, vnetHdr?: boolean) -> { fd, name }. name "" lets the
// kernel pick uvtep%d. With vnetHdr every read and write carries a 10-byte virtio_net_hdr.
static Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgs(info, "openTap", "so");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  bool persist = info[1].As<Napi::Boolean>().Value();
  bool vnet = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  if (name.size() >= IFNAMSIZ) throw Napi::RangeError::New(env, "openTap: name too long");

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    const char* hint = err == ENOENT ? "/dev/net/tun does not exist (load the tun module, or give the container the device)"
                     : (err == EACCES || err == EPERM) ? "no permission to open /dev/net/tun (run as root or with CAP_NET_ADMIN)"
                     : "";
    throw SystemError(env, err, "open(/dev/net/tun)", hint);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name.empty() ? "uvtep%d" : name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    const char* hint = err == EPERM ? "creating a TAP device needs root or CAP_NET_ADMIN"
                     : err == EBUSY ? "the interface name is in use by another device or process"
                     : err == EINVAL ? "the name is in use by a device that is not a TAP, or is invalid"
                     : "";
    throw SystemError(env, err, "ioctl(TUNSETIFF)", hint);
  }
  if (persist && ioctl(fd, TUNSETPERSIST, 1) < 0) {
    int err = errno;
    close(fd);
    throw SystemError(env, err, "ioctl(TUNSETPERSIST)");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  return out;
}

// setPersist(fd, on): keep (or stop keeping) the device after the fd closes.
static Napi::Value SetPersist(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "setPersist", "no");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (ioctl(fd, TUNSETPERSIST, info[1].As<Napi::Boolean>().Value() ? 1 : 0) < 0) {
    throw SystemError(info.Env(), errno, "ioctl(TUNSETPERSIST)");
  }
  return info.Env().Undefined();
}

// write(fd, buf, off, len) -> bytes written, or -errno (EAGAIN etc.): the hot path never throws.
static Napi::Value WriteFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  int64_t off = info[2].As<Napi::Number>().Int64Value();
  int64_t len = info[3].As<Napi::Number>().Int64Value();
  if (off < 0 || len < 0 || static_cast<size_t>(off + len) > buf.ByteLength()) {
    return Napi::Number::New(env, -EFAULT);
  }
  ssize_t n;
  do {
    n = write(fd, buf.Data() + off, static_cast<size_t>(len));
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -errno : static_cast<double>(n));
}

// writeVnet(fd, hdr, buf, off, len) -> bytes written (header included), or -errno: one frame
// behind its virtio_net_hdr, in one writev().
static Napi::Value WriteVnet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array hdr = info[1].As<Napi::Uint8Array>();
  Napi::Uint8Array buf = info[2].As<Napi::Uint8Array>();
  int64_t off = info[3].As<Napi::Number>().Int64Value();
  int64_t len = info[4].As<Napi::Number>().Int64Value();
  if (off < 0 || len < 0 || static_cast<size_t>(off + len) > buf.ByteLength()) return Napi::Number::New(env, -EFAULT);
  struct iovec iov[2];
  iov[0].iov_base = hdr.Data();
  iov[0].iov_len = hdr.ByteLength();
  iov[1].iov_base = buf.Data() + off;
  iov[1].iov_len = static_cast<size_t>(len);
  ssize_t n;
  do {
    n = writev(fd, iov, 2);
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -errno : static_cast<double>(n));
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "close", "n");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (close(fd) < 0 && errno != EINTR) throw SystemError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("setPersist", Napi::Function::New(env, SetPersist, "setPersist"));
  exports.Set("write", Napi::Function::New(env, WriteFrame, "write"));
  exports.Set("writeVnet", Napi::Function::New(env, WriteVnet, "writeVnet"));
  exports.Set("close", Napi::Function::New(env, CloseFd, "close"));
}

}  // namespace uvtep
