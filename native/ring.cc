// Ring and WriteRing: see ring.h.
#include "ring.h"
#include "fd.h"
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace uvtep {

namespace {

int Setup(unsigned entries, struct io_uring_params* p) { return static_cast<int>(syscall(__NR_io_uring_setup, entries, p)); }

int Enter(int ring, unsigned submit, unsigned wait) {
  return static_cast<int>(syscall(__NR_io_uring_enter, ring, submit, wait, wait > 0 ? IORING_ENTER_GETEVENTS : 0, nullptr, 0));
}

unsigned LoadAcquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void StoreRelease(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

}  // namespace

bool Ring::Open() {
  if (ring_ >= 0) return true;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  // SUBMIT_ALL (5.18): one bad entry does not stop the rest; older kernels take no flags
  p.flags = IORING_SETUP_SUBMIT_ALL;
  int fd = Setup(kEntries, &p);
  if (fd < 0 && errno == EINVAL) {
    memset(&p, 0, sizeof p);
    fd = Setup(kEntries, &p);
  }
  if (fd < 0) return false;
  ring_ = fd;
  sqMapLen_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cqMapLen_ = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  const size_t sqesLen = p.sq_entries * sizeof(struct io_uring_sqe);
  void* sq = mmap(nullptr, sqMapLen_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  void* cq = mmap(nullptr, cqMapLen_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
  void* sqes = mmap(nullptr, sqesLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  sqMap_ = sq == MAP_FAILED ? nullptr : sq;
  cqMap_ = cq == MAP_FAILED ? nullptr : cq;
  sqes_ = sqes == MAP_FAILED ? nullptr : static_cast<struct io_uring_sqe*>(sqes);
  sqMask_ = p.sq_entries - 1;
  if (sqMap_ == nullptr || cqMap_ == nullptr || sqes_ == nullptr) {
    Close();
    return false;
  }
  uint8_t* s = static_cast<uint8_t*>(sqMap_);
  uint8_t* c = static_cast<uint8_t*>(cqMap_);
  sqTail_ = reinterpret_cast<unsigned*>(s + p.sq_off.tail);
  sqArray_ = reinterpret_cast<unsigned*>(s + p.sq_off.array);
  cqHead_ = reinterpret_cast<unsigned*>(c + p.cq_off.head);
  cqTail_ = reinterpret_cast<unsigned*>(c + p.cq_off.tail);
  cqMask_ = *reinterpret_cast<unsigned*>(c + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<struct io_uring_cqe*>(c + p.cq_off.cqes);
  return true;
}

void Ring::Close() {
  if (sqes_ != nullptr) munmap(sqes_, (sqMask_ + 1) * sizeof(struct io_uring_sqe));
  if (sqMap_ != nullptr) munmap(sqMap_, sqMapLen_);
  if (cqMap_ != nullptr) munmap(cqMap_, cqMapLen_);
  if (ring_ >= 0) close(ring_);
  sqes_ = nullptr;
  sqMap_ = cqMap_ = nullptr;
  ring_ = -1;
  queued_ = 0;
}

struct io_uring_sqe* Ring::Next() {
  if (ring_ < 0 || queued_ == kEntries) return nullptr;
  const unsigned tail = *sqTail_ + queued_;  // only this thread moves the tail
  const unsigned idx = tail & sqMask_;
  struct io_uring_sqe* e = &sqes_[idx];
  memset(e, 0, sizeof *e);
  e->user_data = queued_++;
  sqArray_[idx] = idx;
  return e;
}

bool Ring::Run(int32_t* res) {
  const unsigned n = queued_;
  if (n == 0) return true;
  for (unsigned i = 0; i < n; i++) res[i] = -ECANCELED;
  StoreRelease(sqTail_, *sqTail_ + n);
  unsigned toSubmit = n;
  unsigned reaped = 0;
  // one enter normally does it all (every entry runs inline); an interrupted wait is resumed
  for (int tries = 0; reaped < n && tries < 16; tries++) {
    const int r = Enter(ring_, toSubmit, n - reaped);
    const int err = errno;
    if (r > 0) toSubmit -= static_cast<unsigned>(r) < toSubmit ? static_cast<unsigned>(r) : toSubmit;
    unsigned head = *cqHead_;
    const unsigned tail = LoadAcquire(cqTail_);
    for (; head != tail; head++, reaped++) {
      const struct io_uring_cqe& c = cqes_[head & cqMask_];
      if (c.user_data < n) res[c.user_data] = c.res;
    }
    StoreRelease(cqHead_, head);
    if (r < 0 && err != EINTR && err != EAGAIN && err != EBUSY) break;
  }
  queued_ = 0;
  if (reaped == n) return true;
  Close();
  return false;
}

namespace {

// *ring, made and opened on first use and kept for the thread's life (the kernel closes it at
// exit); null while it is not open.
template <class R>
R* Opened(R** ring) {
  if (*ring == nullptr) {
    *ring = new R();
    (*ring)->Open();
  }
  return (*ring)->open() ? *ring : nullptr;
}

}  // namespace

Ring* ThreadReadRing() {
  static thread_local Ring* ring = nullptr;
  return Opened(&ring);
}

WriteRing* ThreadWriteRing() {
  static thread_local WriteRing* ring = nullptr;
  return Opened(&ring);
}

void WriteRing::Queue(int fd, const struct iovec* iov, int n, int transient, double frames, double bytes, GroStats* st) {
  size_t copied = 0;
  for (int i = 0; i < transient; i++) copied += iov[i].iov_len;
  if (ring_.queued() == Ring::kEntries || iovUsed_ + n > kIovs || arenaUsed_ + copied > kArena) Submit();
  struct io_uring_sqe* e = ring_.Next();
  if (e == nullptr) {  // the ring failed in that Submit
    st->lostFrames += frames;
    st->lostBytes += bytes;
    return;
  }
  struct iovec* v = iovs_ + iovUsed_;
  for (int i = 0; i < n; i++) {
    v[i] = iov[i];
    if (i < transient) {
      v[i].iov_base = memcpy(arena_ + arenaUsed_, iov[i].iov_base, iov[i].iov_len);
      arenaUsed_ += iov[i].iov_len;
    }
  }
  iovUsed_ += n;
  e->opcode = IORING_OP_WRITEV;
  e->fd = fd;
  e->addr = reinterpret_cast<uint64_t>(v);
  e->len = static_cast<uint32_t>(n);
  e->off = static_cast<uint64_t>(-1);  // a character device: no file position
  e->rw_flags = RWF_NOWAIT;            // a write that would wait fails (EAGAIN), as writev does
  pending_[e->user_data] = Pending{frames, bytes, st};
}

void WriteRing::Submit() {
  const unsigned n = ring_.queued();
  ring_.Run(res_);  // a failed ring is closed: the TAP goes back to one writev at a time
  for (unsigned i = 0; i < n; i++) {
    if (res_[i] >= 0) continue;
    pending_[i].st->lostFrames += pending_[i].frames;
    pending_[i].st->lostBytes += pending_[i].bytes;
  }
  iovUsed_ = 0;
  arenaUsed_ = 0;
}

void TapReadBatch::Read(bool viaRing, int first, int want, int32_t* res) {
  auto buf = [&](int slot) { return slab_ + static_cast<size_t>(slot) * slotSize_ + offset_; };
  if (viaRing) {
    for (int k = 0; k < want; k++) {
      struct io_uring_sqe* e = ring_->Next();
      e->opcode = IORING_OP_READ;
      e->fd = fd_;
      e->addr = reinterpret_cast<uint64_t>(buf(first + k));
      e->len = static_cast<uint32_t>(room_);
      e->off = static_cast<uint64_t>(-1);
      e->rw_flags = RWF_NOWAIT;  // nothing to read ends in EAGAIN; O_NONBLOCK alone would wait
    }
    if (ring_->Run(res)) return;
    // the ring failed and is closed: what it read is kept, the rest waits for the next poll and read()
    for (int k = 0; k < want; k++) res[k] = res[k] == -ECANCELED ? -EAGAIN : res[k];
    return;
  }
  ssize_t r = Retry([&] { return read(fd_, buf(first), room_); });
  res[0] = r < 0 ? -errno : static_cast<int32_t>(r);
}

}  // namespace uvtep
