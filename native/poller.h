// Busy polling (--busy-poll): after a batch, the fds of every active reader (TAP readers, UDP
// endpoints) are polled without sleeping for up to the configured time, and whichever is
// readable is drained at once, so a reply does not wait for a wakeup. Off (0) by default.
#pragma once
#include <napi.h>
#include <uv.h>
#include <cstdint>

namespace uvtep {

class Pollable {
 public:
  virtual ~Pollable() = default;
  virtual int PollFd() const = 0;
  // Reads what is there and hands it to JS (one call per batch).
  virtual void Drain() = 0;
};

// A uv_poll handle on fd in the env's event loop, handle->data = owner; throws on failure.
uv_poll_t* NewPoll(Napi::Env env, int fd, void* owner, const char* who);
// Stops and frees *poll (uv_close) and nulls it: the loop never calls its owner again.
void ClosePoll(uv_poll_t** poll);

// Active readers register while started, and unregister when stopped or closed.
void PollRegister(Pollable* p);
void PollUnregister(Pollable* p);
// Called after a batch was delivered: spins when busy polling is on (not re-entrant).
void BusyPollAfterBatch();
void SetBusyPollUs(uint32_t us);

}  // namespace uvtep
