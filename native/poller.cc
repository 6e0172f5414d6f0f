// See poller.h. The spin is bounded twice: it stops after busy_us without traffic, and after
// kMaxSpinUs in total, so timers, signals and the control socket still get the event loop.
#include "poller.h"
#include <napi.h>
#include <poll.h>
#include <time.h>
#include <algorithm>
#include <vector>
#include "errors.h"
#include "uvtep.h"

namespace uvtep {

namespace {

std::vector<Pollable*> g_active;
uint32_t g_busyUs = 0;
bool g_spinning = false;
constexpr uint64_t kMaxSpinUs = 2000;

uint64_t NowUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace

uv_poll_t* NewPoll(Napi::Env env, int fd, void* owner, const char* who) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, std::string(who) + ": no event loop");
  uv_poll_t* p = new uv_poll_t;
  const int r = uv_poll_init(loop, p, fd);
  if (r != 0) {
    delete p;
    throw SystemError(env, -r, "uv_poll_init");
  }
  p->data = owner;
  return p;
}

void ClosePoll(uv_poll_t** poll) {
  if (*poll == nullptr) return;
  uv_poll_stop(*poll);
  (*poll)->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(*poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  *poll = nullptr;
}

void PollRegister(Pollable* p) {
  if (std::find(g_active.begin(), g_active.end(), p) == g_active.end()) g_active.push_back(p);
}

void PollUnregister(Pollable* p) {
  g_active.erase(std::remove(g_active.begin(), g_active.end(), p), g_active.end());
}

void SetBusyPollUs(uint32_t us) { g_busyUs = us; }

void BusyPollAfterBatch() {
  if (g_busyUs == 0 || g_spinning) return;
  g_spinning = true;
  const uint64_t start = NowUs();
  uint64_t idleFrom = start;
  std::vector<struct pollfd> fds;
  std::vector<Pollable*> who;
  for (;;) {
    const uint64_t now = NowUs();
    if (now - idleFrom >= g_busyUs || now - start >= kMaxSpinUs || g_active.empty()) break;
    fds.clear();
    who.clear();
    for (Pollable* p : g_active) {
      fds.push_back({p->PollFd(), POLLIN, 0});
      who.push_back(p);
    }
    if (poll(fds.data(), fds.size(), 0) <= 0) continue;
    for (size_t i = 0; i < fds.size(); i++) {
      if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) == 0) continue;
      // a callback may have stopped or closed it
      if (std::find(g_active.begin(), g_active.end(), who[i]) == g_active.end()) continue;
      who[i]->Drain();
      idleFrom = NowUs();
    }
  }
  g_spinning = false;
}

static Napi::Value SetBusyPoll(const Napi::CallbackInfo& info) {
  ExpectArgs(info, "setBusyPoll", "n");
  SetBusyPollUs(info[0].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

void InitPoller(Napi::Env env, Napi::Object exports) {
  exports.Set("setBusyPoll", Napi::Function::New(env, SetBusyPoll, "setBusyPoll"));
}

}  // namespace uvtep
