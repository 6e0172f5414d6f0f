// An fd closed when its guard goes out of scope, unless released: every error path closes what it
// opened. Retry: a syscall made again while a signal interrupts it (EINTR).
#pragma once
#include <unistd.h>
#include <cerrno>

namespace uvtep {

template <typename F>
auto Retry(F call) {
  decltype(call()) r;
  do r = call(); while (r < 0 && errno == EINTR);
  return r;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // The caller owns the fd from now on.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

}  // namespace uvtep
