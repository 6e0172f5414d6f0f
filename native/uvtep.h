#pragma once
#include <napi.h>

namespace uvtep {
void InitTap(Napi::Env env, Napi::Object exports);
void InitReader(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitUdp(Napi::Env env, Napi::Object exports);
void InitPoller(Napi::Env env, Napi::Object exports);
// The fd of a Tap object (native/tap.cc), -1 once it is closed; a TypeError for anything else.
int TapFd(Napi::Env env, Napi::Value tap);
}  // namespace uvtep
