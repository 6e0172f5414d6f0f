// Addon entry: registration only (errors.cc holds the error helpers).
#include <napi.h>
#include "datapath.h"
#include "uvtep.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  uvtep::InitTap(env, exports);
  uvtep::InitReader(env, exports);
  uvtep::InitLink(env, exports);
  uvtep::InitUdp(env, exports);
  uvtep::InitPoller(env, exports);
  uvtep::InitFlowCache(env, exports);
  uvtep::InitDatapath(env, exports);
  return exports;
}

NODE_API_MODULE(uvtep, Init)
