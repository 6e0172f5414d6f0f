// Batches of syscalls through io_uring: a TAP has no recvmmsg or sendmmsg, and on a virtual
// machine each syscall costs about a microsecond, more than the work of moving one small frame.
// A Ring hands the reads or writes of one batch to the kernel with one io_uring_enter, which runs
// them in order, inline. Every entry carries RWF_NOWAIT: io_uring does not take O_NONBLOCK as
// "never wait" (a read with nothing to read would stay armed until a frame came), RWF_NOWAIT
// makes it end in EAGAIN as read() does; no worker threads. Raw syscalls, no liburing. Where
// io_uring is missing or forbidden (old kernels, seccomp profiles, kernel.io_uring_disabled)
// Open() fails and the caller makes one syscall per frame.
#pragma once
#include <linux/io_uring.h>
#include <sys/uio.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include "offload.h"

namespace uvtep {

class Ring {
 public:
  static constexpr unsigned kEntries = 128;
  Ring() = default;
  ~Ring() { Close(); }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // false when this kernel or process has no io_uring (the ring stays closed).
  bool Open();
  void Close();
  bool open() const { return ring_ >= 0; }
  unsigned queued() const { return queued_; }

  // The next entry, zeroed, its user_data its index in the batch; null when the batch is full.
  struct io_uring_sqe* Next();
  // Runs the batch and waits for all of it: res[i] is entry i's result (bytes or -errno). false
  // when the ring failed under us (it then closes; res of what did not finish is -ECANCELED).
  bool Run(int32_t* res);

 private:
  int ring_ = -1;
  void* sqMap_ = nullptr;
  size_t sqMapLen_ = 0;
  void* cqMap_ = nullptr;
  size_t cqMapLen_ = 0;
  struct io_uring_sqe* sqes_ = nullptr;
  unsigned* sqTail_ = nullptr;
  unsigned sqMask_ = 0;
  unsigned* sqArray_ = nullptr;
  unsigned* cqHead_ = nullptr;
  unsigned* cqTail_ = nullptr;
  unsigned cqMask_ = 0;
  struct io_uring_cqe* cqes_ = nullptr;
  unsigned queued_ = 0;
};

// The writes of a batch to TAPs, as a Ring of writevs.
class WriteRing {
 public:
  bool Open() { return ring_.Open(); }
  bool open() const { return ring_.open(); }

  // Queues writev(fd, iov, n). The first `transient` pieces are copied (a Coalescer builds its
  // headers on the stack); the others must stay valid until Submit() returns. If the write
  // fails, `frames` frames of `bytes` bytes are added to st's losses. Submits first when full.
  void Queue(int fd, const struct iovec* iov, int n, int transient, double frames, double bytes, GroStats* st);
  // Writes everything queued.
  void Submit();

 private:
  static constexpr int kIovs = 2048;
  static constexpr size_t kArena = Ring::kEntries * (kVnetHdrLen + kMaxHdr);  // every entry's headers
  struct Pending {
    double frames;
    double bytes;
    GroStats* st;
  };
  Ring ring_;
  int iovUsed_ = 0;
  size_t arenaUsed_ = 0;
  Pending pending_[Ring::kEntries];
  int32_t res_[Ring::kEntries];
  struct iovec iovs_[kIovs];
  uint8_t arena_[kArena];
};

// One batch of reads from a TAP (fd) into a slab's slots: read i lands at slab + i * slotSize +
// offset with room bytes. Through `ring` when it is open (several reads per io_uring_enter, as
// many as the last batch suggests, *readAhead), else one read() each. take(i, bytes) gets every
// read in order. Returns 1 when all cap slots were read (the TAP may have more), 0 when the TAP
// ran dry (EAGAIN), or -errno when a read failed (after take() for the reads before it). A batch
// after one that read a single packet uses read() (see Run).
class TapReadBatch {
 public:
  TapReadBatch(Ring* ring, int fd, uint8_t* slab, size_t slotSize, size_t offset, size_t room, int cap)
      : ring_(ring), fd_(fd), slab_(slab), slotSize_(slotSize), offset_(offset), room_(room), cap_(cap) {}
  template <typename Take>
  int Run(int* readAhead, Take take) {
    int32_t res[Ring::kEntries];
    int slot = 0;
    // after a batch of one (a lone packet: a ping, an ACK) plain read()s: an io_uring_enter
    // costs a lone packet's round trip more than two read()s (measured: 0.44-0.49 against
    // 0.35-0.38 ms through the datapath process); the ring once batches grow
    const bool ring = ring_ != nullptr && *readAhead > 2;
    while (slot < cap_) {
      const bool viaRing = ring && ring_->open();
      const int want = viaRing ? std::min({cap_ - slot, *readAhead, static_cast<int>(Ring::kEntries)}) : 1;
      Read(viaRing, slot, want, res);
      int got = 0;
      bool dry = false;
      for (int k = 0; k < want; k++) {
        if (res[k] == -EAGAIN) {
          dry = true;
          continue;
        }
        if (res[k] < 0) return res[k];
        got++;
        take(slot + k, res[k]);
      }
      slot += want;
      // read ahead as far as the last round went: a lone ping costs one enter, a stream fills batches
      *readAhead = got == want ? std::min(*readAhead * 2, cap_) : std::max(got + 1, 2);
      if (dry) return 0;
    }
    return 1;
  }

 private:
  void Read(bool viaRing, int first, int want, int32_t* res);
  Ring* ring_;
  int fd_;
  uint8_t* slab_;
  size_t slotSize_, offset_, room_;
  int cap_;
};

// The rings of the calling thread, opened on first use and shared by all its TAPs (every batch is
// run before the call that queued it returns, so one ring per thread serves them all); null
// where io_uring is not allowed, or once a ring failed.
Ring* ThreadReadRing();
WriteRing* ThreadWriteRing();

}  // namespace uvtep
